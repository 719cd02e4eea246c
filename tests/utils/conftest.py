"""Fixtures for rlhf_dist.utils: an offline, key-less W&B environment and a reader for the
``run-<id>.wandb`` file that an offline run writes (wandb 0.31 writes no summary json offline).

The ``.wandb`` file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of chunks, each ``crc32c:u32 | length:u16 | type:u8`` + payload; types 1 (full) or
2/3/4 (first/middle/last) reassemble into serialized ``wandb_internal_pb2.Record`` messages.

``run.finish()`` returns before wandb-core's writer has flushed the file (measured: ~1 in 20
reads straight after finish missed the history), so the reader polls until the ``exit`` record,
which the writer appends last, is on disk.
"""

import json
import struct
import time
from pathlib import Path

import pytest

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _LAST = 1, 4


@pytest.fixture(autouse=True)
def offline_wandb_env(monkeypatch, tmp_path_factory):
    """WANDB_MODE=offline, quiet, no key, HOME (so ~/.netrc, ~/.config/wandb) in a fresh tmp."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key in ("WANDB_API_KEY", "NETRC", "WANDB_BASE_URL", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    return home


def _payloads(data: bytes):
    assert data[:4] == b":W&B", f"not a .wandb file: header {data[:_HEADER]!r}"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if length == 0 and kind == 0:  # zero fill
            pos += left_in_block
            continue
        if pos + _HEADER + length > len(data):  # chunk still being written
            return
        pending += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (_FULL, _LAST):
            yield pending
            pending = b""


def _items(items):
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}


def _records(run_dir: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    records = []
    for path in Path(run_dir).glob("run-*.wandb"):
        for payload in _payloads(path.read_bytes()):
            record = pb.Record()
            record.ParseFromString(payload)
            records.append(record)
    return records


def read_wandb_run(run_dir: Path, timeout: float = 30.0) -> dict:
    """{"run": RunRecord, "history": [row dicts], "summary": merged summary dict} of a finished
    run, once its ``exit`` record is on disk."""
    deadline = time.monotonic() + timeout
    records = _records(run_dir)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        assert time.monotonic() < deadline, f"no exit record in {run_dir} after {timeout}s"
        time.sleep(0.05)
        records = _records(run_dir)
    out = {"run": None, "history": [], "summary": {}}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
        elif kind == "history":
            out["history"].append(_items(record.history.item))
        elif kind == "summary":
            out["summary"].update(_items(record.summary.update))
    return out


@pytest.fixture
def wandb_run_reader():
    return read_wandb_run
