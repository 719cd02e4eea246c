"""SimPO and ORPO in the DPO job (``dpo.loss_type``), one rank in the test process: no
reference model is built, the losses are the algo functions' on the policy's mean per-token
log-probs (ORPO adds the chosen answers' NLL), and the preference is learned."""
from __future__ import annotations

import pytest

from trainer_helpers import fit_in_process, read_metrics, series

pytestmark = pytest.mark.slow
STEPS = 28


@pytest.fixture(scope="module", params=["simpo", "orpo"])
def trainer(request, tmp_path_factory):
    from rlhf_dist.trainers.dpo import DPOTrainer

    beta = {"simpo": "2.0", "orpo": "0.5"}[request.param]
    return fit_in_process(DPOTrainer, "dpo", tmp_path_factory.mktemp(request.param),
                          f"dpo.loss_type={request.param}", f"dpo.beta={beta}",
                          f"train.max_steps={STEPS}", "deepspeed.zero_stage=2",
                          "train.eval_every=14")


def test_no_reference_model_is_built(trainer):
    rows = read_metrics(trainer.out)
    assert trainer.reference is None
    assert [r["resources/reference_model"] for r in rows if "resources/reference_model" in r] \
        == [0.0]
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
        with pytest.raises(ConfigError, match=rf"^dpo\.{key}: dpo.loss_type=simpo uses no "
                                              "reference model"):
            load_config(None, ["dpo.loss_type=simpo", f"dpo.{key}=true",
                               "deepspeed.zero_stage=3"])
    from rlhf_dist.trainers.dpo_ray import reference_group

    assert not reference_group(load_config(None, ["dpo.loss_type=orpo", "dpo.mode=ray"]))
    assert reference_group(load_config(None, ["dpo.mode=ray"]))  # sigmoid DPO has one


def test_the_reference_free_losses_are_the_objectives():
    from rlhf_dist.algo import REFERENCE_FREE_LOSSES
    from rlhf_dist.objectives.dpo import REFERENCE_FREE

    assert set(REFERENCE_FREE) == set(REFERENCE_FREE_LOSSES)
