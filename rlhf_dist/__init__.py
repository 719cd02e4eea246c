"""rlhf_dist: distributed RLHF (SFT, RM, PPO, DPO) on a laptop CPU or a GPU cluster."""

__version__ = "0.1.0"
