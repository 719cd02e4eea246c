"""The policy-optimisation section (``ppo.*``) and its reward terms."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rlhf_dist.algo.advantages import ADVANTAGE_NAMES
from rlhf_dist.algo.kl import KL_ESTIMATORS
from rlhf_dist.algo.kl_control import KL_CONTROLLERS
from rlhf_dist.algo.losses import LOSS_AGGREGATORS, RATIO_LEVELS
from rlhf_dist.config.checks import _choice, _positive, _require

# what ppo.reward_url may speak (rewards.remote.PROTOCOLS holds how)
REWARD_URL_PROTOCOLS = ("rlhf_dist", "openrlhf")


@dataclass
class RewardTerm:
    """One weighted reward of ``ppo.rewards``: a built-in verifier (``math``,
    ``exact_match``, ``regex_format``) or ``module:function``; ``args`` go to the built-in."""

    fn: str = ""  # math | exact_match | regex_format, or module:function
    weight: float = 1.0  # its weight in the summed reward
    # keyword arguments of a built-in (e.g. regex_format's pattern); none for module:function
    args: Dict[str, Any] = field(default_factory=dict)


@dataclass
class PPOConfig:
    """PPO / critic-free policy optimisation (the learners and the reward shaping)."""

    iterations: int = 10  # PPO iterations: one prompt batch sampled, scored and learned from each
    # passes over each iteration's experience (fewer when target_kl stops them early)
    ppo_epochs: int = 1
    # experience rows (responses) per optimiser step of the actor and the critic; must divide
    # rollout.rollout_batch_size x rollout.n_samples_per_prompt
    mini_batch_size: int = 8
    # PPO's clip range epsilon: the ratio is clipped to [1 - eps, 1 + eps] (unless _low/_high)
    clip_eps: float = 0.2
    # the lower side of the clip range [1 - low, 1 + high]; null = clip_eps
    clip_eps_low: Optional[float] = None
    # the upper side of the clip range (DAPO's clip-higher: 0.28 with clip_eps 0.2);
    # null = clip_eps
    clip_eps_high: Optional[float] = None
    # dual-clip PPO (Ye et al. 2020): c > 1, for negative advantages the loss is capped at -c*A;
    # null = off
    dual_clip: Optional[float] = None
    # token | sequence: importance ratio per token (PPO/GRPO) or one per response (GSPO: exp of
    # its mean log-ratio; pair with loss_agg=seq_mean_token_mean)
    ratio_level: str = "token"
    # clip the critic's new values to old +- this in the value loss; null = unclipped
    value_clip: Optional[float] = 0.2
    # token_mean | seq_mean_token_mean | seq_mean_token_sum | seq_mean_token_sum_norm (Dr.GRPO:
    # token sums / rollout.max_new_tokens); reduces the policy, value and kl_in_loss terms
    loss_agg: str = "token_mean"
    critic_lr: float = 1e-4  # the critic's learning rate (the actor's is train.lr)
    entropy_coef: float = 0.0  # weight of the entropy bonus subtracted from the policy loss
    # beta (>= 0) of the KL to the reference: the reward's per-token penalty, or the loss term
    # with kl_in_loss; with kl_controller=adaptive its starting value
    kl_coef: float = 0.05
    # k1 | k2 | k3 (Schulman's per-token KL estimators) of the penalty / loss term; kl/ref_kl
    # and the adaptive controller always use k1
    kl_estimator: str = "k1"
    # fixed | adaptive (Ziegler et al. 2019's proportional controller steering the KL to
    # kl_target)
    kl_controller: str = "fixed"
    # adaptive controller: the KL it steers to, in nats per sequence (k1 summed over the response)
    kl_target: float = 6.0
    kl_horizon: int = 10000  # adaptive controller: its horizon in responses (experience rows)
    # the KL to the reference as a loss term of the actor (GRPO; use kl_estimator=k3) instead
    # of a per-token penalty in the reward; its coefficient is kl_coef (fixed controller only)
    kl_in_loss: bool = False
    # stop an iteration's PPO epochs once an epoch's mean approx_kl exceeds this (cleanrl's
    # target_kl; null = always run ppo_epochs)
    target_kl: Optional[float] = None
    gamma: float = 1.0  # discount of the token rewards in [0, 1] (gae and reinforce_pp only)
    lam: float = 0.95  # GAE's lambda in [0, 1] (gae only)
    # gae (with a critic) | reinforce | mean_baseline | rloo | group_norm (GRPO) | dr_grpo
    # (Dr.GRPO: no std division) | reinforce_pp (REINFORCE++); all but gae need no critic, and
    # mean_baseline, rloo, group_norm, dr_grpo need rollout.n_samples_per_prompt >= 2
    advantage_estimator: str = "gae"
    # normalise the advantages over the batch (not for group_norm, dr_grpo, reinforce_pp)
    whiten_advantages: bool = True
    # clamp each sequence reward (RM + reward functions + overlong penalty) to [-c, c] before
    # the KL penalty; null = off
    reward_clip: Optional[float] = None
    # standardise the reward group's scores with the mean/std saved by rlhf-dist rm
    # (rm.save_score_stats); reward functions and reward_url scores are not touched
    normalize_reward: bool = False
    # DAPO's soft overlong punishment: a response longer than rollout.max_new_tokens minus
    # this many tokens loses up to overlong_penalty, linearly to the limit (0 = off)
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0  # the most an overlong response loses (overlong_buffer)
    # DAPO's overlong filtering: responses cut at rollout.max_new_tokens (no stop token) are
    # left out of the policy and value losses (they still count in rewards and group stats)
    mask_truncated: bool = False
    # DAPO's dynamic sampling: drop prompts whose responses all got the same reward and
    # generate further prompt batches (at most dynamic_sampling_extra_rounds more) until
    # rollout.rollout_batch_size informative prompts are found; short of that, the batch is
    # filled with uninformative ones (needs rollout.n_samples_per_prompt >= 2)
    dynamic_sampling: bool = False
    # more prompt batches (beyond the first) dynamic_sampling may draw per iteration
    dynamic_sampling_extra_rounds: int = 2
    # a built-in verifier (math, exact_match, regex_format) or module:function called with
    # (prompts, responses[, labels, extras]); added with reward_fn_weight to the RM score
    reward_fn: Optional[str] = None
    reward_fn_weight: float = 1.0  # weight of reward_fn in the summed reward
    # more weighted reward functions, summed with the above: [{fn, weight, args}, ...]
    rewards: List[RewardTerm] = field(default_factory=list)
    # run the reward functions (and reward_url) in this many Ray actors (1 CPU each) instead
    # of on the driver, each call split over them in row chunks; for slow verifiers (0 = driver)
    reward_workers: int = 0
    # seconds a pool call may take before its worker counts as lost (the run stops, or
    # restarts with resources.max_restarts); needs reward_workers; null = 300
    reward_timeout_s: Optional[float] = None
    # a reward model served over HTTP (rlhf-dist serve-rm): POST <url>/score with the
    # decoded prompts/responses/labels; its scores are added with reward_url_weight
    reward_url: Optional[str] = None
    reward_url_weight: float = 1.0  # weight of the served RM's scores in the summed reward
    # environment variable holding the bearer token to send (never put the token here)
    reward_url_token_env: Optional[str] = None
    reward_url_batch_size: int = 64  # responses per POST to reward_url
    reward_url_timeout_s: float = 60.0  # seconds one POST may take
    # retries after a failed call (connection error, timeout, 5xx; not a 4xx), with backoff
    # 0.5 s, 1 s, 2 s, ...; 0 = no retry
    reward_url_retries: int = 3
    # what reward_url speaks: rlhf_dist (POST <url>/score, as rlhf-dist serve-rm) or openrlhf
    # (POST <url> itself, e.g. http://host:5000/get_reward: {"query", "prompts", "labels"} ->
    # {"rewards"}, OpenRLHF's --remote_rm_url servers)
    reward_url_protocol: str = "rlhf_dist"
    # score with the reward_model section's RM in a Ray reward group; false: only reward_fn,
    # rewards and reward_url score (no reward group is created)
    use_reward_model: bool = True

    def __post_init__(self):
        _positive("ppo.iterations", self.iterations)
        _choice("ppo.reward_url_protocol", self.reward_url_protocol, list(REWARD_URL_PROTOCOLS))
        _positive("ppo.ppo_epochs", self.ppo_epochs)
        _positive("ppo.mini_batch_size", self.mini_batch_size)
        _positive("ppo.clip_eps", self.clip_eps)
        _require(
            self.dual_clip is None or self.dual_clip > 1.0,
            "ppo.dual_clip",
            f"must be > 1 (or null), got {self.dual_clip}",
        )
        for name in ("clip_eps_low", "clip_eps_high"):
            value = getattr(self, name)
            _require(
                value is None or value > 0, f"ppo.{name}", f"must be > 0 (or null), got {value}"
            )
        _choice("ppo.loss_agg", self.loss_agg, sorted(LOSS_AGGREGATORS))
        _choice("ppo.ratio_level", self.ratio_level, sorted(RATIO_LEVELS))
        _choice("ppo.kl_estimator", self.kl_estimator, sorted(KL_ESTIMATORS))
        _choice("ppo.kl_controller", self.kl_controller, sorted(KL_CONTROLLERS))
        _choice("ppo.advantage_estimator", self.advantage_estimator, list(ADVANTAGE_NAMES))
        _require(0.0 <= self.gamma <= 1.0, "ppo.gamma", f"must be in [0, 1], got {self.gamma}")
        _require(0.0 <= self.lam <= 1.0, "ppo.lam", f"must be in [0, 1], got {self.lam}")
        _positive("ppo.kl_coef", self.kl_coef, allow_zero=True)
        _require(
            not (self.kl_in_loss and self.kl_controller == "adaptive"),
            "ppo.kl_in_loss",
            "needs ppo.kl_controller=fixed: the adaptive controller steers a KL penalty "
            "in the reward",
        )
        _require(
            self.target_kl is None or self.target_kl > 0,
            "ppo.target_kl",
            f"must be > 0 (or null), got {self.target_kl}",
        )
        _positive("ppo.overlong_buffer", self.overlong_buffer, allow_zero=True)
        _positive("ppo.overlong_penalty", self.overlong_penalty, allow_zero=True)
        _positive(
            "ppo.dynamic_sampling_extra_rounds", self.dynamic_sampling_extra_rounds, allow_zero=True
        )
        _require(
            self.reward_url is None or self.reward_url.startswith(("http://", "https://")),
            "ppo.reward_url",
            f"must start with http:// or https://, got {self.reward_url!r}",
        )
        _positive("ppo.reward_url_batch_size", self.reward_url_batch_size)
        _positive("ppo.reward_url_timeout_s", self.reward_url_timeout_s)
        _positive("ppo.reward_url_retries", self.reward_url_retries, allow_zero=True)
        _positive("ppo.reward_workers", self.reward_workers, allow_zero=True)
        _require(
            self.reward_timeout_s is None or self.reward_timeout_s > 0,
            "ppo.reward_timeout_s",
            f"must be > 0 (or null), got {self.reward_timeout_s}",
        )
        _require(
            self.reward_timeout_s is None or self.reward_workers > 0,
            "ppo.reward_timeout_s",
            "times the reward worker pool: set ppo.reward_workers"
            " (on the driver a call is not interrupted)",
        )
        _require(
            not self.reward_workers or self.has_reward_terms,
            "ppo.reward_workers",
            "is set but ppo.reward_fn, ppo.rewards and ppo.reward_url are empty: the pool "
            "would have nothing to run",
        )
        for i, term in enumerate(self.rewards):
            _require(
                bool(term.fn),
                f"ppo.rewards[{i}].fn",
                "is empty: name a built-in reward or module:function",
            )

    def check_scored(self, by_env: bool) -> None:
        """Something scores the responses: the reward model, reward terms or (``by_env``)
        the environment's step rewards (``env.name``); the config's cross-section check."""
        _require(
            self.use_reward_model or self.has_reward_terms or by_env,
            "ppo.use_reward_model",
            "is false, ppo.reward_fn, ppo.rewards and ppo.reward_url are empty and no "
            "env.name is set: nothing would score the responses",
        )

    @property
    def has_reward_terms(self) -> bool:
        """Whether anything but the reward group scores: reward functions or a served RM."""
        return self.reward_fn is not None or bool(self.rewards) or self.reward_url is not None

    @property
    def needs_critic(self) -> bool:
        return self.advantage_estimator == "gae"

    @property
    def clip_range(self) -> tuple:
        """(low, high) of the ratio clip: ``ratio`` is kept in [1 - low, 1 + high]."""
        return (
            self.clip_eps if self.clip_eps_low is None else self.clip_eps_low,
            self.clip_eps if self.clip_eps_high is None else self.clip_eps_high,
        )
