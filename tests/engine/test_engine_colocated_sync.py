"""Colocated vLLM engines (``resources.colocate_rollout``, GPU only) share the actor's devices;
what keeps their weight sync from running out of memory is the order of calls and what the
actor brings back, both checked here on CPU:

* the sync wakes the engines' weights only, syncs, lets the actor return its cached device
  blocks, and only then wakes the KV cache (verl's and OpenRLHF's order);
* an idle-offloaded actor at ZeRO ≤ 2 sends the CPU copies of its weights as they are: the
  engine stays offloaded, its optimizer states are never reloaded for a sync.
"""

from __future__ import annotations

import torch

from rlhf_dist.config import DeepSpeedSection, TrainConfig
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.workers.rollout_engines import RolloutEngines

from engine_helpers import INPUTS, build


class _Recorder:
    def __init__(self, calls):
        self.calls = calls

    def wake_up(self, tags=None):
        self.calls.append(("engines.wake_up", tuple(tags or ())))

    def sync_from(self, actor, version):
        self.calls.append(("engines.sync_from", actor.name, version))
        return 1.5

    def release_device_cache(self):
        self.calls.append(("actor.release_device_cache",))


def test_colocated_sync_wakes_weights_then_syncs_frees_then_wakes_kv_cache():
    calls = []
    engines, actor = _Recorder(calls), _Recorder(calls)
    actor.name = "actor"
    assert RolloutEngines.sync_colocated(engines, actor, 7) == 1.5
    assert calls == [
        ("engines.wake_up", ("weights",)),
        ("engines.sync_from", "actor", 7),
        ("actor.release_device_cache",),
        ("engines.wake_up", ("kv_cache",)),
    ]


def test_offloaded_zero2_engine_sends_its_weights_without_reloading():
    train = TrainConfig(train_batch_size=4, micro_batch_size=2, lr=1e-2)
    engine = ModelEngine.trained(
        build, DeepSpeedSection(zero_stage=2), train, dp_size=1, total_steps=10
    )
    for micro in INPUTS.split(train.micro_batch_size):
        engine.backward(engine(micro, labels=micro).loss)
        engine.step()
    expected = {name: t.clone() for name, t in engine.full_parameters()}
    engine.offload()
    states = set(engine.ds.optimizer.offloaded_states)
    sent = dict(engine.full_parameters())
    assert sent.keys() == expected.keys()
    assert all(torch.equal(sent[k], expected[k]) and sent[k].device.type == "cpu" for k in sent)
    # the same through the bucketed sync's groups (three parameters a group here)
    n = len(expected)
    groups = [3] * (n // 3) + ([n % 3] if n % 3 else [])
    bucketed = {k: t.clone() for group in engine.full_parameter_buckets(groups) for k, t in group}
    assert list(bucketed) == list(expected)
    assert all(torch.equal(bucketed[k], expected[k]) for k in bucketed)
    assert engine.offloaded and set(engine.ds.optimizer.offloaded_states) == states
    assert {s.value for s in states} >= {"optim_states", "hp_params", "lp_params"}
