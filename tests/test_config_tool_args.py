"""eval's and label's sampling settings are the typed sections: tool defaults < YAML < the
shorthand flags < key=value overrides, RolloutConfig's checks named by flag and key."""
import argparse

import pytest

from rlhf_dist.config import ConfigError
from rlhf_dist.config.tool_args import SHORTHANDS, add_section_args, resolve_sections

FLAGS = {"-k|--k": "rollout.n_samples_per_prompt",
         **{f: SHORTHANDS[f] for f in ("--max-new-tokens", "--temperature", "--seed")}}
DEFAULTS = {"rollout.n_samples_per_prompt": 4, "seed": 0}


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_section_args(parser, FLAGS, DEFAULTS)
    return parser.parse_args(argv)


def test_precedence_defaults_yaml_flags_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 5\nrollout:\n  temperature: 0.5\n  max_new_tokens: 7\n  top_k: 3\n")
    args = _parse(["-c", str(path), "--max-new-tokens", "9", "rollout.max_new_tokens=11"])
    cfg = resolve_sections(args, FLAGS, DEFAULTS)
    r = cfg.rollout
    assert (r.max_new_tokens, r.temperature, r.top_k, r.n_samples_per_prompt) == (11, 0.5, 3, 4)
    assert cfg.seed == 5
    assert (args.max_new_tokens, args.temperature, args.k, args.seed) == (11, 0.5, 4, 5)
    args = _parse(["-k", "6", "--seed", "2"])
    cfg = resolve_sections(args, FLAGS, DEFAULTS, ["rollout.do_sample=false"])
    assert (cfg.rollout.n_samples_per_prompt, cfg.seed, cfg.rollout.do_sample) == (6, 2, False)
    assert cfg.rollout.max_new_tokens == 32  # the section's own default


def test_errors_name_the_flag_and_the_key():
    with pytest.raises(ConfigError, match=r"^--temperature \(rollout.temperature\): must be > 0"):
        resolve_sections(_parse(["--temperature", "0"]), FLAGS, DEFAULTS)
    with pytest.raises(ConfigError, match=r"^rollout.temprature: unknown key in rollout; did "
                                          r"you mean 'rollout.temperature'"):
        resolve_sections(_parse(["rollout.temprature=1"]), FLAGS, DEFAULTS)


def test_help_shows_the_key_its_doc_and_the_tool_default(capsys):
    parser = argparse.ArgumentParser()
    add_section_args(parser, FLAGS, DEFAULTS)
    parser.print_help()
    text = " ".join(capsys.readouterr().out.split())
    assert "-k N_SAMPLES_PER_PROMPT, --k N_SAMPLES_PER_PROMPT rollout.n_samples_per_prompt:" in text
    assert "(default 4)" in text and "longest response, in tokens (default 32)" in text
