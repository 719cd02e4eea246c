"""Scalar-head (reward / critic) models: one-call save/reload, init from an LM, last-token score.

Interop with transformers' own sequence classifiers: test_models_scalar_interop.py."""

import json
import logging
import math
import pickle

import pytest
import torch
from safetensors import safe_open

from rlhf_dist.config import ModelConfig
from rlhf_dist.models.causal_lm import checkpointing_enabled
from rlhf_dist.models import (
    ROLES,
    ModelError,
    head_init_std,
    last_token_index,
    load_causal_lm,
    load_scalar_model,
    save_model,
    scalar_head_class,
)


@pytest.fixture
def load_report(monkeypatch):
    """Records transformers' warnings (its logger does not propagate to pytest's caplog)."""
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    root = logging.getLogger("transformers")
    root.addHandler(handler)
    yield records
    root.removeHandler(handler)


def test_last_token_index_by_hand():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0], [0, 1, 1, 1, 0]])
    assert last_token_index(mask).tolist() == [2, 4, 0, 3]
    with pytest.raises(ValueError, match=r"mask rows \[1\] have no unmasked token"):
        last_token_index(torch.tensor([[1, 1], [0, 0]]))
    from rlhf_dist import algo

    assert last_token_index is algo.last_token_index  # one function, re-exported


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])
def test_class_is_a_pretrained_model_of_the_architecture(arch, tokenizer, tiny_section):
    from transformers import (
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
        MODEL_MAPPING,
        PreTrainedModel,
    )

    model = load_scalar_model(tiny_section(arch), tokenizer, "critic")
    cls = type(model)
    assert isinstance(model, PreTrainedModel) and cls is scalar_head_class(model.config)
    parent = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(model.config)]
    assert issubclass(cls, parent) and cls.__name__ == parent.__name__
    assert cls.config_class is type(model.config)
    backbone_cls = MODEL_MAPPING[type(model.config)]
    assert isinstance(model.base_model, backbone_cls)
    assert cls.base_model_prefix == backbone_cls.base_model_prefix
    assert tuple(model.score.weight.shape) == (1, 32) and model.score.bias is None
    assert model.config.num_labels == 1
    assert model.config.rlhf_dist == {"head": "critic", "score_mean": None, "score_std": None}
    values = model(*_batch(tokenizer))
    assert values.shape == (2, 6) and values.dtype == torch.float32


def _batch(tokenizer):
    ids = torch.randint(4, len(tokenizer), (2, 6))
    return ids, torch.ones_like(ids)


@pytest.mark.parametrize("side", ["right", "left"])
def test_score_reads_the_last_real_token(side, tokenizer, tiny_section, ragged_batch):
    model = load_scalar_model(tiny_section("gpt2"), tokenizer, "reward").eval()
    lengths = [3, 6, 1, 5]
    ids, mask = ragged_batch(lengths, side, 6)
    expected_index = [n - 1 for n in lengths] if side == "right" else [5, 5, 5, 5]
    with torch.no_grad():
        values, scores = model(ids, mask), model.sequence_scores(ids, mask)
    expected = torch.stack([values[row, col] for row, col in enumerate(expected_index)])
    assert torch.equal(scores, expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_left_padded_score_matches_unpadded(arch, tokenizer, tiny_section, ragged_batch):
    model = load_scalar_model(tiny_section(arch), tokenizer, "reward").eval()
    lengths = [2, 7, 4]
    ids, mask = ragged_batch(lengths, "left", 7)
    with torch.no_grad():
        scores = model.sequence_scores(ids, mask)
        values = model(ids, mask)
        for row, n in enumerate(lengths):
            alone = ids[row : row + 1, -n:]
            single = model(alone, torch.ones_like(alone))
            torch.testing.assert_close(values[row, -n:], single[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(scores[row], single[0, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_reward_model_save_reload_is_bit_identical(
    arch, tmp_path, tokenizer, tiny_section, ragged_batch, load_report
):
    model = load_scalar_model(tiny_section(arch), tokenizer, "reward").eval()
    model.set_score_stats(0.25, 1.5)
    save_model(model, tokenizer, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["rlhf_dist"]
    assert saved == {"head": "reward", "score_mean": 0.25, "score_std": 1.5}
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as weights:
        assert "score.weight" in weights.keys()
        assert not any(k.startswith("value_head") or k == "score.bias" for k in weights.keys())

    # one plain from_pretrained call restores backbone + head + stats …
    direct = type(model).from_pretrained(tmp_path)
    assert torch.equal(direct.score.weight, model.score.weight)
    # … and so does the config-driven loader
    reloaded = load_scalar_model(ModelConfig(name_or_path=str(tmp_path)), tokenizer, "reward")
    assert reloaded.score_stats == (0.25, 1.5)
    ids, mask = ragged_batch([6, 2, 4], "right", 6)
    with torch.no_grad():
        scores = model.sequence_scores(ids, mask)
        assert torch.equal(scores, reloaded.sequence_scores(ids, mask))
        normalized = reloaded.sequence_scores(ids, mask, normalize=True)
        assert torch.equal(normalized, (scores - 0.25) / 1.5)
    assert not load_report


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_reward_model_to_train_from_saved_causal_lm(
    arch, tmp_path, tokenizer, tiny_section, load_report
):
    lm = load_causal_lm(tiny_section(arch), tokenizer)
    save_model(lm, tokenizer, tmp_path)
    torch.manual_seed(123)
    rm = load_scalar_model(
        ModelConfig(name_or_path=str(tmp_path)),
        tokenizer,
        "reward",
        field_prefix="reward_model",
        train_head=True,
    )
    lm_backbone, rm_backbone = lm.base_model.state_dict(), rm.base_model.state_dict()
    assert set(lm_backbone) == set(rm_backbone)
    for name, tensor in lm_backbone.items():
        assert torch.equal(rm_backbone[name], tensor), name
    assert not any(name.startswith("lm_head") for name, _ in rm.named_parameters())
    # fresh head: std 1/sqrt(hidden+1), no bias, no stats; nothing warned about lm_head/head
    std = rm.score.weight.std().item()
    assert head_init_std(32) == pytest.approx(1 / math.sqrt(33))
    assert 0.5 * head_init_std(32) < std < 1.5 * head_init_std(32)
    assert rm.score.bias is None
    assert rm.config.rlhf_dist == {"head": "reward", "score_mean": None, "score_std": None}
    assert not load_report, [r.getMessage() for r in load_report]
    with pytest.raises(ModelError, match="no score statistics"):
        rm.sequence_scores(*_batch(tokenizer), normalize=True)


def test_critic_from_reward_model_keeps_the_head(tmp_path, tokenizer, tiny_section):
    rm = load_scalar_model(tiny_section(), tokenizer, "reward")
    save_model(rm, tokenizer, tmp_path)
    critic = load_scalar_model(ModelConfig(name_or_path=str(tmp_path)), tokenizer, "critic")
    assert critic.role == "critic" and torch.equal(critic.score.weight, rm.score.weight)


def test_marked_checkpoint_without_head_weights_is_an_error(tmp_path, tokenizer, tiny_section):
    lm = load_causal_lm(tiny_section(), tokenizer)
    lm.config.rlhf_dist = {"head": "reward", "score_mean": None, "score_std": None}
    save_model(lm, tokenizer, tmp_path)
    with pytest.raises(
        ModelError, match=r"^reward_model\.name_or_path: .*lack \['score\.weight'\]"
    ):
        load_scalar_model(
            ModelConfig(name_or_path=str(tmp_path)),
            tokenizer,
            "reward",
            field_prefix="reward_model",
        )


@pytest.mark.parametrize(
    "mean, std", [(float("nan"), 1.0), (0.0, float("inf")), (0.0, 0.0), ("x", 1.0)]
)
def test_bad_score_stats_are_rejected(mean, std, tokenizer, tiny_section):
    model = load_scalar_model(tiny_section(), tokenizer, "reward")
    with pytest.raises(ModelError, match=r"^score_(mean|std): "):
        model.set_score_stats(mean, std)
    assert model.score_stats == (None, None)


@pytest.mark.parametrize("role", ["value", None, "Reward"])
def test_wrong_role_is_rejected(role, tokenizer, tiny_section):
    with pytest.raises(ModelError, match=r"^role: got .*expected one of \['reward', 'critic'\]"):
        load_scalar_model(tiny_section(), tokenizer, role)
    assert set(ROLES) == {"reward", "critic"}


def test_missing_path_names_the_reward_model_field(tokenizer):
    with pytest.raises(ModelError, match=r"^reward_model\.name_or_path: '/x/y' does not exist"):
        load_scalar_model(
            ModelConfig(name_or_path="/x/y"), tokenizer, "reward", field_prefix="reward_model"
        )


def test_remote_code_off_by_default_for_scalar_models(
    tmp_path, tokenizer, tiny_section, monkeypatch
):
    from transformers import AutoConfig

    save_model(load_scalar_model(tiny_section(), tokenizer, "reward"), tokenizer, tmp_path)
    calls = []
    original = AutoConfig.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoConfig, "from_pretrained", spy)
    load_scalar_model(ModelConfig(name_or_path=str(tmp_path)), tokenizer, "reward")
    assert calls == [{"trust_remote_code": False}]


def test_scalar_model_pickles_by_class_name(tokenizer, tiny_section):
    from rlhf_dist.models import scalar_head as module

    model = load_scalar_model(tiny_section("gpt2"), tokenizer, "critic").eval()
    cls = type(model)
    name = "GPT2ForSequenceClassification"
    assert (cls.__module__, cls.__qualname__) == (module.__name__, name)
    assert module.__getattr__(name) is cls  # what a fresh process resolves
    clone = pickle.loads(pickle.dumps(model))
    ids, mask = _batch(tokenizer)
    with torch.no_grad():
        assert torch.equal(clone(ids, mask), model(ids, mask))


def test_gradient_checkpointing_on_scalar_model(tokenizer, tiny_section):
    model = load_scalar_model(tiny_section(gradient_checkpointing=True), tokenizer, "critic")
    assert checkpointing_enabled(model)
    model.train()
    model(*_batch(tokenizer)).sum().backward()
    assert model.score.weight.grad is not None
    assert model.base_model.embed_tokens.weight.grad is not None


def test_reward_checkpoint_is_not_a_causal_lm(tmp_path, tokenizer, tiny_section):
    save_model(load_scalar_model(tiny_section(), tokenizer, "reward"), tokenizer, tmp_path)
    with pytest.raises(ModelError, match=r"^model\.name_or_path: .* is a reward model"):
        load_causal_lm(ModelConfig(name_or_path=str(tmp_path)), tokenizer)
