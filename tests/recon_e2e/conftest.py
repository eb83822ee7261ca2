"""The billing tests' world (a phone with two cards, a stranger, the simulators wired)."""

from tests.billing.conftest import env, world

__all__ = ["env", "world"]
