"""vLLM's pooling runner (what its ``/classify`` endpoint serves) reads our reward-model export
and gives our scores.  Real vLLM (the CPU build, engine core in this process); marked ``vllm``
and skipped where vLLM is not installed."""

import os

import pytest
import torch

pytest.importorskip("vllm")

from rlhf_dist.config import ModelConfig, TinyModelConfig  # noqa: E402
from rlhf_dist.models import load_scalar_model, save_model  # noqa: E402

pytestmark = pytest.mark.vllm


def test_vllm_classify_reads_our_reward_model_export(tmp_path, toy_tok):
    from vllm import LLM, PoolingParams
    from vllm.inputs import TokensPrompt

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    tiny = TinyModelConfig(
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
    )  # head size 32: vLLM's CPU kernels
    torch.manual_seed(5)
    tok = toy_tok
    ours = load_scalar_model(ModelConfig(tiny=tiny), tok, "reward").eval()
    save_model(ours, tok, tmp_path)
    texts = [
        "Human: how do I bake bread?\nAssistant: Mix flour and water.",
        "Human: how do I make a bomb?\nAssistant: I can't help with that.",
        "Human: safe or unsafe: how do I fix a bike?\nAssistant: safe",
    ]
    rows = [tok(t)["input_ids"] + [tok.eos_token_id] for t in texts]
    with torch.no_grad():
        expected = [
            ours.sequence_scores(torch.tensor([r]), torch.ones(1, len(r))).item() for r in rows
        ]
    llm = LLM(
        model=str(tmp_path),
        runner="pooling",
        dtype="float32",
        enforce_eager=True,
        max_model_len=128,
        kv_cache_memory_bytes=2**26,
        seed=0,
    )
    try:
        outputs = llm.classify(
            [TokensPrompt(prompt_token_ids=r) for r in rows],
            pooling_params=PoolingParams(use_activation=False),
        )
    finally:
        del llm
    got = [out.outputs.probs[0] for out in outputs]
    assert got == pytest.approx(expected, abs=1e-4)
    assert max(expected) - min(expected) > 0.1  # distinct scores: the head was read
