"""One trajectory's environment, run with the contract's checks, a time limit per call and
``env.on_error``: :class:`EnvFactory` (from ``env.*``) makes an :class:`Episode` per prompt row.

* The environment objects live in an env host (:mod:`.host`): in this process, or in a pool
  of Ray actors (``env.workers``).  Every call -- constructing the environment, ``reset``,
  ``step``, ``close`` -- runs under ``env.step_timeout_s`` (:mod:`.timeout`: a hung call's
  thread is abandoned, not killed).
* An environment that raises, returns the wrong types or times out is an :class:`EnvError`
  naming ``env.name``, the row (its index and the start of its prompt), the call and the turn.
  With ``env.on_error: zero_reward`` it is counted in :class:`EnvStats` instead (the first few
  messages kept, one warning logged) and the trajectory ends there with reward 0, marked
  ``failed`` so the rollout can tell it from a real zero.
* The episode ends when the environment says done, after ``env.max_turns`` model turns
  (``truncated = "max_turns"``), or when the rollout calls :meth:`Episode.stop` (e.g. at
  ``env.max_trajectory_tokens``).
"""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional

from rlhf_dist.config.checks import ConfigError
from rlhf_dist.config.registries import ENVIRONMENTS

from .base import EnvTypeError, Observation, StepResult, check_observation, check_step
from .host import EnvHostLost, LocalEnvHost, RemoteCallError
from .timeout import CallTimeout

logger = logging.getLogger(__name__)
ON_ERROR = ("error", "zero_reward")
MAX_KEPT = 5  # EnvStats keeps this many error messages
PREVIEW = 60  # characters of the prompt that name a row
_KEYS = itertools.count()  # episode keys (an env host holds each episode's env by its key)


class EnvError(RuntimeError):
    """An environment that raised, broke the contract or timed out; the message names the
    environment, the row and the call."""


def describe_row(row_id: Any, row: Mapping[str, Any]) -> str:
    """``row 3 (prompt 'what is 123 + 456?')`` -- the row's index and the start of its prompt."""
    prompt = row.get("prompt") if isinstance(row, Mapping) else None
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[-1], Mapping):
        prompt = prompt[-1].get("content")
    if not isinstance(prompt, str):
        return f"row {row_id}"
    text = " ".join(prompt.split())
    text = text if len(text) <= PREVIEW else text[: PREVIEW - 3] + "..."
    return f"row {row_id} (prompt {text!r})"


class EnvStats:
    """Counts over many trajectories (thread-safe): trajectories started and the ones whose
    environment failed under ``env.on_error: zero_reward``, with the first messages."""

    def __init__(self):
        self._lock = threading.Lock()
        self.episodes, self.failures = 0, 0
        self.messages: List[str] = []

    def started(self) -> None:
        with self._lock:
            self.episodes += 1

    def failed(self, message: str) -> None:
        with self._lock:
            self.failures += 1
            if len(self.messages) < MAX_KEPT:
                self.messages.append(message)
            first = self.failures == 1
        if first:
            logger.warning(
                "%s (env.on_error=zero_reward: the trajectory ends with reward 0; "
                "later failures are counted, not logged)",
                message,
            )

    def metrics(self) -> Dict[str, float]:
        with self._lock:
            return {"env/trajectories": float(self.episodes), "env/failed": float(self.failures)}


class Episode:
    """One trajectory's environment: :meth:`reset`, then :meth:`step` per model turn until
    :attr:`done`; :meth:`metrics` for the trajectory's log line."""

    def __init__(self, factory: "EnvFactory", row: Mapping[str, Any], row_id: Any = 0):
        self.factory, self.row, self.row_id = factory, row, row_id
        self.key = factory.new_key()  # the environment's key in the host
        self.created = False
        self.turns = 0
        self.rewards: List[float] = []
        self.infos: List[Dict[str, Any]] = []
        self.done = self.failed = False
        self.truncated: Optional[str] = None  # why the rollout or max_turns cut it
        self.error: Optional[str] = None

    # ------------------------------------------------------------------ calls

    def _where(self, call: str) -> str:
        turn = f" (turn {self.turns})" if call == "step" else ""
        return (
            f"env.name {self.factory.name!r}, {describe_row(self.row_id, self.row)}: {call}{turn}"
        )

    def _call(self, call: str, *args: Any) -> Any:
        """The host's ``create`` (``call == "construction"``) or the environment's method
        ``call``; what goes wrong is an :class:`EnvError` naming the row and the call."""
        host = self.factory.host
        try:
            if call == "construction":
                return host.create(self.key)
            return host.call(self.key, call, *args)
        except CallTimeout as err:
            raise EnvError(
                f"{self._where(call)} {err} (env.step_timeout_s; the call's thread is abandoned)"
            ) from None
        except EnvHostLost:  # the environment's process died: not the environment's fault
            raise
        except RemoteCallError as err:  # raised in an env worker: its own type's name
            raise EnvError(f"{self._where(call)} raised {err.kind}: {err}") from None
        except Exception as err:  # the environment's own error, named with the row
            raise EnvError(f"{self._where(call)} raised {type(err).__name__}: {err}") from err

    def _fail(self, err: EnvError) -> None:
        """``env.on_error``: re-raise, or end the trajectory with reward 0 (counted)."""
        if self.factory.on_error != "zero_reward":
            raise err
        self.done = self.failed = True
        self.error = str(err)
        self.rewards = [0.0] * len(self.rewards)
        self.factory.stats.failed(self.error)

    # ------------------------------------------------------------------ the episode

    def reset(self) -> Optional[Observation]:
        """The first observation (the prompt the model sees); None when the environment
        failed under ``zero_reward`` (then :attr:`done`)."""
        self.factory.stats.started()
        try:
            self._call("construction")
            self.created = True
            value = self._call("reset", self.row)
            try:
                return check_observation(value, first=True)
            except EnvTypeError as err:
                raise EnvError(f"{self._where('reset')} returned {err}") from None
        except EnvError as err:
            self._fail(err)
            return None

    def step(self, action: str) -> StepResult:
        """Give the environment the model's turn ``action``; the checked result (its ``done``
        also true at ``env.max_turns`` or after a failure)."""
        if self.done:
            raise RuntimeError(f"{self._where('step')}: the episode is over")
        if not isinstance(action, str):
            raise TypeError(
                f"action must be the decoded model turn (str), got {type(action).__name__}"
            )
        self.turns += 1
        try:
            value = self._call("step", action)
            try:
                result = check_step(value)
            except EnvTypeError as err:
                raise EnvError(f"{self._where('step')} returned {err}") from None
        except EnvError as err:
            self._fail(err)
            return StepResult(None, 0.0, True, {"env_error": self.error})
        self.rewards.append(result.reward)
        self.infos.append(result.info)
        self.done = result.done
        if not self.done and self.turns >= self.factory.max_turns:
            self.stop("max_turns")
            result = result._replace(done=True)
        return result

    def stop(self, reason: str) -> None:
        """End the trajectory from outside (``reason``, e.g. ``max_trajectory_tokens``)."""
        self.done, self.truncated = True, reason

    def close(self) -> None:
        """The environment's ``close`` (if any), then the host forgets it; a failure here is
        logged, not raised."""
        if not self.created:
            return
        try:
            self._call("close")
        except EnvError as err:
            logger.warning("%s", err)
        finally:
            self.created = False
            self.factory.host.drop(self.key)

    @property
    def reward(self) -> float:
        """The trajectory's reward: the sum of its steps' (0 when it failed)."""
        return float(sum(self.rewards))

    def metrics(self) -> Dict[str, float]:
        """``turns``, ``reward``, ``truncated``, ``failed`` and every numeric ``info`` value
        summed over the steps (``tool_calls``, ``tool_errors`` of the tool environments)."""
        out = {
            "turns": float(self.turns),
            "reward": self.reward,
            "truncated": float(self.truncated is not None),
            "failed": float(self.failed),
        }
        for info in self.infos:
            for key, value in info.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    out[key] = out.get(key, 0.0) + float(value)
        return out


def env_builder(env) -> Callable[[], Any]:
    """What makes one environment of the ``env`` section (``Env(**env.args)``, or the class's
    ``from_config(env)``); the class is imported now."""
    env_cls = ENVIRONMENTS.get(env.name, ConfigError)
    if hasattr(env_cls, "from_config"):

        def build() -> Any:
            return env_cls.from_config(env)
    else:

        def build() -> Any:
            return env_cls(**env.args)

    return build


class EnvFactory:
    """Makes the :class:`Episode` of each prompt row for one environment: ``build`` makes a
    new environment, held by ``host`` (default: a :class:`~.host.LocalEnvHost` of ``build``
    with the ``step_timeout_s`` limit; a remote host builds its own)."""

    def __init__(
        self,
        name: str,
        build: Optional[Callable[[], Any]],
        max_turns: int = 4,
        step_timeout_s: Optional[float] = 30.0,
        on_error: str = "error",
        stats: Optional[EnvStats] = None,
        host: Any = None,
    ):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if host is None and build is None:
            raise ValueError("EnvFactory needs build (a local host) or a host")
        self.name, self.build, self.max_turns = name, build, max_turns
        self.step_timeout_s, self.on_error = step_timeout_s, on_error
        self.stats = stats or EnvStats()
        self.host = host if host is not None else LocalEnvHost(build, step_timeout_s)

    @classmethod
    def from_config(cls, env, stats: Optional[EnvStats] = None, host: Any = None) -> "EnvFactory":
        """From the ``env`` section (:class:`~rlhf_dist.config.env.EnvConfig`); the class is
        imported now (run :func:`~rlhf_dist.envs.checks.check_env` first for the early,
        clear errors).  ``host``: where the environments live (default: this process)."""
        build = env_builder(env) if host is None else None
        return cls(env.name, build, env.max_turns, env.step_timeout_s, env.on_error, stats, host)

    @staticmethod
    def new_key() -> int:
        """A key no other episode of this process has (thread-safe; factories may share a
        host)."""
        return next(_KEYS)

    def episode(self, row: Mapping[str, Any], row_id: Any = 0) -> Episode:
        """A new (not yet reset) trajectory for ``row`` (``row_id`` names it in errors)."""
        return Episode(self, row, row_id)
