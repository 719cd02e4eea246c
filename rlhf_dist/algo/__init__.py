"""Pure-torch RLHF maths: no ray, deepspeed, torch.distributed or config imports.

Shapes: B batch rows, T tokens, V vocabulary, P prompts x K samples.  Dtype policy: maths in
float32 for bf16/fp16 inputs (float64 stays float64), results returned in that dtype.
Metrics dicts hold python floats.
"""

from .advantages import (
    ADVANTAGE_ESTIMATORS,
    compute_critic_free_advantages,
    expand_to_tokens,
    get_advantage_estimator,
    group_norm,
    mean_baseline,
    reinforce,
    rloo,
)
from .dpo import DPO_LOSSES, dpo_loss
from .preference import (
    KTO_RECOMMENDED_RATIO,
    REFERENCE_FREE_LOSSES,
    UNPAIRED_LOSSES,
    best_worst_pairs,
    kto_class_weights,
    kto_loss,
    kto_weight_ratio,
    online_pair_weights,
    orpo_loss,
    simpo_loss,
)
from .finite import NonFiniteError, check_finite, nonfinite_rows
from .gae import discounted_returns, gae
from .kl import (
    KL_ESTIMATORS,
    kl_estimate,
    last_token_index,
    place_step_rewards,
    score_index,
    sequence_end_index,
    shape_rewards,
)
from .kl_control import KL_CONTROLLERS, AdaptiveKLController, FixedKLController, make_kl_controller
from .logprobs import (
    entropy_from_logits,
    logprobs_from_logits,
    masked_sequence_logps,
    scored_columns,
    sequence_logps,
    shifted_token_logps,
    token_logps,
)
from .importance import (
    IS_WEIGHTS,
    importance_stats,
    importance_weights,
    masked_is_weights,
    truncated_is_weights,
)
from .losses import (
    LOSS_AGGREGATORS,
    aggregate_loss,
    explained_variance,
    ppo_policy_loss,
    value_loss,
)
from .masked import masked_mean, masked_sum, masked_var, masked_whiten
from .dapo import informative_groups, overlong_penalty
from .supervised import bradley_terry_loss, bradley_terry_metrics, sft_loss

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AdaptiveKLController",
    "DPO_LOSSES",
    "REFERENCE_FREE_LOSSES",
    "KTO_RECOMMENDED_RATIO",
    "UNPAIRED_LOSSES",
    "best_worst_pairs",
    "kto_class_weights",
    "kto_weight_ratio",
    "online_pair_weights",
    "FixedKLController",
    "IS_WEIGHTS",
    "KL_CONTROLLERS",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATORS",
    "NonFiniteError",
    "informative_groups",
    "overlong_penalty",
    "aggregate_loss",
    "bradley_terry_loss",
    "bradley_terry_metrics",
    "check_finite",
    "compute_critic_free_advantages",
    "discounted_returns",
    "dpo_loss",
    "kto_loss",
    "orpo_loss",
    "simpo_loss",
    "entropy_from_logits",
    "expand_to_tokens",
    "explained_variance",
    "gae",
    "importance_stats",
    "importance_weights",
    "get_advantage_estimator",
    "group_norm",
    "kl_estimate",
    "last_token_index",
    "place_step_rewards",
    "score_index",
    "sequence_end_index",
    "logprobs_from_logits",
    "make_kl_controller",
    "masked_is_weights",
    "masked_mean",
    "masked_sequence_logps",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "mean_baseline",
    "nonfinite_rows",
    "ppo_policy_loss",
    "reinforce",
    "rloo",
    "scored_columns",
    "sequence_logps",
    "sft_loss",
    "shape_rewards",
    "shifted_token_logps",
    "token_logps",
    "truncated_is_weights",
    "value_loss",
]
