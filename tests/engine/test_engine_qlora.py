"""QLoRA (a bitsandbytes 4- or 8-bit base + LoRA adapters) under a real one-rank DeepSpeed
engine, on CPU (bitsandbytes' CPU kernels; the job itself refuses quantised weights without
CUDA, so these build the quantised model directly with the config the loader would pass).

The merged weights that the export and the vLLM weight sync use are the dequantised base plus
the adapter's delta, in the unpacked shapes (a 4-bit weight is stored packed as uint8
``(n/2, 1)``, an 8-bit one as int8); the export loads with plain transformers and gives the
QLoRA model's logits; the output heads (``lm_head``, a critic's ``score``) are never quantised.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.qlora  # run by the README's second test command (the [qlora] extra)

from rlhf_dist.config import DeepSpeedSection, LoraConfig, ModelConfig, TrainConfig  # noqa: E402
from rlhf_dist.engine.engine import ModelEngine  # noqa: E402
from rlhf_dist.models import load_causal_lm, save_model  # noqa: E402
from rlhf_dist.models._common import bnb_config  # noqa: E402
from rlhf_dist.models.lora import maybe_lora, merged_parameters, merged_shapes  # noqa: E402

TRAIN = TrainConfig(train_batch_size=2, micro_batch_size=2, lr=1e-2)
BITS = {"4bit": {"load_in_4bit": True}, "8bit": {"load_in_8bit": True}}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, toy_tok):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("qlora_base")
    save_model(load_causal_lm(ModelConfig(), toy_tok), toy_tok, directory)
    return directory


def _quantised(cls, base_dir, bits: str):
    section = ModelConfig(name_or_path=str(base_dir), lora=LoraConfig(r=4), **BITS[bits])
    model = cls.from_pretrained(
        base_dir, quantization_config=bnb_config(section, "model"), dtype=torch.float32
    )
    return model, section


@pytest.mark.parametrize("bits", list(BITS))
def test_qlora_merge_export_and_shapes(bits, base_dir, toy_tok, tmp_path):
    from transformers import AutoModelForCausalLM

    model, section = _quantised(AutoModelForCausalLM, base_dir, bits)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj.weight).__name__ in ("Params4bit", "Int8Params")  # really quantised
    assert type(model.lm_head.weight) is torch.nn.Parameter
    assert model.lm_head.weight.dtype == torch.float32
    peft_model = maybe_lora(model, section, "model")
    engine = ModelEngine.trained(
        lambda: peft_model, DeepSpeedSection(zero_stage=0), TRAIN, dp_size=1, total_steps=3
    )
    ids = torch.randint(5, len(toy_tok), (2, 8), generator=torch.Generator().manual_seed(3))
    for _ in range(2):
        engine.backward(engine(ids, labels=ids).loss)
        engine.step()

    plain = load_causal_lm(ModelConfig(name_or_path=str(base_dir)), toy_tok)
    assert merged_shapes(peft_model) == [(n, list(p.shape)) for n, p in plain.named_parameters()]
    merged = dict(merged_parameters(peft_model, lambda params: contextlib.nullcontext()))
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    delta = layer.get_delta_weight("default")
    assert delta.abs().max() > 0  # the adapter trained
    # merged - delta is the dequantised base: the unquantised weight to within the 4/8-bit
    # rounding (here <= 0.0098 of weights up to 0.093), not packed or truncated bytes
    base = merged["model.layers.0.self_attn.q_proj.weight"] - delta
    error = (base - plain.model.layers[0].self_attn.q_proj.weight).abs().max()
    assert 0 < error < 0.015

    engine.export_hf(tmp_path, toy_tok)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert not hasattr(exported.config, "quantization_config")
    peft_model.eval()
    with torch.no_grad():
        ours, theirs = peft_model(ids).logits, exported(ids).logits
    assert (ours - theirs).abs().max() < 2e-2 * ours.abs().max()


def test_qlora_critic_head_stays_full_precision_and_trains(base_dir, toy_tok):
    from rlhf_dist.models.scalar_head import new_head_record, scalar_head_class
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_dir)
    config.num_labels, config.rlhf_dist = 1, new_head_record("critic", fresh_head=True)
    section = ModelConfig(name_or_path=str(base_dir), lora=LoraConfig(r=4), load_in_4bit=True)
    critic = scalar_head_class(config).from_pretrained(
        base_dir,
        config=config,
        quantization_config=bnb_config(section, "critic_model"),
        dtype=torch.float32,
    )
    assert type(critic.score.weight) is torch.nn.Parameter
    peft_model = maybe_lora(critic, section, "critic_model")
    trained = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert "base_model.model.score.modules_to_save.default.weight" in trained
