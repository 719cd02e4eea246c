"""LoRA adapters (the ``peft`` library) on a trained model, and the merged weights that export
and the vLLM weight sync need.

A LoRA model is a ``peft`` ``PeftModel`` around the HF model: each targeted linear layer keeps
its frozen ``base_layer`` and gains ``lora_A``/``lora_B`` (``B`` starts at 0, so the adapter
starts as the identity); ``modules_to_save`` (a scalar head) is trained in full.  With the
adapter disabled the model *is* its base, bit for bit -- that is the PPO/DPO reference when
``Config.shared_reference``.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Tuple

from rlhf_dist.models._common import ModelError, is_scalar_head_config

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from rlhf_dist.config import LoraConfig, ModelConfig

OUTPUT_HEADS = ("lm_head", "score")  # never adapted by default
ADAPTER = "default"  # peft's name of the one adapter we train


def is_lora(model) -> bool:
    """Whether ``model`` (or the module a DeepSpeed engine wraps) is a peft model."""
    return hasattr(getattr(model, "module", model), "peft_config")


def linear_module_names(model: "nn.Module") -> List[str]:
    """Short names of the model's linear layers (``nn.Linear`` and GPT-2's ``Conv1D``)."""
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, (nn.Linear, Conv1D)) and name
        }
    )


def _matches(model: "nn.Module", wanted: str) -> bool:
    return any(name == wanted or name.endswith("." + wanted) for name, _ in model.named_modules())


def _check_names(model: "nn.Module", names: List[str], field: str) -> None:
    missing = [n for n in names if not _matches(model, n)]
    if missing:
        raise ModelError(
            f"{field}: {missing} match no module of this {model.config.model_type} "
            f"model; its linear layers are {linear_module_names(model)}"
        )


def apply_lora(model: "nn.Module", lora: "LoraConfig", field_prefix: str = "model"):
    """``model`` with LoRA adapters of ``lora`` (a ``peft`` model); errors name
    ``{field_prefix}.lora.<key>``.  Targets default to every linear layer except the output
    heads; a scalar-head model's ``score`` head is trained in full unless
    ``modules_to_save`` says otherwise."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    targets = lora.target_modules or [
        n for n in linear_module_names(model) if n not in OUTPUT_HEADS
    ]
    _check_names(model, targets, f"{field_prefix}.lora.target_modules")
    scalar = is_scalar_head_config(model.config)
    to_save = (
        lora.modules_to_save if lora.modules_to_save is not None else (["score"] if scalar else [])
    )
    _check_names(model, to_save, f"{field_prefix}.lora.modules_to_save")
    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=to_save or None,
        task_type=None if scalar else "CAUSAL_LM",
    )
    with _quiet_peft_deprecations():
        return get_peft_model(model, config)


@contextlib.contextmanager
def _quiet_peft_deprecations():
    """peft reads ``model.is_gradient_checkpointing``, which transformers >= 5.20 deprecates
    with a FutureWarning in every process that builds a LoRA model (each Ray worker)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def maybe_lora(model: "nn.Module", section: "ModelConfig", field_prefix: str):
    """``apply_lora`` when the section asks for adapters, else ``model`` unchanged; a
    quantised (QLoRA) base first gets peft's ``prepare_model_for_kbit_training``."""
    if not section.lora.enabled:
        return model
    if section.quantized:
        from peft import prepare_model_for_kbit_training

        with _quiet_peft_deprecations():
            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=section.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
    return apply_lora(model, section.lora, field_prefix)


@contextlib.contextmanager
def adapter_disabled(model):
    """Forwards inside run on the base model alone (peft's ``disable_adapter``)."""
    with getattr(model, "module", model).disable_adapter():
        yield


def hf_name(peft_name: str, base: bool = False) -> Optional[str]:
    """The HF name of a peft parameter in the merged model (a saved module is its trained
    copy) or, ``base=True``, in the base model (the saved module's frozen original); None
    for a parameter that model does not have (the adapter's ``lora_A``/``lora_B``, ...)."""
    name = peft_name.removeprefix("base_model.model.")
    saved = f".modules_to_save.{ADAPTER}."
    drop, keep = (saved, ".original_module.") if base else (".original_module.", saved)
    if ".lora_" in name or drop in name:
        return None
    return name.replace(".base_layer.", ".").replace(keep, ".")


def base_state(state: Dict[str, "torch.Tensor"]) -> Dict[str, "torch.Tensor"]:
    """The frozen base model's tensors of a peft model's state dict, under their HF names."""
    return {hf_name(k, base=True): v for k, v in state.items() if hf_name(k, base=True) is not None}


_QUANTIZED = ("Params4bit", "Int8Params")  # bitsandbytes' weights of a QLoRA base


def _full_weight(owner: "nn.Module", param: "torch.Tensor") -> "torch.Tensor":
    """``param``'s values in full precision: a QLoRA base's 4-bit weight is packed uint8
    ``(n/2, 1)`` and its 8-bit one int8 — both dequantised (peft's helper, which unlike
    ``dequantize_module_weight`` leaves the layer as it is), the rest as is."""
    if type(param).__name__ not in _QUANTIZED:
        return param.data
    from peft.utils.integrations import dequantize_bnb_weight

    state = getattr(param, "quant_state", None)
    if getattr(state, "packing_format_for_cpu", False):
        # bitsandbytes repacks a 4-bit weight for its CPU kernels on the first forward there;
        # dequantise a standard-packed copy (the layer keeps its own)
        import bitsandbytes.functional as bnb_functional

        data, state = bnb_functional._convert_weight_packed_for_cpu_inverse(param.data, state)
        return bnb_functional.dequantize_4bit(data, state).detach()
    return dequantize_bnb_weight(param, state=getattr(owner, "state", None)).detach()


def _full_shape(param: "torch.Tensor") -> List[int]:
    """The unpartitioned (ZeRO-3), unpacked (4-bit) shape of ``param``."""
    state = getattr(param, "quant_state", None)
    if state is not None:
        return list(state.shape)
    return list(getattr(param, "ds_shape", param.shape))


def merged_parameters(module: "nn.Module", gathered) -> Iterator[Tuple[str, "torch.Tensor"]]:
    """``(HF name, merged weight)`` of every parameter of the merged model, in the peft
    model's order: a LoRA layer's base weight (dequantised on a QLoRA base) plus peft's
    ``get_delta_weight``, a saved module's trained copy, the rest as they are.
    ``gathered(params)`` is a context that makes the given parameters whole (ZeRO-3's gather;
    a null context otherwise)."""
    from peft.tuners.lora import LoraLayer

    modules = dict(module.named_modules())
    layers = {name: m for name, m in modules.items() if isinstance(m, LoraLayer)}
    for name, param in module.named_parameters():
        merged = hf_name(name)
        if merged is None:
            continue
        owner, _, leaf = name.rpartition(".")
        layer = layers.get(owner.removesuffix(".base_layer"))
        if layer is None or leaf != "weight" or not owner.endswith(".base_layer"):
            with gathered([param]):
                yield merged, _full_weight(modules[owner], param)
            continue
        adapter = [p for n, p in layer.named_parameters() if n.startswith("lora_")]
        with gathered([param] + adapter):
            delta = layer.get_delta_weight(ADAPTER)
            base = _full_weight(modules[owner], param)
            # the base's dtype, or the adapter's for a dequantised (QLoRA) base
            dtype = delta.dtype if type(param).__name__ in _QUANTIZED else base.dtype
            yield merged, base.to(dtype) + delta.to(dtype)


def merged_shapes(module: "nn.Module") -> List[Tuple[str, List[int]]]:
    """``(HF name, full shape)`` in :func:`merged_parameters`' order."""
    return [
        (hf_name(n), _full_shape(p)) for n, p in module.named_parameters() if hf_name(n) is not None
    ]
