"""The vLLM rollout engine in this process.

Without vLLM: its results become the HF engine's Batch layout (token lists as vLLM returns
them, built here as plain records), and ``rollout.backend=vllm`` names the extra to install.
With vLLM (the ``[vllm]`` extra; marked ``vllm``): a real engine on a tiny llama saved to
disk decodes HF ``generate``'s greedy tokens, its log-probs are the HF model's, sampling is
reproducible per seed, and the stop ids / min-new-tokens settings hold; models vLLM cannot
serve are refused naming the field.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from rlhf_dist.config import ConfigError, RolloutConfig, RolloutResources, TinyModelConfig
from rlhf_dist.rollout.generate import rollout_batch
from rlhf_dist.rollout.vllm_engine import outputs_to_batch
from rlhf_dist.rollout.vllm_preflight import require_vllm

HAS_VLLM = importlib.util.find_spec("vllm") is not None
EOS, PAD = 2, 0


def _completion(ids, logps, finish="length", stop_reason=None):
    return SimpleNamespace(
        token_ids=ids,
        logprobs=[{i: SimpleNamespace(logprob=lp)} for i, lp in zip(ids, logps)],
        finish_reason=finish,
        stop_reason=stop_reason,
    )


def test_outputs_become_the_hf_layout_with_engine_logprobs():
    """Two prompts (widths 2 and 3, left-padded to P = 3), two samples each; responses of
    lengths 3 (ends in EOS), 1, 3 (ends in EOS) and 4 (cut at the length limit)."""
    prompt_ids = torch.tensor([[PAD, 5, 6], [7, 8, 9]])
    prompt_mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    outputs = [
        SimpleNamespace(
            outputs=[_completion([11, 12, EOS], [-1.0, -2.0, -3.0]), _completion([13], [-0.5])]
        ),
        SimpleNamespace(
            outputs=[
                _completion([14, 15, EOS], [-0.1, -0.2, -0.3], "stop", EOS),
                _completion([16, 17, 18, 19], [-1.0] * 4),
            ]
        ),
    ]
    batch = outputs_to_batch(prompt_ids, prompt_mask, outputs, [EOS], PAD, n=2)
    responses = torch.tensor(
        [[11, 12, EOS, PAD], [13, PAD, PAD, PAD], [14, 15, EOS, PAD], [16, 17, 18, 19]]
    )
    want = rollout_batch(
        torch.cat([prompt_ids.repeat_interleave(2, 0), responses], 1),
        prompt_mask.repeat_interleave(2, 0),
        [EOS],
        PAD,
        2,
    )
    for key in ("sequences", "attention_mask", "action_mask"):
        assert torch.equal(batch[key], want[key]), key
    assert batch.meta == want.meta
    # action column t predicts token t+1: the response starts at column P - 1 = 2
    engine = batch["engine_logprobs"]
    assert engine.shape == (4, 6)
    assert engine[0].tolist() == [0, 0, -1.0, -2.0, -3.0, 0]
    assert engine[1].tolist() == [0, 0, -0.5, 0, 0, 0]
    assert engine[2].tolist() == pytest.approx([0, 0, -0.1, -0.2, -0.3, 0])
    assert batch["action_mask"][2].tolist() == [0, 0, 1, 1, 1, 0]


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_vllm_backend_without_vllm_names_the_extra():
    with pytest.raises(
        ConfigError,
        match=r"rollout.backend=vllm: vLLM is not installed; "
        r'install vLLM: pip install -e "\.\[vllm\]"',
    ):
        require_vllm()


# --------------------------------------------------------------------------- real vLLM


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory):
    """A random tiny llama with head size 32 and the toy tokenizer, saved to disk."""
    from rlhf_dist.config import ModelConfig
    from rlhf_dist.models import load_causal_lm, load_tokenizer

    section = ModelConfig(tiny=TinyModelConfig(num_heads=2))
    tokenizer = load_tokenizer(section)
    torch.manual_seed(0)
    model = load_causal_lm(section, tokenizer).eval()
    directory = tmp_path_factory.mktemp("tiny32")
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return str(directory), model, tokenizer


@pytest.fixture(scope="module")
def engine(tiny32):
    from rlhf_dist.rollout.generate import stop_ids
    from rlhf_dist.rollout.vllm_engine import VLLMRolloutEngine

    directory, _, tokenizer = tiny32
    rollout = RolloutConfig(do_sample=False, max_new_tokens=12)
    return VLLMRolloutEngine(
        directory,
        rollout,
        RolloutResources(max_model_len=96),
        "float32",
        seed=0,
        stop=stop_ids(rollout, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )


def _prompts(tokenizer, n=6):
    from rlhf_dist.data import PromptCollator

    topics = [
        "cook tomato and eggs",
        "make a bomb",
        "fix a bike",
        "pick a lock",
        "bake bread",
        "write a poem",
    ]
    texts = [f"Human: how do I {topic}?\nAssistant:" for topic in topics[:n]]
    batch = PromptCollator(tokenizer.pad_token_id)(
        [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]
    )
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs the [vllm] extra")
def test_greedy_tokens_and_logprobs_equal_hf(engine, tiny32):
    from rlhf_dist.models import action_logprobs
    from rlhf_dist.rollout import HFGenerator

    _, model, tokenizer = tiny32
    ids, mask = _prompts(tokenizer)
    hf = HFGenerator(model, tokenizer, engine.rollout).generate(ids, mask)
    got = engine.generate(ids, mask, seed=0)
    for key in ("sequences", "attention_mask", "action_mask"):
        assert torch.equal(got[key], hf[key]), key
    with torch.no_grad():
        ours = action_logprobs(model, hf)
    assert (got["engine_logprobs"] - ours).abs().max() < 1e-4


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs the [vllm] extra")
def test_sampling_seeded_stop_ids_and_min_tokens(engine, tiny32):
    import dataclasses

    _, _, tokenizer = tiny32
    ids, mask = _prompts(tokenizer, 4)
    base = engine.rollout
    try:
        engine.rollout = dataclasses.replace(
            base, do_sample=True, n_samples_per_prompt=3, temperature=1.5
        )
        first, again = engine.generate(ids, mask, seed=7), engine.generate(ids, mask, seed=7)
        other = engine.generate(ids, mask, seed=8)
        assert len(first) == 12 and torch.equal(first["sequences"], again["sequences"])
        assert not torch.equal(first["sequences"], other["sequences"])
        # every row its own random numbers (each row is a request with a seed of its own)
        assert len({tuple(row.tolist()) for row in first["sequences"]}) == 12
        # a part of the prompts, told where its rows start, draws what the whole call drew
        part = engine.generate(ids[2:], mask[2:], seed=7, first_row=6)
        P, Pp = first.meta["prompt_length"], part.meta["prompt_length"]
        assert torch.equal(part["sequences"][:, Pp:], first["sequences"][6:, P:])
        # the most frequent sampled token becomes a stop id: rows end at its first occurrence
        P = first.meta["prompt_length"]
        common = int(first["sequences"][:, P:].flatten().mode().values)
        engine.stop = [tokenizer.eos_token_id, common]
        stopped = engine.generate(ids, mask, seed=7)
        for row, m in zip(stopped["sequences"][:, P:], stopped["attention_mask"][:, P:]):
            real = row[m.bool()].tolist()
            assert common not in real[:-1]
        # min_tokens: no response shorter than 5 tokens, even when a stop id comes early
        engine.rollout = dataclasses.replace(engine.rollout, min_new_tokens=5)
        assert int(engine.generate(ids, mask, seed=7)["action_mask"].sum(-1).min()) >= 5
    finally:
        engine.rollout, engine.stop = base, [tokenizer.eos_token_id]


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs the [vllm] extra")
def test_unservable_models_are_refused_naming_the_field():
    from transformers import GPT2Config, LlamaConfig

    from rlhf_dist.rollout.vllm_preflight import VLLMError, check_servable

    with pytest.raises(
        VLLMError,
        match=r"model: attention head size 16 .* "
        r"model.tiny.num_heads=2",
    ):
        check_servable(
            LlamaConfig(hidden_size=64, num_attention_heads=4, architectures=["LlamaForCausalLM"]),
            on_gpu=False,
        )
    with pytest.raises(VLLMError, match=r"model: architecture \['NotAModel'\] is not one vLLM"):
        check_servable(GPT2Config(architectures=["NotAModel"]), on_gpu=True)


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="needs the [vllm] extra")
def test_preflight_refuses_colocation_on_cpu_and_too_long_lengths():
    from rlhf_dist.config import load_config
    from rlhf_dist.models import load_tokenizer
    from rlhf_dist.rollout.vllm_preflight import preflight

    base = ["rollout.backend=vllm", "model.tiny.num_heads=2"]
    cfg = load_config(None, [*base, "resources.colocate_rollout=true"])
    tokenizer = load_tokenizer(cfg.model)
    with pytest.raises(ConfigError, match=r"resources.colocate_rollout: needs GPUs"):
        preflight(cfg, tokenizer, on_gpu=False)
    long = load_config(None, [*base, "resources.rollout.max_model_len=1000"])
    with pytest.raises(
        ConfigError,
        match=r"model: the longest prompt \+ response \(1000 "
        r"tokens, resources.rollout.max_model_len\) is above "
        r"the model's max_position_embeddings=256",
    ):
        preflight(long, tokenizer, on_gpu=False)
    model = preflight(load_config(None, base), tokenizer, False)
    assert '"LlamaForCausalLM"' in model.config_json
    assert model.stop == [tokenizer.eos_token_id] and model.pad_token_id == tokenizer.pad_token_id
