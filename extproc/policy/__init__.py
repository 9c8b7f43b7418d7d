"""The policy: providers, identity, budgets and prices, from one YAML file."""

from extproc.policy.loader import load_policy, parse_policy
from extproc.policy.model import Policy
from extproc.policy.watcher import PolicyWatcher

__all__ = ["Policy", "PolicyWatcher", "load_policy", "parse_policy"]
