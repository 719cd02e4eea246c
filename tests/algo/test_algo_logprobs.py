"""Chunked logprobs / entropy against hand numbers and a log_softmax-gather reference."""

import math

import pytest
import torch

from rlhf_dist.algo import (
    entropy_from_logits,
    logprobs_from_logits,
    sequence_logps,
    shifted_token_logps,
)
from rlhf_dist.algo.logprobs import _chunks


def _ref_logprobs(logits, labels):
    return torch.log_softmax(logits.double(), -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _ref_entropy(logits):
    logp = torch.log_softmax(logits.double(), -1)
    return -(logp.exp() * logp).sum(-1)


def test_hand_example():
    # exp(logits) = 1, 2, 3 -> probabilities 1/6, 2/6, 3/6.
    logits = torch.tensor([[[0.0, math.log(2), math.log(3)]] * 2])
    labels = torch.tensor([[2, 0]])
    out = logprobs_from_logits(logits, labels)
    torch.testing.assert_close(out, torch.tensor([[math.log(0.5), math.log(1 / 6)]]))
    h = -sum(p * math.log(p) for p in (1 / 6, 2 / 6, 3 / 6))
    torch.testing.assert_close(entropy_from_logits(logits), torch.tensor([[h, h]]))


@pytest.mark.parametrize("chunk_size", [None, 1, 2, 4, 7, 10, 1000])
def test_matches_reference_for_any_chunking(chunk_size):
    # B=3, T=5: chunk < T splits inside rows, chunk >= T groups whole batch rows (7 -> 1 row,
    # 10 -> 2 rows, leaving a partial last group).
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 3
    labels = torch.randint(0, 11, (3, 5))
    torch.testing.assert_close(
        logprobs_from_logits(logits, labels, chunk_size=chunk_size).double(),
        _ref_logprobs(logits, labels),
        atol=1e-5,
        rtol=1e-5,
    )
    torch.testing.assert_close(
        entropy_from_logits(logits, chunk_size=chunk_size).double(),
        _ref_entropy(logits),
        atol=1e-5,
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "B,T,rows", [(3, 5, 1), (3, 5, 2), (3, 5, 5), (3, 5, 7), (3, 5, 10), (2, 4, 100)]
)
def test_chunks_partition_the_grid(B, T, rows):
    seen = torch.zeros(B, T, dtype=torch.long)
    n_chunks = 0
    for bs, ts in _chunks(B, T, rows):
        assert seen[bs, ts].numel() <= rows or rows < 1
        seen[bs, ts] += 1
        n_chunks += 1
    assert torch.equal(seen, torch.ones(B, T, dtype=torch.long))
    if rows < B * T:
        assert n_chunks > 1  # chunking really happens


def test_gradients_match_reference_and_gradcheck():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 9, requires_grad=True)
    labels = torch.randint(0, 9, (2, 6))
    upstream = torch.randn(2, 6)
    (logprobs_from_logits(logits, labels, chunk_size=4) * upstream).sum().backward()
    got = logits.grad.clone()
    logits.grad = None
    (_ref_logprobs(logits, labels).float() * upstream).sum().backward()
    torch.testing.assert_close(got, logits.grad, atol=1e-5, rtol=1e-5)

    logits.grad = None
    (entropy_from_logits(logits, chunk_size=4) * upstream).sum().backward()
    got = logits.grad.clone()
    logits.grad = None
    (_ref_entropy(logits).float() * upstream).sum().backward()
    torch.testing.assert_close(got, logits.grad, atol=1e-5, rtol=1e-5)

    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    lab = torch.randint(0, 4, (2, 3))
    assert torch.autograd.gradcheck(lambda z: logprobs_from_logits(z, lab, chunk_size=2), (x,))
    assert torch.autograd.gradcheck(lambda z: entropy_from_logits(z, chunk_size=2), (x,))


def test_bf16_logits_float32_result_and_bf16_grad():
    # Maths in float32 on the bf16-rounded logits: matches the float64 reference of the same
    # rounded values to 1e-5; the gradient is stored in bf16 (rel. precision 2**-8 -> atol 1e-2).
    torch.manual_seed(2)
    logits = (torch.randn(2, 5, 13) * 4).bfloat16().requires_grad_(True)
    labels = torch.randint(0, 13, (2, 5))
    out = logprobs_from_logits(logits, labels, chunk_size=3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        out.double(), _ref_logprobs(logits.detach(), labels), atol=1e-5, rtol=1e-5
    )
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16
    ref = torch.log_softmax(logits.detach().float(), -1)
    expected = torch.nn.functional.one_hot(labels, 13).float() - ref.exp()
    torch.testing.assert_close(logits.grad.float(), expected, atol=1e-2, rtol=0)
    ent = entropy_from_logits(logits, chunk_size=3)
    assert ent.dtype == torch.float32
    torch.testing.assert_close(ent.double(), _ref_entropy(logits.detach()), atol=1e-5, rtol=1e-5)


def test_no_full_size_float_copy_is_saved_for_backward():
    B, T, V = 2, 8, 64
    logits = torch.randn(B, T, V).bfloat16().requires_grad_(True)
    labels = torch.randint(0, V, (B, T))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        logprobs_from_logits(logits, labels, chunk_size=4)
        entropy_from_logits(logits, chunk_size=4)
    big = [t for t in saved if t.numel() >= B * T * V]
    assert big and all(t.dtype == torch.bfloat16 for t in big)  # only the input itself


def test_non_contiguous_slice_and_errors():
    logits = torch.randn(3, 6, 5)
    labels = torch.randint(0, 5, (3, 5))
    view = logits[:, :-1]
    assert not view.is_contiguous()
    torch.testing.assert_close(
        logprobs_from_logits(view, labels, chunk_size=2).double(),
        _ref_logprobs(view, labels),
        atol=1e-5,
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="chunk_size"):
        logprobs_from_logits(view, labels, chunk_size=0)
    with pytest.raises(ValueError, match="labels"):
        logprobs_from_logits(logits, labels)
    with pytest.raises(ValueError, match=r"\(B, T, V\)"):
        entropy_from_logits(logits[0])


def _lp(row, label):
    return row[label] - math.log(sum(math.exp(z) for z in row))


def test_sequence_logps_shift_inside():
    torch.manual_seed(3)
    logits = torch.randn(2, 4, 5)
    # Row 0: prompt = first token; row 1: prompt = 2 tokens and right padding at the end.
    labels = torch.tensor([[-100, 3, 1, 4], [-100, -100, 2, -100]])
    z = logits.tolist()
    row0 = [_lp(z[0][0], 3), _lp(z[0][1], 1), _lp(z[0][2], 4)]  # logits[t] scores labels[t+1]
    row1 = [_lp(z[1][1], 2)]
    torch.testing.assert_close(sequence_logps(logits, labels), torch.tensor([sum(row0), sum(row1)]))
    torch.testing.assert_close(
        sequence_logps(logits, labels, average=True, chunk_size=1),
        torch.tensor([sum(row0) / 3, row1[0]]),
    )
    logps, mask = shifted_token_logps(logits, labels)
    assert mask.tolist() == [[True, True, True], [False, True, False]]
    assert logps[1, 0].item() == 0.0 and logps[1, 2].item() == 0.0
    empty = torch.full((1, 4), -100)
    assert sequence_logps(logits[:1], empty, average=True).item() == 0.0


def test_token_logps_aligned_without_shift_and_sequence_means():
    from rlhf_dist.algo import masked_sequence_logps, token_logps

    logits = torch.zeros(2, 3, 4)
    logits[0, 0, 2] = math.log(5.0)  # p(2) = 5 / 8 at (0, 0); uniform elsewhere
    targets = torch.tensor([[2, -100, 1], [-100, -100, -100]])
    logps, mask = token_logps(logits, targets)
    assert mask.tolist() == [[True, False, True], [False, False, False]]
    expected = torch.tensor([[math.log(5 / 8), 0.0, math.log(1 / 4)], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(logps, expected)
    torch.testing.assert_close(
        masked_sequence_logps(logps, mask), torch.tensor([math.log(5 / 8) + math.log(1 / 4), 0.0])
    )
    torch.testing.assert_close(
        masked_sequence_logps(logps, mask, average=True),
        torch.tensor([(math.log(5 / 8) + math.log(1 / 4)) / 2, 0.0]),
    )
