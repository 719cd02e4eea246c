"""Multi-turn rollouts (``env.name`` set): trajectories of model turns and environment
observations, over any rollout backend that can continue token prefixes
(:meth:`Rollout.sample`).

A trajectory starts from its prompt's token ids -- the data's own, or the tokenised
``reset`` observation when that differs -- then, until the episode ends (:mod:`rlhf_dist.envs`:
the environment says done, ``env.max_turns`` model turns, ``env.max_trajectory_tokens``):

1. every live trajectory is continued by one model turn (``rollout.max_new_tokens`` at most,
   up to and including its stop token), sampled from its token ids as they are -- the
   sampled ids are kept as sampled, never decoded and tokenised again;
2. the turn's text (decoded, special tokens dropped) is the environment's ``step`` action
   (trajectories step concurrently, each call under ``env.step_timeout_s``);
3. the observation, unless the episode ended, is tokenised and appended: a text verbatim, a
   message list through the conversation format (:meth:`~rlhf_dist.data.convert.Renderer.
   observation`: the chat template with ``data.apply_chat_template``, else the plain format),
   so the trajectory reads as the SFT rows of the same conversation do.

The experience (the :mod:`~rlhf_dist.rollout.interface` contract): the prompt left-padded,
then the trajectory right-padded; ``action_mask`` is 1 exactly on the model's tokens, so
observation tokens are context only -- no loss, no KL, no value target; GAE walks over them as
gaps (:func:`~rlhf_dist.algo.gae`: the value after a model turn is the next turn's first
token's).  Also ``rollout_scores`` (N,): the sum of the trajectory's step rewards (added to
the RM / reward functions' score of the transcript; with ``env.turn_rewards`` also
``step_rewards`` (N, T−1): each step's reward on the last action of the model turn it
answered, where the token rewards put it), and ``truncated`` (N,): cut by
``env.max_turns`` or the token budget (``ppo.mask_truncated`` masks those).  The behaviour
log-probs are the actor's over the whole trajectory.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from rlhf_dist.data.convert import Renderer
from rlhf_dist.data.tokenization import Encoder, encode
from rlhf_dist.envs import EnvFactory, Episode, check_env
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout.generate import response_token_ids
from rlhf_dist.rollout.interface import Metrics, Rollout, RolloutWrapper
from rlhf_dist.utils.seeding import derive_seed

TURN = 10_007  # the seed stream of a trajectory batch's turns (index: the turn)


@dataclass
class Trajectory:
    """One trajectory's token ids after its prompt, whether each is the model's, and the
    conversation so far as messages (for rendering observations)."""

    episode: Episode
    prompt: List[int]
    budget: int  # tokens the trajectory may add after its prompt
    tokens: List[int] = field(default_factory=list)
    trained: List[bool] = field(default_factory=list)
    engine_logprobs: List[float] = field(default_factory=list)
    history: List[Dict[str, Any]] = field(default_factory=list)
    pending: List[int] = field(default_factory=list)  # the last model turn's ids
    # where each stepped model turn ends (index in ``tokens``): the step rewards' places
    turn_ends: List[int] = field(default_factory=list)
    sampler_logprobs: bool = False  # the sampler gave its own log-probs of the turns

    @property
    def ids(self) -> List[int]:
        return self.prompt + self.tokens

    def add(self, ids: Sequence[int], model: bool, logprobs: Sequence[float] = ()) -> bool:
        """Append ``ids`` (cut at the budget); False when the budget ran out."""
        room = self.budget - len(self.tokens)
        kept = list(ids)[: max(room, 0)]
        self.tokens += kept
        self.trained += [model] * len(kept)
        self.engine_logprobs += (list(logprobs) or [0.0] * len(kept))[: len(kept)]
        return len(kept) == len(ids) and len(self.tokens) < self.budget


def left_padded(rows: Sequence[Sequence[int]], pad: int) -> Batch:
    """``Batch{input_ids, attention_mask}`` of token-id rows, left-padded to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return Batch({"input_ids": ids, "attention_mask": mask})


def trajectory_batch(trajectories: Sequence[Trajectory], pad: int, n: int) -> Batch:
    """The experience grid of :mod:`rlhf_dist.rollout.generate` for whole trajectories:
    prompts left-padded to ``P``, trajectories right-padded, ``action_mask`` on model tokens,
    ``step_rewards`` each environment step's reward on the last action of its model turn."""
    P = max(len(t.prompt) for t in trajectories)
    L = max(1, max(len(t.tokens) for t in trajectories))
    N = len(trajectories)
    sequences = torch.full((N, P + L), pad, dtype=torch.long)
    attention = torch.zeros((N, P + L), dtype=torch.long)
    action = torch.zeros((N, P + L - 1), dtype=torch.long)
    engine = torch.zeros((N, P + L - 1))
    steps = torch.zeros((N, P + L - 1))
    for r, t in enumerate(trajectories):
        sequences[r, P - len(t.prompt) : P] = torch.tensor(t.prompt, dtype=torch.long)
        attention[r, P - len(t.prompt) : P + len(t.tokens)] = 1
        if t.tokens:
            sequences[r, P : P + len(t.tokens)] = torch.tensor(t.tokens, dtype=torch.long)
            action[r, P - 1 : P - 1 + len(t.tokens)] = torch.tensor(t.trained, dtype=torch.long)
            engine[r, P - 1 : P - 1 + len(t.tokens)] = torch.tensor(t.engine_logprobs)
        for end, reward in zip(t.turn_ends, t.episode.rewards):
            steps[r, P - 1 + end] += reward
    return Batch(
        {
            "sequences": sequences,
            "attention_mask": attention,
            "action_mask": action,
            "engine_logprobs": engine * action,
            "step_rewards": steps,
        },
        meta={"prompt_length": P, "n_samples_per_prompt": n},
    )


class MultiTurnRollout(RolloutWrapper):
    """Wraps the ``rollout.backend`` sampler (``inner``): every hook but ``generate`` is
    the inner backend's; ``generate`` runs the trajectories (see the module).

    ``env_pool``: where the environments live when not in this process (``env.workers``) --
    an env host (:mod:`rlhf_dist.envs.host`: ``create``/``call``/``drop``) with processes of
    its own, ``cpus()`` (added to the backend's), ``start()`` (with the backend's, again after
    a recovery) and ``kill()``; built above this layer (``workers.env_pool.EnvPool``) and
    handed in by whoever makes the rollout (``rollout.factory.make_rollout``)."""

    def __init__(self, inner: Rollout, env_pool: Any = None):
        super().__init__(inner)
        check_env(self.cfg.env)  # env.name, its args, tools: before Ray starts
        self.env_pool = env_pool
        data = self.cfg.data
        self.renderer = Renderer(self.tokenizer, data.apply_chat_template)
        self.encoder = Encoder(
            self.tokenizer,
            data.max_length,
            data.max_prompt_length,
            add_bos=not data.apply_chat_template,
        )
        self.factory = EnvFactory.from_config(self.cfg.env, host=env_pool)

    # -------------------------------------------- the inner backend's, plus the env pool's
    def cpus(self) -> float:
        return super().cpus() + (self.env_pool.cpus() if self.env_pool else 0.0)

    def start(self, actor: Any, placement: Any) -> None:
        super().start(actor, placement)
        if self.env_pool:
            self.env_pool.start()

    def kill(self) -> None:
        super().kill()
        if self.env_pool:
            self.env_pool.kill()

    def produce(self, prompts: Batch, seed: int, rows: Sequence[dict]) -> Tuple[Batch, Metrics]:
        return self.trajectories(prompts, seed, rows)

    # ---------------------------------------------------------------- trajectories
    def trajectories(
        self, prompts: Batch, seed: int, rows: Sequence[dict]
    ) -> Tuple[Batch, Metrics]:
        """The trajectories of ``n_samples_per_prompt`` episodes per prompt row, without the
        behaviour log-probs (evaluation needs none)."""
        timings: Dict[str, float] = {}
        trajectories = self.run(prompts, seed, rows, timings)
        return self.experience(trajectories), {**self.metrics(trajectories), **timings}

    def run(
        self,
        prompts: Batch,
        seed: int,
        rows: Sequence[dict],
        timings: Optional[Dict[str, float]] = None,
    ) -> List[Trajectory]:
        """``n_samples_per_prompt`` finished trajectories per prompt row (the ``n`` of row
        ``i`` at ``i·n … i·n+n−1``), their environments closed; ``t.episode.metrics()`` is
        each one's log line (reward, turns, tool calls...).  ``timings`` (if given) gets the
        wall seconds of the model turns (``perf/time_turns``) and of the environments' calls
        (``perf/time_env``: reset, steps, close and the observations' tokenisation --
        concurrent over the trajectories).  Both are parts of the driver's
        ``perf/time_generate``."""
        clock = {"perf/time_turns": 0.0, "perf/time_env": 0.0}

        @contextlib.contextmanager
        def timed(key: str):
            start = time.perf_counter()
            yield
            clock[key] += time.perf_counter() - start

        n = self.cfg.rollout.n_samples_per_prompt
        ids, mask = prompts["input_ids"], prompts["attention_mask"].bool()
        prompt_ids = [ids[i][mask[i]].tolist() for i in range(len(prompts))]
        budget = self.cfg.env.max_trajectory_tokens
        trajectories = [
            Trajectory(
                self.factory.episode(rows[i // n], i // n),
                prompt_ids[i // n],
                budget - len(prompt_ids[i // n]),
            )
            for i in range(len(prompts) * n)
        ]
        with concurrent.futures.ThreadPoolExecutor(min(32, len(trajectories))) as pool:
            with timed("perf/time_env"):
                list(pool.map(self._reset, trajectories))
            turn = 0
            live = [t for t in trajectories if not t.episode.done]
            while live:
                with timed("perf/time_turns"):
                    self._model_turn(live, derive_seed(seed, turn, TURN))
                with timed("perf/time_env"):
                    list(pool.map(self._env_turn, live))
                live = [t for t in live if not t.episode.done]
                turn += 1
            with timed("perf/time_env"):
                list(pool.map(lambda t: t.episode.close(), trajectories))
        self.inner.release()
        if timings is not None:
            timings.update(clock)
        return trajectories

    def experience(self, trajectories: Sequence[Trajectory]) -> Batch:
        """The experience of finished trajectories (the module's grid; ``rollout_scores``,
        ``truncated``; ``engine_logprobs`` when the policy loss is weighted by them;
        ``step_rewards`` with ``env.turn_rewards``)."""
        n = self.cfg.rollout.n_samples_per_prompt
        experience = trajectory_batch(trajectories, self.pad_token_id, n)
        experience = experience.with_(
            rollout_scores=torch.tensor([t.episode.reward for t in trajectories]),
            truncated=torch.tensor([t.episode.truncated is not None for t in trajectories]),
        )
        if not all(t.sampler_logprobs for t in trajectories if t.tokens):
            experience = experience.drop(["engine_logprobs"])  # the sampler has none (HF)
        if not self.cfg.env.turn_rewards:
            experience = experience.drop(["step_rewards"])  # all on the last token
        return experience

    def finish(self, experience: Batch) -> Tuple[Batch, Metrics]:
        """The inner backend's: the actor's behaviour log-probs over the whole trajectories
        (vLLM: next to the engine's, ``rollout/logprob_abs_diff_*``; the engine's kept only
        for importance weights)."""
        return self.inner.finish(experience)

    def _reset(self, trajectory: Trajectory) -> None:
        """The first observation: the model's prompt (its text tokenised like a data prompt
        when it is not the row's own)."""
        first = trajectory.episode.reset()
        if first is None:
            return
        text, messages = self.renderer.prompt(first, "env.reset")
        trajectory.history = list(messages)
        if text != trajectory.episode.row.get("prompt"):
            trajectory.prompt = self.encoder.prompt(text)
            trajectory.budget = self.cfg.env.max_trajectory_tokens - len(trajectory.prompt)
        if trajectory.budget <= 0:
            trajectory.episode.stop("max_trajectory_tokens")

    def _model_turn(self, live: List[Trajectory], seed: int) -> None:
        sampled = self.inner.sample(left_padded([t.ids for t in live], self.pad_token_id), seed, 1)
        turns = response_token_ids(sampled)
        engine = sampled["engine_logprobs"] if "engine_logprobs" in sampled else None
        mask = sampled["action_mask"].bool()  # the engine's log-probs are on the action grid
        for row, (t, turn) in enumerate(zip(live, turns)):
            logprobs = engine[row][mask[row]].tolist() if engine is not None else ()
            t.sampler_logprobs = engine is not None
            t.pending = turn
            if not t.add(turn, True, logprobs):
                t.episode.stop("max_trajectory_tokens")

    def _env_turn(self, trajectory: Trajectory) -> None:
        """The environment's step on the model's last turn; its observation appended."""
        episode, turn = trajectory.episode, trajectory.pending
        if episode.done:  # cut by the budget: the turn is not an action
            return
        action = self.tokenizer.decode(turn, skip_special_tokens=True)
        trajectory.turn_ends.append(len(trajectory.tokens) - 1)
        result = episode.step(action)
        trajectory.history.append({"role": "assistant", "content": action})
        if episode.done or result.observation is None:
            return
        observation = self._observation_ids(trajectory, result.observation)
        if not trajectory.add(observation, False):
            episode.stop("max_trajectory_tokens")

    def _observation_ids(self, trajectory: Trajectory, observation: Any) -> List[int]:
        if isinstance(observation, str):
            return encode(self.tokenizer, observation)
        eos = self.tokenizer.eos_token or ""
        text = self.renderer.observation(trajectory.history, list(observation), eos)
        trajectory.history += list(observation)
        return encode(self.tokenizer, text)

    def metrics(self, trajectories: Sequence[Trajectory]) -> Metrics:
        """``env/<key>_mean`` over the trajectories (turns, reward, truncated, failed, the
        tools' counts) and the failure counts (``env/failed``)."""
        rows = [t.episode.metrics() for t in trajectories]
        keys = sorted({k for row in rows for k in row})
        metrics = {f"env/{k}_mean": sum(row.get(k, 0.0) for row in rows) / len(rows) for k in keys}
        metrics["env/trajectory_tokens_mean"] = sum(len(t.tokens) for t in trajectories) / len(
            trajectories
        )
        return metrics


__all__ = ["MultiTurnRollout", "Trajectory", "left_padded", "trajectory_batch"]
