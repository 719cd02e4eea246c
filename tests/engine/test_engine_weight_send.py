"""The weight sync's two ends without vLLM: the actor's ``WeightSender`` (a real one-rank
DeepSpeed engine, ZeRO-0 and ZeRO-3) broadcasts to the engine side's receiving stream
(``WeightReceiver._received``, the generator vLLM's loader consumes) over a real two-rank gloo
group, the two ranks as two threads of this process.  Per-parameter, 4 kB and one-bucket
syncs deliver ``full_parameters()`` bit for bit, in order, also the parameters sent from their
own memory (ZeRO-0); the header carries version and plan; a checked sync's CRC32s arrive and
equal the receiver's own."""

from __future__ import annotations

import contextlib
import threading

import pytest
import torch

from rlhf_dist.config import Config, DeepSpeedSection, TrainConfig
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.rollout.vllm_receiver import WeightReceiver
from rlhf_dist.rollout.weight_buckets import bucket_bytes, plan_buckets, total_bytes
from rlhf_dist.workers.actor_parts import WeightSender

from engine_helpers import INPUTS, build

TRAIN = TrainConfig(train_batch_size=4, micro_batch_size=2, lr=5e-2)


@pytest.fixture(scope="module", params=[0, 3], ids=["zero0", "zero3"])
def engine(request):
    engine = ModelEngine.trained(
        build, DeepSpeedSection(zero_stage=request.param), TRAIN, dp_size=1, total_steps=10
    )
    for micro in INPUTS.split(TRAIN.micro_batch_size):
        engine.backward(engine(micro, labels=micro).loss)
        engine.step()
    return engine


class _Receiver(WeightReceiver):
    """The receiving methods on their own: what a vLLM worker mixes them into gives ``rank``
    (and ``model_runner``, read for NCCL only)."""

    rank = 0


def _both(sender_side, receiver_side):
    """Run the two ends concurrently (each a thread); their results."""
    results, errors = {}, []

    def run(name, fn):
        try:
            results[name] = fn()
        except BaseException as err:  # noqa: BLE001 - re-raised below
            errors.append(err)

    threads = [
        threading.Thread(target=run, args=("sender", sender_side)),
        threading.Thread(target=run, args=("receiver", receiver_side)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return results["sender"], results["receiver"]


@pytest.fixture(scope="module")
def ends(engine):
    """A ``WeightSender`` on ``engine`` and a receiver joined in one weight group."""
    cfg = Config()
    cfg.resources.timeout_s = 60
    sender = WeightSender(cfg, engine, rank=0)
    host, port = sender.open("127.0.0.1")
    receiver = _Receiver()
    _both(
        lambda: sender.join(2, "gloo"),
        lambda: WeightReceiver.init_weight_group(
            receiver, host, port, 1, 2, "gloo", 60, "127.0.0.1"
        ),
    )
    return cfg, sender, receiver


def _sync(ends, mb: float, version: int, verify: bool):
    """One sync; the receiver's tensors (copies, in arrival order), its CRC32s, the actor's."""
    cfg, sender, receiver = ends
    cfg.rollout.sync_bucket_mb = mb
    specs = sender.specs()

    def receive():
        plan = plan_buckets(specs, bucket_bytes(mb))
        header = torch.tensor([version, int(verify), len(plan), total_bytes(plan)])
        receiver._weight_group.broadcast(header, 1).wait()
        crcs = {} if verify else None
        got = [(name, t.clone()) for name, t in WeightReceiver._received(receiver, plan, crcs)]
        expected = None
        if verify:
            expected = torch.zeros(len(specs), dtype=torch.int64)
            receiver._weight_group.broadcast(expected, 0).wait()
            expected = expected.tolist()
        return got, crcs, expected

    _, received = _both(lambda: sender.broadcast(contextlib.nullcontext), receive)
    assert sender.version == version
    return received


@pytest.mark.parametrize("mb", [0, 0.004, 1024], ids=["per-parameter", "4kB", "one-bucket"])
@torch.no_grad()
def test_every_parameter_arrives_bit_for_bit_in_order(engine, ends, mb):
    want = [(name, t.clone()) for name, t in engine.full_parameters()]
    got, crcs, expected = _sync(ends, mb, version=3, verify=True)
    assert [name for name, _ in got] == [name for name, _ in want]
    for (name, value), (_, sent) in zip(got, want):
        assert value.dtype == sent.dtype and torch.equal(value, sent), name
    assert [crcs[name] for name, _ in want] == expected  # the actor's, sent after the last


def test_an_unchecked_sync_sends_no_checksums(ends):
    got, crcs, expected = _sync(ends, 0.004, version=4, verify=False)
    assert crcs is None and expected is None and got


def test_buckets_of_4kb_are_several_and_some_parameters_go_alone(engine):
    specs = [(name, "float32", shape) for name, shape in engine.parameter_shapes()]
    plan = plan_buckets(specs, bucket_bytes(0.004))
    sizes = [len(b.specs) for b in plan]
    assert 1 < len(plan) < len(specs) and 1 in sizes and max(sizes) > 1
