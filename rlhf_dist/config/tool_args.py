"""The sampling settings of ``rlhf-dist eval`` and ``rlhf-dist label`` as the trainers' typed
sections: ``-c CONFIG.yaml`` and ``key=value`` overrides (``rollout.*``, ``data.max_length``,
``data.max_prompt_length``, ``seed``; ``model.dtype`` for the policies they load and
``resources.rollout.*`` for a ``--backend vllm`` engine) resolved by
:func:`~rlhf_dist.config.load_config`, so
:class:`~rlhf_dist.config.RolloutConfig`'s own checks apply.  The familiar flags
(``--max-new-tokens`` …) are shorthands for those keys, declared here once with the key's doc.

Precedence, lowest first: the tool's defaults, the YAML, the shorthand flags, the overrides.
"""
from __future__ import annotations

import argparse
import typing
from typing import Dict, Sequence

from rlhf_dist.config import Config, ConfigError, load_config

# flag -> config key; a tool picks the ones it takes
SHORTHANDS: Dict[str, str] = {
    "--max-new-tokens": "rollout.max_new_tokens",
    "--temperature": "rollout.temperature",
    "--top-p": "rollout.top_p",
    "--top-k": "rollout.top_k",
    "--batch-size": "rollout.rollout_batch_size",
    "--backend": "rollout.backend",
    "--seed": "seed",
    "--max-length": "data.max_length",
    "--max-prompt-length": "data.max_prompt_length",
}


def _dest(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


def _type_of(key: str) -> type:
    node: type = Config
    for part in key.split("."):
        node = typing.get_type_hints(node)[part]
    return node


def add_section_args(parser: argparse.ArgumentParser, flags: Dict[str, str],
                     defaults: Dict[str, object]) -> None:
    """``-c/--config``, positional ``key=value`` overrides and the shorthand ``flags``
    (flag → key); the help shows each key's doc and the tool's default."""
    from rlhf_dist.config.docs import key_docs

    docs = {k.key: k for k in key_docs()}
    group = parser.add_argument_group("sampling (the typed rollout / data sections)")
    group.add_argument("-c", "--config", default=None, metavar="CONFIG.yaml",
                       help="a YAML config whose rollout / data / seed keys apply (and "
                            "model.dtype, resources.rollout.* for a vLLM engine)")
    group.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="config overrides, e.g. rollout.top_k=20 (win over the flags)")
    for flag, key in flags.items():
        default = defaults.get(key, docs[key].default)
        group.add_argument(*flag.split("|"), dest=_dest(key), type=_type_of(key), default=None,
                           metavar=key.rsplit(".", 1)[-1].upper(),
                           help=f"{key}: {docs[key].doc} (default {default})")


def resolve_sections(args: argparse.Namespace, flags: Dict[str, str],
                     defaults: Dict[str, object], extra: Sequence[str] = ()) -> Config:
    """The Config of ``args`` (its rollout, data and seed are what the tool reads), each
    shorthand's resolved value also set on ``args`` under the flag's name (``args.seed`` …);
    ``extra`` are overrides the tool sets itself (e.g. ``rollout.do_sample=false`` for
    ``--greedy``).  A bad value raises :class:`ConfigError` naming the key and its flag."""
    given = [f"{key}={getattr(args, _dest(key))}" for key in flags.values()
             if getattr(args, _dest(key)) is not None]
    try:
        cfg = load_config(args.config, [*given, *extra, *args.overrides],
                          defaults=[f"{k}={v}" for k, v in defaults.items()])
        if "data.max_length" in flags.values():  # the tool scores prompt + response
            cfg.data.check_response_room()
    except ConfigError as err:
        raise ConfigError(_name_flag(str(err), flags)) from None
    for flag, key in flags.items():  # args.<flag> = the resolved value, for the tool's code
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        setattr(args, flag.split("|")[-1].lstrip("-").replace("-", "_"), value)
    return cfg


def _name_flag(message: str, flags: Dict[str, str]) -> str:
    key, _, rest = message.partition(":")
    flag = next((f.split("|")[-1] for f, k in flags.items() if k == key), None)
    return f"{flag} ({key}):{rest}" if flag else message
