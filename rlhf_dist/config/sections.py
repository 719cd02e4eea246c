"""The config sections, one dataclass each; each validates itself in ``__post_init__``
(``ModelConfig`` is shared by four sections and validated by the parent with its prefix)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rlhf_dist.algo.importance import IS_WEIGHTS
from rlhf_dist.config.checks import ConfigError, _choice, _positive, _require
from rlhf_dist.config.jobs import DPOConfig, RMConfig, SFTConfig  # noqa: F401  (re-exported)
from rlhf_dist.config.ppo import PPOConfig, RewardTerm  # noqa: F401  (re-exported)
from rlhf_dist.config.run import (
    LOGGING_BACKENDS,  # noqa: F401  (re-exported)
    CheckpointConfig,
    LoggingConfig,
)
from rlhf_dist.config.registries import ROLLOUT_BACKENDS
from rlhf_dist.config.resources import ResourcesConfig, RoleResources, RolloutResources

__all__ = [
    "CheckpointConfig",
    "DPOConfig",
    "DataConfig",
    "DeepSpeedSection",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "PPOConfig",
    "RMConfig",
    "ResourcesConfig",
    "RoleResources",
    "RolloutConfig",
    "RolloutResources",
    "SFTConfig",
    "TinyModelConfig",
    "ToyDataConfig",
    "TrainConfig",
]


@dataclass
class TinyModelConfig:
    """Architecture of a randomly initialised model built when no path is given (tests, demo)."""

    arch: str = "llama"  # llama | gpt2 | qwen2: the HF architecture of the random model
    hidden_size: int = 64  # width of the random model
    num_layers: int = 2  # transformer blocks
    num_heads: int = 4  # attention heads (must divide hidden_size)
    intermediate_size: int = 128  # MLP width
    max_position_embeddings: int = 256  # longest sequence the random model takes

    def check(self, prefix: str) -> None:
        _choice(f"{prefix}.arch", self.arch, ["llama", "gpt2", "qwen2"])
        for name in (
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position_embeddings",
        ):
            _positive(f"{prefix}.{name}", getattr(self, name))
        _require(
            self.hidden_size % self.num_heads == 0,
            f"{prefix}.hidden_size",
            f"{self.hidden_size} is not divisible by {prefix}.num_heads={self.num_heads}",
        )


@dataclass
class LoraConfig:
    """LoRA adapters (the ``peft`` library) on a trained model; ``r: 0`` trains every weight."""

    r: int = 0  # adapter rank; 0 = no adapter (full fine-tuning)
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the adapter's input
    # module names (or name suffixes) that get adapters; null = every linear layer but the
    # output heads (lm_head, score)
    target_modules: Optional[List[str]] = None
    # modules trained in full next to the adapters; null = the scalar head of a reward /
    # critic model (score), nothing for a causal LM
    modules_to_save: Optional[List[str]] = None

    @property
    def enabled(self) -> bool:
        return self.r > 0

    def check(self, prefix: str) -> None:
        _positive(f"{prefix}.r", self.r, allow_zero=True)
        _positive(f"{prefix}.alpha", self.alpha)
        _require(
            0.0 <= self.dropout < 1.0, f"{prefix}.dropout", f"must be in [0, 1), got {self.dropout}"
        )
        _require(
            self.target_modules is None or len(self.target_modules) > 0,
            f"{prefix}.target_modules",
            "is empty: give module names or null (all linear)",
        )


@dataclass
class ModelConfig:
    """A model to load (local path or hub name) or, with ``name_or_path: null``, a tiny one."""

    # a local HF model directory or a hub name; null = a random model of tiny.*
    name_or_path: Optional[str] = None
    tokenizer_path: Optional[str] = None  # defaults to name_or_path; null + tiny → toy tokenizer
    # let transformers run the model's own code (off: never by default)
    trust_remote_code: bool = False
    dtype: str = "float32"  # float32 | bfloat16 | float16: the weights' dtype when loaded
    # eager | sdpa | flash_attention_2 (transformers' attention kernels)
    attn_implementation: str = "eager"
    # recompute activations in the backward pass (less memory, more time)
    gradient_checkpointing: bool = False
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # QLoRA: the frozen base weights quantised by bitsandbytes (CUDA only; needs lora.r > 0)
    load_in_4bit: bool = False
    # QLoRA with int8 base weights (bitsandbytes, CUDA only; needs lora.r > 0)
    load_in_8bit: bool = False

    def check(self, prefix: str) -> None:
        """Validated by the parent, since four sections (model, ref_model, …) share this type."""
        _choice(f"{prefix}.dtype", self.dtype, ["float32", "bfloat16", "float16"])
        _choice(
            f"{prefix}.attn_implementation",
            self.attn_implementation,
            ["eager", "sdpa", "flash_attention_2"],
        )
        self.tiny.check(f"{prefix}.tiny")
        self.lora.check(f"{prefix}.lora")
        _require(
            not (self.load_in_4bit and self.load_in_8bit),
            f"{prefix}.load_in_4bit",
            f"and {prefix}.load_in_8bit are both set: choose one",
        )
        for bits in ("load_in_4bit", "load_in_8bit"):
            _require(
                not getattr(self, bits) or self.lora.enabled,
                f"{prefix}.{bits}",
                f"quantised weights cannot be trained: QLoRA trains adapters on them, "
                f"so set {prefix}.lora.r > 0",
            )

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit


@dataclass
class ToyDataConfig:
    """The built-in harmful-vs-benign alignment task, generated deterministically."""

    seed: int = 0  # seed of the toy task's rows (prompts, answers, splits)
    # toy prompts (template x topic combinations) drawn, train and eval together
    num_prompts: int = 256
    # share of the toy prompts held out as the eval split (unseen combinations)
    eval_ratio: float = 0.125


@dataclass
class DataConfig:
    """Where rows come from and how they become tokens.

    ``path`` is ``toy`` (built-in task), a local jsonl/json/parquet/csv file or directory, or a
    hub dataset name.  Keys name the columns; ``on_bad_row`` is ``error`` or ``skip`` (counted).
    """

    # toy, a local jsonl/json/parquet/csv file or directory, or a hub dataset name
    path: str = "toy"
    split: str = "train"  # the training split of path (a lone file is split train)
    # eval rows from another source; null: from path (eval_split or eval_ratio)
    eval_path: Optional[str] = None
    # the eval split of eval_path, or of path when eval_path is null
    eval_split: Optional[str] = None
    # with no eval path or split: this share of path's rows held out for eval
    eval_ratio: float = 0.0
    # keep the first N rows of each split (after the hold-out); null = all
    max_samples: Optional[int] = None
    prompt_key: str = "prompt"  # column of the prompt (a string, or a list of chat messages)
    response_key: str = "response"  # (sft) column of the response
    chosen_key: str = "chosen"  # (rm, dpo) column of the preferred response
    rejected_key: str = "rejected"  # (rm, dpo) column of the dispreferred response
    # column of a whole conversation (chat messages) when there is no prompt column
    messages_key: str = "messages"
    # (rm, dpo) column of a ranked list of responses, best first: C(K, 2) pairs
    ranking_key: str = "responses"
    # (dpo.loss_type=kto) column of the one answer of an unpaired row {prompt, completion,
    # label}: a string, or messages ending in the assistant's turn
    completion_key: str = "completion"
    # (kto) column of an unpaired row's feedback: true (desirable) or false (undesirable)
    desirable_key: str = "label"
    # (kto) read preference rows (chosen/rejected, rankings, HH transcripts, messages) and
    # split each pair into two unpaired rows: chosen desirable, rejected undesirable
    split_pairs: bool = False
    # prompt datasets: the column (any JSON value) given to ppo.reward_fn / ppo.rewards as
    # each prompt's label (e.g. GSM8K's "answer"), and extra columns passed along as a dict
    label_key: Optional[str] = None
    # (ppo prompts) more columns passed to the reward functions as a dict per prompt
    extra_keys: List[str] = field(default_factory=list)
    # render messages with the tokenizer's chat template, not Human:/Assistant:
    apply_chat_template: bool = False
    # (sft, rm, dpo; eval and label score with it) tokens of prompt + response kept (the
    # response is cut at the end)
    max_length: int = 256
    max_prompt_length: int = 128  # tokens of the prompt kept (cut on the left)
    # error | skip: a malformed row stops the job naming it, or is counted and left out
    on_bad_row: str = "error"
    toy: ToyDataConfig = field(default_factory=ToyDataConfig)

    def __post_init__(self):
        _choice("data.on_bad_row", self.on_bad_row, ["error", "skip"])
        _positive("data.max_length", self.max_length)
        _positive("data.max_prompt_length", self.max_prompt_length)
        _require(
            0.0 <= self.eval_ratio < 1.0,
            "data.eval_ratio",
            f"must be in [0, 1), got {self.eval_ratio}",
        )

    def check_response_room(self) -> None:
        """Rows with a response (SFT, preference pairs) need a response token after the
        longest prompt; prompt-only jobs (PPO: ``rollout.max_new_tokens``) do not read
        ``max_length``."""
        _require(
            self.max_prompt_length < self.max_length,
            "data.max_prompt_length",
            f"{self.max_prompt_length} must be smaller than data.max_length="
            f"{self.max_length}, or no response token fits",
        )


@dataclass
class TrainConfig:
    """Optimisation shared by every trainer.  Batch sizes are in sequences (pairs for RM/DPO).

    ``train_batch_size`` is global per optimiser step; it must equal
    ``micro_batch_size × gradient_accumulation_steps × data-parallel ranks``.
    ``gradient_accumulation_steps`` is derived when left at null.
    """

    epochs: int = 1  # passes over the training set
    max_steps: int = -1  # stop after this many optimiser steps; -1 = epochs decide
    lr: float = 1e-4  # peak learning rate (AdamW)
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW (beta1, beta2)
    lr_scheduler: str = "cosine"  # cosine | linear | constant: decay after the warm-up
    warmup_ratio: float = 0.0  # share of the steps with a linear warm-up from 0
    min_lr_ratio: float = 0.1  # cosine / linear decay floor as a share of lr
    # examples per optimiser step over all ranks (= micro x accumulation x ranks)
    train_batch_size: int = 8
    # examples per forward on one rank (PPO: rows per learner micro-batch)
    micro_batch_size: int = 2
    # micro-batches per optimiser step; null = derived from the sizes
    gradient_accumulation_steps: Optional[int] = None
    eval_batch_size: int = 8  # examples per forward in eval (and in the RM's score statistics)
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 = no clipping
    eval_every: int = 0  # evaluate every N optimiser steps (and at the end); 0 = only at the end
    log_every: int = 1  # log the training metrics every N steps
    # shuffle, then sort windows of 50 optimiser steps' batches by length and shuffle those
    # batches: less padding, order still fixed by (seed, epoch) and the same for any split
    # of a step over ranks and accumulation; false = the plain shuffled order (as HF/TRL)
    group_by_length: bool = True
    # SFT/pretrain/RM/DPO: each micro-batch's sequences concatenated into one row with
    # restarting position_ids and no padding (flash-attention-2 runs them as varlen
    # sequences; eager/sdpa a block-diagonal mask); the same losses.  DPO: dpo.layout=packed
    padding_free: bool = False
    # a NaN/inf loss, gradient norm, reward or advantage: "error" stops naming the step, role
    # and tensor; "skip_step" drops the step's update and goes on -- at most
    # max_skipped_steps in a row.  A PPO iteration with non-finite experience (rewards,
    # advantages) is dropped before any update; a non-finite loss or gradient is dropped by
    # DeepSpeed's overflow check under ZeRO 1-3 (ZeRO 0: only on the first micro-batch of a
    # step), and in PPO the rest of that role's updates of the iteration with it
    on_nonfinite: str = "error"
    # on_nonfinite=skip_step: stop after this many skipped steps in a row
    max_skipped_steps: int = 3

    def __post_init__(self):
        _choice("train.lr_scheduler", self.lr_scheduler, ["cosine", "linear", "constant"])
        _choice("train.on_nonfinite", self.on_nonfinite, ["error", "skip_step"])
        _positive("train.max_skipped_steps", self.max_skipped_steps)
        _positive("train.epochs", self.epochs)
        _positive("train.lr", self.lr)
        _positive("train.train_batch_size", self.train_batch_size)
        _positive("train.micro_batch_size", self.micro_batch_size)
        _positive("train.eval_batch_size", self.eval_batch_size)
        _positive("train.max_grad_norm", self.max_grad_norm, allow_zero=True)
        _positive("train.eval_every", self.eval_every, allow_zero=True)
        _positive("train.log_every", self.log_every)
        _require(
            0.0 <= self.warmup_ratio < 1.0,
            "train.warmup_ratio",
            f"must be in [0, 1), got {self.warmup_ratio}",
        )
        _require(
            len(self.adam_betas) == 2,
            "train.adam_betas",
            f"needs two numbers, got {list(self.adam_betas)}",
        )

    def accumulation_steps(self, dp_size: int) -> int:
        """The micro-batches per optimiser step on each of ``dp_size`` data-parallel ranks,
        checked: ``train = micro × accum × dp`` (and equal to ``gradient_accumulation_steps``
        when that is set).  Assigns nothing."""
        per_step = self.micro_batch_size * dp_size
        _require(
            self.train_batch_size % per_step == 0,
            "train.train_batch_size",
            f"{self.train_batch_size} is not divisible by train.micro_batch_size="
            f"{self.micro_batch_size} × data-parallel ranks={dp_size} (= {per_step})",
        )
        accum = self.train_batch_size // per_step
        if self.gradient_accumulation_steps is not None:
            _require(
                self.gradient_accumulation_steps == accum,
                "train.gradient_accumulation_steps",
                f"{self.gradient_accumulation_steps} conflicts with train.train_batch_size="
                f"{self.train_batch_size} / (train.micro_batch_size={self.micro_batch_size}"
                f" × ranks={dp_size}) = {accum}",
            )
        return accum

    def resolve_accumulation(self, dp_size: int) -> int:
        """The resolve step of this section for ``dp_size`` ranks: ``gradient_accumulation_steps``
        (null = derived) set to :meth:`accumulation_steps`, which is returned.  Idempotent for
        one ``dp_size``."""
        self.gradient_accumulation_steps = self.accumulation_steps(dp_size)
        return self.gradient_accumulation_steps


@dataclass
class DeepSpeedSection:
    """What we let users choose of DeepSpeed; ``extra`` is merged last into the built dict.
    ``role_zero_stage`` overrides the stage per Ray role, e.g. ``{critic: 2}``."""

    zero_stage: int = 0  # ZeRO stage 0-3 (3: parameters partitioned over the data-parallel ranks)
    # (Ray) a stage per role overriding zero_stage, e.g. {critic: 2}
    role_zero_stage: Dict[str, int] = field(default_factory=dict)
    bf16: bool = False  # bfloat16 training (DeepSpeed bf16 with fp32 master weights)
    offload_optimizer: bool = False  # ZeRO-Offload: optimizer states (and step) on the CPU
    offload_param: bool = False  # ZeRO-3 parameter offload to CPU memory
    # merged last into each DeepSpeed config dict (any DeepSpeed key); frozen models (reference,
    # reward) take all but the optimiser, scheduler, batch-size and gradient keys
    extra: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        _choice("deepspeed.zero_stage", self.zero_stage, [0, 1, 2, 3])
        for role, stage in self.role_zero_stage.items():
            _choice("deepspeed.role_zero_stage", role, ["actor", "critic", "reward", "reference"])
            _choice(f"deepspeed.role_zero_stage.{role}", stage, [0, 1, 2, 3])
        _require(
            not self.offload_param or self.zero_stage == 3,
            "deepspeed.offload_param",
            f"needs deepspeed.zero_stage=3, got zero_stage={self.zero_stage}",
        )
        _require(
            not self.offload_optimizer or self.zero_stage >= 1,
            "deepspeed.offload_optimizer",
            f"needs deepspeed.zero_stage>=1, got zero_stage={self.zero_stage}",
        )

    def for_role(self, role: str) -> "DeepSpeedSection":
        """This section with the role's own ZeRO stage (if overridden)."""
        if role not in self.role_zero_stage:
            return self
        stage = self.role_zero_stage[role]
        return dataclasses.replace(
            self,
            zero_stage=stage,
            offload_param=self.offload_param and stage == 3,
            offload_optimizer=self.offload_optimizer and stage >= 1,
        )


@dataclass
class RolloutConfig:
    """Generation for PPO (and RLAIF sampling).

    ``backend``: ``hf`` (``generate`` on the actor's own ranks) or ``vllm`` (engines of
    ``resources.rollout`` that receive the actor's weights after every update).
    """

    backend: str = "hf"  # hf (generate on the actor's ranks) | vllm (engines of resources.rollout)
    rollout_batch_size: int = 8  # prompts per PPO iteration (per batch in eval / label)
    n_samples_per_prompt: int = 1  # responses sampled per prompt (GRPO's group size)
    max_new_tokens: int = 32  # longest response, in tokens
    min_new_tokens: int = 0  # EOS masked until this many tokens (HF's min_new_tokens)
    # sampling temperature (the log-probs are of the same tempered distribution)
    temperature: float = 1.0
    top_p: float = 1.0  # nucleus sampling; 1.0 = off
    top_k: int = 0  # sample among the k likeliest tokens; 0 = off
    do_sample: bool = True  # false: greedy decoding
    # stop ids besides the tokenizer's EOS (the first one met ends a response)
    stop_token_ids: List[int] = field(default_factory=list)
    # vllm: weight the policy loss per token by min(pi_actor / pi_vllm, tis_cap), truncated
    # importance sampling for the rollout/training mismatch (Yao et al. 2025)
    use_engine_logprobs: bool = False
    tis_cap: float = 2.0  # the cap c of the importance weights (use_engine_logprobs, async)
    # truncate: weight min(r, c) (TIS) | mask: r inside [1/c, c], 0 outside (MIS / IcePop);
    # r = pi_actor / pi_engine per token
    tis_mode: str = "truncate"
    # 0 = synchronous; k >= 1: the engines sample the next batches while the learners train,
    # with weights at most k policy versions older than the learner's (a backend with
    # processes of its own, e.g. vllm, not colocated); the policy loss is then weighted by
    # the engine's log-probs (tis_cap, tis_mode) as with use_engine_logprobs
    max_staleness: int = 0
    # vllm: MB of parameters per collective of the weight sync (ZeRO-3 shards gathered per
    # bucket; a larger parameter goes alone); 0 = one parameter at a time
    sync_bucket_mb: float = 16.0
    # vllm: every this many weight syncs (the first included) the engines' CRC32 of every
    # parameter must equal the actor's, or the run stops naming engine and parameter; 0 = never
    verify_sync_every: int = 10
    # hf: the behaviour log-probs read from generate's own (KV-cached) forwards instead of
    # one more forward over the sampled sequences (equal up to float rounding, ~1e-6 in fp32)
    logprobs_from_generate: bool = False

    @property
    def importance_weights(self) -> bool:
        """The policy loss is weighted by the engine's log-probs: asked for
        (``use_engine_logprobs``) or needed (``max_staleness`` ≥ 1: stale behaviour)."""
        return self.use_engine_logprobs or self.max_staleness > 0

    def __post_init__(self):
        ROLLOUT_BACKENDS.check(self.backend, ConfigError)  # names, or package.module:Class
        _positive("rollout.tis_cap", self.tis_cap)
        _choice("rollout.tis_mode", self.tis_mode, sorted(IS_WEIGHTS))
        _positive("rollout.max_staleness", self.max_staleness, allow_zero=True)
        _positive("rollout.sync_bucket_mb", self.sync_bucket_mb, allow_zero=True)
        _positive("rollout.verify_sync_every", self.verify_sync_every, allow_zero=True)
        _require(
            not self.logprobs_from_generate or self.backend == "hf",
            "rollout.logprobs_from_generate",
            "needs rollout.backend=hf (with vLLM the "
            "actor recomputes the behaviour log-probs; rollout.use_engine_logprobs "
            "weights by vLLM's own)",
        )
        _require(
            not self.use_engine_logprobs or self.backend == "vllm",
            "rollout.use_engine_logprobs",
            "needs rollout.backend=vllm (the HF backend's behaviour log-probs are the actor's own)",
        )
        # vLLM's log-probs are of the distribution it sampled from: renormalised by top-p /
        # top-k, where the actor's are not (the weights would be biased below 1)
        _require(
            not self.importance_weights or (self.top_p == 1.0 and self.top_k == 0),
            "rollout.max_staleness" if self.max_staleness else "rollout.use_engine_logprobs",
            f"needs rollout.top_p=1 and rollout.top_k=0, got {self.top_p} and {self.top_k}",
        )
        _positive("rollout.rollout_batch_size", self.rollout_batch_size)
        _positive("rollout.n_samples_per_prompt", self.n_samples_per_prompt)
        _positive("rollout.max_new_tokens", self.max_new_tokens)
        _require(
            0 <= self.min_new_tokens <= self.max_new_tokens,
            "rollout.min_new_tokens",
            f"must be in [0, rollout.max_new_tokens={self.max_new_tokens}], got "
            f"{self.min_new_tokens}",
        )
        _positive("rollout.temperature", self.temperature)
        _require(0.0 < self.top_p <= 1.0, "rollout.top_p", f"must be in (0, 1], got {self.top_p}")
        _positive("rollout.top_k", self.top_k, allow_zero=True)
        _require(0.0 < self.top_p <= 1.0, "rollout.top_p", f"must be in (0, 1], got {self.top_p}")
