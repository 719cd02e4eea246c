"""The one DeepSpeed engine wrapper every trainer and Ray worker uses."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from rlhf_dist.algo.finite import NonFiniteError
from rlhf_dist.config import DeepSpeedSection, TrainConfig
from rlhf_dist.engine import dist
from rlhf_dist.engine.ds_config import build_ds_config, build_frozen_ds_config
from rlhf_dist.engine.offload import (
    TensorHomes,
    deepspeed_include,
    empty_device_cache,
    left_on_device,
)
from rlhf_dist.engine.schedule import lr_multiplier
from rlhf_dist.models.lora import (
    adapter_disabled,
    base_state,
    hf_name,
    is_lora,
    merged_parameters,
    merged_shapes,
)
from rlhf_dist.models.save import save_model, save_tensors
from rlhf_dist.utils.checksum import state_checksum

ENGINE_TAG = "engine"


def _build_under_zero3(build_model: Callable[[], nn.Module], ds_config: Dict[str, Any]):
    """ZeRO-3 models are built inside ``HfDeepSpeedConfig`` so transformers partitions the
    weights as they are created (``zero.Init``) and loads checkpoints into the shards."""
    if ds_config["zero_optimization"]["stage"] != 3:
        return build_model(), None
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = HfDeepSpeedConfig(ds_config)  # weakly referenced by transformers
    return build_model(), keep_alive


def _optimizer(params, ds: DeepSpeedSection, train: TrainConfig) -> torch.optim.Optimizer:
    kwargs = dict(lr=train.lr, betas=tuple(train.adam_betas), weight_decay=train.weight_decay)
    if ds.offload_optimizer:
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # compiled on first use, then cached

        return DeepSpeedCPUAdam(params, adamw_mode=True, **kwargs)
    # fused: one kernel for all tensors (CPU and CUDA), as TRL/HF default to on GPU
    return torch.optim.AdamW(params, fused=True, **kwargs)


class ModelEngine:
    """A model held by DeepSpeed: trained (optimizer + scheduler) or frozen (``optimizer``
    absent).  Methods mirror what trainers need; the DeepSpeed engine is ``self.ds``."""

    def __init__(
        self, ds_engine, ds_config: Dict[str, Any], hf_keep_alive=None, skip_nonfinite: bool = False
    ):
        self.ds = ds_engine
        self.lora = is_lora(ds_engine.module)  # a peft model: adapters trained, base frozen
        self.ds_config = ds_config
        self._hf_keep_alive = hf_keep_alive
        self.offloaded = False  # see offload()
        self._homes = TensorHomes()
        self.skip_nonfinite = skip_nonfinite  # train.on_nonfinite=skip_step: see backward()
        self._bad_loss: Optional[str] = None  # a skipped loss, reported when its update drops

    # ------------------------------------------------------------------ construction
    @classmethod
    def trained(
        cls,
        build_model: Callable[[], nn.Module],
        ds: DeepSpeedSection,
        train: TrainConfig,
        dp_size: int,
        total_steps: int,
    ) -> "ModelEngine":
        deepspeed = dist.import_deepspeed()
        config = build_ds_config(ds, train, dp_size)
        model, keep = _build_under_zero3(build_model, config)
        optimizer = _optimizer([p for p in model.parameters() if p.requires_grad], ds, train)
        warmup = int(train.warmup_ratio * total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_multiplier(train.lr_scheduler, total_steps, warmup, train.min_lr_ratio)
        )
        engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        if dp_size == 1 and ds.zero_stage == 0:
            # one rank: nothing to average, skip flattening and copying every gradient back
            engine.enable_backward_allreduce = False
        return cls(engine, config, keep, skip_nonfinite=train.on_nonfinite == "skip_step")

    @classmethod
    def frozen(
        cls,
        build_model: Callable[[], nn.Module],
        ds: DeepSpeedSection,
        micro_batch_size: int,
        dp_size: int,
    ) -> "ModelEngine":
        deepspeed = dist.import_deepspeed()
        config = build_frozen_ds_config(ds, micro_batch_size, dp_size)
        model, keep = _build_under_zero3(build_model, config)
        model.requires_grad_(False)
        engine, *_ = deepspeed.initialize(model=model, config=config)
        engine.eval()
        return cls(engine, config, keep)

    # ------------------------------------------------------------------ training
    @property
    def module(self) -> nn.Module:
        return self.ds.module

    @property
    def zero_stage(self) -> int:
        return int(self.ds_config["zero_optimization"]["stage"])

    def __call__(self, *args, **kwargs):
        self._require_loaded("forward")
        return self.ds(*args, **kwargs)

    def base(self) -> "BaseModel":
        """The frozen base of a LoRA engine, called like the engine: forwards with the adapter
        disabled -- bit for bit the model before any update (the shared reference)."""
        if not self.lora:
            raise RuntimeError("base(): this engine has no LoRA adapter")
        return BaseModel(self)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of a finite loss.  A NaN/inf loss on any rank is seen by every rank (they
        agree first, so none is left waiting in a collective) and names the ranks that had
        one.  It stops there, unless ``train.on_nonfinite=skip_step`` and the update can be
        dropped whole: under ZeRO 1-3 the loss goes backward, its non-finite gradients make
        DeepSpeed drop the update on the boundary and :meth:`step` reports it (skippable);
        under ZeRO 0 only before the first micro-batch of an accumulation window."""
        bad = dist.ranks_with(not bool(torch.isfinite(loss.detach()).all()))
        if bad:
            what = (
                f"non-finite loss ({float(loss.detach())} here) on ranks {bad} of "
                f"{dist.world_size()}"
            )
            if not self.skip_nonfinite:
                raise NonFiniteError(what)
            if self.zero_stage == 0:
                if self.ds.micro_steps % self.ds.gradient_accumulation_steps() == 0:
                    raise NonFiniteError(what, skippable=True)  # nothing accumulated yet
                raise NonFiniteError(
                    f"{what}: half an accumulated update cannot be dropped "
                    "under deepspeed.zero_stage=0 (train.on_nonfinite="
                    "skip_step needs zero_stage >= 1 here)"
                )
            self._bad_loss = self._bad_loss or what
        self.ds.backward(loss)

    def step(self) -> None:
        """Call after every micro-batch; DeepSpeed steps the optimizer on accumulation
        boundaries only (and scales gradients by 1/accumulation in ``backward``).  On a
        boundary, an update DeepSpeed dropped (its ZeRO optimizers drop one whose gradient
        norm is NaN/inf; every rank alike) raises a skippable :class:`NonFiniteError`; a
        non-finite gradient norm after an applied update stops."""
        self._require_loaded("step")
        boundary = self.ds.is_gradient_accumulation_boundary()
        self.ds.step()
        if not boundary:
            return
        if not self.ds.was_step_applied():
            what, self._bad_loss = self._bad_loss or "non-finite gradient norm", None
            raise NonFiniteError(f"{what}; DeepSpeed dropped the update", skippable=True)
        norm = self.ds.get_global_grad_norm()
        if norm is not None and not math.isfinite(float(norm)):
            raise NonFiniteError(f"non-finite gradient norm ({float(norm)})")

    @property
    def global_steps(self) -> int:
        return int(self.ds.global_steps)

    @property
    def lr(self) -> float:
        return float(self.ds.get_lr()[0])

    def train(self) -> None:
        self.ds.train()

    def eval(self) -> None:
        self.ds.eval()

    def size_metrics(self) -> Dict[str, float]:
        """``params/total``, ``params/trainable`` (full sizes) and what this rank holds:
        ``memory/param_mb`` (its parameters or ZeRO-3 shards) and ``memory/adam_state_mb``
        (Adam's two fp32 moments of its share of the trainable parameters: partitioned over
        the ranks from ZeRO-1 on) -- with LoRA, the adapter's only."""
        dp = dist.world_size() if self.zero_stage >= 1 else 1
        total = trainable = param_bytes = 0
        for param in self.module.parameters():
            size = int(getattr(param, "ds_numel", param.numel()))
            local = getattr(param, "ds_tensor", param)
            total += size
            trainable += size if param.requires_grad else 0
            param_bytes += local.numel() * local.element_size()
        return {
            "params/total": float(total),
            "params/trainable": float(trainable),
            "memory/param_mb": param_bytes / 2**20,
            "memory/adam_state_mb": 2 * 4 * trainable / dp / 2**20,
        }

    # ------------------------------------------------------------------ idle offload
    def offload(self) -> None:
        """Move every state this rank holds on its device (weights, gradients, optimizer
        states, buffers) to CPU memory; a no-op when already offloaded.  DeepSpeed's own
        ``offload_states`` where it can (trained, ZeRO 1–3), tensor by tensor for the rest
        (``engine/offload.py``).  :meth:`reload` must come before the next forward or step."""
        if self.offloaded:
            return
        self.ds.empty_partition_cache()  # ZeRO-3: drop gathered full parameters first
        include = deepspeed_include(self.ds)
        if include is not None:
            self.ds.offload_states(include=include, pin_memory=True)
        moved = set(getattr(self.ds.optimizer, "offloaded_states", ()))
        self._homes.offload(left_on_device(self.ds, moved))
        empty_device_cache()
        self.offloaded = True

    def reload(self) -> None:
        """Undo :meth:`offload` (each state back on the device it came from); a no-op when
        not offloaded."""
        if not self.offloaded:
            return
        if deepspeed_include(self.ds) is not None:
            self.ds.reload_states()
        self._homes.reload()
        self.offloaded = False

    def _require_loaded(self, what: str) -> None:
        if self.offloaded:
            raise RuntimeError(f"{what} on an offloaded engine: call reload() first")

    # ------------------------------------------------------------------ state
    def save(self, directory: Path) -> None:
        """Collective: model, optimizer and scheduler state of every rank (of a LoRA engine:
        the adapter and what is trained in full only -- the base is rebuilt, not saved)."""
        self.ds.save_checkpoint(str(directory), tag=ENGINE_TAG, exclude_frozen_parameters=self.lora)

    def load(self, directory: Path) -> None:
        """Collective: restore what :meth:`save` wrote."""
        path, _ = self.ds.load_checkpoint(
            str(directory),
            tag=ENGINE_TAG,
            load_module_strict=not self.lora,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed state under {directory}/{ENGINE_TAG}")

    def state_checksum(self, base: bool = False) -> float:
        """Collective under ZeRO-3 (shards gathered): ``utils.checksum.state_checksum`` of
        the full state dict -- with ``base``, of a LoRA engine's frozen base under its HF
        names, what a frozen copy of the base gives -- on every rank.  Equal values before
        and after a job show that a frozen model stayed frozen."""
        state = self.full_state_dict()
        if state is not None:
            state = state_checksum(base_state(state) if base else state)
        return dist.broadcast_object(state)

    @contextlib.contextmanager
    def gathered(self):
        """Context with full parameters on every rank (ZeRO-3), e.g. for generation.  ZeRO-3's
        per-module forward hooks are taken off meanwhile and put back after: with the
        parameters whole they have nothing to fetch, and run at every module of every
        generated token (measured on the tiny model: generation 3-4x slower with them, 10x
        with LoRA's extra modules)."""
        if self.zero_stage != 3:
            yield
            return
        import deepspeed
        from deepspeed.runtime.zero import parameter_offload

        hooks = self.ds.optimizer.parameter_offload
        with deepspeed.zero.GatheredParameters(list(self.module.parameters())):
            for param in self.module.parameters():
                param.ds_active_sub_modules.clear()
            hooks._remove_module_hooks()
            hooks.forward_hooks, hooks.backward_hooks = [], []
            stack = len(parameter_offload.FWD_MODULE_STACK)
            try:
                yield
            finally:
                hooks.setup_zero_stage3_hooks()
                # it pushes the root module again: keep the stack as it was
                del parameter_offload.FWD_MODULE_STACK[stack:]

    def _gathered(self, params: List[nn.Parameter]):
        if self.zero_stage != 3:
            return contextlib.nullcontext()
        import deepspeed

        return deepspeed.zero.GatheredParameters(params)

    def full_parameters(self) -> Iterator[Tuple[str, torch.Tensor]]:
        """Collective under ZeRO-3: ``(HF name, full parameter)`` one at a time, each gathered
        from its shards only while it is used, so no rank ever holds the whole model twice
        (the weight sync streams these to the rollout engines).  A LoRA engine's are those of
        the merged model (``models.lora.merged_parameters``)."""
        yield from self._full_parameters(self._gathered)

    def _full_parameters(self, gathered) -> Iterator[Tuple[str, torch.Tensor]]:
        if self.lora:
            yield from merged_parameters(self.module, gathered)
            return
        for name, param in self.module.named_parameters():
            with gathered([param]):
                yield name, param.data

    def full_parameter_buckets(
        self, sizes: Sequence[int]
    ) -> Iterator[List[Tuple[str, torch.Tensor]]]:
        """Collective under ZeRO-3: :meth:`full_parameters` in consecutive groups of
        ``sizes[i]`` entries (the weight sync's buckets), the shards of a group's parameters
        gathered in one collective and released before the next group's: never the whole
        model at once.  A group's tensors are valid until the next group is asked for.

        The parameters an entry reads: its own; a LoRA layer's merged weight also every
        parameter of the layer (its adapter).  Should an entry read one outside its group's,
        it is gathered on its own as :meth:`full_parameters` does."""
        sources = self._entry_sources()
        if sum(sizes) != len(sources):
            raise ValueError(f"buckets of {sum(sizes)} parameters for {len(sources)}")
        held: set = set()

        def gathered(params):
            if all(id(p) in held for p in params):
                return contextlib.nullcontext()
            return self._gathered(params)

        stream, start = self._full_parameters(gathered), 0
        try:
            for size in sizes:
                params = list(
                    {id(p): p for entry in sources[start : start + size] for p in entry}.values()
                )
                with self._gathered(params):
                    held = {id(p) for p in params}
                    yield [next(stream) for _ in range(size)]
                    held = set()
                start += size
        finally:
            stream.close()

    def _entry_sources(self) -> List[List[nn.Parameter]]:
        """Per entry of :meth:`full_parameters`, the module parameters it reads."""
        if not self.lora:
            return [[param] for param in self.module.parameters()]
        modules = dict(self.module.named_modules())
        sources = []
        for name, param in self.module.named_parameters():
            if hf_name(name) is None:
                continue
            owner = name.rpartition(".")[0]
            layer = owner.removesuffix(".base_layer")
            sources.append(list(modules[layer].parameters()) if layer != owner else [param])
        return sources

    def parameter_shapes(self) -> List[Tuple[str, List[int]]]:
        """``(name, full shape)`` of every parameter, in :meth:`full_parameters`' order."""
        if self.lora:
            return merged_shapes(self.module)
        return [
            (name, list(getattr(p, "ds_shape", p.shape)))
            for name, p in self.module.named_parameters()
        ]

    def full_state_dict(self) -> Optional[Dict[str, torch.Tensor]]:
        """Collective under ZeRO-3 (shards gathered); the whole state dict on rank 0."""
        if self.zero_stage == 3:
            return self.ds._zero3_consolidated_16bit_state_dict()
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def export_hf(
        self, out_dir: Path, tokenizer=None, is_main: bool = True, merge_lora: bool = True
    ) -> None:
        """Collective: write a ``from_pretrained``-loadable copy (rank 0 writes).  A LoRA
        engine writes its adapter (peft format) to ``out_dir/adapter`` and, with
        ``merge_lora``, the merged model -- loadable with plain transformers -- to
        ``out_dir``."""
        state = self.full_state_dict()
        merged = None
        if self.lora and merge_lora:  # collective under ZeRO-3, like full_state_dict()
            merged = {
                name: t.detach().cpu().clone() if is_main else None
                for name, t in self.full_parameters()
            }
        if not is_main:
            return
        out_dir = Path(out_dir)
        if not self.lora:
            save_model(self.module, tokenizer, out_dir, state)
            return
        save_model(self.module, tokenizer, out_dir / "adapter", state)
        if merged is not None:
            base = self.module.get_base_model()
            buffers = {
                n: b
                for n, b in base.state_dict().items()
                if n not in merged and n in dict(base.named_buffers())
            }
            # a quantised (QLoRA) base would save its own packed weights, not the merge
            save = save_tensors if getattr(base, "hf_quantizer", None) is not None else save_model
            save(base, tokenizer, out_dir, {**merged, **buffers})


class BaseModel:
    """A LoRA engine with its adapter off, called like the engine (``ModelEngine.base``)."""

    def __init__(self, engine: ModelEngine):
        self.engine = engine
        self.module = engine.module

    def __call__(self, *args, **kwargs):
        with adapter_disabled(self.module):
            return self.engine(*args, **kwargs)
