"""One typed config for every job: YAML merged with ``key.sub=value`` overrides.

Each section is a dataclass that validates itself in ``__post_init__``; cross-section rules
live in :meth:`Config.check`, which reads and never assigns.  Derived values are computed in
three explicit places only: :meth:`Config._derive` at load (``dpo.layout: auto``,
``resources.rollout.max_model_len: null``), :meth:`Config.resolve` (the batch accumulation
for a number of ranks) and the size records of :mod:`rlhf_dist.config.sizes` (PPO, DPO on
Ray), which ``load_config(..., job=...)`` computes at load.  Parsing, type
coercion and unknown-key detection come from OmegaConf structured configs; every failure is
re-raised as :class:`ConfigError` naming the field, the bad value and (for unknown keys) the
closest valid key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from rlhf_dist.config import sizes as _sizes
from rlhf_dist.config.checks import ConfigError, _positive, _require
from rlhf_dist.config.env import EnvConfig
from rlhf_dist.config.sections import (
    LOGGING_BACKENDS,
    CheckpointConfig,
    DataConfig,
    DeepSpeedSection,
    DPOConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    PPOConfig,
    ResourcesConfig,
    RMConfig,
    RoleResources,
    RolloutConfig,
    RolloutResources,
    SFTConfig,
    TinyModelConfig,
    ToyDataConfig,
    TrainConfig,
)
from rlhf_dist.config.sizes import (
    PPOSizes,
    RayDPOSizes,
    launcher_world_size,
    ppo_roles,
    ppo_sizes,
    ray_dpo_sizes,
    resolve_job,
)
from rlhf_dist.config.usage import job_of

__all__ = [
    "LOGGING_BACKENDS",
    "CheckpointConfig",
    "Config",
    "ConfigError",
    "DPOConfig",
    "DataConfig",
    "EnvConfig",
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
    "launcher_world_size",
    "load_config",
    "ppo_roles",
    "PPOSizes",
    "RayDPOSizes",
    "ppo_sizes",
    "ray_dpo_sizes",
    "resolve_job",
    "resolve_ppo_sizes",
    "save_config",
    "to_dict",
    "to_yaml",
]


# --------------------------------------------------------------------------- the whole


@dataclass
class Config:
    """Every section of a job.  Unused sections keep their defaults."""

    output_dir: str = "outputs/run"  # the run's directory: config, metrics, checkpoints, export
    # seeds the model initialisation, data order, dropout and sampling of every rank and role
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    ref_model: ModelConfig = field(default_factory=ModelConfig)
    reward_model: ModelConfig = field(default_factory=ModelConfig)
    critic_model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    env: EnvConfig = field(default_factory=EnvConfig)

    def __post_init__(self):
        self._derive()
        self.check()

    def _derive(self) -> None:
        """The resolve step at load: the two keys whose value means "derived" get it --
        ``dpo.layout: auto`` (:attr:`auto_dpo_layout`) and ``resources.rollout.max_model_len:
        null`` (:attr:`longest_sequence`).  Nothing else is assigned,
        so a loaded config derives to itself (saved and loaded again, it is equal)."""
        if self.dpo.layout == "auto":
            self.dpo.layout = self.auto_dpo_layout
        if self.resources.rollout.max_model_len is None:
            self.resources.rollout.max_model_len = self.longest_sequence

    @property
    def longest_sequence(self) -> int:
        """The longest token sequence a rollout engine serves: prompt + response
        (data.max_prompt_length + rollout.max_new_tokens); with an environment (``env.name``) a
        model turn continues a trajectory of up to env.max_trajectory_tokens − 1 tokens, so
        that + rollout.max_new_tokens when it is longer."""
        single = self.data.max_prompt_length + self.rollout.max_new_tokens
        if not self.env.enabled:
            return single
        return max(single, self.env.max_trajectory_tokens - 1 + self.rollout.max_new_tokens)

    def check(self) -> None:
        """The rules across sections; each error names the key.  Reads, never assigns: run
        it again on a loaded config and nothing changes."""
        self._check_lora()  # first: "frozen, no adapter" before a section's own lora rules
        for role in ("model", "ref_model", "reward_model", "critic_model"):
            getattr(self, role).check(role)
        _require(bool(self.output_dir), "output_dir", "must not be empty")
        _require(
            not self.dpo.ref_offload or self.deepspeed.zero_stage == 3,
            "dpo.ref_offload",
            f"offloads ZeRO-3 shards and needs deepspeed.zero_stage=3, got "
            f"{self.deepspeed.zero_stage}",
        )
        flash = self._flash_roles()
        _require(
            self.dpo.layout == "auto" or self.train.padding_free == (self.dpo.layout == "packed"),
            "dpo.layout",
            f"{self.dpo.layout} with train.padding_free={self.train.padding_free}: "
            "padding-free pairs are dpo.layout=packed (leave dpo.layout=auto)",
        )
        _require(
            self.dpo.layout != "shared_prompt" or not flash,
            "dpo.layout",
            f"shared_prompt needs a 4D attention mask, which {flash[0] if flash else ''}"
            ".attn_implementation=flash_attention_2 does not take: use sdpa, "
            "dpo.layout=padded or auto",
        )
        self.dpo.check_batch(self.train.micro_batch_size, self.train.eval_batch_size)
        _require(
            not self.dpo.precompute_ref or self.dpo.mode == "launcher",
            "dpo.precompute_ref",
            "is implemented for dpo.mode=launcher only",
        )
        _require(
            not self.dpo.ref_offload or self.dpo.mode == "launcher",
            "dpo.ref_offload",
            "is implemented for dpo.mode=launcher only; on Ray, "
            "resources.reference.offload_when_idle moves the reference to CPU memory "
            "between its forwards",
        )
        self._check_reference_in_actor()
        self._check_idle_offload()
        self._check_vllm()
        self.env.check_lengths(self.data.max_prompt_length)
        self.ppo.check_scored(by_env=self.env.enabled)
        resume = self.checkpoint.resume
        _require(
            resume in ("none", "auto") or bool(resume),
            "checkpoint.resume",
            "must be none, auto or a checkpoint directory",
        )

    def _check_reference_in_actor(self) -> None:
        """``resources.reference_in_actor`` leaves no reference group to colocate or offload:
        the actor's own keys apply to both of its engines."""
        if not self.resources.reference_in_actor:
            return
        in_actor = "the reference is in the actor's processes (resources.reference_in_actor)"
        _require(
            not self.resources.colocate_actor_ref,
            "resources.colocate_actor_ref",
            f"there is no reference group to colocate: {in_actor}",
        )
        _require(
            not self.resources.reference.offload_when_idle,
            "resources.reference.offload_when_idle",
            f"there is no reference group: {in_actor}; resources.actor.offload_when_idle "
            "offloads both of its engines",
        )

    def _check_idle_offload(self) -> None:
        """``resources.<role>.offload_when_idle`` against what DeepSpeed can move."""
        for role in ("actor", "critic", "reward", "reference"):
            if not getattr(self.resources, role).offload_when_idle:
                continue
            ds, name = self.deepspeed.for_role(role), f"resources.{role}.offload_when_idle"
            _require(
                not ds.offload_param,
                name,
                "conflicts with deepspeed.offload_param=true: the parameters already live "
                "in CPU memory, and DeepSpeed cannot move the states of such an engine",
            )
            _require(
                role not in ("actor", "critic") or ds.zero_stage > 0 or not ds.bf16,
                name,
                f"needs deepspeed.zero_stage>=1 for the trained {role} with "
                f"deepspeed.bf16=true (ZeRO-0's bf16 optimizer keeps flat weight copies "
                f"that cannot be moved)",
            )

    @property
    def shared_reference(self) -> bool:
        """The reference is the policy's own base with its LoRA adapter switched off: a
        ``model.lora`` policy and no ``ref_model.name_or_path`` of its own.  PPO/GRPO then
        create no reference group and DPO builds no reference copy."""
        return self.model.lora.enabled and self.ref_model.name_or_path is None

    @property
    def reference_group(self) -> bool:
        """Whether a Ray job creates a reference group: not with a shared LoRA base
        (:attr:`shared_reference`) nor with ``resources.reference_in_actor``; the actor's
        processes answer the reference's calls then.  (DPO on Ray with a loss that uses no
        reference creates none either: ``trainers.dpo_ray``.)"""
        return not (self.shared_reference or self.resources.reference_in_actor)

    def _flash_roles(self) -> List[str]:
        return [
            role
            for role in ("model", "ref_model")
            if getattr(self, role).attn_implementation == "flash_attention_2"
        ]

    @property
    def auto_dpo_layout(self) -> str:
        """What ``dpo.layout=auto`` means: packed with ``train.padding_free`` (padding-free
        batches are the packed layout's), else padded under flash-attention-2 (no 4D mask),
        else shared_prompt."""
        return (
            "packed"
            if self.train.padding_free
            else "padded"
            if self._flash_roles()
            else "shared_prompt"
        )

    @property
    def ppo_sizes(self) -> PPOSizes:
        """The PPO iteration's sizes, checked (:func:`rlhf_dist.config.sizes.ppo_sizes`)."""
        return _sizes.ppo_sizes(self)

    @property
    def ray_dpo_sizes(self) -> RayDPOSizes:
        """DPO on Ray's sizes, checked (:func:`rlhf_dist.config.sizes.ray_dpo_sizes`)."""
        return _sizes.ray_dpo_sizes(self)

    def _check_lora(self) -> None:
        """Adapters only on trained models, and only with what can train them."""
        for role in ("ref_model", "reward_model"):
            section = getattr(self, role)
            _require(
                not section.lora.enabled and not section.quantized,
                f"{role}.lora.r",
                f"{role} is frozen and takes no adapter or quantisation: adapters go on "
                "model (SFT, RM, DPO, the PPO actor) and critic_model",
            )
        for role in ("model", "critic_model"):
            section = getattr(self, role)
            if not section.lora.enabled:
                continue
            trained = "actor" if role == "model" else "critic"
            ds = self.deepspeed.for_role(trained)
            _require(
                ds.zero_stage < 3 or not getattr(self.resources, trained).offload_when_idle,
                f"resources.{trained}.offload_when_idle",
                f"does not work with {role}.lora under ZeRO-3 (DeepSpeed's offload_states "
                "cannot move a partitioned model with frozen parameters): use "
                "deepspeed.zero_stage <= 2 for this role",
            )
            _require(
                not ds.offload_param,
                f"{role}.lora.r",
                "LoRA does not work with deepspeed.offload_param=true (the frozen base "
                "would be streamed from CPU memory for adapters of a few MB): leave "
                "offload_param off, the base has no optimizer state to offload",
            )
            _require(
                not section.quantized or ds.zero_stage < 3,
                f"{role}.load_in_4bit",
                "quantised (QLoRA) weights cannot be partitioned by ZeRO-3: use "
                "deepspeed.zero_stage <= 2",
            )
        if not self.shared_reference:
            return
        _require(
            not self.resources.reference_in_actor,
            "resources.reference_in_actor",
            "there is no reference copy to place: with model.lora and no "
            "ref_model.name_or_path the reference is the policy's base (adapter off), "
            "in the actor's processes already",
        )
        _require(
            not self.dpo.ref_offload,
            "dpo.ref_offload",
            "there is no reference copy to offload: with model.lora and no "
            "ref_model.name_or_path the reference is the policy's base (adapter off)",
        )
        _require(
            not self.resources.colocate_actor_ref,
            "resources.colocate_actor_ref",
            "there is no reference group: with model.lora and no ref_model.name_or_path "
            "the actor computes the reference log-probs with its adapter off",
        )

    def _check_vllm(self) -> None:
        """The vLLM engines' section: ``max_model_len`` defaults to prompt + response and must
        hold them (filled in by :meth:`_derive`); colocation needs the vLLM backend and one
        engine per actor device."""
        engines, needed = self.resources.rollout, self.longest_sequence
        what = (
            f"env.max_trajectory_tokens={self.env.max_trajectory_tokens} - 1"
            if needed > self.data.max_prompt_length + self.rollout.max_new_tokens
            else f"data.max_prompt_length={self.data.max_prompt_length}"
        )
        _require(
            self.rollout.backend != "vllm"
            or engines.max_model_len is None
            or engines.max_model_len >= needed,
            "resources.rollout.max_model_len",
            f"{engines.max_model_len} is below {what} + rollout.max_new_tokens="
            f"{self.rollout.max_new_tokens} = {needed}",
        )
        res = self.resources
        if not res.colocate_rollout:
            return
        _require(
            self.rollout.backend == "vllm",
            "resources.colocate_rollout",
            "needs rollout.backend=vllm",
        )
        _require(
            self.rollout.max_staleness == 0,
            "rollout.max_staleness",
            "needs engines on devices of their own: colocated engines sleep while the "
            "learners train (resources.colocate_rollout=false)",
        )
        _require(
            res.rollout.tensor_parallel_size == 1
            and res.rollout.num_engines == res.actor.world_size,
            "resources.colocate_rollout",
            f"one engine per actor device, so resources.rollout.num_engines must equal the "
            f"actor's ranks ({res.actor.world_size}) and tensor_parallel_size must be 1; "
            f"got {res.rollout.num_engines} × {res.rollout.tensor_parallel_size}",
        )

    def resolve(self, dp_size: int) -> "Config":
        """The resolve step of a job with one trained model over ``dp_size`` data-parallel
        ranks: ``train.gradient_accumulation_steps`` (null = derived) filled in and checked
        (:meth:`TrainConfig.resolve_accumulation`).  Idempotent for one ``dp_size``;
        ``load_config(..., job=...)`` runs it for the job's ranks."""
        _positive("data-parallel ranks", dp_size)
        self.train.resolve_accumulation(dp_size)
        return self


# the old name of ppo_sizes (it never assigned anything); new code reads cfg.ppo_sizes
resolve_ppo_sizes = ppo_sizes


# --------------------------------------------------------------------------- loading


def _field_names(section: Any) -> List[str]:
    return [f.name for f in fields(section)] if is_dataclass(section) else []


def _section_at(path: Sequence[str]) -> Any:
    node: Any = Config
    for part in path:
        match = [f for f in fields(node) if f.name == part] if is_dataclass(node) else []
        if not match:
            return None
        node = match[0].default_factory() if callable(match[0].default_factory) else None
        node = type(node) if node is not None else None
    return node


def _unknown_key_error(full_key: str) -> ConfigError:
    *parent, leaf = full_key.split(".")
    section = _section_at(parent)
    valid = _field_names(section) if section is not None else _field_names(Config)
    close = difflib.get_close_matches(leaf, valid, n=1, cutoff=0.5)
    where = ".".join(parent) or "the top level"
    hint = f"; did you mean '{'.'.join(parent + [close[0]])}'?" if close else ""
    return ConfigError(f"{full_key}: unknown key in {where}{hint} (valid: {', '.join(valid)})")


def _in_list_entries(leaf: str, node: Any, path: str = "") -> List[str]:
    """Paths (``ppo.rewards[0].wieght``) where ``leaf`` is a key of a mapping inside a list of
    the user's YAML / overrides -- OmegaConf's error then names the key alone."""
    found: List[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == leaf and "[" in path:
                found.append(where)
            found += _in_list_entries(leaf, value, where)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _in_list_entries(leaf, value, f"{path}[{i}]")
    return found


def _translate(err: OmegaConfBaseException, user_layers: Sequence[Any] = ()) -> ConfigError:
    key = str(getattr(err, "full_key", "") or "?")
    entry_type = getattr(err, "object_type", None)
    if isinstance(err, ConfigKeyError) and "." not in key and is_dataclass(entry_type):
        paths = [
            p for layer in user_layers for p in _in_list_entries(key, OmegaConf.to_container(layer))
        ]
        if paths:
            valid = _field_names(entry_type)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            parent = paths[0].rsplit(".", 1)[0]
            hint = f"; did you mean '{parent}.{close[0]}'?" if close else ""
            return ConfigError(
                f"{paths[0]}: unknown key in {parent}{hint} (valid: {', '.join(valid)})"
            )
    if isinstance(err, ConfigKeyError) or "not in" in str(err):
        return _unknown_key_error(key)
    if isinstance(err, ValidationError):
        first_line = str(err).splitlines()[0]
        return ConfigError(f"{key}: wrong type: {first_line}")
    return ConfigError(f"{key}: {str(err).splitlines()[0]}")


def _override_list(overrides: Sequence[str]) -> List[str]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. train.lr=1e-5)")
    return list(overrides)


def load_config(
    path: Optional[str] = None,
    overrides: Sequence[str] = (),
    defaults: Sequence[str] = (),
    job: Optional[str] = None,
) -> Config:
    """YAML file (optional) ← ``key.sub=value`` overrides → a validated :class:`Config`;
    ``defaults`` (``key=value``, a tool's own defaults) sit under the YAML.  With ``job``
    (an ``rlhf-dist`` command: ``dpo`` with ``dpo.mode=ray`` is DPO on Ray) the job's
    sizes are checked and derived too (:func:`~rlhf_dist.config.sizes.resolve_job`)."""
    schema = OmegaConf.structured(Config)
    layers = [schema]
    if defaults:
        layers.append(OmegaConf.from_dotlist(_override_list(defaults)))
    if path is not None:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path!r} does not exist")
        layers.append(OmegaConf.load(path))
    layers.append(OmegaConf.from_dotlist(_override_list(overrides)))
    try:
        merged = OmegaConf.merge(*layers)
        cfg = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as err:
        cause = err.__cause__ if isinstance(err.__cause__, ConfigError) else None
        raise (cause or _translate(err, layers[1:])) from None
    assert isinstance(cfg, Config)
    if job is not None:
        resolve_job(cfg, job_of(job, cfg))
    return cfg


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what ``--print-config`` prints and each run saves)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, output_dir: Optional[str] = None) -> Path:
    """Write ``config.yaml`` into the run directory and return its path."""
    out = Path(output_dir or cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "config.yaml"
    target.write_text(to_yaml(cfg))
    return target


def to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain nested dict of the resolved config (uploaded to W&B, stored in checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))
