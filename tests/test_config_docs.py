"""Every config key is documented (one place: the comment at its field), ``--help-config`` shows
a job's keys, ``docs/config.md`` is generated from the same docs and up to date, and a key a job
would ignore is named in one warning.  Also the docs around it: the README links every page of
``docs/`` and no relative link in them points nowhere."""

import difflib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

from rlhf_dist.cli import main
from rlhf_dist.config import load_config
from rlhf_dist.config.docs import field_docs, help_text, key_docs, markdown
from rlhf_dist.config.usage import JOBS, job_of, unread_keys, user_keys


REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


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
        "b": "a '#' inside a string is not a comment",
        "c": "",
        "d": "",
    }


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
    path.write_text(
        "train:\n  lr: 0.1\ndeepspeed:\n  extra: {a: 1, b: {c: 2}}\nppo:\n  rewards: [{fn: math}]\n"
    )
    keys = user_keys(str(path), ["train.lr=0.2", "model.lora.r=8", "seed=3"])
    assert keys == ["train.lr", "deepspeed.extra", "ppo.rewards", "model.lora.r", "seed"]


def test_unread_keys_by_hand():
    keys = [
        "train.lr",
        "train.epochs",
        "ppo.clip_eps",
        "rollout.max_new_tokens",
        "deepspeed.role_zero_stage",
        "resources.actor.num_nodes",
    ]
    assert [k for k, _ in unread_keys("ppo", keys)] == ["train.epochs"]
    sft = dict(unread_keys("sft", keys))
    assert list(sft) == [
        "ppo.clip_eps",
        "rollout.max_new_tokens",
        "deepspeed.role_zero_stage",
        "resources.actor.num_nodes",
    ]
    assert sft["ppo.clip_eps"] == "sft does not read the ppo section"
    assert unread_keys("dpo-ray", ["resources.actor.num_nodes"]) == []
    assert job_of("dpo", load_config(None, ["dpo.mode=ray"])) == "dpo-ray"
    assert job_of("dpo", load_config(None, [])) == "dpo"


def test_no_reference_group_leaves_its_resources_unread():
    keys = ["resources.reference.devices_per_node", "resources.actor.num_nodes"]
    in_actor = load_config(None, ["resources.reference_in_actor=true"])
    for job in ("ppo", "dpo-ray"):
        assert unread_keys(job, keys, in_actor) == [
            (
                keys[0],
                (
                    f"{job} does not read it: there is no reference group: "
                    "resources.reference_in_actor puts the reference in the actor's processes"
                ),
            )
        ]
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
    keys = [
        "data.response_key",
        "data.chosen_key",
        "data.messages_key",
        "data.label_key",
        "data.max_length",
        "data.max_prompt_length",
        "reward_model.tokenizer_path",
        "model.tokenizer_path",
    ]
    unread = {job: [k for k, _ in unread_keys(job, keys)] for job in JOBS}
    assert unread["sft"] == ["data.chosen_key", "data.label_key", "reward_model.tokenizer_path"]
    assert unread["rm"] == [
        "data.response_key",
        "data.messages_key",
        "data.label_key",
        "reward_model.tokenizer_path",
    ]
    assert unread["ppo"] == [
        "data.response_key",
        "data.chosen_key",
        "data.max_length",
        "reward_model.tokenizer_path",
    ]
    assert unread["pretrain"] == keys[:4] + [
        "data.max_prompt_length",
        "reward_model.tokenizer_path",
    ]
    why = dict(unread_keys("ppo", keys))
    assert why["reward_model.tokenizer_path"] == (
        "ppo does not read it: every role reads the policy's token ids (model.tokenizer_path)"
    )
    assert why["data.response_key"] == "ppo does not read it: prompt rows do not have that column"


@pytest.mark.parametrize("key", ["dpo.precompute_ref", "dpo.ref_offload"])
def test_dpo_ray_command_refuses_launcher_only_keys(key, capsys):
    # `rlhf-dist dpo-ray` is `dpo dpo.mode=ray`: its checks apply (they did not before)
    assert main(["dpo-ray", f"{key}=true", "deepspeed.zero_stage=3", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert key in err and "dpo.mode=launcher only" in err
    assert main(["dpo-ray", "--print-config"]) == 0
    assert "mode: ray" in capsys.readouterr().out


def test_docs_config_md_is_the_generated_reference():
    committed = (DOCS / "config.md").read_text(encoding="utf-8")
    expected = markdown()
    if committed != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(True),
                    expected.splitlines(True),
                    "docs/config.md",
                    "generated",
                )
            )[:40]
        )
        pytest.fail(
            "docs/config.md is out of date: run "
            "`python -m rlhf_dist.config.docs > docs/config.md`\n" + diff
        )


def test_the_reference_has_one_row_of_four_cells_per_key():
    text = markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert [row.split(" | ")[0][3:-1] for row in rows] == [k.key for k in key_docs()]
    # a '|' inside a doc or default is escaped, so every row has exactly 4 cells
    cells = [len(re.split(r"(?<!\\)\|", row)) - 2 for row in rows]
    assert set(cells) == {4}
    dtype = next(row for row in rows if row.startswith("| `model.dtype` |"))
    assert dtype == (
        "| `model.dtype` | `str` | `float32` | float32 \\| bfloat16 \\| float16: "
        "the weights' dtype when loaded |"
    )
    assert "| `seed` | `int` | `42` |" in text and text.index("## Top-level keys") < text.index(
        "## `model`"
    ) < text.index("## `ppo`")


def _links(path):
    """The relative links of a markdown file as (target, anchor): no URLs; an in-page anchor
    has the target ''."""
    targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text(encoding="utf-8"))
    return [
        tuple(t.partition("#")[::2])
        for t in targets
        if not t.startswith(("http://", "https://", "mailto:"))
    ]


def _anchors(path):
    """GitHub's heading anchors: lower case, punctuation but '-' and '_' dropped, spaces → '-'."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_links_every_doc_and_no_link_is_dead():
    pages = sorted(DOCS.glob("*.md"))
    linked = {(REPO / t).resolve() for t, _ in _links(REPO / "README.md")}
    assert [p.name for p in pages if p.resolve() not in linked] == []
    dead = []
    for page in [REPO / "README.md", *pages]:
        for target, anchor in _links(page):
            path = page.parent / target if target else page
            if not path.exists() or (
                anchor and path.suffix == ".md" and anchor not in _anchors(path)
            ):
                dead.append((str(page.relative_to(REPO)), f"{target}#{anchor}"))
    assert dead == []
    assert "padding-free-batches-trainpadding_free" in _anchors(DOCS / "configuration.md")
