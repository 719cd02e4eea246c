"""``--backend vllm`` of ``rlhf-dist eval`` and ``rlhf-dist label``: real vLLM (the CPU build,
engine core in this process) against HF generate on a tiny llama of head size 32 (the
smallest vLLM's CPU attention kernels have).  Skipped where vLLM is not installed."""

import importlib
import json
import sys

import pytest
import torch

pytest.importorskip("vllm")

from rlhf_dist.cli import main  # noqa: E402
from rlhf_dist.config import ConfigError, ModelConfig, RolloutConfig, TinyModelConfig  # noqa: E402
from rlhf_dist.data import pad  # noqa: E402
from rlhf_dist.eval import load_prompts  # noqa: E402
from rlhf_dist.rlaif import sample_responses  # noqa: E402
from rlhf_dist.rollout import decode_responses, make_sampler  # noqa: E402

pytestmark = pytest.mark.vllm
LABEL_MODULE = importlib.import_module("rlhf_dist.rlaif.label")
NO_VLLM = '--backend=vllm: vLLM is not installed; install vLLM: pip install -e ".[vllm]"'


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tok):
    """A tiny random llama (hidden 64, 2 heads of 32) with the toy tokenizer, on disk."""
    from rlhf_dist.models import load_causal_lm, save_model

    tiny = TinyModelConfig(
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
    )
    torch.manual_seed(3)
    model = load_causal_lm(ModelConfig(tiny=tiny), tok)
    return str(save_model(model, tok, tmp_path_factory.mktemp("vllm_llama") / "model"))


def run_eval(out, *args):
    return main(
        [
            "eval",
            "--prompts",
            "toy",
            "--max-prompts",
            "6",
            "--max-new-tokens",
            "12",
            "--rollout-batch-size",
            "4",
            "--device",
            "cpu",
            "--no-wandb",
            "--output-dir",
            str(out),
            *args,
        ]
    )


def answers(out):
    """``{model: [response, …]}`` of an eval run's ``samples.jsonl``, in order."""
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    by_model = {}
    for row in rows:
        by_model.setdefault(row["model"], []).append(row["response"])
    return by_model


# --------------------------------------------------------------------------- eval


def test_greedy_vllm_answers_are_hfs_and_the_scores_stay_on_hf(tmp_path, llama_dir, saved_models):
    common = [
        "--model",
        f"m={llama_dir}",
        "--greedy",
        "--reward-model",
        saved_models["rm"],
        "--reference",
        "toy",
    ]
    assert run_eval(tmp_path / "hf", *common) == 0
    assert run_eval(tmp_path / "vllm", *common, "--backend", "vllm") == 0
    hf, vllm = answers(tmp_path / "hf")["m"], answers(tmp_path / "vllm")["m"]
    assert len(hf) == 6 and sum(len(a) for a in hf) > 6 * 5  # real answers, not empty ones
    assert vllm == hf
    report = {b: json.loads((tmp_path / b / "eval.json").read_text()) for b in ("hf", "vllm")}
    assert [r["settings"]["backend"] for r in report.values()] == ["hf", "vllm"]
    metrics = {b: r["metrics"]["m"] for b, r in report.items()}
    assert metrics["vllm"]["perplexity"] == metrics["hf"]["perplexity"]  # the same HF model
    assert metrics["vllm"]["reward_mean"] == pytest.approx(metrics["hf"]["reward_mean"], abs=1e-6)


def test_sampled_vllm_answers_repeat_with_the_seed(tmp_path, llama_dir):
    """Two models from the same directory, one engine each (one after the other in this
    process), the same seed: the same texts; two samples of a prompt differ."""
    rc = run_eval(
        tmp_path,
        "--models",
        f"a={llama_dir},b={llama_dir}",
        "--n-samples-per-prompt",
        "2",
        "--seed",
        "7",
        "--backend",
        "vllm",
    )
    assert rc == 0
    got = answers(tmp_path)
    assert len(got["a"]) == 12 and got["a"] == got["b"]
    assert all(got["a"][2 * i] != got["a"][2 * i + 1] for i in range(6))


def test_one_engine_serves_every_batch_with_a_seed_per_row(llama_dir, tok):
    """The sampler of ``make_sampler("vllm")`` is reused across calls: a seed gives the same
    rows again, another seed other rows, and no two rows of a call share a text (the seeds
    of the engine's own ``n > 1`` sampling would overlap across prompts)."""
    import logging

    rollout = RolloutConfig(max_new_tokens=10, n_samples_per_prompt=3)
    records = []  # what vLLM's renderer logs while the engine starts
    recorder = logging.Handler()
    recorder.emit = records.append
    logging.getLogger("vllm.renderers.base").addHandler(recorder)
    try:
        sampler = make_sampler(
            "vllm",
            model_dir=llama_dir,
            model=None,
            tokenizer=tok,
            rollout=rollout,
            seed=0,
            max_model_len=64,
        )
    finally:
        logging.getLogger("vllm.renderers.base").removeHandler(recorder)
    assert not [r for r in records if r.levelno >= logging.WARNING]  # no warm-up traceback
    prompts = load_prompts("toy", split="train").prompts[:3]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    prompt_ids = pad(ids, sampler.pad_token_id, "left")
    prompt_mask = pad([[1] * len(i) for i in ids], 0, "left")
    first = sampler.generate(prompt_ids, prompt_mask, 5)
    P = prompt_ids.shape[1]
    assert first.meta == {"prompt_length": P, "n_samples_per_prompt": 3}
    assert torch.equal(first["sequences"][:, :P], prompt_ids.repeat_interleave(3, dim=0))
    assert first["action_mask"].shape == (9, first["sequences"].shape[1] - 1)
    texts = decode_responses(first, tok)
    assert len(set(texts)) == 9
    assert decode_responses(sampler.generate(prompt_ids, prompt_mask, 5), tok) == texts
    assert (
        set(decode_responses(sampler.generate(prompt_ids, prompt_mask, 6), tok)) & set(texts)
        == set()
    )
    sampler.close()  # the engine shut down (eval and label close theirs when done)
    assert sampler.llm is None
    sampler.close()


def test_an_unknown_backend_names_the_valid_ones(tok):
    with pytest.raises(ConfigError, match=r"unknown rollout backend 'tgi'.*\['hf', 'vllm'\]"):
        make_sampler(
            "tgi",
            model_dir=None,
            model=None,
            tokenizer=tok,
            rollout=RolloutConfig(),
            seed=0,
            max_model_len=64,
        )


# --------------------------------------------------------------------------- label


def test_label_with_vllm_pairs_vllms_samples(tmp_path, llama_dir, saved_models):
    out = tmp_path / "pairs.jsonl"
    rc = main(
        [
            "label",
            "--policy",
            llama_dir,
            "--judge",
            f"rm:{saved_models['rm']}",
            "--prompts",
            "toy",
            "--max-prompts",
            "4",
            "-k",
            "3",
            "--max-new-tokens",
            "8",
            "--seed",
            "2",
            "--device",
            "cpu",
            "--no-progress",
            "--backend",
            "vllm",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    stats = json.loads((tmp_path / "pairs.stats.json").read_text())
    # an RM's scores never tie and 3 distinct answers per prompt give C(3, 2) = 3 pairs each
    assert stats["responses"] == 12 and stats["empty_responses"] == 0
    assert sum(stats["skipped"].values()) == 0
    assert len(rows) == stats["pairs"] == 4 * 3
    assert stats["settings"]["backend"] == "vllm"
    prompts = load_prompts("toy", split="train", max_samples=4).prompts
    rollout = RolloutConfig(rollout_batch_size=8, max_new_tokens=8)  # the CLI's settings
    samples = dict(
        zip(prompts, sample_responses(llama_dir, prompts, 3, rollout, seed=2, backend="vllm"))
    )
    for row in rows:
        assert {row["chosen"], row["rejected"]} <= set(samples[row["prompt"]])


# --------------------------------------------------------------------------- refusals


@pytest.fixture
def no_sampling(monkeypatch):
    """Fail the test if label ever samples (its refusals must come first)."""

    def boom(*a, **k):
        raise AssertionError("the policy was sampled")

    monkeypatch.setattr(LABEL_MODULE, "sample_responses", boom)


def label_refusal(capsys, tmp_path, policy):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "label",
                "--policy",
                policy,
                "--judge",
                "rlhf_dist.rlaif.judges:toy_rule_judge",
                "--prompts",
                "toy",
                "--backend",
                "vllm",
                "--output",
                str(tmp_path / "p.jsonl"),
            ]
        )
    assert exit_info.value.code == 2
    assert not (tmp_path / "p.jsonl").exists()
    return capsys.readouterr().err


def eval_refusal(capsys, tmp_path, *args):
    assert run_eval(tmp_path / "out", "--backend", "vllm", *args) == 2
    assert not (tmp_path / "out").exists()
    return capsys.readouterr().err


def test_a_head_size_vllm_cannot_serve_is_refused_by_name(
    tmp_path, capsys, saved_models, no_sampling
):
    # the eval conftest's tiny llama: hidden 32 / 2 heads = head size 16
    err = eval_refusal(capsys, tmp_path, "--model", saved_models["base"])
    assert f"--model {saved_models['base']}: attention head size 16" in err
    assert len(err.strip().splitlines()) == 1
    err = label_refusal(capsys, tmp_path, saved_models["base"])
    assert "--policy: attention head size 16" in err


def test_missing_vllm_is_refused_naming_the_extra(
    tmp_path, capsys, monkeypatch, llama_dir, no_sampling
):
    monkeypatch.setitem(sys.modules, "vllm", None)  # find_spec("vllm") is None: not installed
    err = eval_refusal(capsys, tmp_path, "--model", llama_dir)
    assert NO_VLLM in err and len(err.strip().splitlines()) == 1
    assert NO_VLLM in label_refusal(capsys, tmp_path, llama_dir)


def test_vllm_wants_a_local_model_directory(tmp_path, capsys):
    err = eval_refusal(capsys, tmp_path, "--model", "some-org/some-model")
    assert (
        "--model some-org/some-model: --backend=vllm reads the model from a local directory" in err
    )
