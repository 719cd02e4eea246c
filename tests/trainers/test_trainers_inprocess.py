"""One-rank jobs run inside the test process through the trainer API, so the test can hold the
trained objects: the DPO reference compared bit for bit with a fresh copy, and the HF export's
logits compared with the live engine's.  Two jobs in one process also prove that a finished job
leaves the process ready for the next (``dist.shutdown`` clears DeepSpeed's cached groups)."""

from __future__ import annotations

import pytest
import torch

from trainer_helpers import fit_in_process, read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dpo_trainer(tmp_path_factory):
    from rlhf_dist.trainers.dpo import DPOTrainer

    return fit_in_process(
        DPOTrainer,
        "dpo",
        tmp_path_factory.mktemp("dpo1"),
        "train.max_steps=6",
        "deepspeed.zero_stage=2",
    )


@pytest.fixture(scope="module")
def dpo_padded_precomputed(dpo_trainer, tmp_path_factory):
    """The same DPO job in the other pair layout, reference log-probs precomputed."""
    from rlhf_dist.trainers.dpo import DPOTrainer

    return fit_in_process(
        DPOTrainer,
        "dpo",
        tmp_path_factory.mktemp("dpo2"),
        "train.max_steps=6",
        "deepspeed.zero_stage=2",
        "dpo.layout=padded",
        "dpo.precompute_ref=true",
    )


@pytest.fixture(scope="module")
def sft_trainer(dpo_padded_precomputed, tmp_path_factory):  # after the DPO job, in the same process
    from rlhf_dist.trainers.sft import SFTTrainer

    return fit_in_process(
        SFTTrainer,
        "sft",
        tmp_path_factory.mktemp("sft1"),
        "train.max_steps=6",
        "deepspeed.zero_stage=2",
    )


def _fresh(trainer, reference: bool = False):
    torch.manual_seed(trainer.cfg.seed)
    kwargs = {"reference": True} if reference else {}
    return trainer.build_model(trainer.tokenizer, **kwargs)


def test_dpo_reference_is_bit_identical_after_training(dpo_trainer):
    fresh = dict(_fresh(dpo_trainer, reference=True).named_parameters())
    reference = dict(dpo_trainer.reference.module.named_parameters())
    assert reference.keys() == fresh.keys() and len(fresh) > 10
    for name, param in reference.items():
        assert torch.equal(param, fresh[name]), name
        assert not param.requires_grad, name
    # … while the policy, which started from the same weights, did move
    policy = dict(dpo_trainer.engine.module.named_parameters())
    moved = [n for n, p in policy.items() if not torch.equal(p.detach(), fresh[n])]
    assert len(moved) == len(policy)


def test_dpo_logged_reference_checksum_is_crc32_of_the_fresh_weights(dpo_trainer):
    from rlhf_dist.utils.checksum import state_checksum

    crc = state_checksum(_fresh(dpo_trainer, reference=True).state_dict())
    rows = [r for r in read_metrics(dpo_trainer.out) if "ref/checksum_end" in r]
    assert len(rows) == 1
    assert rows[0]["ref/checksum_start"] == rows[0]["ref/checksum_end"] == crc


def test_dpo_layouts_and_precomputed_reference_give_the_same_losses(
    dpo_trainer, dpo_padded_precomputed
):
    from trainer_helpers import series

    assert dpo_trainer.cfg.dpo.layout == "shared_prompt" and dpo_trainer.ref_table is None
    shared = read_metrics(dpo_trainer.out)
    padded = read_metrics(dpo_padded_precomputed.out)
    for key in ("train/loss", "train/reward_margin", "eval/loss"):
        a, b = series(shared, key), series(padded, key)
        assert a.keys() == b.keys() and len(a) >= 1, key
        for step in a:  # float rounding only (measured: at most 9e-7)
            assert a[step] == pytest.approx(b[step], abs=2e-4), (key, step)
    assert series(padded, "perf/ref_precompute_s")


def test_precomputed_reference_equals_the_per_batch_reference(dpo_padded_precomputed):
    from rlhf_dist.objectives import reference_rows

    trainer = dpo_padded_precomputed
    table = trainer.ref_table
    assert table.shape == (len(trainer.train_set), 2)
    indices = [0, 5, len(trainer.train_set) - 1]
    batch = trainer.collate([trainer.train_set[i] for i in indices])
    with torch.no_grad():
        chosen, rejected = trainer.layout.split_rows(
            reference_rows(trainer.reference, batch, trainer.cfg.dpo)
        )
    torch.testing.assert_close(
        table[indices], torch.stack([chosen, rejected], 1), atol=1e-5, rtol=1e-6
    )
    assert (table[:, 0] != table[:, 1]).all()


def test_one_rank_zero0_skips_the_gradient_all_reduce_and_trains_the_same(tmp_path):
    """One rank has nothing to average: the engine skips DeepSpeed's flatten / all-reduce /
    copy-back of every gradient, and the losses stay bit-identical (with accumulation)."""
    from rlhf_dist.trainers.dpo import DPOTrainer

    class WithAllReduce(DPOTrainer):
        def build_engines(self):
            policy = super().build_engines()
            policy.ds.enable_backward_allreduce = True
            return policy

    args = (
        "train.max_steps=4",
        "deepspeed.zero_stage=0",
        "train.train_batch_size=8",
        "train.micro_batch_size=4",
    )
    skipped = fit_in_process(DPOTrainer, "dpo", tmp_path / "skip", *args)
    reduced = fit_in_process(WithAllReduce, "dpo", tmp_path / "reduce", *args)
    assert not skipped.engine.ds.enable_backward_allreduce
    losses = [
        [r["train/loss"] for r in read_metrics(t.out) if "train/loss" in r]
        for t in (skipped, reduced)
    ]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_second_job_in_the_same_process_runs(sft_trainer):
    rows = read_metrics(sft_trainer.out)
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4, 5, 6]
    assert not torch.distributed.is_initialized()  # torn down again at the end


def test_hf_export_gives_the_engine_logits(sft_trainer):
    from transformers import AutoModelForCausalLM

    from rlhf_dist.models import causal_lm_logits

    path, attn = sft_trainer.out / "model", sft_trainer.cfg.model.attn_implementation
    engine_model = sft_trainer.engine.module.eval()
    batch = sft_trainer.collate([sft_trainer.eval_set[i] for i in range(8)])

    def logits(model):
        with torch.no_grad():
            return causal_lm_logits(model, batch["input_ids"], batch["attention_mask"])

    want = logits(engine_model)
    # the same attention kernel as the run ("eager"): bit-identical logits
    got = logits(AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn).eval())
    assert want.shape == got.shape and want.shape[0] == 8
    assert torch.equal(got, want), (got - want).abs().max()
    # transformers' default kernel (sdpa) differs only by float rounding (measured 3e-7)
    default = logits(AutoModelForCausalLM.from_pretrained(path).eval())
    assert (default - want).abs().max() < 1e-5
    # and the export is the trained model, not the initial one
    with torch.no_grad():
        initial = causal_lm_logits(
            _fresh(sft_trainer).eval(), batch["input_ids"], batch["attention_mask"]
        )
    assert (initial - want).abs().max() > 1e-2
