"""SFT loss (shift inside) and Bradley-Terry reward-model loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from rlhf_dist.algo import bradley_terry_loss, bradley_terry_metrics, scored_columns, sft_loss


def _nll(row, label):
    return math.log(sum(math.exp(z) for z in row)) - row[label]


def test_sft_loss_shift_inside_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6)
    labels = torch.tensor(
        [[5, -100, 2, 3], [-100, -100, 1, -100]]
    )  # labels = input_ids, prompt -100
    z = logits.tolist()
    # logits[:, t] predicts labels[:, t + 1]; labels[:, 0] is never scored.
    terms = [_nll(z[0][1], 2), _nll(z[0][2], 3), _nll(z[1][1], 1)]
    assert sft_loss(logits, labels).item() == pytest.approx(sum(terms) / 3, rel=1e-5)
    # Same as Hugging Face's shifted cross-entropy.
    hf = F.cross_entropy(
        logits[:, :-1].reshape(-1, 6), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert sft_loss(logits, labels, chunk_size=1).item() == pytest.approx(hf.item(), rel=1e-5)
    # the scored columns only (what the SFT trainer sends through the LM head), no shift:
    # targets[:, t] = labels[:, t + 1] is scored at columns 1, 2 (row 0) and 1 (row 1)
    targets = labels[:, 1:]
    kept = scored_columns(targets)
    assert kept.tolist() == [1, 2] and scored_columns(labels).tolist() == [0, 2, 3]
    aligned = sft_loss(logits[:, kept], targets[:, kept], shift=False)
    assert aligned.item() == pytest.approx(sum(terms) / 3, rel=1e-5)
    assert scored_columns(labels[:, :1], labels[:, 1:2]).tolist() == [0]  # any of several


def test_sft_loss_no_tokens_is_zero_with_grad():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    loss = sft_loss(logits, torch.full((2, 3), -100))
    assert loss.item() == 0.0 and not math.isnan(loss.item())
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_sft_loss_bf16_and_grad():
    # Float32 maths on bf16-rounded logits: equal to a float32 cross-entropy of the same
    # rounded logits within 1e-5.
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 7).bfloat16().requires_grad_(True)
    labels = torch.randint(0, 7, (2, 5))
    loss = sft_loss(logits, labels)
    assert loss.dtype == torch.float32
    hf = F.cross_entropy(logits.detach().float()[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert loss.item() == pytest.approx(hf.item(), abs=1e-5)
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16 and logits.grad[:, -1].abs().max().item() == 0.0


def test_bradley_terry_by_hand():
    chosen = torch.tensor([2.0, 0.0], requires_grad=True)
    rejected = torch.tensor([1.0, 1.0])
    # diffs 1, -1: -log sigmoid(1) = log(1 + e^-1), -log sigmoid(-1) = log(1 + e)
    expected = (math.log(1 + math.exp(-1)) + math.log(1 + math.e)) / 2
    loss = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dc -log sigmoid(d) = -(1 - sigmoid(d)), averaged over 2 pairs
    sig = lambda d: 1 / (1 + math.exp(-d))  # noqa: E731
    assert chosen.grad.tolist() == pytest.approx([-(1 - sig(1)) / 2, -(1 - sig(-1)) / 2])
    with_margin = bradley_terry_loss(chosen, rejected, margin=torch.tensor([0.5, 0.0]))
    assert with_margin.item() == pytest.approx(
        (math.log(1 + math.exp(-0.5)) + math.log(1 + math.e)) / 2
    )
    assert bradley_terry_loss(chosen, rejected, margin=1.0).item() == pytest.approx(
        (math.log(2) + math.log(1 + math.exp(2))) / 2
    )


def test_bradley_terry_stable_and_bf16():
    loss = bradley_terry_loss(torch.tensor([1000.0, -1000.0]), torch.tensor([-1000.0, 1000.0]))
    assert loss.item() == pytest.approx(1000.0)  # (0 + 2000) / 2, finite
    # bf16 scores 2.0/1.0 are exact: float32 loss equals -log sigmoid(1) to 1e-6.
    out = bradley_terry_loss(torch.tensor([2.0]).bfloat16(), torch.tensor([1.0]).bfloat16())
    assert out.dtype == torch.float32 and out.item() == pytest.approx(math.log(1 + math.exp(-1)))


def test_bradley_terry_metrics():
    m = bradley_terry_metrics(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert m == pytest.approx(
        {"accuracy": 1 / 3, "margin_mean": 0.0, "chosen_mean": 1.0, "rejected_mean": 1.0}
    )
    assert all(isinstance(v, float) for v in m.values())
