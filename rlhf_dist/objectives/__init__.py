"""Objectives: the losses of a model on a batch, shared by the Ray workers and the launcher
loops (neither writes its own).

* :func:`policy_objective`, :func:`value_objective` -- the PPO actor's and critic's losses on a
  micro-batch of experience (:mod:`.ppo`).
* :func:`dpo_batch_loss`, :func:`dpo_eval_sums`, :func:`reference_rows`, :func:`dpo_datasets`
  -- DPO against a frozen reference (or SimPO / ORPO without one) on a batch of pairs
  (:mod:`.dpo`), in the layouts of :data:`PAIR_LAYOUTS` (:mod:`.pairs`: padded rows or a
  shared prompt); KTO on unpaired rows through the same layouts (:mod:`.kto`).
* :func:`reward_objective` -- Bradley-Terry on a reward model's pair scores (:mod:`.reward`).

The maths is in :mod:`rlhf_dist.algo`; an objective runs the model's forward and reads the
config section it needs.  Exports resolve lazily: importing the package imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List

from rlhf_dist._lazy import lazy_exports

if TYPE_CHECKING:  # pragma: no cover
    from rlhf_dist.objectives.dpo import (
        dpo_batch_loss,
        dpo_datasets,
        dpo_eval_sums,
        dpo_objective,
        no_reference_rows,
        reference_rows,
    )
    from rlhf_dist.objectives.kto import kto_objective
    from rlhf_dist.objectives.pairs import PAIR_LAYOUTS, PairLogps
    from rlhf_dist.objectives.ppo import policy_objective, value_objective
    from rlhf_dist.objectives.reward import reward_objective, split_pairs

_EXPORTS: Dict[str, str] = {
    "policy_objective": "ppo",
    "value_objective": "ppo",
    "dpo_objective": "dpo",
    "dpo_batch_loss": "dpo",
    "dpo_eval_sums": "dpo",
    "dpo_datasets": "dpo",
    "kto_objective": "kto",
    "reference_rows": "dpo",
    "no_reference_rows": "dpo",
    "PAIR_LAYOUTS": "pairs",
    "PairLogps": "pairs",
    "reward_objective": "reward",
    "split_pairs": "reward",
}

__all__: List[str] = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
