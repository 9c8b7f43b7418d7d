"""The policy loader: strict keys, errors that name key and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from extproc.errors import PolicyError
from extproc.policy import load_policy, parse_policy

ROOT = Path(__file__).resolve().parents[3]

MINIMAL = """\
version: 1
providers:
  openai:
    family: openai
    route_prefix: /openai
    credential: {env: OPENAI_API_KEY}
users:
  default:
    budget: {capacity_usd: "2.50", refill_usd: 1, refill_every: 1h}
"""


def _problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(textwrap.dedent(text))
    return caught.value.problems


def test_minimal_policy_parses_money_into_micro_usd() -> None:
    policy = parse_policy(MINIMAL)

    assert 2_500_000 == policy.users["default"].budget.capacity_micro_usd
    assert 1_000_000 == policy.users["default"].budget.refill_micro_usd
    assert 3_600_000 == policy.users["default"].budget.refill_period_ms


def test_float_money_is_exact() -> None:
    policy = parse_policy(MINIMAL.replace('"2.50"', "0.1"))

    assert 100_000 == policy.users["default"].budget.capacity_micro_usd


def test_misspelled_key_is_named_with_its_line() -> None:
    problems = _problems(MINIMAL.replace("credential:", "credentail:"))

    assert ["line 6: providers.openai.credentail: unknown key"] == problems


def test_unknown_top_level_key_is_refused() -> None:
    problems = _problems(MINIMAL + "budget: {}\n")

    assert ["line 10: budget: unknown key"] == problems


def test_duplicate_key_is_refused() -> None:
    problems = _problems(MINIMAL + "version: 1\n")

    assert ["line 10: version: key given twice"] == problems


def test_credential_written_inline_is_refused() -> None:
    problems = _problems(MINIMAL.replace("{env: OPENAI_API_KEY}", "sk-live-123"))

    assert 1 == len(problems)
    assert problems[0].startswith("line 6: providers.openai.credential:")


def test_credential_needs_exactly_one_source() -> None:
    text = MINIMAL.replace("{env: OPENAI_API_KEY}", "{env: A, file: /b}")

    assert "exactly one" in _problems(text)[0]


def test_unknown_family_lists_the_known_ones() -> None:
    problems = _problems(MINIMAL.replace("family: openai", "family: opneai"))

    assert "line 4: providers.openai.family" in problems[0]
    assert "anthropic" in problems[0]


def test_negative_budget_is_refused() -> None:
    problems = _problems(MINIMAL.replace('"2.50"', '"-1"'))

    assert problems[0].startswith("line 9: users.default.budget.capacity_usd")


def test_budget_past_what_redis_counts_exactly_is_refused_with_its_line() -> None:
    problems = _problems(MINIMAL.replace('"2.50"', '"20000000000"'))

    assert problems[0].startswith("line 9: users.default.budget.capacity_usd")
    assert "1000000000" in problems[0]


def test_bad_duration_is_refused() -> None:
    problems = _problems(MINIMAL.replace("1h", "1 hour"))

    assert "refill_every" in problems[0]


def test_invalid_yaml_is_a_policy_error() -> None:
    assert "not valid YAML" in _problems("providers: [\n")[0]


def test_empty_file_is_a_policy_error() -> None:
    assert ["the file is empty"] == _problems("")


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    "path",
    [ROOT / "policy.example.yaml", ROOT / "extproc" / "local" / "demo_policy.yaml"],
)
def test_shipped_policies_are_valid(path: Path) -> None:
    assert load_policy(path).providers


def test_merge_keys_reuse_an_anchored_mapping_and_own_keys_win() -> None:
    policy = parse_policy(
        MINIMAL
        + textwrap.dedent(
            """\
            teams:
              platform: &team
                budget: {amount_usd: "100", period: month}
                rate_limits: {requests_per_minute: 60}
              search:
                <<: *team
                rate_limits: {requests_per_minute: 10}
            """
        )
    )

    search = policy.teams["search"]
    assert (100_000_000, 10) == (
        search.budget.capacity_micro_usd,
        search.rate_limits.requests_per_minute,
    )


def test_merging_a_scalar_is_refused_with_its_line() -> None:
    problems = _problems(
        MINIMAL
        + """\
teams:
  search:
    <<: just-a-string
"""
    )

    assert ["line 12: teams.search: << merges mappings only"] == problems


def test_aliases_nested_into_a_huge_document_are_refused_quickly() -> None:
    levels = ['l0: &l0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for level in range(1, 9):
        repeats = ", ".join([f"*l{level - 1}"] * 10)
        levels.append(f"l{level}: &l{level} [{repeats}]")
    text = MINIMAL + "bomb:\n" + "".join(f"  {line}\n" for line in levels)

    problems = _problems(text)

    assert "the file expands to over 100000 values" in problems[0]


def test_merge_keys_nested_into_a_huge_document_are_refused_quickly() -> None:
    levels = ["m0: &m0 {a: 1}"]
    for level in range(1, 12):
        repeats = ", ".join([f"*m{level - 1}"] * 10)
        levels.append(f"m{level}: &m{level} {{<<: [{repeats}]}}")
    text = MINIMAL + "bomb:\n" + "".join(f"  {line}\n" for line in levels)

    problems = _problems(text)

    assert "the file expands to over 100000 values" in problems[0]
