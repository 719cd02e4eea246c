"""One typed config for every job: YAML merged with ``key.sub=value`` overrides.

Each section is a dataclass that validates itself in ``__post_init__``; cross-section rules
and derived sizes live in ``Config.__post_init__`` / ``Config.resolve``.  Parsing, type
coercion and unknown-key detection come from OmegaConf structured configs; every failure is
re-raised as :class:`ConfigError` naming the field, the bad value and (for unknown keys) the
closest valid key.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from rlhf_dist.algo.advantages import MIN_GROUP_SIZE
from rlhf_dist.config.checks import ConfigError, _positive, _require
from rlhf_dist.config.sections import (LOGGING_BACKENDS, CheckpointConfig, DataConfig,
                                       DeepSpeedSection, DPOConfig, LoggingConfig,
                                       LoraConfig, ModelConfig,
                                       PPOConfig, ResourcesConfig, RMConfig, RoleResources,
                                       RolloutConfig, RolloutResources, SFTConfig,
                                       TinyModelConfig, ToyDataConfig, TrainConfig)

__all__ = ["LOGGING_BACKENDS", "CheckpointConfig", "Config", "ConfigError", "DPOConfig",
           "DataConfig",
           "DeepSpeedSection", "LoggingConfig", "LoraConfig", "ModelConfig", "PPOConfig",
           "RMConfig",
           "ResourcesConfig", "RoleResources", "RolloutConfig", "RolloutResources",
           "SFTConfig", "TinyModelConfig",
           "ToyDataConfig", "TrainConfig", "launcher_world_size", "load_config", "ppo_roles",
           "resolve_ppo_sizes", "save_config", "to_dict", "to_yaml"]


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

    def __post_init__(self):
        self._check_lora()  # first: "frozen, no adapter" before a section's own lora rules
        for role in ("model", "ref_model", "reward_model", "critic_model"):
            getattr(self, role).check(role)
        _require(bool(self.output_dir), "output_dir", "must not be empty")
        _require(not self.dpo.ref_offload or self.deepspeed.zero_stage == 3, "dpo.ref_offload",
                 f"offloads ZeRO-3 shards and needs deepspeed.zero_stage=3, got "
                 f"{self.deepspeed.zero_stage}")
        flash = [role for role in ("model", "ref_model")
                 if getattr(self, role).attn_implementation == "flash_attention_2"]
        self._resolve_dpo_layout(flash)
        _require(self.dpo.layout != "shared_prompt" or not flash, "dpo.layout",
                 f"shared_prompt needs a 4D attention mask, which {flash[0] if flash else ''}"
                 ".attn_implementation=flash_attention_2 does not take: use sdpa, "
                 "dpo.layout=padded or auto")
        _require(not self.dpo.precompute_ref or self.dpo.mode == "launcher",
                 "dpo.precompute_ref", "is implemented for dpo.mode=launcher only")
        _require(not self.dpo.ref_offload or self.dpo.mode == "launcher", "dpo.ref_offload",
                 "is implemented for dpo.mode=launcher only; on Ray, "
                 "resources.reference.offload_when_idle moves the reference to CPU memory "
                 "between its forwards")
        self._check_reference_in_actor()
        self._check_idle_offload()
        self._check_vllm()
        resume = self.checkpoint.resume
        _require(resume in ("none", "auto") or bool(resume), "checkpoint.resume",
                 "must be none, auto or a checkpoint directory")

    def _check_reference_in_actor(self) -> None:
        """``resources.reference_in_actor`` leaves no reference group to colocate or offload:
        the actor's own keys apply to both of its engines."""
        if not self.resources.reference_in_actor:
            return
        in_actor = "the reference is in the actor's processes (resources.reference_in_actor)"
        _require(not self.resources.colocate_actor_ref, "resources.colocate_actor_ref",
                 f"there is no reference group to colocate: {in_actor}")
        _require(not self.resources.reference.offload_when_idle,
                 "resources.reference.offload_when_idle",
                 f"there is no reference group: {in_actor}; resources.actor.offload_when_idle "
                 "offloads both of its engines")

    def _check_idle_offload(self) -> None:
        """``resources.<role>.offload_when_idle`` against what DeepSpeed can move."""
        for role in ("actor", "critic", "reward", "reference"):
            if not getattr(self.resources, role).offload_when_idle:
                continue
            ds, name = self.deepspeed.for_role(role), f"resources.{role}.offload_when_idle"
            _require(not ds.offload_param, name,
                     "conflicts with deepspeed.offload_param=true: the parameters already live "
                     "in CPU memory, and DeepSpeed cannot move the states of such an engine")
            _require(role not in ("actor", "critic") or ds.zero_stage > 0 or not ds.bf16, name,
                     f"needs deepspeed.zero_stage>=1 for the trained {role} with "
                     f"deepspeed.bf16=true (ZeRO-0's bf16 optimizer keeps flat weight copies "
                     f"that cannot be moved)")

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

    def _resolve_dpo_layout(self, flash) -> None:
        """``dpo.layout=auto`` -> packed with ``train.padding_free``, else padded under
        flash-attention-2, else shared_prompt; padding-free batches are the packed layout's."""
        if self.dpo.layout == "auto":
            self.dpo.layout = ("packed" if self.train.padding_free else
                               "padded" if flash else "shared_prompt")
        _require(self.train.padding_free == (self.dpo.layout == "packed"), "dpo.layout",
                 f"{self.dpo.layout} with train.padding_free={self.train.padding_free}: "
                 "padding-free pairs are dpo.layout=packed (leave dpo.layout=auto)")

    def _check_lora(self) -> None:
        """Adapters only on trained models, and only with what can train them."""
        for role in ("ref_model", "reward_model"):
            section = getattr(self, role)
            _require(not section.lora.enabled and not section.quantized, f"{role}.lora.r",
                     f"{role} is frozen and takes no adapter or quantisation: adapters go on "
                     "model (SFT, RM, DPO, the PPO actor) and critic_model")
        for role in ("model", "critic_model"):
            section = getattr(self, role)
            if not section.lora.enabled:
                continue
            trained = "actor" if role == "model" else "critic"
            ds = self.deepspeed.for_role(trained)
            _require(ds.zero_stage < 3 or not getattr(self.resources, trained).offload_when_idle,
                     f"resources.{trained}.offload_when_idle",
                     f"does not work with {role}.lora under ZeRO-3 (DeepSpeed's offload_states "
                     "cannot move a partitioned model with frozen parameters): use "
                     "deepspeed.zero_stage <= 2 for this role")
            _require(not ds.offload_param, f"{role}.lora.r",
                     "LoRA does not work with deepspeed.offload_param=true (the frozen base "
                     "would be streamed from CPU memory for adapters of a few MB): leave "
                     "offload_param off, the base has no optimizer state to offload")
            _require(not section.quantized or ds.zero_stage < 3, f"{role}.load_in_4bit",
                     "quantised (QLoRA) weights cannot be partitioned by ZeRO-3: use "
                     "deepspeed.zero_stage <= 2")
        if not self.shared_reference:
            return
        _require(not self.resources.reference_in_actor, "resources.reference_in_actor",
                 "there is no reference copy to place: with model.lora and no "
                 "ref_model.name_or_path the reference is the policy's base (adapter off), "
                 "in the actor's processes already")
        _require(not self.dpo.ref_offload, "dpo.ref_offload",
                 "there is no reference copy to offload: with model.lora and no "
                 "ref_model.name_or_path the reference is the policy's base (adapter off)")
        _require(not self.resources.colocate_actor_ref, "resources.colocate_actor_ref",
                 "there is no reference group: with model.lora and no ref_model.name_or_path "
                 "the actor computes the reference log-probs with its adapter off")

    def _check_vllm(self) -> None:
        """The vLLM engines' section: ``max_model_len`` defaults to prompt + response and must
        hold them; colocation needs the vLLM backend and one engine per actor device."""
        engines, needed = self.resources.rollout, self.data.max_prompt_length + \
            self.rollout.max_new_tokens
        if engines.max_model_len is None:
            engines.max_model_len = needed
        _require(self.rollout.backend != "vllm" or engines.max_model_len >= needed,
                 "resources.rollout.max_model_len",
                 f"{engines.max_model_len} is below data.max_prompt_length="
                 f"{self.data.max_prompt_length} + rollout.max_new_tokens="
                 f"{self.rollout.max_new_tokens} = {needed}")
        res = self.resources
        if not res.colocate_rollout:
            return
        _require(self.rollout.backend == "vllm", "resources.colocate_rollout",
                 "needs rollout.backend=vllm")
        _require(res.rollout.tensor_parallel_size == 1 and
                 res.rollout.num_engines == res.actor.world_size, "resources.colocate_rollout",
                 f"one engine per actor device, so resources.rollout.num_engines must equal the "
                 f"actor's ranks ({res.actor.world_size}) and tensor_parallel_size must be 1; "
                 f"got {res.rollout.num_engines} × {res.rollout.tensor_parallel_size}")

    def resolve(self, dp_size: int) -> "Config":
        """Compute derived sizes once, for ``dp_size`` data-parallel ranks of the trained model."""
        _positive("data-parallel ranks", dp_size)
        self.train.resolve_accumulation(dp_size)
        return self


def ppo_roles(cfg: Config) -> List[str]:
    """The Ray roles a PPO job creates: no critic for critic-free estimators, no reward
    group when only a reward function scores, no reference group when the actor answers
    for it (:attr:`Config.reference_group`)."""
    return (["actor"] + (["reference"] if cfg.reference_group else []) +
            (["reward"] if cfg.ppo.use_reward_model else []) +
            (["critic"] if cfg.ppo.needs_critic else []))


def resolve_ppo_sizes(cfg: Config) -> None:
    """PPO sizes: each group forwards its equal share of an iteration's experience in
    micro-batches (ZeRO-3 forwards are collective, so every rank needs the same count), and
    each minibatch is one optimiser step of the actor and the critic."""
    n_experience = cfg.rollout.rollout_batch_size * cfg.rollout.n_samples_per_prompt
    mb, micro = cfg.ppo.mini_batch_size, cfg.train.micro_batch_size
    _require(n_experience % mb == 0, "ppo.mini_batch_size",
             f"{mb} does not divide rollout.rollout_batch_size × rollout.n_samples_per_prompt"
             f" = {cfg.rollout.rollout_batch_size} × {cfg.rollout.n_samples_per_prompt}"
             f" = {n_experience}")
    _require(cfg.ppo.overlong_buffer <= cfg.rollout.max_new_tokens, "ppo.overlong_buffer",
             f"{cfg.ppo.overlong_buffer} is longer than rollout.max_new_tokens="
             f"{cfg.rollout.max_new_tokens}")
    res = cfg.resources
    # each actor rank samples n_samples_per_prompt responses for an equal share of the prompts
    # (unequal shares would desynchronise ZeRO-3's collective forwards)
    _require(cfg.rollout.rollout_batch_size % res.actor.world_size == 0,
             "rollout.rollout_batch_size", f"{cfg.rollout.rollout_batch_size} prompts do not "
             f"split evenly over resources.actor ranks={res.actor.world_size}")
    for role in ppo_roles(cfg):
        world = getattr(res, role).world_size
        _require(n_experience % (world * micro) == 0, f"resources.{role}",
                 f"{world} ranks × train.micro_batch_size={micro} do not divide the "
                 f"{n_experience} sequences of an iteration (rollout.rollout_batch_size × "
                 f"rollout.n_samples_per_prompt)")
        if role in ("actor", "critic"):
            _require(mb % (world * micro) == 0, "ppo.mini_batch_size",
                     f"{mb} is not divisible by resources.{role} ranks={world} × "
                     f"train.micro_batch_size={micro}")
    for first, second, flag in (("actor", "reference", "colocate_actor_ref"),
                                ("critic", "reward", "colocate_critic_reward")):
        if getattr(res, flag):
            _require(getattr(res, first) == getattr(res, second), f"resources.{flag}",
                     f"colocated roles need the same resources: resources.{first}="
                     f"{getattr(res, first)} vs resources.{second}={getattr(res, second)}")
    need = MIN_GROUP_SIZE.get(cfg.ppo.advantage_estimator, 1)
    _require(cfg.rollout.n_samples_per_prompt >= need, "rollout.n_samples_per_prompt",
             f"is {cfg.rollout.n_samples_per_prompt}; ppo.advantage_estimator="
             f"{cfg.ppo.advantage_estimator} compares samples of one prompt and needs >= {need}")
    if cfg.ppo.dynamic_sampling:
        _require(cfg.rollout.n_samples_per_prompt >= 2, "rollout.n_samples_per_prompt",
                 f"is {cfg.rollout.n_samples_per_prompt}; ppo.dynamic_sampling keeps prompts "
                 "whose responses' rewards differ and needs >= 2")


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
        paths = [p for layer in user_layers
                 for p in _in_list_entries(key, OmegaConf.to_container(layer))]
        if paths:
            valid = _field_names(entry_type)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            parent = paths[0].rsplit(".", 1)[0]
            hint = f"; did you mean '{parent}.{close[0]}'?" if close else ""
            return ConfigError(f"{paths[0]}: unknown key in {parent}{hint} "
                               f"(valid: {', '.join(valid)})")
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


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (),
                defaults: Sequence[str] = ()) -> Config:
    """YAML file (optional) ← ``key.sub=value`` overrides → a validated :class:`Config`;
    ``defaults`` (``key=value``, a tool's own defaults) sit under the YAML."""
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


def launcher_world_size() -> int:
    """Data-parallel ranks of a launcher (deepspeed / torchrun) job; 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def to_dict(cfg: Config) -> Dict[str, Any]:
    """Plain nested dict of the resolved config (uploaded to W&B, stored in checkpoints)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))
