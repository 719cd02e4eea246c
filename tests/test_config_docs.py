"""Every config key is documented (one place: the comment at its field), ``--help-config`` shows
a job's keys, and a key a job would ignore is named in one warning."""
import logging
from dataclasses import dataclass
from typing import List, Optional

import pytest

from rlhf_dist.cli import main
from rlhf_dist.config import load_config
from rlhf_dist.config.docs import field_docs, help_text, key_docs
from rlhf_dist.config.usage import JOBS, job_of, unread_keys, user_keys


def test_every_key_has_a_doc():
    keys = key_docs()
    assert len(keys) > 150
    assert [k.key for k in keys if not k.doc] == []


@dataclass
class _Documented:
    # the comment right above,
    # on two lines
    a: int = 1  # and the one at the end
    b: str = "x#y"  # a '#' inside a string is not a comment
    c: Optional[List[int]] = None

    d: float = 0.5


def test_field_docs_reads_the_comments_above_and_beside():
    assert field_docs(_Documented) == {
        "a": "the comment right above, on two lines and the one at the end",
        "b": "a '#' inside a string is not a comment", "c": "", "d": ""}


def test_help_text_shows_type_default_doc_and_notes():
    text = help_text(["train"], {"train.epochs": "not read"})
    assert "train.lr: float = 0.0001\n    " in text
    assert "train.epochs: int = 1\n" in text and "[not read]" in text
    assert "ppo." not in text and "model." not in text


def test_the_jobs_name_real_keys():
    top = {k.key.split(".")[0] for k in key_docs()}
    every = {k.key for k in key_docs()}
    for job, spec in JOBS.items():
        assert set(spec.sections) <= top, job
        for key in spec.unread:
            assert key in every or any(k.startswith(key + ".") for k in every), (job, key)


def test_user_keys_follow_the_schema(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.1\ndeepspeed:\n  extra: {a: 1, b: {c: 2}}\n"
                    "ppo:\n  rewards: [{fn: math}]\n")
    keys = user_keys(str(path), ["train.lr=0.2", "model.lora.r=8", "seed=3"])
    assert keys == ["train.lr", "deepspeed.extra", "ppo.rewards", "model.lora.r", "seed"]


def test_unread_keys_by_hand():
    keys = ["train.lr", "train.epochs", "ppo.clip_eps", "rollout.max_new_tokens",
            "deepspeed.role_zero_stage", "resources.actor.num_nodes"]
    assert [k for k, _ in unread_keys("ppo", keys)] == ["train.epochs"]
    sft = dict(unread_keys("sft", keys))
    assert list(sft) == ["ppo.clip_eps", "rollout.max_new_tokens", "deepspeed.role_zero_stage",
                         "resources.actor.num_nodes"]
    assert sft["ppo.clip_eps"] == "sft does not read the ppo section"
    assert unread_keys("dpo-ray", ["resources.actor.num_nodes"]) == []
    assert job_of("dpo", load_config(None, ["dpo.mode=ray"])) == "dpo-ray"
    assert job_of("dpo", load_config(None, [])) == "dpo"


def test_the_cli_warns_once_per_ignored_key(caplog, capsys):
    with caplog.at_level(logging.WARNING, logger="rlhf_dist.config"):
        assert main(["sft", "ppo.clip_eps=0.3", "train.lr=1e-3", "--print-config"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "rlhf_dist.config"]
    assert warnings == ["ppo.clip_eps is ignored: sft does not read the ppo section"]
    assert "clip_eps" in capsys.readouterr().out  # the config is still printed whole


@pytest.mark.parametrize("job", ["sft", "ppo"])
def test_help_config_lists_what_the_job_reads(job, capsys):
    assert main([job, "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "train.lr: float = 0.0001" in out
    assert ("ppo.clip_eps: float" in out) == (job == "ppo")
    assert ("[ppo does not read it: PPO runs ppo.iterations" in out) == (job == "ppo")
