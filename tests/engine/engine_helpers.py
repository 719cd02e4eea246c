"""Shared by the engine tests: a tiny causal LM and its inputs."""

from __future__ import annotations

import torch

from rlhf_dist.config import TinyModelConfig

VOCAB = 64
INPUTS = torch.randint(0, VOCAB, (8, 12), generator=torch.Generator().manual_seed(1))


def build():
    from transformers import AutoModelForCausalLM

    from rlhf_dist.models.tiny import build_tiny_config

    torch.manual_seed(0)
    tiny = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    return AutoModelForCausalLM.from_config(build_tiny_config(tiny, VOCAB))


def train_steps(engine, micro_batch_size: int, steps: int = 1, after_micro=None):
    """``steps`` passes over INPUTS in micro-batches (an optimiser step per accumulation
    window): each micro-batch's loss, with ``after_micro(micro)`` run after each."""
    losses = []
    for _ in range(steps):
        for micro in INPUTS.split(micro_batch_size):
            loss = engine(micro, labels=micro).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            if after_micro is not None:
                after_micro(micro)
    return losses
