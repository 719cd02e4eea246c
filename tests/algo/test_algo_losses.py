"""Loss aggregation, PPO policy loss (with dual clip), value loss, explained variance."""

import math

import pytest
import torch

from rlhf_dist.algo import aggregate_loss, explained_variance, ppo_policy_loss, value_loss

LOSS_TOK = torch.tensor([[1.0, 2.0, 3.0, 50.0], [4.0, 50.0, 50.0, 50.0], [50.0, 50.0, 50.0, 50.0]])
AGG_MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # third row empty


@pytest.mark.parametrize(
    "agg,expected",
    [
        ("token_mean", (1 + 2 + 3 + 4) / 4),
        ("seq_mean_token_mean", (2.0 + 4.0) / 2),  # empty row left out
        ("seq_mean_token_sum", (6.0 + 4.0) / 2),
        ("seq_mean_token_sum_norm", (6.0 / 4 + 4.0 / 4) / 2),  # horizon None = T = 4
    ],
)
def test_aggregate_by_hand(agg, expected):
    assert aggregate_loss(LOSS_TOK, AGG_MASK, agg).item() == pytest.approx(expected)
    assert aggregate_loss(LOSS_TOK, torch.zeros_like(AGG_MASK), agg).item() == 0.0


def test_token_sum_norm_divides_by_the_constant_horizon_not_the_padding():
    # Dr. GRPO: sums 6 and 4 over a horizon of 10 tokens; padding the batch wider changes
    # nothing, unlike seq_mean_token_mean's per-row lengths or T
    wide_loss = torch.cat([LOSS_TOK, torch.full((3, 5), 77.0)], dim=1)
    wide_mask = torch.cat([AGG_MASK, torch.zeros(3, 5, dtype=AGG_MASK.dtype)], dim=1)
    for loss_tok, mask in ((LOSS_TOK, AGG_MASK), (wide_loss, wide_mask)):
        got = aggregate_loss(loss_tok, mask, "seq_mean_token_sum_norm", horizon=10)
        assert got.item() == pytest.approx((0.6 + 0.4) / 2)
    with pytest.raises(ValueError, match="horizon must be > 0"):
        aggregate_loss(LOSS_TOK, AGG_MASK, "seq_mean_token_sum_norm", horizon=0)


def test_unknown_agg():
    with pytest.raises(ValueError, match=r"'seq_sum'.*'seq_mean_token_mean'.*'token_mean'"):
        aggregate_loss(LOSS_TOK, AGG_MASK, "seq_sum")


# Five tokens with ratio r and advantage A (clip_eps 0.2), plus one masked junk token:
#  r=1.5,A=+1: surr1=-1.5 surr2=-1.2 -> -1.2 (clipped)
#  r=0.5,A=+1: surr1=-0.5 surr2=-0.8 -> -0.5
#  r=1.1,A=-1: surr1= 1.1 surr2= 1.1 -> 1.1  (tie: not counted as clipped)
#  r=0.7,A=-1: surr1= 0.7 surr2= 0.8 -> 0.8  (clipped)
#  r=3.0,A=-1: surr1= 3.0 surr2= 1.2 -> 3.0 ; dual clip c=2 caps it at -c*A = 2.0
RATIOS = [1.5, 0.5, 1.1, 0.7, 3.0, 50.0]
ADVS = [1.0, 1.0, -1.0, -1.0, -1.0, -100.0]
MASK = torch.tensor([[1, 1, 1, 1, 1, 0]])


def _inputs(dtype=torch.float32):
    old = torch.full((1, 6), -1.0)
    logprobs = (old + torch.log(torch.tensor([RATIOS]))).to(dtype).requires_grad_(True)
    return logprobs, old.to(dtype), torch.tensor([ADVS]).to(dtype)


def test_ppo_by_hand_and_gradients():
    logprobs, old, adv = _inputs()
    loss, metrics = ppo_policy_loss(logprobs, old, adv, MASK, clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1 + 0.8 + 3.0) / 5, abs=1e-6)
    assert set(metrics) == {"clipfrac", "approx_kl", "ratio_mean"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["clipfrac"] == pytest.approx(2 / 5)
    assert metrics["ratio_mean"] == pytest.approx(sum(RATIOS[:5]) / 5, abs=1e-6)
    k3 = sum(r - 1 - math.log(r) for r in RATIOS[:5]) / 5
    assert metrics["approx_kl"] == pytest.approx(k3, abs=1e-6)
    loss.backward()
    # d(-A r)/d logp = -A r on unclipped tokens, 0 on clipped / masked ones; divided by 5.
    expected = [0.0, -0.5 / 5, 1.1 / 5, 0.0, 3.0 / 5, 0.0]
    assert logprobs.grad[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_ppo_clip_higher_by_hand():
    """clip_eps 0.2 below, 0.6 above (DAPO's clip-higher): r=1.5, A=+1 is no longer clipped
    (surr2 = -1.5 = surr1), the rest as with 0.2 -- r=0.7, A=-1 still clipped from below."""
    logprobs, old, adv = _inputs()
    loss, metrics = ppo_policy_loss(logprobs, old, adv, MASK, clip_eps=0.2, clip_eps_high=0.6)
    assert loss.item() == pytest.approx((-1.5 - 0.5 + 1.1 + 0.8 + 3.0) / 5, abs=1e-6)
    assert metrics["clipfrac"] == pytest.approx(1 / 5)
    loss.backward()
    assert logprobs.grad[0].tolist() == pytest.approx(
        [-1.5 / 5, -0.5 / 5, 1.1 / 5, 0.0, 3.0 / 5, 0.0], abs=1e-6
    )
    with pytest.raises(ValueError, match="clip_eps_high must be > 0"):
        ppo_policy_loss(logprobs, old, adv, MASK, clip_eps=0.2, clip_eps_high=0.0)


def test_gspo_sequence_ratio_by_hand():
    """Three sequences, A = +1, +1, -1; token ratios (2, 0.5), (1.5), (0.81, 1):
    sequence ratios s = exp(mean log-ratio) = 1, 1.5, 0.9.  Seq 0 unclipped: -1; seq 1
    clipped at 1.2: -1.2; seq 2: 0.9.  GSPO's mean over sequences: (-1 - 1.2 + 0.9) / 3.
    Gradient: d(-A s)/d logp_t = -A s / |y|, over 3 sequences: seq 0 -1/6 per token, seq 1 0
    (clipped), seq 2 0.9 / 2 / 3 = 0.15."""
    ratios = torch.tensor([[2.0, 0.5], [1.5, 1.0], [0.81, 1.0]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1]])
    old = torch.full((3, 2), -1.0)
    logprobs = (old + ratios.log()).requires_grad_(True)
    adv = torch.tensor([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    loss, metrics = ppo_policy_loss(
        logprobs, old, adv, mask, clip_eps=0.2, agg="seq_mean_token_mean", ratio_level="sequence"
    )
    assert loss.item() == pytest.approx((-1.0 - 1.2 + 0.9) / 3, abs=1e-6)
    assert metrics["clipfrac"] == pytest.approx(1 / 5)
    loss.backward()
    assert torch.allclose(
        logprobs.grad, torch.tensor([[-1 / 6, -1 / 6], [0.0, 0.0], [0.15, 0.15]]), atol=1e-6
    )
    token, _ = ppo_policy_loss(
        logprobs, old, adv, mask, clip_eps=0.2, agg="seq_mean_token_mean"
    )  # token level differs: 2.0 clips
    assert token.item() != pytest.approx(loss.item())
    with pytest.raises(ValueError, match="ratio level"):
        ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2, ratio_level="prompt")


def test_config_clip_range_and_every_aggregation_of_algo():
    from rlhf_dist.algo import LOSS_AGGREGATORS
    from rlhf_dist.config import ConfigError, load_config

    assert load_config(None, []).ppo.clip_range == (0.2, 0.2)
    assert load_config(None, ["ppo.clip_eps_high=0.28"]).ppo.clip_range == (0.2, 0.28)
    assert load_config(None, ["ppo.clip_eps_low=0.1"]).ppo.clip_range == (0.1, 0.2)
    for agg in LOSS_AGGREGATORS:
        assert load_config(None, [f"ppo.loss_agg={agg}"]).ppo.loss_agg == agg
    with pytest.raises(ConfigError, match=r"ppo.clip_eps_high: must be > 0 \(or null\), got -1"):
        load_config(None, ["ppo.clip_eps_high=-1"])
    assert load_config(None, ["ppo.ratio_level=sequence"]).ppo.ratio_level == "sequence"
    with pytest.raises(ConfigError, match="ppo.ratio_level"):
        load_config(None, ["ppo.ratio_level=group"])


def test_ppo_dual_clip_by_hand():
    logprobs, old, adv = _inputs()
    loss, metrics = ppo_policy_loss(logprobs, old, adv, MASK, clip_eps=0.2, dual_clip=2.0)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1 + 0.8 + 2.0) / 5, abs=1e-6)
    assert metrics["dual_clipfrac"] == pytest.approx(1 / 5)
    loss.backward()
    assert logprobs.grad[0].tolist() == pytest.approx([0.0, -0.1, 0.22, 0.0, 0.0, 0.0], abs=1e-6)


def test_dual_clip_bound_holds_per_token():
    torch.manual_seed(0)
    c = 3.0
    for logratio, a in zip((torch.randn(60) * 1.5).tolist(), torch.randn(60).tolist()):
        lp, old, adv, m = (
            torch.tensor([[logratio]]),
            torch.zeros(1, 1),
            torch.tensor([[a]]),
            torch.ones(1, 1),
        )
        plain, _ = ppo_policy_loss(lp, old, adv, m, clip_eps=0.2)
        dual, _ = ppo_policy_loss(lp, old, adv, m, clip_eps=0.2, dual_clip=c)
        if a < 0:
            assert dual.item() <= -c * a + 1e-6
            assert dual.item() == pytest.approx(min(plain.item(), -c * a), abs=1e-6)
        else:
            assert dual.item() == plain.item()


def test_ppo_seq_mean_token_mean_ragged():
    # Row 0 holds tokens 0-1 (losses -1.2, -0.5), row 1 tokens 2-4 (1.1, 0.8, 3.0), left padded.
    lp = torch.tensor(
        [
            [math.log(1.5), math.log(0.5), 0.0, 0.0],
            [0.0, math.log(1.1), math.log(0.7), math.log(3.0)],
        ]
    )
    adv = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, -1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]])
    loss, _ = ppo_policy_loss(lp, torch.zeros(2, 4), adv, mask, 0.2, agg="seq_mean_token_mean")
    assert loss.item() == pytest.approx(((-1.2 - 0.5) / 2 + (1.1 + 0.8 + 3.0) / 3) / 2, abs=1e-6)


def test_ppo_bf16_within_tolerance():
    # bf16 log-probs near -1 are rounded by <= 2**-8 -> ratio error < 0.5%; atol 2e-2 on loss.
    logprobs, old, adv = _inputs(torch.bfloat16)
    loss, metrics = ppo_policy_loss(logprobs, old, adv, MASK, clip_eps=0.2, dual_clip=2.0)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(2.2 / 5, abs=2e-2)
    loss.backward()
    assert logprobs.grad.dtype == torch.bfloat16


def test_ppo_errors():
    args = _inputs()
    for bad in (1.0, 0.5):
        with pytest.raises(ValueError, match="dual_clip must be > 1"):
            ppo_policy_loss(*args, MASK, clip_eps=0.2, dual_clip=bad)
    with pytest.raises(ValueError, match="clip_eps"):
        ppo_policy_loss(*args, MASK, clip_eps=0.0)
    with pytest.raises(ValueError, match="'bogus'"):
        ppo_policy_loss(*args, MASK, clip_eps=0.2, agg="bogus")


# Value loss, clip 0.2; token 3 masked junk.
#  v=1, old=1.5, R=0: unclipped 1; clipped v=1.3 -> 1.69 (taken)
#  v=2, old=1.5, R=3: unclipped 1; clipped v=1.7 -> 1.69 (taken)
#  v=0, old=0,   R=1: unclipped 1; clipped 1 (tie)
V = [[1.0, 2.0, 0.0, 5.0]]
OLD_V = torch.tensor([[1.5, 1.5, 0.0, 0.0]])
RET = torch.tensor([[0.0, 3.0, 1.0, 99.0]])
VMASK = torch.tensor([[1, 1, 1, 0]])


def test_value_loss_by_hand():
    values = torch.tensor(V, requires_grad=True)
    loss, metrics = value_loss(values, OLD_V, RET, VMASK)
    assert loss.item() == pytest.approx(0.5 * 3 / 3)
    assert metrics == {"vf_clipfrac": 0.0, "values_mean": 1.0}
    loss.backward()
    assert values.grad[0].tolist() == pytest.approx([1 / 3, -1 / 3, -1 / 3, 0.0])

    values = torch.tensor(V, requires_grad=True)
    loss, metrics = value_loss(values, OLD_V, RET, VMASK, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.69 + 1.0) / 3)
    assert metrics["vf_clipfrac"] == pytest.approx(2 / 3)
    loss.backward()  # clipped terms have zero gradient w.r.t. values
    assert values.grad[0].tolist() == pytest.approx([0.0, 0.0, -1 / 3, 0.0])


def test_value_loss_bf16_and_errors():
    # bf16 values here are exact; float32 loss equal to the hand number to 1e-6.
    loss, _ = value_loss(torch.tensor(V).bfloat16(), OLD_V.bfloat16(), RET, VMASK, clip_eps=0.2)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.73, abs=1e-6)
    with pytest.raises(ValueError, match="clip_eps"):
        value_loss(torch.tensor(V), OLD_V, RET, VMASK, clip_eps=-1.0)


def test_explained_variance_by_hand():
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0, 77.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert explained_variance(torch.zeros(1, 5), returns, mask) == pytest.approx(0.0)
    # residual (1, 0, 0, -1): population var 0.5; Var(R) = 1.25 -> 1 - 0.4 = 0.6
    values = torch.tensor([[0.0, 2.0, 3.0, 5.0, -9.0]])
    assert explained_variance(values, returns, mask) == pytest.approx(0.6)
    assert math.isnan(explained_variance(values, torch.ones(1, 5), mask))


def test_truncated_is_weights_by_hand():
    from rlhf_dist.algo import truncated_is_weights

    actor = torch.tensor([[-1.0, -2.0, -0.5]])
    engine = torch.tensor([[-1.5, -1.0, -3.0]])
    # exp(0.5) = 1.6487, exp(-1) = 0.3679, exp(2.5) = 12.18 -> capped at 2
    want = torch.tensor([[math.exp(0.5), math.exp(-1.0), 2.0]])
    assert torch.allclose(truncated_is_weights(actor, engine, cap=2.0), want)
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(actor, engine, cap=0.0)


def test_ppo_token_weights_scale_each_token_before_aggregation():
    """A: +1, -2; ratio 1 (no clipping): per-token loss -A = -1, 2; weights 0.5, 3 -> loss
    (-0.5 + 6) / 2 with token_mean; the gradient of token t is scaled by its weight."""
    logprobs = torch.zeros(1, 2, requires_grad=True)
    old, adv, mask = torch.zeros(1, 2), torch.tensor([[1.0, -2.0]]), torch.ones(1, 2)
    weights = torch.tensor([[0.5, 3.0]])
    loss, _ = ppo_policy_loss(logprobs, old, adv, mask, clip_eps=0.2, token_weights=weights)
    assert loss.item() == pytest.approx((-0.5 + 6.0) / 2)
    loss.backward()
    # d/dlogp of -A * w * exp(logp - old) at 0 = -A * w, / 2 tokens
    assert torch.allclose(logprobs.grad, torch.tensor([[-0.25, 3.0]]))
