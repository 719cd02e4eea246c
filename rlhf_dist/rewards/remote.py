"""A reward model behind HTTP (``ppo.reward_url``), e.g. ``rlhf-dist serve-rm``: the decoded
prompts, responses and labels are POSTed to ``<url>/score`` in batches and the returned
scores are the reward.

Protocol (JSON): request ``{"prompts": [str], "responses": [str], "labels": [any]}``,
answer ``{"scores": [float]}`` of the same length; ``GET <url>/health`` answers 200 when
the server is up.  A bearer token is read from the environment variable
``ppo.reward_url_token_env`` names (never from the config, never logged).

Failures: the server unreachable at start -- a :class:`RewardError` naming the URL before
training starts (one health check); a call that fails (connection error, timeout, 5xx) is
retried ``ppo.reward_url_retries`` times with exponential backoff, then a
``RewardError`` naming the URL; a 4xx (the server refused the request: it says why) and an
answer of the wrong shape are not retried.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

from .functions import RewardError, check_rewards

log = logging.getLogger(__name__)
BACKOFF_S = 0.5  # first retry after this, doubling


class RemoteReward:
    """The scores of the reward model served at ``url``, as one weighted reward term (called
    like a :class:`~rlhf_dist.rewards.RewardFunction`)."""

    def __init__(self, url: str, weight: float = 1.0, token_env: Optional[str] = None,
                 batch_size: int = 64, timeout_s: float = 60.0, retries: int = 3,
                 field: str = "ppo.reward_url", backoff_s: float = BACKOFF_S):
        import requests

        self.name, self.weight, self.field = url.rstrip("/"), weight, field
        self.batch_size, self.timeout_s = batch_size, timeout_s
        self.retries, self.backoff_s = retries, backoff_s
        self.session = requests.Session()
        token = os.environ.get(token_env) if token_env else None
        if token_env and not token:
            raise RewardError(f"{field}: ppo.reward_url_token_env names ${token_env}, which "
                              "is not set")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token.strip()}"
        self.health()

    def health(self) -> Dict[str, Any]:
        """``GET /health``, once (no retries): the server must be up before training."""
        import requests

        try:
            answer = self.session.get(f"{self.name}/health", timeout=min(self.timeout_s, 10))
        except requests.RequestException as err:
            raise RewardError(f"{self.field} {self.name}: not reachable "
                              f"({type(err).__name__}: {err})") from None
        if answer.status_code != 200:
            raise RewardError(f"{self.field} {self.name}: /health answered "
                              f"{answer.status_code}: {answer.text[:200]}")
        return answer.json()

    def __call__(self, prompts: List[str], responses: List[str], labels: Sequence[Any],
                 extras: Sequence[Dict[str, Any]], first_row: int = 0) -> torch.Tensor:
        scores = []
        for a in range(0, len(responses), self.batch_size):
            b = a + self.batch_size
            body = {"prompts": list(prompts[a:b]), "responses": list(responses[a:b]),
                    "labels": list(labels[a:b])}
            scores.append(check_rewards(self.post(body), len(body["responses"]),
                                        f"{self.field} {self.name}", first_row + a))
        return torch.cat(scores) if scores else torch.zeros(0)

    def post(self, body: Dict[str, Any]) -> Any:
        """``POST /score`` with retries; the ``scores`` of the answer."""
        import requests

        where = f"{self.field} {self.name}/score"
        for attempt in range(self.retries + 1):
            try:
                answer = self.session.post(f"{self.name}/score", json=body,
                                           timeout=self.timeout_s)
            except requests.RequestException as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                problem = f"HTTP {answer.status_code}: {answer.text[:300]}"
                if 400 <= answer.status_code < 500:  # refused: the same request fails again
                    raise RewardError(f"{where} refused the request: {problem}")
                if answer.status_code == 200:
                    try:
                        return answer.json()["scores"]
                    except (ValueError, KeyError, TypeError):
                        raise RewardError(f"{where} answered 200 without a JSON 'scores' "
                                          f"list: {answer.text[:300]}") from None
            if attempt < self.retries:
                delay = self.backoff_s * 2 ** attempt
                log.warning("%s failed (%s); retry %d of %d in %.1fs", where, problem,
                            attempt + 1, self.retries, delay)
                time.sleep(delay)
        raise RewardError(f"{where} failed after {self.retries + 1} attempts: {problem}")
