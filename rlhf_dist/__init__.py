"""rlhf_dist: distributed RLHF (SFT, RM, PPO/GRPO, DPO family, agents) on a laptop CPU or a
GPU cluster.

One vocabulary, in code and docs (docs/architecture.md has the longer form):

* **engine** -- a DeepSpeed ``ModelEngine`` (:mod:`rlhf_dist.engine`): a trained or frozen
  model on one rank.  Inside the vLLM backend, vLLM's own object is "the vLLM engine".
* **rollout backend** (or sampler) -- what turns prompt batches into experience
  (:mod:`rlhf_dist.rollout.interface`; ``hf`` = :class:`~rlhf_dist.rollout.HFGenerator` on
  the actor's ranks, ``vllm`` = vLLM engines); multi-turn trajectories and the asynchronous
  pipeline wrap a backend.
* **scorer** -- anything that gives a response a number: a reward model
  (:class:`~rlhf_dist.rewards.model_scorer.RewardModelScorer` over texts, the reward group
  over token ids), a verifier or reward function (:mod:`rlhf_dist.rewards`), a remote RM, an
  LLM judge (:mod:`rlhf_dist.rlaif.judges`), an environment's step rewards
  (:mod:`rlhf_dist.envs`).  Every one is called ``(prompts, responses) -> scores``.
* **environment** -- ``reset(row) -> observation``, ``step(action) -> (observation, reward,
  done)`` (:mod:`rlhf_dist.envs`).
* **role** (actor, critic, reward, reference) → **worker** (one Ray actor, one rank) →
  **group** (:mod:`rlhf_dist.workers`).
* **iteration** (PPO: generate → score → learn) vs **step** (one optimiser step); a policy
  **version** is the number of iterations the actor has trained.
"""

__version__ = "0.1.0"
