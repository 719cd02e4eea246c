"""RLAIF: preference labels from a judge (a reward model or any scoring function), not people.

Sample K responses per prompt from a policy (:func:`sample_responses`; the prompts are read by
:func:`rlhf_dist.eval.load_prompts`, as for an evaluation), score them with a
judge (:func:`load_judge`: ``rm:PATH`` or ``package.module:function``; the toy task's rule judge
is :func:`toy_rule_judge`), rank and pair them (:func:`ranking_to_pairs`), and write the
``{prompt, chosen, rejected, chosen_score, rejected_score}`` jsonl that ``rlhf-dist rm`` and
``rlhf-dist dpo`` read (:func:`write_pairs`).  CLI: ``rlhf-dist label`` (:mod:`.cli`).

Importing this package is cheap: its modules import torch and transformers inside the
functions that load or run models.  (The re-exports are eager on purpose: the function
:func:`label` must win over the submodule of the same name.)
"""

from rlhf_dist.rlaif.judges import (
    Judge,
    JudgeError,
    RewardModelJudge,
    load_callable,
    load_judge,
    load_reward_judge,
    toy_rule_judge,
    toy_rule_score,
)
from rlhf_dist.rlaif.label import (
    LabelStats,
    label,
    label_with_stats,
    sample_responses,
    stats_path,
    write_pairs,
)
from rlhf_dist.rlaif.ranking import (
    PAIR_KEYS,
    SKIP_REASONS,
    STRATEGIES,
    candidate_pairs,
    rank_responses,
    ranking_to_pairs,
    skip_reason,
)

__all__ = [
    "Judge",
    "JudgeError",
    "LabelStats",
    "PAIR_KEYS",
    "RewardModelJudge",
    "SKIP_REASONS",
    "STRATEGIES",
    "candidate_pairs",
    "label",
    "label_with_stats",
    "load_callable",
    "load_judge",
    "load_reward_judge",
    "rank_responses",
    "ranking_to_pairs",
    "sample_responses",
    "skip_reason",
    "stats_path",
    "toy_rule_judge",
    "toy_rule_score",
    "write_pairs",
]
