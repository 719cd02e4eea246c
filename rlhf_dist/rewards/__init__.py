"""Rewards that are not a reward model: built-in verifiers and user functions (no Ray here)."""
from .functions import RewardError, RewardFunction, RewardSum
from .verifiers import VERIFIERS

__all__ = ["RewardError", "RewardFunction", "RewardSum", "VERIFIERS"]
