"""Tokenizer loading: sources, pad fallback, errors that name the field, remote-code default."""

import pytest

from rlhf_dist.config import ModelConfig
from rlhf_dist.models import ModelError, load_tokenizer, looks_like_local_path


@pytest.mark.parametrize(
    "value, is_path",
    [
        ("/abs/dir", True),
        ("./rel", True),
        ("~/models/x", True),
        ("a/b/c", True),
        ("meta-llama/Llama-2-7b-hf", False),
        ("gpt2", False),
    ],
)
def test_paths_and_hub_ids_are_told_apart(value, is_path):
    assert looks_like_local_path(value) is is_path


@pytest.mark.parametrize("prefix", ["model", "ref_model", "reward_model", "critic_model"])
def test_missing_path_names_the_section(prefix):
    cfg = ModelConfig(name_or_path="/no/such/model")
    with pytest.raises(ModelError, match=rf"^{prefix}\.name_or_path: '/no/such/model' does not"):
        load_tokenizer(cfg, field_prefix=prefix)


def test_missing_tokenizer_path_names_tokenizer_field(tmp_path):
    cfg = ModelConfig(tokenizer_path=str(tmp_path / "absent"))
    with pytest.raises(ModelError, match=r"^reward_model\.tokenizer_path: .*absent' does not"):
        load_tokenizer(cfg, field_prefix="reward_model")


def test_loads_from_path_with_remote_code_off_by_default(tokenizer_dir, monkeypatch):
    from transformers import AutoTokenizer

    calls = []
    original = AutoTokenizer.from_pretrained

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy)
    tok = load_tokenizer(ModelConfig(tokenizer_path=str(tokenizer_dir)))
    assert len(tok) == 100 and tok.pad_token == "<pad>" and tok.pad_token_id == 0
    assert calls == [{"trust_remote_code": False}]
    load_tokenizer(ModelConfig(tokenizer_path=str(tokenizer_dir), trust_remote_code=True))
    assert calls[-1] == {"trust_remote_code": True}


def test_pad_falls_back_to_eos(tmp_path, make_tokenizer):
    make_tokenizer(pad=False).save_pretrained(tmp_path)
    tok = load_tokenizer(ModelConfig(name_or_path=str(tmp_path)))
    assert tok.pad_token == "</s>" and tok.pad_token_id == tok.eos_token_id == 3
    assert len(tok) == 100  # no token added


def test_no_pad_and_no_eos_is_an_error(tmp_path, make_tokenizer):
    make_tokenizer(pad=False, eos=False).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"^model\.name_or_path: .*neither a pad token nor"):
        load_tokenizer(ModelConfig(name_or_path=str(tmp_path)))


def test_null_paths_give_the_toy_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DIST_CACHE", str(tmp_path))
    tok = load_tokenizer(ModelConfig())
    assert tok.pad_token is not None and tok.eos_token is not None and len(tok) > 4
