"""The sizes a job derives from its config, computed and checked here, read by the trainers.

Each is a pure function of the :class:`~rlhf_dist.config.Config` (it assigns nothing; a size
that does not divide is a :class:`ConfigError` naming the key) returning a frozen record:
:func:`ppo_sizes` for PPO/GRPO on Ray, :func:`ray_dpo_sizes` for DPO on Ray,
:func:`online_dpo_sizes` for online DPO.  The launcher
jobs' one derived size, ``train.gradient_accumulation_steps``, is filled by
``Config.resolve(dp_size)``.  :func:`resolve_job` is the job's resolve step that
``load_config(..., job=...)`` runs at load, so ``rlhf-dist JOB`` refuses bad sizes (even
with ``--print-config``) before anything starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List

from rlhf_dist.algo.advantages import MIN_GROUP_SIZE
from rlhf_dist.config.checks import _require

if TYPE_CHECKING:
    from rlhf_dist.config import Config

# the jobs whose rows hold responses after the prompt (data.max_length must leave room)
_PAIR_OR_RESPONSE_JOBS = ("sft", "rm", "dpo", "dpo-ray")
_LAUNCHER_JOBS = ("pretrain", "sft", "rm", "dpo")


def launcher_world_size() -> int:
    """Data-parallel ranks of a launcher (deepspeed / torchrun) job; 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def ppo_roles(cfg: "Config") -> List[str]:
    """The Ray roles a PPO job creates: no critic for critic-free estimators, no reward
    group when only a reward function scores, no reference group when the actor answers
    for it (:attr:`Config.reference_group`)."""
    return (
        ["actor"]
        + (["reference"] if cfg.reference_group else [])
        + (["reward"] if cfg.ppo.use_reward_model else [])
        + (["critic"] if cfg.ppo.needs_critic else [])
    )


@dataclass(frozen=True)
class PPOSizes:
    """The sizes of one PPO iteration (see :func:`ppo_sizes`)."""

    # experience rows of an iteration: rollout.rollout_batch_size x rollout.n_samples_per_prompt
    sequences: int
    prompts_per_actor_rank: int  # prompts each actor rank samples responses for
    minibatches: int  # optimiser steps of each learner per PPO epoch (sequences / mini_batch)
    steps_per_iteration: int  # optimiser steps of each learner per iteration (x ppo_epochs)
    total_steps: int  # optimiser steps of each learner in the run (x ppo.iterations)
    # learner role (actor, critic) -> micro-batches per optimiser step on each of its ranks
    accumulation: Dict[str, int] = field(default_factory=dict)


def ppo_sizes(cfg: "Config") -> PPOSizes:
    """PPO sizes: each group forwards its equal share of an iteration's experience in
    micro-batches (ZeRO-3 forwards are collective, so every rank needs the same count), and
    each minibatch is one optimiser step of the actor and the critic."""
    n_experience = cfg.rollout.rollout_batch_size * cfg.rollout.n_samples_per_prompt
    mb, micro = cfg.ppo.mini_batch_size, cfg.train.micro_batch_size
    _require(
        n_experience % mb == 0,
        "ppo.mini_batch_size",
        f"{mb} does not divide rollout.rollout_batch_size × rollout.n_samples_per_prompt"
        f" = {cfg.rollout.rollout_batch_size} × {cfg.rollout.n_samples_per_prompt}"
        f" = {n_experience}",
    )
    _require(
        cfg.ppo.overlong_buffer <= cfg.rollout.max_new_tokens,
        "ppo.overlong_buffer",
        f"{cfg.ppo.overlong_buffer} is longer than rollout.max_new_tokens="
        f"{cfg.rollout.max_new_tokens}",
    )
    res = cfg.resources
    # each actor rank samples n_samples_per_prompt responses for an equal share of the prompts
    # (unequal shares would desynchronise ZeRO-3's collective forwards)
    _require(
        cfg.rollout.rollout_batch_size % res.actor.world_size == 0,
        "rollout.rollout_batch_size",
        f"{cfg.rollout.rollout_batch_size} prompts do not "
        f"split evenly over resources.actor ranks={res.actor.world_size}",
    )
    accumulation = {}
    for role in ppo_roles(cfg):
        world = getattr(res, role).world_size
        _require(
            n_experience % (world * micro) == 0,
            f"resources.{role}",
            f"{world} ranks × train.micro_batch_size={micro} do not divide the "
            f"{n_experience} sequences of an iteration (rollout.rollout_batch_size × "
            f"rollout.n_samples_per_prompt)",
        )
        if role in ("actor", "critic"):
            _require(
                mb % (world * micro) == 0,
                "ppo.mini_batch_size",
                f"{mb} is not divisible by resources.{role} ranks={world} × "
                f"train.micro_batch_size={micro}",
            )
            accumulation[role] = mb // (world * micro)
    for first, second, flag in (
        ("actor", "reference", "colocate_actor_ref"),
        ("critic", "reward", "colocate_critic_reward"),
    ):
        if getattr(res, flag):
            _require(
                getattr(res, first) == getattr(res, second),
                f"resources.{flag}",
                f"colocated roles need the same resources: resources.{first}="
                f"{getattr(res, first)} vs resources.{second}={getattr(res, second)}",
            )
    need = MIN_GROUP_SIZE.get(cfg.ppo.advantage_estimator, 1)
    _require(
        cfg.rollout.n_samples_per_prompt >= need,
        "rollout.n_samples_per_prompt",
        f"is {cfg.rollout.n_samples_per_prompt}; ppo.advantage_estimator="
        f"{cfg.ppo.advantage_estimator} compares samples of one prompt and needs >= {need}",
    )
    if cfg.ppo.dynamic_sampling:
        _require(
            cfg.rollout.n_samples_per_prompt >= 2,
            "rollout.n_samples_per_prompt",
            f"is {cfg.rollout.n_samples_per_prompt}; ppo.dynamic_sampling keeps prompts "
            "whose responses' rewards differ and needs >= 2",
        )
    minibatches = n_experience // mb
    steps = cfg.ppo.ppo_epochs * minibatches
    return PPOSizes(
        sequences=n_experience,
        prompts_per_actor_rank=cfg.rollout.rollout_batch_size // res.actor.world_size,
        minibatches=minibatches,
        steps_per_iteration=steps,
        total_steps=cfg.ppo.iterations * steps,
        accumulation=accumulation,
    )


def ray_dpo_reference_group(cfg: "Config") -> bool:
    """DPO on Ray creates a reference group unless the reference lives in the actor's
    processes (``Config.reference_group``) or the loss uses none (SimPO, ORPO)."""
    return cfg.reference_group and cfg.dpo.needs_reference


@dataclass(frozen=True)
class RayDPOSizes:
    """The sizes of DPO on Ray (see :func:`ray_dpo_sizes`)."""

    world: int  # the actor's ranks (resources.actor); reference rank r scores actor rank r's pairs
    accumulation: int  # micro-batches per optimiser step on each actor rank
    reference_group: bool  # whether a reference group is created (:func:`ray_dpo_reference_group`)


def ray_dpo_sizes(cfg: "Config") -> RayDPOSizes:
    """DPO on Ray: the reference group (if any) has the actor's ranks, and
    ``train.train_batch_size`` splits over them (``train.micro_batch_size`` × accumulation)."""
    world = cfg.resources.actor.world_size
    reference = cfg.resources.actor if cfg.resources.colocate_actor_ref else cfg.resources.reference
    group = ray_dpo_reference_group(cfg)
    # rank r of the reference scores the micro-batches of actor rank r
    _require(
        reference.world_size == world or not group,
        "resources.reference",
        f"{reference.world_size} ranks, DPO on Ray needs as many as resources.actor ({world})",
    )
    return RayDPOSizes(
        world=world, accumulation=cfg.train.accumulation_steps(world), reference_group=group
    )


@dataclass(frozen=True)
class OnlineDPOSizes:
    """The sizes of one online DPO iteration (see :func:`online_dpo_sizes`)."""

    world: int  # the actor's ranks (resources.actor); a reference group has as many
    pairs: int  # pairs an iteration forms: one per prompt (rollout.rollout_batch_size)
    steps_per_iteration: int  # optimiser steps per iteration: pairs / train.train_batch_size
    accumulation: int  # micro-batches per optimiser step on each actor rank
    total_steps: int  # optimiser steps of the run (x ppo.iterations)
    reference_group: bool  # whether a reference group is created (as DPO on Ray)


def online_dpo_sizes(cfg: "Config") -> OnlineDPOSizes:
    """Online DPO: each iteration samples ``rollout.n_samples_per_prompt`` (>= 2) answers to
    ``rollout.rollout_batch_size`` prompts and forms one pair per prompt; the pairs go to
    optimiser steps of ``train.train_batch_size`` pairs, split over the actor's ranks in
    micro-batches of ``train.micro_batch_size`` pairs."""
    rollout, train, res = cfg.rollout, cfg.train, cfg.resources
    _require(
        rollout.n_samples_per_prompt >= 2,
        "rollout.n_samples_per_prompt",
        f"is {rollout.n_samples_per_prompt}; online DPO pairs the best and the worst of "
        "each prompt's answers and needs >= 2",
    )
    _require(
        not cfg.dpo.unpaired,
        "dpo.loss_type",
        f"{cfg.dpo.loss_type} learns from "
        "unpaired rows; online DPO forms pairs (sigmoid, ipo, hinge, simpo, orpo)",
    )
    pairs, world = rollout.rollout_batch_size, res.actor.world_size
    _require(
        pairs % train.train_batch_size == 0,
        "train.train_batch_size",
        f"{train.train_batch_size} pairs per optimiser step do not divide the {pairs} "
        "pairs of an iteration (rollout.rollout_batch_size: one pair per prompt)",
    )
    _require(
        pairs % world == 0,
        "rollout.rollout_batch_size",
        f"{pairs} prompts do not split evenly over resources.actor ranks={world}",
    )
    dpo = ray_dpo_sizes(cfg)  # the reference group's ranks, as DPO on Ray
    steps = pairs // train.train_batch_size
    return OnlineDPOSizes(
        world=world,
        pairs=pairs,
        steps_per_iteration=steps,
        accumulation=dpo.accumulation,
        total_steps=cfg.ppo.iterations * steps,
        reference_group=dpo.reference_group,
    )


def resolve_job(cfg: "Config", job: str) -> "Config":
    """The resolve step of ``job`` (a key of ``config.usage.JOBS``: ``dpo-ray`` for DPO with
    ``dpo.mode=ray``), run at load: its sizes checked, and for a job with one trained model
    ``train.gradient_accumulation_steps`` filled for its data-parallel ranks (the launcher's
    ``WORLD_SIZE``; DPO on Ray and online DPO: the actor's ranks).  Idempotent."""
    if job == "ppo":
        ppo_sizes(cfg)
    elif job == "dpo-ray":
        cfg.resolve(ray_dpo_sizes(cfg).world)
    elif job == "online-dpo":
        cfg.resolve(online_dpo_sizes(cfg).world)
    elif job in _LAUNCHER_JOBS:
        cfg.resolve(launcher_world_size())
    else:
        raise ValueError(f"unknown job {job!r}")
    if job in _PAIR_OR_RESPONSE_JOBS:
        cfg.data.check_response_room()
    return cfg
