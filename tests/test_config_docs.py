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


def test_no_reference_group_leaves_its_resources_unread():
    keys = ["resources.reference.devices_per_node", "resources.actor.num_nodes"]
    in_actor = load_config(None, ["resources.reference_in_actor=true"])
    for job in ("ppo", "dpo-ray"):
        assert unread_keys(job, keys, in_actor) == [(keys[0], (
            f"{job} does not read it: there is no reference group: "
            "resources.reference_in_actor puts the reference in the actor's processes"))]
        assert unread_keys(job, keys, load_config(None, [])) == []
    why = dict(unread_keys("ppo", keys, load_config(None, ["model.lora.r=8"])))
    assert list(why) == keys[:1] and "the LoRA policy's base" in why[keys[0]]


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


def test_unread_data_columns_and_role_tokenizers_by_job():
    keys = ["data.response_key", "data.chosen_key", "data.messages_key", "data.label_key",
            "data.max_length", "data.max_prompt_length", "reward_model.tokenizer_path",
            "model.tokenizer_path"]
    unread = {job: [k for k, _ in unread_keys(job, keys)] for job in JOBS}
    assert unread["sft"] == ["data.chosen_key", "data.label_key", "reward_model.tokenizer_path"]
    assert unread["rm"] == ["data.response_key", "data.messages_key", "data.label_key",
                            "reward_model.tokenizer_path"]
    assert unread["ppo"] == ["data.response_key", "data.chosen_key", "data.max_length",
                             "reward_model.tokenizer_path"]
    assert unread["pretrain"] == keys[:4] + ["data.max_prompt_length",
                                             "reward_model.tokenizer_path"]
    why = dict(unread_keys("ppo", keys))
    assert why["reward_model.tokenizer_path"] == (
        "ppo does not read it: every role reads the policy's token ids (model.tokenizer_path)")
    assert why["data.response_key"] == "ppo does not read it: prompt rows do not have that column"


@pytest.mark.parametrize("key", ["dpo.precompute_ref", "dpo.ref_offload"])
def test_dpo_ray_command_refuses_launcher_only_keys(key, capsys):
    # `rlhf-dist dpo-ray` is `dpo dpo.mode=ray`: its checks apply (they did not before)
    assert main(["dpo-ray", f"{key}=true", "deepspeed.zero_stage=3", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert key in err and "dpo.mode=launcher only" in err
    assert main(["dpo-ray", "--print-config"]) == 0
    assert "mode: ray" in capsys.readouterr().out
