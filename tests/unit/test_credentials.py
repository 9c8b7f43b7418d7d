"""Credentials: read from env or file, rotated by file change, never printed."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.auth import exceptions
from google.oauth2 import service_account

from extproc import credentials
from extproc.credentials import CredentialReader, Secret
from extproc.errors import CredentialError
from extproc.policy.model import CredentialSource
from tests.service_accounts import service_account_key


def test_env_credential_is_read(monkeypatch) -> None:
    monkeypatch.setenv("T_KEY", " sk-123 \n")

    assert "sk-123" == CredentialReader().read(CredentialSource(env="T_KEY")).reveal()


def test_missing_env_credential_is_an_error_naming_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("T_ABSENT", raising=False)

    with pytest.raises(CredentialError, match="T_ABSENT"):
        CredentialReader().read(CredentialSource(env="T_ABSENT"))


def test_rotated_file_is_read_again(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "key"
    path.write_text("old-key")
    reader = CredentialReader()
    source = CredentialSource(file=str(path))
    assert "old-key" == reader.read(source).reveal()

    path.write_text("new-key-longer")
    os.utime(path, ns=(5 * 10**9, 5 * 10**9))
    monkeypatch.setattr(credentials, "_FILE_RECHECK_S", 0.0)

    assert "new-key-longer" == reader.read(source).reveal()


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("\n")

    with pytest.raises(CredentialError, match="empty"):
        CredentialReader().read(CredentialSource(file=str(tmp_path / "key")))


def test_secret_never_prints_its_value() -> None:
    secret = Secret("sk-live-abc")

    assert "sk-live-abc" not in f"{secret} {secret!r} {[secret]}"


@pytest.mark.parametrize(
    "query",
    [
        "key=AIza",
        "KEY=AIza",
        "ke%79=AIza",
        "key%00=AIza",
        "key[]=AIza",
        "api_key=sk",
        "access_token=ya29",
        "X-Amz-Signature=abc",
        "X-Amz-Credential=AKIA%2F20261204",
        "$key=AIza",
        "%24key=AIza",
        "oauth_token=ya29",
        "$oauth_token=ya29",
        "userProject=client-project",
        "%24userProject=client-project",
        "subscription-key=apim",
    ],
)
def test_credential_query_parameters_are_removed_and_the_rest_kept(query) -> None:
    path = f"/v1beta/models/m:streamGenerateContent?alt=sse&{query}&x=1"

    assert "/v1beta/models/m:streamGenerateContent?alt=sse&x=1" == (
        credentials.without_query_credentials(path)
    )


def test_every_x_amz_header_a_client_sent_is_removed() -> None:
    sent = ["content-type", "x-amz-credential", "x-amz-signature", "x-amzn-trace-id"]

    removed = credentials.client_credential_headers(dict.fromkeys(sent, "v"))

    assert {"x-amz-credential", "x-amz-signature", "authorization"} <= set(removed)
    assert not {"content-type", "x-amzn-trace-id"} & set(removed)


@pytest.mark.parametrize(
    "header", ["openai-organization", "openai-project", "ocp-apim-subscription-key"]
)
def test_headers_that_steer_billing_are_removed(header) -> None:
    assert header in credentials.client_credential_headers({})


def test_a_gateway_key_in_any_header_is_removed() -> None:
    key = "tgk_" + "A" * 40
    sent = {
        ":path": f"/v1/chat/completions?k={key}",
        "x-my-auth": f"Token {key}",
        "user-agent": "sdk/1.0",
    }

    removed = credentials.client_credential_headers(sent)

    assert "x-my-auth" in removed
    assert not {":path", "user-agent"} & set(removed)


def test_byte_order_mark_of_a_key_file_is_not_part_of_the_key(tmp_path: Path) -> None:
    (tmp_path / "key").write_bytes("\ufeffsk-ant-123\r\n".encode())

    secret = CredentialReader().read(CredentialSource(file=str(tmp_path / "key")))

    assert "sk-ant-123" == secret.reveal()


@pytest.mark.parametrize(
    "content", ["sk-one\nsk-two\n", "sk-\x00nul", "sk-caf\u00e9", "sk-one\r\nsk-two"]
)
def test_key_file_no_header_can_carry_is_an_error_not_echoing_it(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / "key").write_text(content, newline="")

    with pytest.raises(CredentialError, match="one line of printable ASCII") as info:
        CredentialReader().read(CredentialSource(file=str(tmp_path / "key")))

    assert "sk-" not in str(info.value)


def test_env_credential_with_two_lines_is_an_error(monkeypatch) -> None:
    monkeypatch.setenv("T_KEY", "sk-one\nsk-two")

    with pytest.raises(CredentialError, match="T_KEY"):
        CredentialReader().read(CredentialSource(env="T_KEY"))


def test_service_account_key_may_span_lines(tmp_path: Path) -> None:
    (tmp_path / "sa.json").write_text('{\n  "type": "service_account"\n}\n')
    source = CredentialSource(
        file=str(tmp_path / "sa.json"), format="google_service_account"
    )

    assert '"service_account"' in CredentialReader().read(source).reveal()


@pytest.mark.parametrize("broken", ["emptied", "removed"])
def test_key_file_broken_mid_rotation_keeps_the_last_key_steadily(
    tmp_path: Path, monkeypatch, caplog, broken: str
) -> None:
    path = tmp_path / "key"
    path.write_text("sk-last-good\n")
    reader = CredentialReader()
    source = CredentialSource(file=str(path))
    reader.read(source)
    if broken == "emptied":
        path.write_text("")
    else:
        path.unlink()
    monkeypatch.setattr(credentials, "_FILE_RECHECK_S", 0.0)

    first, second = reader.read(source), reader.read(source)

    assert ["sk-last-good"] * 2 == [first.reveal(), second.reveal()]
    assert 1 == sum(r.levelname == "WARNING" for r in caplog.records)
    assert "sk-last-good" not in caplog.text


def _service_account_reader(
    tmp_path: Path,
) -> tuple[CredentialReader, CredentialSource]:
    (tmp_path / "sa.json").write_text(
        service_account_key("https://oauth2.invalid/token")
    )
    source = CredentialSource(
        file=str(tmp_path / "sa.json"), format="google_service_account"
    )
    return CredentialReader(), source


def _google_answers(monkeypatch, *answers: tuple[str, int] | Exception) -> None:
    """Each refresh takes the next answer: a token valid for some seconds,
    or an error."""
    pending = list(answers)

    def refresh(self, request) -> None:
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        self.token, valid_s = answer
        self.expiry = datetime.now(UTC).replace(tzinfo=None) + timedelta(
            seconds=valid_s
        )

    monkeypatch.setattr(service_account.Credentials, "refresh", refresh)


async def test_failed_refresh_keeps_a_token_that_is_still_valid(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    reader, source = _service_account_reader(tmp_path)
    _google_answers(
        monkeypatch, ("ya29.first", 120), exceptions.TransportError("unreachable")
    )
    await reader.current(source)

    token = await reader.current(source)
    await asyncio.sleep(0.2)  # the refresh it started has failed by now

    assert "ya29.first" == token.reveal()
    assert any(r.levelname == "WARNING" for r in caplog.records)
    assert "ya29.first" not in caplog.text


async def test_no_token_and_a_failed_mint_is_an_error_not_retried_at_once(
    tmp_path: Path, monkeypatch
) -> None:
    reader, source = _service_account_reader(tmp_path)
    _google_answers(monkeypatch, exceptions.RefreshError("invalid_grant"))

    for _ in range(2):  # a second mint would find no answer left
        with pytest.raises(CredentialError, match="Google access token"):
            await reader.current(source)


async def test_token_about_to_expire_is_not_sent(tmp_path: Path, monkeypatch) -> None:
    reader, source = _service_account_reader(tmp_path)
    _google_answers(monkeypatch, ("ya29.short", 20))

    with pytest.raises(CredentialError, match="Google access token"):
        await reader.current(source)
