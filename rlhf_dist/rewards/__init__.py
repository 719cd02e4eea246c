"""Rewards that are not a reward model: built-in verifiers and user functions (no Ray here)."""

from .functions import RewardFunction, RewardSum, load_rewards
from .values import RewardError
from .verifiers import VERIFIERS

__all__ = ["RewardError", "RewardFunction", "RewardSum", "VERIFIERS", "load_rewards"]
