"""Property tests of the policy loader: any text is a policy or a clear error."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.errors import PolicyError
from extproc.policy import parse_policy

KEYS = [
    "version",
    "providers",
    "users",
    "teams",
    "budget",
    "capacity_usd",
    "family",
    "route_prefix",
    "openai",
    "default",
    "rate_limits",
    "amount_usd",
    "period",
    "directory",
    "tools",
    "pricing",
    "timezone",
    "credential",
    "env",
    "typo",
]

printable = st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=12)
documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 10**12)
    | printable
    | st.sampled_from(["openai", "/openai", "month", "1d", "UTC", "-1", "1e9"]),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=25,
)


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_text_is_a_policy_or_a_policy_error(text: str) -> None:
    try:
        parse_policy(text)
    except PolicyError as error:
        assert error.problems and all(isinstance(p, str) and p for p in error.problems)


@given(documents)
@settings(max_examples=200, deadline=None)
def test_any_yaml_document_is_a_policy_or_an_error_naming_where(document) -> None:
    text = yaml.safe_dump(document)

    try:
        parse_policy(text)
    except PolicyError as error:
        assert all(p.startswith("line ") or ":" in p for p in error.problems)
