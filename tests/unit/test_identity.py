"""The identity read from the trusted header: present, single, and unambiguous."""

from __future__ import annotations

import pytest

from extproc.errors import IdentityInvalid, IdentityMissing
from extproc.identity import identity_from

HEADER = "x-tollgate-identity"


def test_identity_is_the_trimmed_header_value() -> None:
    assert "alice@example.com" == identity_from([b" alice@example.com "], HEADER)


def test_spiffe_ids_are_identities() -> None:
    spiffe = "spiffe://cluster.local/ns/apps/sa/search"

    assert spiffe == identity_from([spiffe.encode()], HEADER)


@pytest.mark.parametrize("values", [[], [b""], [b"   "]])
def test_absent_or_blank_identity_names_the_header(values) -> None:
    with pytest.raises(IdentityMissing, match=HEADER):
        identity_from(values, HEADER)


def test_repeated_identity_is_refused() -> None:
    with pytest.raises(IdentityInvalid, match="once, not 2 times"):
        identity_from([b"alice", b"bob"], HEADER)


def test_identity_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(IdentityInvalid, match="UTF-8"):
        identity_from([b"alic\xe9"], HEADER)


@pytest.mark.parametrize("value", [b"victim#rpm", b"alice/tool:claude-code"])
def test_identity_that_would_name_another_bucket_is_refused(value) -> None:
    with pytest.raises(IdentityInvalid, match="must not contain"):
        identity_from([value], HEADER)


@pytest.mark.parametrize("value", [b"a,b", b"a\x07b", b"x" * 257])
def test_identity_with_a_comma_control_or_overlong_is_refused(value) -> None:
    with pytest.raises(IdentityInvalid):
        identity_from([value], HEADER)
