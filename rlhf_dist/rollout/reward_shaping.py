"""RewardShaper: sequence scores + KL penalty to the reference -> per-action token rewards.

Input Batch keys (alignment in :mod:`rlhf_dist.rollout.generate`):
``scores`` ``(N,)`` -- the reward model's score (already normalised by the reward worker when
``ppo.normalize_reward``) plus any custom reward the driver added; ``old_logprobs``,
``ref_logprobs``, ``action_mask`` ``(N, T−1)``.  Output: the same Batch plus
``token_rewards`` ``(N, T−1)``:  r_t = −β·KL_t on every action, + score on the last action
(Ziegler et al. 2019; Ouyang et al. 2022, eq. 2), with β the KL controller's current value
-- or β = 0 here with ``ppo.kl_in_loss``, where the actor's loss carries the KL instead.
With ``step_rewards`` ``(N, T−1)`` in the batch (multi-turn rollouts, ``env.turn_rewards``)
the environment's step rewards, part of the score, sit on the last action of the model turn
that earned each instead (:func:`~rlhf_dist.algo.place_step_rewards`): the same sum per row.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch

from rlhf_dist.algo import (
    kl_estimate,
    make_kl_controller,
    masked_sum,
    place_step_rewards,
    shape_rewards,
)
from rlhf_dist.protocol import Batch

REQUIRED_KEYS = ("scores", "old_logprobs", "ref_logprobs", "action_mask")

# ppo section -> keyword arguments of the controller registered under ppo.kl_controller
_CONTROLLER_ARGS: Dict[str, Callable[[Any], Dict[str, float]]] = {
    "fixed": lambda ppo: {"kl_coef": ppo.kl_coef},
    "adaptive": lambda ppo: {
        "init_kl_coef": ppo.kl_coef,
        "target": ppo.kl_target,
        "horizon": ppo.kl_horizon,
    },
}


def sequence_kl(
    old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, action_mask: torch.Tensor
) -> torch.Tensor:
    """Per-sequence KL(π_old ‖ π_ref): the k1 per-token KL summed over actions, (N,)."""
    return masked_sum(kl_estimate(old_logprobs, ref_logprobs, "k1"), action_mask, dim=-1)


def _require_keys(batch: Batch, keys, who: str) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(f"{who}: batch lacks key(s) {missing}; it has {batch.keys()}")


class RewardShaper:
    """Holds the KL controller (``ppo.kl_controller`` fixed/adaptive, ``ppo.kl_coef``,
    ``ppo.kl_target``, ``ppo.kl_horizon``) and turns scores into token rewards.

    ``ppo.reward_clip`` (if set) clamps the scores to ``[−c, c]`` first.  The KL term uses
    ``ppo.kl_estimator`` (k1/k2/k3); the logged ``kl/ref_kl`` is always the k1 sequence KL
    (mean over sequences of the per-token KL summed over actions), which is also what
    :meth:`update_kl` expects, as in Ziegler et al.'s controller (target in nats per sequence).
    """

    def __init__(self, ppo: Any):
        self.ppo = ppo
        if ppo.kl_controller not in _CONTROLLER_ARGS:
            raise ValueError(
                f"ppo.kl_controller: unknown {ppo.kl_controller!r}; valid: "
                f"{sorted(_CONTROLLER_ARGS)}"
            )
        self.controller = make_kl_controller(
            ppo.kl_controller, **_CONTROLLER_ARGS[ppo.kl_controller](ppo)
        )

    @property
    def kl_coef(self) -> float:
        return self.controller.value

    def clip_scores(self, scores: torch.Tensor) -> torch.Tensor:
        c = self.ppo.reward_clip
        return scores if c is None else scores.clamp(-c, c)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> Tuple[Batch, Dict[str, float]]:
        """``(batch + token_rewards, metrics)``; metrics: ``reward/score_mean``,
        ``reward/score_std`` (population std of the clipped scores), ``kl/ref_kl``,
        ``kl/coef`` (β: of the reward's penalty, or of the loss's KL with ``ppo.kl_in_loss``),
        ``response/length_mean``, and ``reward/clip_frac`` when clipping is on."""
        _require_keys(batch, REQUIRED_KEYS, "RewardShaper")
        raw = batch["scores"].float()
        scores = self.clip_scores(raw)
        mask = batch["action_mask"]
        beta = self.kl_coef
        token_rewards = shape_rewards(
            scores,
            batch["old_logprobs"],
            batch["ref_logprobs"],
            mask,
            kl_coef=0.0 if self.ppo.kl_in_loss else beta,
            kind=self.ppo.kl_estimator,
        )
        if "step_rewards" in batch:
            token_rewards = place_step_rewards(token_rewards, batch["step_rewards"], mask)
        seq_kl = sequence_kl(batch["old_logprobs"], batch["ref_logprobs"], mask)
        metrics = {
            "reward/score_mean": scores.mean().item(),
            "reward/score_std": scores.std(correction=0).item(),
            "kl/ref_kl": seq_kl.mean().item(),
            "kl/coef": beta,
            "response/length_mean": mask.bool().sum(-1).float().mean().item(),
        }
        if self.ppo.reward_clip is not None:
            metrics["reward/clip_frac"] = (scores != raw).float().mean().item()
        return batch.with_(token_rewards=token_rewards), metrics

    def update_kl(self, kl: float, n_steps: int) -> None:
        """Step the adaptive controller after an iteration (no-op when fixed): ``kl`` is the
        iteration's ``kl/ref_kl``, ``n_steps`` the samples it used (units of ``kl_horizon``)."""
        self.controller.update(kl, n_steps)

    def state_dict(self) -> Dict[str, Any]:
        return {"kl_controller": self.controller.state_dict()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.controller.load_state_dict(state["kl_controller"])
