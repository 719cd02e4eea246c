"""LoRA runs of the launcher trainers, one rank in this process (``fit_in_process``):

* DPO with the shared reference (no ``ref_model.name_or_path``): no reference copy exists,
  the first loss is exactly ln 2 (policy = reference at the start), the reference log-probs
  equal a separate frozen base's, only adapter weights moved, the logged reference checksum
  is the untouched base's, and the export loads with plain transformers and with peft;
* RM: the value head (``modules_to_save``) trains in full next to the adapters;
* SFT under ZeRO-3 with gradient checkpointing: the loss falls, the base stays;
* resume of a LoRA run is exact.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_dist.utils.checksum import state_checksum
from test_trainers_inprocess import _fresh
from trainer_helpers import fit_in_process, read_metrics, series

pytestmark = pytest.mark.slow

LORA = ("model.lora.r=8", "model.lora.alpha=16", "train.lr=2e-3")


@pytest.fixture(scope="module")
def lora_dpo(tmp_path_factory):
    from rlhf_dist.trainers.dpo import DPOTrainer

    return fit_in_process(
        DPOTrainer,
        "dpo",
        tmp_path_factory.mktemp("lora_dpo"),
        "train.max_steps=6",
        "deepspeed.zero_stage=2",
        *LORA,
    )


def _moved(trainer):
    """Names of the engine's parameters that differ from a fresh build with the same seed
    (peft's fresh adapter included: B = 0, A seeded)."""
    from rlhf_dist.models.lora import maybe_lora

    torch.manual_seed(trainer.cfg.seed)
    fresh = dict(
        maybe_lora(
            trainer.build_model(trainer.tokenizer), trainer.cfg.model, "model"
        ).named_parameters()
    )
    return sorted(
        n
        for n, p in trainer.engine.module.named_parameters()
        if not torch.equal(p.detach(), fresh[n].detach())
    )


def test_shared_reference_builds_no_copy_and_starts_at_ln2(lora_dpo):
    from rlhf_dist.engine.engine import BaseModel

    assert lora_dpo.cfg.shared_reference and isinstance(lora_dpo.reference, BaseModel)
    rows = read_metrics(lora_dpo.out)
    assert rows[0]["resources/reference_shared_base"] == 1.0
    assert 0 < rows[0]["params/trainable"] < rows[0]["params/total"] / 5
    assert series(rows, "train/dpo_loss")[1] == pytest.approx(math.log(2), abs=1e-6)
    losses = series(rows, "train/dpo_loss")
    assert losses[6] < losses[1]


def test_only_adapter_weights_moved_and_the_base_checksum_held(lora_dpo):
    moved = _moved(lora_dpo)
    assert moved and all(".lora_A." in n or ".lora_B." in n for n in moved)
    assert any(".lora_B." in n for n in moved)
    base = _fresh(lora_dpo)
    end = [r for r in read_metrics(lora_dpo.out) if "ref/checksum_end" in r][0]
    assert end["ref/checksum_start"] == end["ref/checksum_end"] == state_checksum(base.state_dict())


def test_adapter_off_reference_equals_a_separate_frozen_base(lora_dpo):
    from rlhf_dist.objectives import reference_rows

    trainer = lora_dpo
    batch = trainer.collate([trainer.train_set[i] for i in range(8)])
    with torch.no_grad():
        shared = reference_rows(trainer.reference, batch, trainer.cfg.dpo)
        separate = reference_rows(_fresh(trainer).eval(), batch, trainer.cfg.dpo)
        policy = reference_rows(trainer.engine, batch, trainer.cfg.dpo)
    assert torch.equal(shared, separate)
    assert (policy - separate).abs().max() > 1e-3  # the adapter did change the policy


def test_export_merged_and_adapter_give_the_engine_logits(lora_dpo):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlhf_dist.models import causal_lm_logits

    trainer = lora_dpo
    batch = trainer.collate([trainer.eval_set[i] for i in range(4)])
    ids, mask = batch["input_ids"], (batch["input_ids"] != trainer.tokenizer.pad_token_id).long()

    def logits(model):
        with torch.no_grad():
            return causal_lm_logits(model, ids, mask)

    trainer.engine.eval()
    want = logits(trainer.engine)
    merged = AutoModelForCausalLM.from_pretrained(
        trainer.out / "model", attn_implementation="eager"
    ).eval()
    adapter = PeftModel.from_pretrained(_fresh(trainer), trainer.out / "model" / "adapter")
    for model in (merged, adapter.eval()):
        torch.testing.assert_close(logits(model), want, rtol=1e-5, atol=1e-5)
    assert (logits(_fresh(trainer).eval()) - want).abs().max() > 1e-3


def test_rm_lora_trains_the_score_head_in_full(tmp_path):
    from rlhf_dist.trainers.rm import RMTrainer

    trainer = fit_in_process(
        RMTrainer, "rm", tmp_path, "train.max_steps=4", "deepspeed.zero_stage=0", *LORA
    )
    from rlhf_dist.config import ModelConfig
    from rlhf_dist.models import load_scalar_model

    moved = _moved(trainer)
    assert "base_model.model.score.modules_to_save.default.weight" in moved
    assert all(".lora_" in n or ".modules_to_save." in n for n in moved), moved

    exported = load_scalar_model(
        ModelConfig(name_or_path=str(trainer.out / "model")), trainer.tokenizer, role="reward"
    )
    batch = trainer.collate([trainer.train_set[i] for i in range(4)])
    trainer.engine.eval()
    with torch.no_grad():
        want = trainer.engine(batch["input_ids"], batch["attention_mask"])
        got = exported.eval()(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sft_lora_under_zero3_with_checkpointing_learns_and_keeps_the_base(tmp_path):
    from rlhf_dist.trainers.sft import SFTTrainer

    class Recording(SFTTrainer):
        def build_engines(self):
            engine = super().build_engines()
            self.base_start = engine.state_checksum(base=True)
            return engine

        def before_export(self):  # collective: while the process group is up
            self.base_end = self.engine.state_checksum(base=True)

    trainer = fit_in_process(
        Recording,
        "sft",
        tmp_path,
        "train.max_steps=8",
        "deepspeed.zero_stage=3",
        "model.gradient_checkpointing=true",
        *LORA,
    )
    assert trainer.engine.zero_stage == 3 and trainer.engine.lora
    losses = list(series(read_metrics(trainer.out), "train/loss").values())
    assert len(losses) == 8 and sum(losses[-2:]) < sum(losses[:2]) - 0.1, losses
    assert trainer.base_end == trainer.base_start
    start = read_metrics(trainer.out)[0]
    assert 0 < start["params/trainable"] < start["params/total"] / 5


def test_lora_resume_is_exact(tmp_path):
    from rlhf_dist.trainers.dpo import DPOTrainer

    args = ("deepspeed.zero_stage=2", "train.max_steps=6", *LORA)
    full = fit_in_process(
        DPOTrainer,
        "dpo",
        tmp_path / "full",
        *args,
        "checkpoint.save_every=3",
        "checkpoint.keep_last=5",
    )
    checkpoint = full.out / "checkpoints" / "step_000003"
    assert checkpoint.is_dir()
    resumed = fit_in_process(
        DPOTrainer, "dpo", tmp_path / "resumed", *args, f"checkpoint.resume={checkpoint}"
    )
    want, got = (series(read_metrics(t.out), "train/loss") for t in (full, resumed))
    assert sorted(got) == [4, 5, 6]
    for step in got:
        assert got[step] == want[step], step
    weights = [dict(t.engine.module.named_parameters()) for t in (full, resumed)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
