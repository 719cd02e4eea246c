"""Idle offload: a DeepSpeed engine's states to CPU memory between uses, and back.

Trained engines at ZeRO 1–3 go through DeepSpeed's own ``offload_states`` / ``reload_states``
for the states it can move.  Everything it leaves on the device is moved tensor by tensor
(:class:`TensorHomes`): the whole state of ZeRO-0 and frozen engines (DeepSpeed refuses an
engine without a ZeRO optimizer), the frozen parameters of a ZeRO-1/2 engine (a LoRA base),
the ZeRO-3 master weights and Adam moments of an optimizer other than DeepSpeed's FusedAdam
(its ZeRO-3 path asserts FusedAdam), and module buffers.
ZeRO-3 full parameters (gathered, or persistent small ones) are released first, as
DeepSpeed's own ZeRO-3 offload does; the next forward gathers them again.  DeepSpeed refuses
engines whose parameters are already offloaded (``offload_param``): its assertion fires.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

import torch


class TensorHomes:
    """Tensors whose storage went to CPU memory, each with the device it came from.

    Offloading copies even on a CPU-only machine (``copy=True``), so the tensors get new
    storage there as on a GPU machine: a moved tensor that something still viewed in its old
    storage would show up as training that differs, on CPU as well."""

    def __init__(self) -> None:
        self._homes: List[Tuple[torch.Tensor, torch.device]] = []

    def offload(self, tensors: List[torch.Tensor]) -> None:
        for tensor in tensors:
            self._homes.append((tensor, tensor.device))
            tensor.data = tensor.data.to("cpu", copy=True)

    def reload(self) -> None:
        for tensor, device in self._homes:
            tensor.data = tensor.data.to(device)
        self._homes.clear()

    def __len__(self) -> int:
        return len(self._homes)


def deepspeed_include(ds) -> Optional[list]:
    """The states to hand to ``ds.offload_states`` (None: DeepSpeed cannot offload this
    engine: ZeRO-0, or a frozen engine without a ZeRO optimizer)."""
    from deepspeed.ops.adam import FusedAdam
    from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum as State
    from deepspeed.runtime.zero.parameter_offload import DeepSpeedZeRoOffload

    optimizer = ds.optimizer
    if (
        optimizer is None
        or isinstance(optimizer, DeepSpeedZeRoOffload)
        or not hasattr(optimizer, "offload_states")
    ):
        return None
    states = list(State)
    if (
        ds.zero_optimization_stage() == 3
        and not ds.zero_use_cpu_optimizer()
        and type(optimizer.optimizer) is not FusedAdam
    ):
        states.remove(State.hp_params)  # ZeRO-3 moves these for FusedAdam only
        states.remove(State.optim_states)
    return states


def _torch_optimizer(ds) -> Optional[torch.optim.Optimizer]:
    """The torch optimizer whose states live on the device (None: a frozen engine, or
    ZeRO-Offload, whose optimizer already works in CPU memory)."""
    from deepspeed.runtime.zero.parameter_offload import DeepSpeedZeRoOffload

    optimizer = ds.optimizer
    if (
        optimizer is None
        or isinstance(optimizer, DeepSpeedZeRoOffload)
        or ds.zero_use_cpu_optimizer()
    ):
        return None
    return getattr(optimizer, "optimizer", optimizer)


def _check_plain(ds, moved: Set) -> None:
    """Without DeepSpeed's help only plain optimizers are moved: the fp16/bf16 wrappers of
    ZeRO-0 keep flattened copies of the weights that moving tensors one by one would split."""
    from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum as State

    optimizer = _torch_optimizer(ds)
    if State.lp_params not in moved and optimizer is not None and optimizer is not ds.optimizer:
        raise NotImplementedError(
            f"offload: {type(ds.optimizer).__name__} (ZeRO-0 with fp16/bf16) holds flattened "
            f"weights that cannot be moved; use ZeRO stage >= 1"
        )


def _master_weights(ds, optimizer: torch.optim.Optimizer) -> List[torch.Tensor]:
    """The weights the optimizer steps.  ZeRO-3 hands its flat fp32 partitions to the torch
    optimizer only during a step (its ``param_groups`` are empty in between)."""
    flat = getattr(ds.optimizer, "fp32_partitioned_groups_flat", None)
    if flat is not None:
        return list(flat)
    return [p for group in optimizer.param_groups for p in group["params"]]


def left_on_device(ds, moved: Set) -> List[torch.Tensor]:
    """Tensors DeepSpeed's ``offload_states`` did not move (``moved``: the states it did)."""
    from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum as State

    _check_plain(ds, moved)
    tensors = list(ds.module.buffers())
    if State.lp_params not in moved:  # ZeRO-0, frozen engines (ZeRO-3: the shards)
        for param in ds.module.parameters():
            tensors += [param, getattr(param, "ds_tensor", None), param.grad]
    elif ds.zero_optimization_stage() < 3:
        # ZeRO-1/2's groups hold the trained parameters only: a LoRA engine's frozen base
        # (most of its memory) is not among DeepSpeed's lp_params
        tensors += [p for p in ds.module.parameters() if not p.requires_grad]
    optimizer = _torch_optimizer(ds)
    if optimizer is not None and State.optim_states not in moved:
        tensors += [
            v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)
        ]
    if optimizer is not None and State.hp_params not in moved:
        tensors += _master_weights(ds, optimizer)
    unique: Dict[int, torch.Tensor] = {}
    for tensor in tensors:
        if tensor is not None and tensor.numel() > 0:
            unique.setdefault(id(tensor), tensor)
    return list(unique.values())


def empty_device_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
