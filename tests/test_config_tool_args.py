"""eval's and label's settings are the typed sections: tool defaults < YAML < the flags <
key=value overrides; each flag is generated from its key (same name, type and doc), the old
spellings warn; RolloutConfig's checks are named by the flag as typed and the key."""

import argparse

import pytest

from rlhf_dist.config import ConfigError
from rlhf_dist.config.docs import key_docs
from rlhf_dist.config.tool_args import (
    DEPRECATED_FLAGS,
    add_section_args,
    flag_of,
    given,
    resolve_sections,
)
from rlhf_dist.eval import cli as eval_cli
from rlhf_dist.rlaif import cli as label_cli

KEYS = (
    "rollout.n_samples_per_prompt",
    "rollout.max_new_tokens",
    "rollout.temperature",
    "seed",
    "data.label_key",
)
SHORT = {"rollout.n_samples_per_prompt": "-k"}
DEFAULTS = {"rollout.n_samples_per_prompt": 4, "seed": 0}


def _parser():
    parser = argparse.ArgumentParser(prog="tool")
    add_section_args(parser, KEYS, DEFAULTS, SHORT)
    return parser


def test_precedence_defaults_yaml_flags_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "seed: 5\nrollout:\n  temperature: 0.5\n  max_new_tokens: 7\n  top_k: 3\n"
        "data:\n  label_key: answer\n"
    )
    args = _parser().parse_args(
        ["-c", str(path), "--max-new-tokens", "9", "rollout.max_new_tokens=11"]
    )
    cfg = resolve_sections(args, KEYS, DEFAULTS)
    r = cfg.rollout
    assert (r.max_new_tokens, r.temperature, r.top_k, r.n_samples_per_prompt) == (11, 0.5, 3, 4)
    assert cfg.seed == 5 and cfg.data.label_key == "answer"
    assert (
        args.max_new_tokens,
        args.temperature,
        args.n_samples_per_prompt,
        args.seed,
        args.label_key,
    ) == (11, 0.5, 4, 5, "answer")
    assert given(args, "rollout.max_new_tokens") and not given(args, "data.label_key")
    args = _parser().parse_args(["-k", "6", "--seed", "2", "--label-key", "gold"])
    cfg = resolve_sections(args, KEYS, DEFAULTS, ["rollout.do_sample=false"])
    assert (cfg.rollout.n_samples_per_prompt, cfg.seed, cfg.rollout.do_sample) == (6, 2, False)
    assert cfg.rollout.max_new_tokens == 32  # the section's own default
    assert cfg.data.label_key == "gold" and given(args, "data.label_key")


def test_flags_have_their_keys_names():
    assert flag_of("data.label_key") == "--label-key"
    assert flag_of("rollout.rollout_batch_size") == "--rollout-batch-size"
    for module in (eval_cli, label_cli):
        options = {o for a in module.build_parser()._actions for o in a.option_strings}
        for key in module.KEYS:
            assert flag_of(key) in options, (module.PROG, key)
        # a long flag that is not a key's is the tool's own; where a key has its name, the
        # tool means something else by it: --split of --prompts (eval: the toy task's held-out
        # split by default), --output-dir of the report (not a training run's), eval's
        # --reward-fn verifier (not ppo.reward_fn's training reward)
        config_leaves = {k.key.rsplit(".", 1)[-1] for k in key_docs()}
        own = (
            {o[2:].replace("-", "_") for o in options if o.startswith("--")}
            - {flag_of(k)[2:].replace("-", "_") for k in module.KEYS}
            - {o[2:].replace("-", "_") for o in DEPRECATED_FLAGS}
            - {"help", "config"}
        )
        assert own & config_leaves <= {"split", "output_dir", "reward_fn"}, (
            module.PROG,
            own & config_leaves,
        )


def test_old_spellings_still_work_and_warn(capsys):
    args = _parser().parse_args(["--num-samples", "3", "--labels-key", "answer"])
    cfg = resolve_sections(args, KEYS, DEFAULTS)
    assert (cfg.rollout.n_samples_per_prompt, cfg.data.label_key) == (3, "answer")
    err = capsys.readouterr().err
    assert (
        "tool: warning: --num-samples is deprecated, use --n-samples-per-prompt "
        "(rollout.n_samples_per_prompt)" in err
    )
    assert "--labels-key is deprecated, use --label-key (data.label_key)" in err
    assert "--num-samples" not in _parser().format_help()  # hidden from the help


def test_errors_name_the_flag_as_typed_and_the_key():
    with pytest.raises(ConfigError, match=r"^--temperature \(rollout.temperature\): must be > 0"):
        resolve_sections(_parser().parse_args(["--temperature", "0"]), KEYS, DEFAULTS)
    with pytest.raises(ConfigError, match=r"^-k \(rollout.n_samples_per_prompt\): must be > 0"):
        resolve_sections(_parser().parse_args(["-k", "0"]), KEYS, DEFAULTS)
    with pytest.raises(ConfigError, match=r"^--num-samples \(rollout.n_samples_per_prompt\)"):
        resolve_sections(_parser().parse_args(["--num-samples", "0"]), KEYS, DEFAULTS)
    with pytest.raises(
        ConfigError,
        match=r"^rollout.temprature: unknown key in rollout; did "
        r"you mean 'rollout.temperature'",
    ):
        resolve_sections(_parser().parse_args(["rollout.temprature=1"]), KEYS, DEFAULTS)


def test_help_shows_the_key_its_doc_and_the_tool_default(capsys):
    _parser().print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "-k N_SAMPLES_PER_PROMPT, --n-samples-per-prompt N_SAMPLES_PER_PROMPT "
        "rollout.n_samples_per_prompt:"
    ) in text
    assert "(default 4)" in text and "longest response, in tokens (default 32)" in text
    assert "--label-key LABEL_KEY data.label_key:" in text
