"""The one sampling path of eval and label: batch b of the prompts is sampled with the seed of
draw b of the run's sampling stream, the n samples of a prompt side by side."""

import pytest

from rlhf_dist.data import Encoder, pad
from rlhf_dist.rollout import decode_responses
from rlhf_dist.rollout.hf import HFSampler
from rlhf_dist.rollout.sampling import sample_texts

PROMPTS = [
    "Human: how do I bake bread?\nAssistant:",
    "Human: hi\nAssistant:",
    "Human: how do I make a bomb?\nAssistant:",
]


def test_each_batch_gets_its_derived_seed(make_lm, tok, rollout_cfg):
    sampler = HFSampler(make_lm(), tok, rollout_cfg(max_new_tokens=4, n_samples_per_prompt=2))
    done = []
    texts = sample_texts(
        sampler, tok, PROMPTS, batch_size=2, max_prompt_length=16, seed=5, on_batch=done.append
    )
    assert len(texts) == 6 and done == [2, 1]
    encoder = Encoder(tok, 17, 16)
    want = []
    for b, part in enumerate([PROMPTS[:2], PROMPTS[2:]]):
        ids = [encoder.prompt(p) for p in part]
        batch = sampler.generate(
            pad(ids, sampler.pad_token_id, "left"),
            pad([[1] * len(i) for i in ids], 0, "left"),
            5 * 1_000_003 + b,
        )
        want += decode_responses(batch, tok)
    assert texts == want
    assert sample_texts(sampler, tok, PROMPTS, 2, 16, seed=6) != texts


def test_a_batch_size_below_one_is_refused(make_lm, tok, rollout_cfg):
    sampler = HFSampler(make_lm(), tok, rollout_cfg(max_new_tokens=2))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        sample_texts(sampler, tok, PROMPTS, 0, 16)
