import json
import logging

import pytest

from rlhf_dist.config import CheckpointConfig
from rlhf_dist.utils import CheckpointDir, is_complete


def save(ckpt, step, **state):
    """What a job does: ranks write into staging, then the main rank commits."""
    for rank in range(2):
        (ckpt.staging(step) / f"model_rank{rank}.bin").write_bytes(bytes([step, rank]))
    return ckpt.commit(step, {"epoch": 0, **state})


def names(root):
    return sorted(p.name for p in root.iterdir())


def test_commit_publishes_a_complete_step_dir(tmp_path):
    ckpt = CheckpointDir.for_run(tmp_path, CheckpointConfig(keep_last=3))
    assert ckpt.root == tmp_path / "checkpoints" and ckpt.keep_last == 3
    path = save(ckpt, 12, epoch=1, dataloader_position=40)
    assert path == tmp_path / "checkpoints" / "step_000012"
    assert names(ckpt.root) == ["step_000012"]  # staging dir renamed away
    assert names(path) == ["COMPLETE", "model_rank0.bin", "model_rank1.bin", "trainer_state.json"]
    assert (path / "model_rank1.bin").read_bytes() == bytes([12, 1])
    assert CheckpointDir.load_state(path) == {
        "global_step": 12,
        "epoch": 1,
        "dataloader_position": 40,
    }
    assert json.loads((path / "trainer_state.json").read_text())["global_step"] == 12


def test_keep_last_prunes_the_oldest(tmp_path):
    ckpt = CheckpointDir(tmp_path / "ckpt", keep_last=2)
    for step in (3, 6, 9, 12):
        save(ckpt, step)
    assert names(ckpt.root) == ["step_000009", "step_000012"]
    assert ckpt.latest() == ckpt.root / "step_000012"


def test_saving_the_same_step_again_replaces_it(tmp_path):
    ckpt = CheckpointDir(tmp_path, keep_last=2)
    save(ckpt, 5, loss=1.0)
    save(ckpt, 5, loss=0.5)
    assert names(ckpt.root) == ["step_000005"]
    assert CheckpointDir.load_state(ckpt.root / "step_000005")["loss"] == 0.5


def test_latest_ignores_incomplete_dirs_and_names_them(tmp_path, caplog):
    ckpt = CheckpointDir(tmp_path, keep_last=5)
    assert ckpt.latest() is None  # nothing yet
    good = save(ckpt, 5)
    half = tmp_path / "step_000007"  # crashed between writing and the marker
    half.mkdir()
    (half / "model_rank0.bin").write_bytes(b"x")
    staging = ckpt.staging(9)  # crashed while ranks were writing
    with caplog.at_level(logging.WARNING, logger="rlhf_dist.utils.checkpoint"):
        assert ckpt.latest() == good
    assert f"ignoring incomplete checkpoint {half}; resuming from {good}" in caplog.text
    assert f"ignoring incomplete checkpoint {staging}; resuming from {good}" in caplog.text
    assert not is_complete(half) and is_complete(good)
    assert ckpt.resolve("auto") == good


def test_resolve(tmp_path):
    ckpt = CheckpointDir(tmp_path / "checkpoints", keep_last=2)
    assert ckpt.resolve("none") is None
    assert ckpt.resolve("auto") is None  # no checkpoint: start from scratch
    good = save(ckpt, 4)
    assert ckpt.resolve("auto") == good
    assert ckpt.resolve(str(good)) == good
    missing = tmp_path / "nope" / "step_000001"
    with pytest.raises(ValueError, match="checkpoint.resume") as err:
        ckpt.resolve(str(missing))
    assert str(missing) in str(err.value)
    half = ckpt.staging(8)
    with pytest.raises(ValueError, match="checkpoint.resume.*not a complete") as err:
        ckpt.resolve(str(half))
    assert str(half) in str(err.value)
    with pytest.raises(ValueError, match="not a complete"):
        CheckpointDir.load_state(half)


def test_clean_staging_removes_crash_leftovers_only(tmp_path):
    ckpt = CheckpointDir(tmp_path, keep_last=2)
    assert CheckpointDir(tmp_path / "absent", keep_last=1).clean_staging() == []
    save(ckpt, 1)
    (ckpt.staging(2) / "partial.bin").write_bytes(b"x")
    assert ckpt.clean_staging() == [tmp_path / ".tmp-step_000002"]
    assert names(tmp_path) == ["step_000001"]


def test_prune_leaves_foreign_incomplete_dirs_alone(tmp_path):
    ckpt = CheckpointDir(tmp_path, keep_last=1)
    (tmp_path / "step_000001").mkdir()  # no marker: not ours to delete
    save(ckpt, 2)
    save(ckpt, 3)
    assert names(tmp_path) == ["step_000001", "step_000003"]


def test_keep_last_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="checkpoint.keep_last"):
        CheckpointDir(tmp_path, keep_last=0)
