"""SimPO, ORPO and KTO in the DPO job (``dpo.loss_type``), one rank in the test process: no
reference model is built for SimPO / ORPO, the losses are the algo functions' on the policy's
mean per-token log-probs (ORPO adds the chosen answers' NLL), and the preference is learned;
KTO learns from the toy task's unpaired thumbs-up / thumbs-down rows against its reference."""

from __future__ import annotations

import pytest

from trainer_helpers import cli, fit_in_process, read_metrics, series

pytestmark = pytest.mark.slow
STEPS = 28


@pytest.fixture(scope="module", params=["simpo", "orpo"])
def trainer(request, tmp_path_factory):
    from rlhf_dist.trainers.dpo import DPOTrainer

    beta = {"simpo": "2.0", "orpo": "0.5"}[request.param]
    return fit_in_process(
        DPOTrainer,
        "dpo",
        tmp_path_factory.mktemp(request.param),
        f"dpo.loss_type={request.param}",
        f"dpo.beta={beta}",
        f"train.max_steps={STEPS}",
        "deepspeed.zero_stage=2",
        "train.eval_every=14",
    )


def test_no_reference_model_is_built(trainer):
    rows = read_metrics(trainer.out)
    assert trainer.reference is None
    assert [r["resources/reference_model"] for r in rows if "resources/reference_model" in r] == [
        0.0
    ]
    assert not any(key.startswith("ref/") for row in rows for key in row)


def test_losses_are_the_methods_and_the_preference_is_learned(trainer):
    rows = read_metrics(trainer.out)
    loss, core = series(rows, "train/loss"), series(rows, "train/dpo_loss")
    if trainer.cfg.dpo.loss_type == "orpo":  # L = L_SFT + L_OR
        nll = series(rows, "train/nll")
        assert all(loss[s] == pytest.approx(core[s] + nll[s], abs=1e-6) for s in loss)
    else:
        assert loss == pytest.approx(core) and not series(rows, "train/nll")
    # measured (seed 42, the tiny random policy): SimPO eval accuracy 0.62 -> 0.81, margin
    # 0.77 -> 1.18; ORPO, whose NLL term dominates a random model, margin 0.15 -> 0.23 at an
    # accuracy of 0.56, its odds-ratio loss falling
    margin, core_eval = series(rows, "eval/reward_margin"), series(rows, "eval/dpo_loss")
    assert margin[STEPS] > margin[14] > 0, margin
    assert core_eval[STEPS] < core_eval[14], core_eval
    if trainer.cfg.dpo.loss_type == "simpo":
        assert series(rows, "eval/reward_accuracy")[STEPS] > 0.7


def test_reference_options_are_refused_without_a_reference():
    from rlhf_dist.config import ConfigError, load_config

    for key in ("precompute_ref", "ref_offload"):
        with pytest.raises(
            ConfigError,
            match=rf"^dpo\.{key}: dpo.loss_type=simpo uses no "
            "reference model",
        ):
            load_config(None, ["dpo.loss_type=simpo", f"dpo.{key}=true", "deepspeed.zero_stage=3"])
    from rlhf_dist.trainers.dpo_ray import reference_group

    assert not reference_group(load_config(None, ["dpo.loss_type=orpo", "dpo.mode=ray"]))
    assert reference_group(load_config(None, ["dpo.mode=ray"]))  # sigmoid DPO has one


def test_the_reference_free_losses_are_the_objectives():
    from rlhf_dist.algo import REFERENCE_FREE_LOSSES
    from rlhf_dist.objectives.dpo import REFERENCE_FREE

    assert set(REFERENCE_FREE) == set(REFERENCE_FREE_LOSSES)


KTO_STEPS = 28  # two epochs of the toy task's 224 unpaired rows
# a constant learning rate: a shorter run (on Ray, below) steps with the same rates
KTO_SCHEDULE = ("train.lr_scheduler=constant", "train.warmup_ratio=0")


@pytest.fixture(scope="module")
def kto(tmp_path_factory):
    from rlhf_dist.trainers.dpo import DPOTrainer

    return fit_in_process(
        DPOTrainer,
        "dpo",
        tmp_path_factory.mktemp("kto"),
        "dpo.loss_type=kto",
        "dpo.beta=0.1",
        f"train.max_steps={KTO_STEPS}",
        "deepspeed.zero_stage=2",
        "train.eval_every=14",
        *KTO_SCHEDULE,
        "checkpoint.export_hf=false",
    )


def _own_logratios(trainer):
    """Policy minus reference summed log-probs of each eval row's own answer, and the rows'
    labels."""
    import torch

    from rlhf_dist.objectives import PAIR_LAYOUTS, reference_rows

    layout, dpo = PAIR_LAYOUTS[trainer.cfg.dpo.layout], trainer.cfg.dpo
    batch = trainer.collate(list(trainer.eval_set))
    with torch.no_grad():
        policy = layout.split_rows(reference_rows(trainer.engine, batch, dpo))[0]
        reference = layout.split_rows(reference_rows(trainer.reference, batch, dpo))[0]
    return policy - reference, layout.split_rows(batch["desirable"])[0]


def test_kto_learns_from_unpaired_rows(kto):
    rows = read_metrics(kto.out)
    start = next(r for r in rows if "kto/desirable_rows" in r)
    # the toy task's 224 unpaired training rows, 116 thumbs up; weights as given (eq. 9 ratio)
    assert (start["kto/desirable_rows"], start["kto/undesirable_rows"]) == (116, 108)
    assert start["kto/weight_ratio"] == pytest.approx(116 / 108)
    assert start["resources/reference_model"] == 1.0
    end = next(r for r in rows if "ref/checksum_end" in r)
    assert end["ref/checksum_start"] == end["ref/checksum_end"]  # the reference is frozen
    loss = series(rows, "train/kto_loss")
    assert loss[1] == pytest.approx(0.5, abs=1e-6)  # policy = reference: 1 - sigmoid(0)
    assert series(rows, "train/kl")[1] == 0.0
    # desirable answers' log-prob rises relative to the undesirable ones' (vs the reference):
    # measured (seed 42, the tiny random policy) +9.18 vs +1.83 nats on the 32 eval rows (the
    # policy learns the toy language too, so both rise; eval kto_margin 0.15 -> 0.37)
    h, desirable = _own_logratios(kto)
    gap = float(h[desirable].mean() - h[~desirable].mean())
    assert gap > 2.0, gap
    eval_loss = series(rows, "eval/kto_loss")
    assert eval_loss[KTO_STEPS] < eval_loss[14] < 0.5, eval_loss


def test_kto_on_ray_gives_the_launchers_losses(kto, tmp_path):
    """The same config on the Ray actor group (one rank with the frozen reference in its
    process, accumulation 2: the launcher rank's micro-batches, sent as Batches) gives the
    launcher's losses step by step."""
    steps = 3
    run = cli(
        "dpo",
        tmp_path / "ray",
        "dpo.mode=ray",
        "dpo.loss_type=kto",
        "dpo.beta=0.1",
        f"train.max_steps={steps}",
        "deepspeed.zero_stage=2",
        "train.eval_every=0",
        *KTO_SCHEDULE,
        "resources.reference_in_actor=true",
        "logging.backend=none",
        "checkpoint.export_hf=false",
    ).check()
    assert run.last("resources/reference_in_actor") == 1.0
    launcher = read_metrics(kto.out)
    for key in ("train/kto_loss", "train/kl", "train/kto_margin"):
        want = [v for step, v in sorted(series(launcher, key).items()) if step <= steps]
        assert run.series(key) == pytest.approx(want, abs=1e-5), key


def test_the_unpaired_losses_are_the_objectives():
    from rlhf_dist.algo import UNPAIRED_LOSSES
    from rlhf_dist.objectives.dpo import UNPAIRED_OBJECTIVES

    assert set(UNPAIRED_OBJECTIVES) == set(UNPAIRED_LOSSES)
