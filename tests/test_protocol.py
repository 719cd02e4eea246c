"""Batch: validation, splitting and joining, balanced chunks, padding, pickling."""

import io
import pickle

import pytest
import torch

from rlhf_dist.protocol import Batch, BatchError, pad_and_concat, pad_tensor


def make(B=5, T=4, meta=None):
    return Batch(
        {"ids": torch.arange(B * T).view(B, T), "score": torch.arange(B).float()},
        meta=meta if meta is not None else {"step": 3},
        extras={"prompt": [f"p{i}" for i in range(B)]},
    )


def rows(batch):
    return batch["score"].long().tolist()


def test_mapping_interface():
    b = make()
    assert len(b) == 5
    assert b.keys() == ["ids", "score", "prompt"] and list(b) == b.keys()
    assert "prompt" in b and "ids" in b and "nope" not in b
    assert b["prompt"][2] == "p2" and b["ids"].shape == (5, 4)
    with pytest.raises(KeyError, match="no key 'nope'"):
        b["nope"]
    with pytest.raises(TypeError, match=r"batch\[\[2\]\]"):
        b[2]
    assert len(Batch()) == 0
    assert "ids: (5, 4) int64" in repr(b)


def test_validation_errors_name_key_and_sizes():
    with pytest.raises(BatchError, match=r"tensor 'mask' has leading size 3 but 'ids' has 2"):
        Batch({"ids": torch.zeros(2, 4), "mask": torch.zeros(3, 4)})
    with pytest.raises(BatchError, match=r"list 'prompt' has leading size 1 but 'ids' has 2"):
        Batch({"ids": torch.zeros(2, 4)}, extras={"prompt": ["a"]})
    with pytest.raises(BatchError, match="'x' is 0-dim"):
        Batch({"x": torch.tensor(1.0)})
    with pytest.raises(BatchError, match=r"tensor 'x' is a list"):
        Batch({"x": [1, 2]})
    with pytest.raises(BatchError, match=r"meta\['dev'\] is not JSON-able"):
        Batch({"x": torch.zeros(2)}, meta={"dev": torch.device("cpu")})
    with pytest.raises(BatchError, match="'x' is both"):
        Batch({"x": torch.zeros(2)}, extras={"x": [1, 2]})
    with pytest.raises(BatchError, match="extras 'p' is a str"):
        Batch({"x": torch.zeros(3)}, extras={"p": "abc"})


def test_from_dict_routes_tensors_and_lists():
    b = Batch.from_dict({"input_ids": torch.ones(2, 3), "prompts": ["a", "b"]}, meta={"k": 1})
    assert list(b.tensors) == ["input_ids"] and b.extras == {"prompts": ["a", "b"]}
    assert b.meta == {"k": 1}


def test_with_select_drop_return_new_batches():
    b = make()
    c = b.with_(adv=torch.ones(5), prompt=["x"] * 5)
    assert "adv" not in b and b["prompt"][0] == "p0"  # original unchanged
    assert c["prompt"][0] == "x" and torch.equal(c["adv"], torch.ones(5))
    assert b.update(score=torch.zeros(5))["score"].sum() == 0
    assert b.with_meta(epoch=1).meta == {"step": 3, "epoch": 1} and b.meta == {"step": 3}
    s = b.select(["prompt", "score"])
    assert s.keys() == ["score", "prompt"] and s.meta == {"step": 3}
    with pytest.raises(KeyError, match=r"no key\(s\) \['values'\]"):
        b.select(["score", "values"])
    assert b.drop(["ids", "prompt"]).keys() == ["score"]
    with pytest.raises(BatchError, match="leading size 4"):
        b.with_(adv=torch.ones(4))


def test_chunk_split_concat_round_trip():
    b = make(B=8)
    parts = b.chunk(3)
    assert [len(p) for p in parts] == [3, 3, 2]
    assert [rows(p) for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert parts[2]["prompt"] == ["p6", "p7"] and parts[1].meta == {"step": 3}
    back = Batch.concat(parts)
    assert torch.equal(back["ids"], b["ids"]) and back["prompt"] == b["prompt"]
    assert back.meta == b.meta
    assert [len(p) for p in b.split(3)] == [3, 3, 2]
    assert torch.equal(Batch.concat(b.split(3))["ids"], b["ids"])
    with pytest.raises(BatchError, match=r"B=8 rows into n=9"):
        b.chunk(9)


def test_concat_is_strict():
    a, b = make(B=2), make(B=3, meta={"step": 9})
    assert Batch.concat([a, b]).meta == {"step": 3}  # meta from the first
    with pytest.raises(BatchError, match=r"batch 1 has tensor keys \['ids'\].*missing \['score'\]"):
        Batch.concat([a, b.drop(["score"])])
    wider = b.with_(ids=torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(BatchError, match=r"tensor 'ids' of batch 1 is \(3, 6\)"):
        Batch.concat([a, wider])
    with pytest.raises(BatchError, match="empty list"):
        Batch.concat([])


def test_index_select_and_fancy_getitem():
    b = make()
    s = b.index_select([4, 0, 0])
    assert rows(s) == [4, 0, 0] and s["prompt"] == ["p4", "p0", "p0"]
    assert rows(b[torch.tensor([1, -1])]) == [1, 4]
    assert rows(b[torch.tensor([True, False, True, False, False])]) == [0, 2]
    assert rows(b[1:3]) == [1, 2] and b[1:3]["prompt"] == ["p1", "p2"]
    assert rows(b.repeat_interleave(2))[:4] == [0, 0, 1, 1]
    with pytest.raises(IndexError, match=r"indices \[5\] out of range for B=5"):
        b.index_select([0, 5])


def skewed():
    """8 right-padded rows with 8, 8, 7, 7, 1, 1, 1, 1 real tokens: naive halves get 30 vs 4."""
    lengths = torch.tensor([8, 8, 7, 7, 1, 1, 1, 1])
    mask = (torch.arange(8)[None] < lengths[:, None]).long()
    return Batch(
        {"attention_mask": mask, "row": torch.arange(8)},
        meta={"step": 1},
        extras={"name": list("abcdefgh")},
    )


def test_pad_and_concat_exact():
    a = Batch(
        {
            "seq": torch.tensor([[1, 2]]),
            "mask": torch.tensor([[1, 1]]),
            "score": torch.tensor([0.5]),
        },
        meta={"prompt_length": 1},
    )
    b = Batch(
        {
            "seq": torch.tensor([[3, 4, 5, 6]]),
            "mask": torch.tensor([[1, 1, 1, 0]]),
            "score": torch.tensor([1.5]),
        }
    )
    out = pad_and_concat([a, b], pad_values={"seq": 9}, side={"mask": "left"})
    assert torch.equal(out["seq"], torch.tensor([[1, 2, 9, 9], [3, 4, 5, 6]]))
    assert torch.equal(out["mask"], torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]]))
    assert torch.equal(out["score"], torch.tensor([0.5, 1.5]))
    assert out.meta == {"prompt_length": 1}
    with pytest.raises(BatchError, match=r"unknown tensor\(s\) \['values'\]"):
        pad_and_concat([a, b], pad_values={"values": 0})
    assert torch.equal(pad_tensor(torch.tensor([[1]]), 3, 0, "left"), torch.tensor([[0, 0, 1]]))


def _pickled_size(obj):
    buf = io.BytesIO()
    pickle.dump(obj, buf)
    return buf.tell()


def test_pickle_round_trip_is_compact_and_detached():
    b = Batch(
        {"x": torch.randn(1000, 64)},
        meta={"step": 3, "tags": ["a"]},
        extras={"p": [str(i) for i in range(1000)]},
    )
    back = pickle.loads(pickle.dumps(b))
    assert torch.equal(back["x"], b["x"]) and back["p"] == b["p"] and back.meta == b.meta
    assert len(back) == 1000
    # a chunk is a view of the whole storage, but only its own rows travel
    part = b.chunk(10)[3]
    assert _pickled_size(part) < _pickled_size(b) / 5
    assert torch.equal(pickle.loads(pickle.dumps(part))["x"], b["x"][300:400])
    w = torch.ones(3, requires_grad=True)
    g = Batch({"g": w * 2})  # non-leaf tensor that requires grad
    moved = pickle.loads(pickle.dumps(g))
    assert not moved["g"].requires_grad and torch.equal(moved["g"], torch.full((3,), 2.0))


def test_to_device_keeps_everything():
    b = make()
    c = b.to("cpu")
    assert c["ids"] is b["ids"] and c["prompt"] == b["prompt"] and c.meta == b.meta
    assert c["score"].dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_batch_pickles_to_cpu():
    b = make().to("cuda")
    assert b["ids"].is_cuda
    back = pickle.loads(pickle.dumps(b))
    assert back["ids"].device.type == "cpu" and torch.equal(back["ids"], make()["ids"])
