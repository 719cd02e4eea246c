"""The weight sync's buckets, without Ray or vLLM: which parameters share a bucket (sizes
worked out by hand), the bytes each lands on, a round trip through one buffer that is bit for
bit the input (also bf16 and a parameter larger than a bucket), and the check of an engine's
report naming the first parameter that differs."""

from __future__ import annotations

import zlib

import pytest
import torch

from rlhf_dist.rollout.weight_buckets import (
    ALIGN,
    MISSING,
    SyncReport,
    bucket_bytes,
    pack,
    plan_buckets,
    spec_nbytes,
    sync_problem,
    tensor_crc,
    total_bytes,
    unpack,
)

# float32: 4 bytes an element
SPECS = [
    ("embed", "float32", [10, 8]),  # 320 bytes
    ("norm", "float32", [8]),  # 32
    ("q", "float32", [8, 8]),  # 256
    ("big", "float32", [40, 8]),  # 1280: larger than a 1000-byte bucket
    ("bias", "float32", [3]),  # 12
    ("head", "float32", [10, 8]),
]  # 320


def names(plan):
    return [[spec[0] for spec in bucket.specs] for bucket in plan]


def test_sizes_of_the_specs():
    assert [spec_nbytes(s) for s in SPECS] == [320, 32, 256, 1280, 12, 320]
    assert spec_nbytes(("w", "bfloat16", [3, 5])) == 30
    assert spec_nbytes(("scalar", "float32", [])) == 4
    assert bucket_bytes(0) == 0 and bucket_bytes(1) == 2**20 and bucket_bytes(0.5) == 2**19


def test_buckets_keep_the_order_hold_whole_parameters_and_fill_up_to_the_size():
    plan = plan_buckets(SPECS, 1000)
    # embed at 0 (320), norm at 320 (352), q at 384 (640); big does not fit after q: a bucket
    # of its own (1280 > 1000); bias at 0, head at 64 (384)
    assert names(plan) == [["embed", "norm", "q"], ["big"], ["bias", "head"]]
    assert [b.offsets for b in plan] == [(0, 320, 384), (0,), (0, 64)]
    assert [b.nbytes for b in plan] == [640, 1280, 384]
    assert all(o % ALIGN == 0 for b in plan for o in b.offsets)
    assert [s for b in plan for s in b.specs] == SPECS


def test_a_parameter_larger_than_the_bucket_closes_the_one_before_it():
    plan = plan_buckets(SPECS[:4], 600)
    # embed (320) + norm at 320 (352); q at 384 would end at 640 > 600: new bucket; big alone
    assert names(plan) == [["embed", "norm"], ["q"], ["big"]]
    assert [b.nbytes for b in plan] == [352, 256, 1280]


def test_size_zero_is_one_parameter_per_bucket_and_a_huge_size_one_bucket():
    assert names(plan_buckets(SPECS, 0)) == [[s[0]] for s in SPECS]
    assert [b.nbytes for b in plan_buckets(SPECS, 0)] == [320, 32, 256, 1280, 12, 320]
    whole = plan_buckets(SPECS, 10**9)
    assert names(whole) == [[s[0] for s in SPECS]]
    # 0, 320, 384 (+256=640), 640 (+1280=1920), 1920 (+12=1932), 1984 (+320=2304)
    assert whole[0].offsets == (0, 320, 384, 640, 1920, 1984) and total_bytes(whole) == 2304
    assert plan_buckets([], 100) == []


def _tensors(specs, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        (name, torch.randn(shape, generator=g).to(getattr(torch, dtype)))
        for name, dtype, shape in specs
    ]


@pytest.mark.parametrize("size", [0, 700, 10**6])
def test_pack_then_unpack_gives_the_same_bits(size):
    specs = SPECS + [("half", "bfloat16", [5, 3]), ("scalar", "float32", [])]
    tensors = dict(_tensors(specs))
    received = {}
    for bucket in plan_buckets(specs, size):
        buffer = pack(bucket, [(s[0], tensors[s[0]]) for s in bucket.specs], torch.device("cpu"))
        assert buffer.dtype == torch.uint8 and buffer.numel() == bucket.nbytes
        wire = buffer.clone()  # what the other end receives
        received.update((name, t.clone()) for name, t in unpack(wire, bucket))
    assert list(received) == [s[0] for s in specs]
    for name, tensor in tensors.items():
        assert received[name].dtype == tensor.dtype and received[name].shape == tensor.shape
        assert torch.equal(
            received[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)
        )


def test_pack_converts_to_the_engine_dtype_and_refuses_other_parameters():
    spec = ("w", "bfloat16", [2, 2])
    bucket = plan_buckets([spec], 0)[0]
    value = torch.tensor([[1.0, 2.5], [-3.0, 1 / 3]])
    out = unpack(pack(bucket, [("w", value)], torch.device("cpu")), bucket)[0][1]
    assert out.dtype == torch.bfloat16 and torch.equal(out, value.to(torch.bfloat16))
    with pytest.raises(ValueError, match=r"\['v'\] are not the bucket's \['w'\]"):
        pack(bucket, [("v", value)], torch.device("cpu"))
    with pytest.raises(ValueError, match=r"w has shape \[4\], its spec \[2, 2\]"):
        pack(bucket, [("w", value.reshape(4))], torch.device("cpu"))


def test_crc_is_zlibs_crc32_of_the_raw_bytes():
    value = torch.tensor([1.0, -2.0], dtype=torch.float32)
    assert tensor_crc(value) == zlib.crc32(value.numpy().tobytes())
    assert tensor_crc(value.to(torch.bfloat16)) == zlib.crc32(
        bytes([0x80, 0x3F, 0x00, 0xC0])
    )  # bf16 1.0 = 0x3f80, -2.0 = 0xc000
    changed = value.clone()
    changed[1] = torch.nextafter(changed[1], torch.tensor(0.0))  # one bit
    assert tensor_crc(changed) != tensor_crc(value)


def test_a_report_is_checked_for_its_version_and_every_checksum():
    specs = SPECS[:3]
    assert sync_problem(SyncReport(4), specs, 4, "rollout engine 0") is None
    assert (
        sync_problem(SyncReport(3), specs, 4, "rollout engine 1")
        == "rollout engine 1 holds weights version 3 after the sync of version 4"
    )
    good = SyncReport(4, [1, 2, 3], [1, 2, 3])
    assert sync_problem(good, specs, 4, "rollout engine 0") is None
    bad = SyncReport(4, [1, MISSING, 7], [1, 0x2B, 3])
    assert sync_problem(bad, specs, 4, "rollout engine 0") == (
        "rollout engine 0: weights differ from the actor's after the sync of version 4: "
        "parameter norm (actor CRC32 0000002b, engine not loaded) is the first of 2 of 3 "
        "parameters that differ"
    )
    other = SyncReport(4, [1, 2, 0xFF], [1, 2, 3])
    assert (
        "parameter q (actor CRC32 00000003, engine CRC32 000000ff) is the first of 1 of 3"
        in sync_problem(other, specs, 4, "rollout engine 0")
    )
    short = SyncReport(4, [1, 2], None)
    assert sync_problem(short, specs, 4, "rollout engine 0") == (
        "rollout engine 0: checked sync of version 4 came back with 2 engine and no actor "
        "checksums for 3 parameters"
    )


def test_the_two_keys_refuse_negative_values():
    from rlhf_dist.config import ConfigError, RolloutConfig

    assert RolloutConfig().sync_bucket_mb == 16.0 and RolloutConfig().verify_sync_every == 10
    assert RolloutConfig(sync_bucket_mb=0, verify_sync_every=0).sync_bucket_mb == 0
    with pytest.raises(ConfigError, match="rollout.sync_bucket_mb"):
        RolloutConfig(sync_bucket_mb=-1)
    with pytest.raises(ConfigError, match="rollout.verify_sync_every"):
        RolloutConfig(verify_sync_every=-2)
