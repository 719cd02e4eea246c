"""A reward model behind HTTP (``ppo.reward_url``): the decoded prompts, responses and labels
are POSTed in batches and the returned scores are the reward.  Two protocols
(``ppo.reward_url_protocol``, :data:`PROTOCOLS`):

* ``rlhf_dist`` (``rlhf-dist serve-rm``): ``POST <url>/score`` ``{"prompts": [str],
  "responses": [str], "labels": [any]}`` -> ``{"scores": [float]}``; ``GET <url>/health``
  answers 200 when the server is up.
* ``openrlhf`` (OpenRLHF's ``--remote_rm_url`` servers): ``POST <url>`` (the full endpoint,
  e.g. ``http://host:5000/get_reward``) ``{"query": [prompt + response], "prompts": [str],
  "labels": [any]}`` -> ``{"rewards": [float]}`` (``"scores"``, ``"extra_logs"`` may come
  too); such servers have no health route, so the start-up check opens a TCP connection.

A bearer token is read from the environment variable ``ppo.reward_url_token_env`` names (never
from the config, never logged).

Failures: the server unreachable at start -- a :class:`RewardError` naming the URL before
training starts (one check); a call that fails (connection error, timeout, 5xx) is retried
``ppo.reward_url_retries`` times with exponential backoff, then a ``RewardError`` naming the
URL; a 4xx (the server refused the request: it says why) and an answer of the wrong shape are
not retried.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence
from urllib.parse import urlsplit

import torch

from .values import RewardError, check_rewards

log = logging.getLogger(__name__)
BACKOFF_S = 0.5  # first retry after this, doubling


class Protocol(NamedTuple):
    """How one kind of server is asked: the URL to POST to (from the configured one), the body
    of a batch, the key of the scores in the answer, and whether it has ``GET /health``."""

    endpoint: Callable[[str], str]
    body: Callable[[List[str], List[str], List[Any]], Dict[str, Any]]
    answer_key: str
    has_health: bool


PROTOCOLS: Dict[str, Protocol] = {
    "rlhf_dist": Protocol(
        lambda url: f"{url}/score",
        lambda p, r, labels: {"prompts": p, "responses": r, "labels": labels},
        "scores",
        has_health=True,
    ),
    "openrlhf": Protocol(
        lambda url: url,
        lambda p, r, labels: {
            "query": [a + b for a, b in zip(p, r)],
            "prompts": p,
            "labels": labels,
        },
        "rewards",
        has_health=False,
    ),
}


class RemoteReward:
    """The scores of the reward model served at ``url``, as one weighted reward term (called
    like a :class:`~rlhf_dist.rewards.RewardFunction`)."""

    def __init__(
        self,
        url: str,
        weight: float = 1.0,
        token_env: Optional[str] = None,
        batch_size: int = 64,
        timeout_s: float = 60.0,
        retries: int = 3,
        field: str = "ppo.reward_url",
        backoff_s: float = BACKOFF_S,
        protocol: str = "rlhf_dist",
    ):
        import requests

        if protocol not in PROTOCOLS:
            raise RewardError(
                f"ppo.reward_url_protocol: got {protocol!r}, expected one of {sorted(PROTOCOLS)}"
            )
        self.protocol = PROTOCOLS[protocol]
        self.name, self.weight, self.field = url.rstrip("/"), weight, field
        self.endpoint = self.protocol.endpoint(self.name)
        self.batch_size, self.timeout_s = batch_size, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self.session = requests.Session()
        token = os.environ.get(token_env) if token_env else None
        if token_env and not token:
            raise RewardError(
                f"{field}: ppo.reward_url_token_env names ${token_env}, which is not set"
            )
        if token:
            self.session.headers["Authorization"] = f"Bearer {token.strip()}"
        self.health()

    def health(self) -> Dict[str, Any]:
        """``GET /health`` (or, for a server without one, a TCP connection to its port), once
        (no retries): the server must be up before training."""
        import requests

        if not self.protocol.has_health:
            return self._connect()
        try:
            answer = self.session.get(f"{self.name}/health", timeout=min(self.timeout_s, 10))
        except requests.RequestException as err:
            raise RewardError(
                f"{self.field} {self.name}: not reachable ({type(err).__name__}: {err})"
            ) from None
        if answer.status_code != 200:
            raise RewardError(
                f"{self.field} {self.name}: /health answered "
                f"{answer.status_code}: {answer.text[:200]}"
            )
        return answer.json()

    def _connect(self) -> Dict[str, Any]:
        parts = urlsplit(self.endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname, port), timeout=min(self.timeout_s, 10)):
                return {"status": "listening"}
        except OSError as err:
            raise RewardError(
                f"{self.field} {self.name}: not reachable ({type(err).__name__}: {err})"
            ) from None

    def __call__(
        self,
        prompts: List[str],
        responses: List[str],
        labels: Sequence[Any],
        extras: Sequence[Dict[str, Any]],
        first_row: int = 0,
    ) -> torch.Tensor:
        scores = []
        for a in range(0, len(responses), self.batch_size):
            b = a + self.batch_size
            body = self.protocol.body(list(prompts[a:b]), list(responses[a:b]), list(labels[a:b]))
            scores.append(
                check_rewards(
                    self.post(body),
                    len(body["prompts"]),
                    f"{self.field} {self.name}",
                    first_row + a,
                )
            )
        return torch.cat(scores) if scores else torch.zeros(0)

    def post(self, body: Dict[str, Any]) -> Any:
        """``POST`` to the protocol's endpoint with retries; the scores of the answer."""
        import requests

        where, key = f"{self.field} {self.endpoint}", self.protocol.answer_key
        for attempt in range(self.retries + 1):
            try:
                answer = self.session.post(self.endpoint, json=body, timeout=self.timeout_s)
            except requests.RequestException as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                problem = f"HTTP {answer.status_code}: {answer.text[:300]}"
                if 400 <= answer.status_code < 500:  # refused: the same request fails again
                    raise RewardError(f"{where} refused the request: {problem}")
                if answer.status_code == 200:
                    try:
                        return answer.json()[key]
                    except (ValueError, KeyError, TypeError):
                        raise RewardError(
                            f"{where} answered 200 without a JSON '{key}' list: {answer.text[:300]}"
                        ) from None
            if attempt < self.retries:
                delay = self.backoff_s * 2**attempt
                log.warning(
                    "%s failed (%s); retry %d of %d in %.1fs",
                    where,
                    problem,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                time.sleep(delay)
        raise RewardError(f"{where} failed after {self.retries + 1} attempts: {problem}")
