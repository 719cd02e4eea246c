"""The rollout interface: what turns a batch of prompts into experience for the PPO/GRPO driver.

A rollout backend is one class registered in
:data:`rlhf_dist.config.registries.ROLLOUT_BACKENDS` under the name users give as
``rollout.backend`` (built-ins: ``hf``, sampled on the actor's own ranks; ``vllm``, sampled by
vLLM engines in Ray actors of their own); a ``package.module:Class`` not registered works too.
The driver names no backend: it calls the hooks below, in this order, and nothing else.

Life of a backend object (``cfg`` is the whole :class:`~rlhf_dist.config.Config`):

1. ``Backend(cfg, tokenizer)`` -- on the driver, before Ray starts: cheap checks.
   ``cpus()``: the CPUs its own processes reserve (added to the job's Ray instance).
2. ``check()`` -- Ray is up, no worker started yet: the checks that need the cluster (what
   devices the workers get).  A :class:`~rlhf_dist.config.ConfigError` names the field.
3. ``bundles()`` / ``actor_share()`` -- asked by ``workers.cluster.create_roles``: the
   placement bundles of its own processes (``[]``: none) and the share of each actor bundle
   it takes when it shares the actor's devices (0: none).  Then ``start(actor, placement)``:
   its processes are created (``placement``: its placement group, or the actor's when it has
   no bundles).  Called again after a recovery: ``start`` begins from a clean state.
4. ``connect()`` -- every learner group is built: e.g. form the weight-sync group.
5. Per generation: ``sync_weights(version)`` then ``next_batch(draw, version)``, which by
   default draws one prompt batch (``draw() -> (prompts, seed, rows)``) and returns
   ``(rows, *generate(prompts, seed, rows))``; an asynchronous wrapper draws ahead
   (:mod:`rlhf_dist.rollout.async_rollout`).  Wrappers -- multi-turn trajectories -- call
   ``sample`` as often as they need, then ``release``.
   ``version`` is the driver's iteration: the actor's weights changed since the backend last
   saw a smaller one; a backend that samples from a copy of the weights brings them up to
   date (and wakes what sleeps); metrics such as ``perf/weight_sync_s``.
6. ``kill()`` -- its processes are gone (idempotent).

``generate(prompts, seed, rows) -> (experience, metrics)``:

* ``prompts``: ``Batch{input_ids, attention_mask}`` ``(B, P)``, LEFT-padded with the
  tokenizer's pad id; ``rows``: the B prompt rows as the data gives them (``label``,
  ``extras``...), for backends whose sampling depends on them (environments).
* ``seed``: the batch's sampling seed; a backend derives every row's randomness from it, so a
  (seed, weights) pair reproduces its samples.
* ``experience``: ``N = B · n`` rows (``n = rollout.n_samples_per_prompt``; the n samples of
  prompt ``i`` are rows ``i·n … i·n+n−1``) with ``sequences`` / ``attention_mask`` ``(N, T)``
  (the prompt left-padded in columns ``[0, P)``, ``meta["prompt_length"] = P``, the response
  right-padded after it), ``action_mask`` ``(N, T−1)`` (1 where column ``t+1`` is a sampled
  token that is trained on) and ``old_logprobs`` ``(N, T−1)``: the behaviour log-probs of
  those tokens under the actor's current weights at ``rollout.temperature``; optionally
  ``engine_logprobs`` (the sampler's own, for ``rollout.use_engine_logprobs``).  The grid is
  :mod:`rlhf_dist.rollout.generate`'s; :func:`~rlhf_dist.rollout.generate.rollout_batch`
  builds it from token ids.
  Optionally ``rollout_scores`` ``(N,)`` (a part of the sequence reward the rollout itself
  observed: an environment's) and ``truncated`` ``(N,)`` bool (rows the backend cut short;
  else a response without a stop token is).
* ``metrics``: floats logged with the iteration (``rollout/...``).

``sample(prompts, seed, n) -> Batch``: ``n`` continuations of each prompt row on the same
grid, without ``old_logprobs`` (``engine_logprobs`` when the sampler has its own); the
building block of wrappers.  ``release()``: the iteration's sampling is over (engines that
share the actor's devices go to sleep).

Backends that sample in processes of their own (``runs_ahead = True``) split ``generate``
into ``produce(prompts, seed, rows) -> (experience, metrics)`` -- the sampling alone, no call
to the actor, so it may run on another thread while the learners train -- and
``finish(experience) -> (experience, metrics)`` -- the behaviour log-probs, by the actor at
its version then.  ``pending_state()`` / ``restore_pending(entries)``: experience sampled
but not yet trained on, saved with a checkpoint (none for a synchronous backend).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from rlhf_dist.config import Config, ConfigError
from rlhf_dist.config.registries import ROLLOUT_BACKENDS
from rlhf_dist.protocol import Batch

Metrics = Dict[str, float]


class Rollout:
    """Base of every rollout backend: the hooks' defaults (a backend that samples in the
    driver or on the actor's ranks overrides ``generate`` only).

    In-process sampling (``rlhf-dist eval`` / ``label``, :mod:`rlhf_dist.rollout.backends`):
    ``sampler_needs_model`` (it samples from the loaded HF model, else from its directory),
    ``check_sampler`` (what fails before a model is loaded), ``make_sampler``."""

    sampler_needs_model = True
    runs_ahead = False  # produce() needs no actor call: it may run ahead of the learners

    @classmethod
    def check_sampler(
        cls, model_dir: Optional[str], max_model_len: int, field: str, model_field: str
    ) -> None:
        return None

    @classmethod
    def make_sampler(cls, **kwargs: Any) -> Any:
        raise ConfigError(
            f"rollout backend {cls.__name__} samples only in the PPO driver "
            "(it has no in-process sampler)"
        )

    def __init__(self, cfg: Config, tokenizer: Any):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.pad_token_id = tokenizer.pad_token_id
        self.actor: Any = None

    def cpus(self) -> float:
        return 0.0

    def check(self) -> None:
        return None

    def bundles(self) -> List[Dict[str, float]]:
        return []

    def actor_share(self) -> float:
        return 0.0

    def start(self, actor: Any, placement: Any) -> None:
        self.actor = actor

    def connect(self) -> None:
        return None

    def sync_weights(self, version: int) -> Metrics:
        return {}

    def next_batch(
        self, draw: Callable[[], Tuple[Batch, int, List[dict]]], version: int
    ) -> Tuple[List[dict], Batch, Metrics]:
        prompts, seed, rows = draw()
        experience, metrics = self.generate(prompts, seed, rows)
        return rows, experience, metrics

    def generate(self, prompts: Batch, seed: int, rows: Sequence[dict]) -> Tuple[Batch, Metrics]:
        experience, sampled = self.produce(prompts, seed, rows)
        experience, finished = self.finish(experience)
        return experience, {**sampled, **finished}

    def produce(self, prompts: Batch, seed: int, rows: Sequence[dict]) -> Tuple[Batch, Metrics]:
        raise NotImplementedError(f"{type(self).__name__} overrides generate only")

    def finish(self, experience: Batch) -> Tuple[Batch, Metrics]:
        return self.with_behaviour_logprobs(experience), {}

    def pending_state(self) -> List[Any]:
        return []

    def restore_pending(self, entries: List[Any]) -> None:
        if entries:
            raise ConfigError(
                f"the checkpoint holds {len(entries)} batches of experience "
                "sampled ahead (rollout.max_staleness >= 1); this run is "
                "synchronous: resume it with the same rollout.max_staleness"
            )

    def sample(self, prompts: Batch, seed: int, n: int) -> Batch:
        raise NotImplementedError(
            f"{type(self).__name__} cannot continue token prefixes "
            "(multi-turn rollouts need Rollout.sample)"
        )

    def release(self) -> None:
        return None

    def kill(self) -> None:
        return None

    def with_behaviour_logprobs(self, experience: Batch) -> Batch:
        """``experience`` plus ``old_logprobs`` computed by the actor group (for backends
        that sample elsewhere)."""
        return experience.with_(old_logprobs=self.actor.logprobs(experience).result())


class RolloutWrapper(Rollout):
    """A rollout around another (``inner``: multi-turn trajectories, the asynchronous
    pipeline): the processes, placement, weights and lifetime are the inner backend's; a
    wrapper overrides how batches are made (``generate`` / ``produce`` / ``next_batch``)."""

    def __init__(self, inner: Rollout):
        super().__init__(inner.cfg, inner.tokenizer)
        self.inner = inner

    @property
    def runs_ahead(self) -> bool:  # type: ignore[override]
        return self.inner.runs_ahead

    def cpus(self) -> float:
        return self.inner.cpus()

    def check(self) -> None:
        self.inner.check()

    def bundles(self) -> List[Dict[str, float]]:
        return self.inner.bundles()

    def actor_share(self) -> float:
        return self.inner.actor_share()

    def start(self, actor: Any, placement: Any) -> None:
        super().start(actor, placement)
        self.inner.start(actor, placement)

    def connect(self) -> None:
        self.inner.connect()

    def sync_weights(self, version: int) -> Metrics:
        return self.inner.sync_weights(version)

    def release(self) -> None:
        self.inner.release()

    def kill(self) -> None:
        self.inner.kill()


def rollout_backend(name: str) -> Type[Rollout]:
    """The backend class ``rollout.backend`` names (a :class:`ConfigError` otherwise)."""
    cls = ROLLOUT_BACKENDS.get(name, ConfigError)
    if not (isinstance(cls, type) and issubclass(cls, Rollout)):
        raise ConfigError(
            f"rollout.backend {name!r}: {cls!r} is not a "
            "rlhf_dist.rollout.interface.Rollout subclass"
        )
    return cls


def register_rollout(name: str, cls: Optional[Type[Rollout]] = None):
    """Register a backend as ``rollout.backend: name`` (usable as a class decorator)."""
    return ROLLOUT_BACKENDS.register(name) if cls is None else ROLLOUT_BACKENDS.register(name)(cls)


__all__ = ["Rollout", "RolloutWrapper", "register_rollout", "rollout_backend"]
