"""LoRA engines (peft adapters under real one-rank DeepSpeed engines, ZeRO 0, 1 and 3): only the
adapter moves, the adapter-off forward is the untouched base bit for bit, the merged weights
equal peft's own merge, and the export loads with peft and with plain transformers."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from rlhf_dist.config import DeepSpeedSection, LoraConfig, TrainConfig
from rlhf_dist.engine.engine import ModelEngine
from rlhf_dist.models.lora import apply_lora, base_state, linear_module_names
from rlhf_dist.utils.checksum import state_checksum

from engine_helpers import INPUTS, build

TRAIN = TrainConfig(train_batch_size=4, micro_batch_size=2, lr=5e-2)
LORA = LoraConfig(r=4, alpha=8.0)


def lora_engine(stage: int, **kwargs) -> ModelEngine:
    ds = DeepSpeedSection(zero_stage=stage)
    return ModelEngine.trained(
        lambda: apply_lora(build(), LoraConfig(r=4, alpha=8.0, **kwargs)),
        ds,
        TRAIN,
        dp_size=1,
        total_steps=10,
    )


def train(engine: ModelEngine, steps: int = 3) -> None:
    for _ in range(steps):
        for micro in INPUTS.split(TRAIN.micro_batch_size):
            engine.backward(engine(micro, labels=micro).loss)
            engine.step()


@contextlib.contextmanager
def unpartitioned():
    """Load HF models whole although a ZeRO-3 engine is alive in this process (it keeps
    transformers' HfDeepSpeedConfig set, and from_pretrained would partition them)."""
    import transformers.integrations.deepspeed as hf_deepspeed

    saved, hf_deepspeed._hf_deepspeed_config_weak_ref = (
        hf_deepspeed._hf_deepspeed_config_weak_ref,
        None,
    )
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def plain():
    """A fresh base model, never partitioned: built while no ZeRO-3 engine is alive (a live
    one keeps transformers' HfDeepSpeedConfig set), copied after."""
    return copy.deepcopy(_PLAIN)


_PLAIN = build()


@pytest.fixture(scope="module", params=[0, 1, 3], ids=["zero0", "zero1", "zero3"])
def trained(request):
    """A LoRA engine after 3 steps, its full state before them, and a plain model holding its
    initial base weights (under ZeRO-3, zero.Init draws the initial weights differently)."""
    engine = lora_engine(request.param)
    before = {k: v.clone() for k, v in engine.full_state_dict().items()}
    base = plain()
    base.load_state_dict(base_state(before))
    train(engine)
    return engine, before, base.eval()


def test_only_the_adapter_trains_and_the_base_checksum_holds(trained):
    engine, before, base = trained
    assert engine.lora
    trainable = [n for n, p in engine.module.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert engine.state_checksum(base=True) == state_checksum(base.state_dict())
    after = engine.full_state_dict()
    for name, value in before.items():  # every adapter weight moved, every base weight kept
        changed = not torch.equal(after[name], value)
        assert changed == (".lora_B." in name or ".lora_A." in name), name


@torch.no_grad()
def test_adapter_off_is_the_frozen_base_bit_for_bit(trained):
    engine, _, base = trained
    engine.eval()
    mask = torch.ones_like(INPUTS)
    assert torch.equal(
        engine.base()(INPUTS, attention_mask=mask).logits, base(INPUTS, attention_mask=mask).logits
    )
    # ... and with the adapter the trained model differs from it
    assert not torch.allclose(
        engine(INPUTS, attention_mask=mask).logits, base(INPUTS, attention_mask=mask).logits
    )


@torch.no_grad()
def test_merged_weights_equal_peft_merge_and_the_export_loads(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    engine, _, base = trained
    engine.eval()
    merged = {name: t.clone() for name, t in engine.full_parameters()}
    assert [n for n, _ in engine.parameter_shapes()] == list(merged)
    state = engine.full_state_dict()
    twin = apply_lora(copy.deepcopy(base), LORA)
    twin.load_state_dict(state)
    reference = dict(twin.merge_and_unload().named_parameters())
    assert merged.keys() == reference.keys()
    for name, value in reference.items():
        torch.testing.assert_close(merged[name], value, rtol=0, atol=1e-6)

    engine.export_hf(tmp_path)
    mask = torch.ones_like(INPUTS)
    logits = engine(INPUTS, attention_mask=mask).logits
    with unpartitioned():
        merged_model = AutoModelForCausalLM.from_pretrained(tmp_path)
        adapted = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter")
    torch.testing.assert_close(
        merged_model(INPUTS, attention_mask=mask).logits, logits, rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(
        adapted(INPUTS, attention_mask=mask).logits, logits, rtol=1e-5, atol=1e-5
    )


def test_checkpoint_holds_the_adapter_only_and_restores_it(trained, tmp_path):
    engine, _, _ = trained
    engine.save(tmp_path)
    saved = (
        {
            k: v
            for path in tmp_path.rglob("*model_states.pt")
            for k, v in torch.load(path, weights_only=False)["module"].items()
        }
        if engine.zero_stage == 0
        else None
    )
    if saved is not None:
        assert saved and all(".lora_" in k for k in saved)
    fresh = lora_engine(engine.zero_stage)
    fresh.load(tmp_path)
    mask = torch.ones_like(INPUTS)
    engine.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(
            fresh(INPUTS, attention_mask=mask).logits, engine(INPUTS, attention_mask=mask).logits
        )
    # the optimizer goes on identically: one more step each
    engine.train(), fresh.train()
    train(engine, 1), train(fresh, 1)
    with torch.no_grad():
        engine.eval(), fresh.eval()
        assert torch.equal(
            fresh(INPUTS, attention_mask=mask).logits, engine(INPUTS, attention_mask=mask).logits
        )


def test_target_modules_that_match_nothing_name_the_linear_layers():
    from rlhf_dist.models import ModelError

    with pytest.raises(ModelError) as err:
        apply_lora(plain(), LoraConfig(r=4, target_modules=["q_proj", "qkv"]), "model")
    message = str(err.value)
    assert "model.lora.target_modules: ['qkv']" in message
    for name in linear_module_names(plain()):
        assert name in message


def test_base_state_names_are_the_base_models():
    model = apply_lora(plain(), LORA)
    assert base_state(model.state_dict()).keys() == plain().state_dict().keys()
