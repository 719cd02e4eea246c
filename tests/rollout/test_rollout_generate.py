"""HFGenerator on a tiny random llama: layout, masks, determinism, greedy == manual loop."""

import pytest
import torch

from rlhf_dist.models import action_logprobs, causal_lm_logits
from rlhf_dist.protocol import Batch
from rlhf_dist.rollout import HFGenerator, concat_rollouts, decode_responses, response_token_ids


def expected_response_mask(responses, eos_id):
    """The mask by an explicit loop: 1 up to and including the first EOS."""
    out = torch.zeros_like(responses)
    for i, row in enumerate(responses.tolist()):
        for j, token in enumerate(row):
            out[i, j] = 1
            if token == eos_id:
                break
    return out


def manual_greedy(model, prompt, max_new_tokens, eos_id):
    """Argmax loop over the unpadded prompt, full forward each step (no KV cache)."""
    ids = torch.tensor([prompt])
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]
            token = int(logits.argmax())
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            if token == eos_id:
                break
    return new


def test_layout_prompts_preserved_and_samples_consecutive(
    make_lm, tok, rollout_cfg, prompts, left_pad
):
    ids, mask = left_pad(prompts)
    engine = HFGenerator(make_lm(), tok, rollout_cfg(n_samples_per_prompt=3, max_new_tokens=5))
    out = engine.generate(ids, mask, generator_seed=0)
    N, T = out["sequences"].shape
    P = ids.shape[1]
    assert (N, len(out)) == (12, 12) and T == P + 5  # no EOS from a random model in 5 steps
    assert out["attention_mask"].shape == (N, T) and out["action_mask"].shape == (N, T - 1)
    assert out.meta == {"prompt_length": P, "n_samples_per_prompt": 3}
    assert torch.equal(out["sequences"][:, :P], ids.repeat_interleave(3, dim=0))
    assert torch.equal(out["attention_mask"][:, :P], mask.repeat_interleave(3, dim=0))
    assert out["action_mask"][:, : P - 1].sum() == 0
    assert out["action_mask"][:, P - 1 :].sum() == N * 5


def test_action_mask_covers_generated_tokens_up_to_first_eos(
    make_lm, tok, rollout_cfg, prompts, left_pad
):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    ids, mask = left_pad(prompts)
    engine = HFGenerator(
        make_lm(eos_bias=5.0), tok, rollout_cfg(n_samples_per_prompt=2, max_new_tokens=12)
    )
    out = engine.generate(ids, mask, generator_seed=3)
    P = ids.shape[1]
    responses = out["sequences"][:, P:]
    expected = expected_response_mask(responses, eos)
    lengths = expected.sum(-1).tolist()
    # the case of interest happened: EOS mid-response in some rows, not everywhere at once
    assert min(lengths) < responses.shape[1] and len(set(lengths)) > 2
    assert torch.equal(out["attention_mask"][:, P:], expected)
    assert torch.equal(
        out["action_mask"],
        torch.cat([torch.zeros(len(out), P - 1, dtype=torch.long), expected], dim=1),
    )
    for row, n in enumerate(lengths):
        if n < responses.shape[1]:
            assert responses[row, n - 1] == eos
            assert (responses[row, n:] == pad).all()
    # decoding uses exactly the masked tokens
    ids_per_row = response_token_ids(out)
    assert [len(r) for r in ids_per_row] == lengths
    assert decode_responses(out, tok) == tok.batch_decode(ids_per_row, skip_special_tokens=True)


def test_greedy_equals_manual_argmax_loop_despite_left_padding(
    make_lm, tok, rollout_cfg, prompts, left_pad
):
    model = make_lm(eos_bias=0.4)  # EOS becomes the argmax for some prompts, not for others
    ids, mask = left_pad(prompts)
    engine = HFGenerator(model, tok, rollout_cfg(do_sample=False, max_new_tokens=8))
    out = engine.generate(ids, mask)
    again = engine.generate(ids, mask)
    assert torch.equal(out["sequences"], again["sequences"])
    got = response_token_ids(out)
    want = [manual_greedy(model, p, 8, tok.eos_token_id) for p in prompts]
    assert got == want
    lengths = [len(w) for w in want]
    assert min(lengths) < 8 and max(lengths) == 8


def test_seed_reproducible_and_global_rng_untouched(make_lm, tok, rollout_cfg, prompts, left_pad):
    ids, mask = left_pad(prompts)
    engine = HFGenerator(make_lm(), tok, rollout_cfg(max_new_tokens=6, n_samples_per_prompt=2))
    state = torch.get_rng_state()
    a = engine.generate(ids, mask, generator_seed=11)
    assert torch.equal(torch.get_rng_state(), state)
    b = engine.generate(ids, mask, generator_seed=11)
    c = engine.generate(ids, mask, generator_seed=12)
    assert torch.equal(a["sequences"], b["sequences"])
    assert not torch.equal(a["sequences"], c["sequences"])
    # two samples of one prompt differ (sampling, not copies)
    assert not torch.equal(a["sequences"][0], a["sequences"][1])


def test_generation_config_ignores_model_defaults(make_lm, tok, rollout_cfg, prompts, left_pad):
    model = make_lm()
    ids, mask = left_pad(prompts)
    engine = HFGenerator(model, tok, rollout_cfg(do_sample=False, max_new_tokens=6))
    plain = engine.generate(ids, mask)
    model.generation_config.repetition_penalty = 50.0
    model.generation_config.max_new_tokens = 2
    assert torch.equal(engine.generate(ids, mask)["sequences"], plain["sequences"])
    assert model.generation_config.repetition_penalty == 50.0  # restored
    cfg = HFGenerator(model, tok, rollout_cfg(top_k=0, top_p=0.9)).generation_config()
    assert (cfg.top_k, cfg.top_p, cfg.do_sample) == (0, 0.9, True)


def test_right_padded_prompts_rejected(make_lm, tok, rollout_cfg):
    engine = HFGenerator(make_lm(), tok, rollout_cfg())
    ids = torch.tensor([[5, 6, 7], [8, 0, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"prompt rows \[1\] are not left-padded"):
        engine.generate(ids, mask)


def test_action_logprobs_match_hand_log_softmax(make_lm, tok, rollout_cfg, prompts, left_pad):
    model = make_lm()
    ids, mask = left_pad(prompts)
    out = HFGenerator(model, tok, rollout_cfg(max_new_tokens=4)).generate(
        ids, mask, generator_seed=1
    )
    seq, am = out["sequences"], out["action_mask"]
    with torch.no_grad():
        logps, entropy = action_logprobs(model, out, return_entropy=True)
        hot = action_logprobs(model, out, temperature=2.0)
        logits = causal_lm_logits(model, seq, out["attention_mask"])
    engine = HFGenerator(model, tok, rollout_cfg(max_new_tokens=4, temperature=2.0))
    with_lp = engine.generate(ids, mask, generator_seed=1, with_logprobs=True)
    with torch.no_grad():  # read from generate's KV-cached forwards: equal up to rounding
        recomputed = action_logprobs(model, with_lp, 2.0)
    torch.testing.assert_close(with_lp["old_logprobs"], recomputed, atol=1e-5, rtol=0)
    assert (with_lp["old_logprobs"][with_lp["action_mask"] == 0] == 0).all()
    assert (recomputed[with_lp["action_mask"] == 1] < 0).all()  # a real comparison
    assert logps.shape == am.shape
    assert (logps[am == 0] == 0).all() and (entropy[am == 0] == 0).all()
    P = out.meta["prompt_length"]
    for row, t in [(0, P - 1), (1, P), (3, P + 2)]:
        log_p = torch.log_softmax(logits[row, t], dim=-1)
        assert torch.allclose(logps[row, t], log_p[seq[row, t + 1]], atol=1e-6)
        assert torch.allclose(entropy[row, t], -(log_p.exp() * log_p).sum(), atol=1e-5)
        log_p2 = torch.log_softmax(logits[row, t] / 2.0, dim=-1)
        assert torch.allclose(hot[row, t], log_p2[seq[row, t + 1]], atol=1e-6)
    # the padded row 1 (prompt of 2 tokens, 3 pads) scores as its unpadded version
    real = seq[1][out["attention_mask"][1].bool()]
    with torch.no_grad():
        alone = torch.log_softmax(model(input_ids=real[None]).logits[0, :-1], -1)
    alone = alone.gather(-1, real[1:, None]).squeeze(-1)[-4:]
    assert torch.allclose(logps[1, -4:], alone, atol=1e-5)


def test_action_logprobs_run_the_lm_head_on_action_columns_only(
    make_lm, tok, rollout_cfg, prompts, left_pad
):
    """The prompt's columns are 0 anyway: the LM head sees positions P-1 .. T-1 only, and
    log-probs, entropy and the gradient equal those of the full-width logits."""
    model = make_lm()
    ids, mask = left_pad(prompts)
    out = HFGenerator(model, tok, rollout_cfg(max_new_tokens=4)).generate(
        ids, mask, generator_seed=1
    )
    seq, am = out["sequences"], out["action_mask"]
    P, T = out.meta["prompt_length"], seq.shape[1]
    widths = []
    handle = model.lm_head.register_forward_hook(lambda m, a, o: widths.append(a[0].shape[1]))
    try:
        logps, entropy = action_logprobs(model, out, return_entropy=True)
    finally:
        handle.remove()
    assert widths == [T - P + 1]
    full = torch.log_softmax(causal_lm_logits(model, seq, out["attention_mask"])[:, :-1], -1)
    want = full.gather(-1, seq[:, 1:, None]).squeeze(-1) * am
    torch.testing.assert_close(logps, want, atol=1e-6, rtol=0)
    want_entropy = -(full.exp() * full).sum(-1) * am
    torch.testing.assert_close(entropy, want_entropy, atol=1e-5, rtol=0)
    grads = [torch.autograd.grad(x.sum(), model.lm_head.weight)[0] for x in (logps, want)]
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0].abs().sum() > 0
    # a metric-only entropy carries no gradient; the log-probs are unchanged
    logps2, metric = action_logprobs(model, out, return_entropy=True, entropy_grad=False)
    assert entropy.requires_grad and not metric.requires_grad
    torch.testing.assert_close(metric, entropy.detach(), atol=0, rtol=0)
    torch.testing.assert_close(logps2, logps, atol=0, rtol=0)
    # no acting row at all: every column 0, one position through the head
    silent = out.with_(action_mask=torch.zeros_like(am))
    assert (action_logprobs(model, silent) == 0).all()


def test_concat_rollouts_aligns_prompt_and_response_parts():
    a = Batch(
        {
            "sequences": torch.tensor([[9, 5, 6, 7]]),
            "attention_mask": torch.tensor([[0, 1, 1, 1]]),
            "action_mask": torch.tensor([[0, 1, 1]]),
        },
        meta={"prompt_length": 2},
    )
    b = Batch(
        {
            "sequences": torch.tensor([[4, 4, 3, 8, 2]]),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1]]),
            "action_mask": torch.tensor([[0, 0, 1, 1]]),
        },
        meta={"prompt_length": 3},
    )
    out = concat_rollouts([a, b], pad_token_id=9)
    assert out.meta["prompt_length"] == 3
    assert torch.equal(out["sequences"], torch.tensor([[9, 9, 5, 6, 7], [4, 4, 3, 8, 2]]))
    assert torch.equal(out["attention_mask"], torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
    assert torch.equal(out["action_mask"], torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]]))


def test_rank_split_generation_merges_back_to_one_shot_result(make_lm, tok, rollout_cfg, left_pad):
    """The worker-group pattern: chunk the prompts by rank, generate per rank (different
    response lengths), concat_rollouts == generating all at once."""
    model = make_lm(eos_bias=0.4)
    prompts = [[5, 17, 300, 42, 9], [100, 200, 300], [77, 8], [400, 401, 402, 403]]
    ids, mask = left_pad(prompts)
    engine = HFGenerator(
        model, tok, rollout_cfg(do_sample=False, max_new_tokens=8, n_samples_per_prompt=2)
    )
    whole = engine.generate(ids, mask)
    prompt_batch = Batch({"input_ids": ids, "attention_mask": mask})
    chunks = prompt_batch.chunk(2)  # rows [0, 1] and [2, 3], as a group call splits them
    per_rank = [engine.generate(c["input_ids"], c["attention_mask"]) for c in chunks]
    assert len({r["sequences"].shape[1] for r in per_rank}) == 2  # ragged across ranks
    merged = concat_rollouts(per_rank, pad_token_id=tok.pad_token_id)
    for key in ("sequences", "attention_mask", "action_mask"):
        assert torch.equal(merged[key], whole[key]), key


def test_min_new_tokens_masks_eos_until_then(make_lm, tok, rollout_cfg, prompts, left_pad):
    ids, mask = left_pad(prompts)
    model = make_lm(eos_bias=5.0)  # EOS early in most rows without the floor
    free = HFGenerator(model, tok, rollout_cfg(n_samples_per_prompt=2, max_new_tokens=12))
    floor = HFGenerator(
        model, tok, rollout_cfg(n_samples_per_prompt=2, max_new_tokens=12, min_new_tokens=7)
    )
    P = ids.shape[1]
    free_lengths = free.generate(ids, mask, generator_seed=3)["attention_mask"][:, P:].sum(-1)
    out = floor.generate(ids, mask, generator_seed=3)
    lengths = out["attention_mask"][:, P:].sum(-1)
    assert int(free_lengths.min()) < 7  # the floor had something to do
    assert int(lengths.min()) >= 8  # 7 tokens, then EOS allowed
    assert not (out["sequences"][:, P : P + 7] == tok.eos_token_id).any()


@pytest.mark.parametrize(
    "settings, eos_bias",
    [
        (dict(temperature=0.7, top_k=5, min_new_tokens=3), 0.5),  # processors change the sampling
        (dict(do_sample=False), 0.5),  # greedy
        (dict(temperature=1.3, top_p=0.9, n_samples_per_prompt=2), 3.0),
    ],
)
def test_logprobs_read_from_generation_equal_a_recomputing_forward(
    make_lm, tok, rollout_cfg, prompts, left_pad, settings, eos_bias
):
    """Rows that stop at EOS at different steps, left-padded prompts: the log-probs read from
    generate's KV-cached forwards are the raw (temperature-scaled) policy's, like the
    recomputing forward, to float rounding -- not the processed distribution's."""
    model = make_lm(eos_bias=eos_bias)
    ids, mask = left_pad(prompts)
    cfg = rollout_cfg(max_new_tokens=10, **settings)
    out = HFGenerator(model, tok, cfg).generate(ids, mask, generator_seed=4, with_logprobs=True)
    lengths = out["action_mask"].sum(-1)
    assert lengths.min() < lengths.max()  # some rows ended early
    with torch.no_grad():
        expected = action_logprobs(model, out, HFGenerator(model, tok, cfg).temperature)
    torch.testing.assert_close(out["old_logprobs"], expected, atol=2e-5, rtol=0)


def test_logprobs_read_from_generation_of_a_peft_model(
    make_lm, tok, rollout_cfg, prompts, left_pad
):
    """peft's generate runs the base model's forward: the hook sits there."""
    from rlhf_dist.config import LoraConfig
    from rlhf_dist.models.lora import apply_lora

    torch.manual_seed(1)
    model = apply_lora(make_lm(), LoraConfig(r=4, alpha=8), "model")
    for name, p in model.named_parameters():
        if "lora_B" in name:  # nonzero adapters, so the adapter path matters
            torch.nn.init.normal_(p, std=0.5)
    ids, mask = left_pad(prompts)
    out = HFGenerator(model, tok, rollout_cfg(max_new_tokens=6)).generate(
        ids, mask, generator_seed=2, with_logprobs=True
    )
    with torch.no_grad():
        expected = action_logprobs(model, out)
        with model.disable_adapter():
            base = action_logprobs(model, out)
    torch.testing.assert_close(out["old_logprobs"], expected, atol=2e-5, rtol=0)
    assert (out["old_logprobs"] - base).abs().max() > 1e-2
