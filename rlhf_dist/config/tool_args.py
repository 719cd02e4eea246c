"""The settings of ``rlhf-dist eval`` and ``rlhf-dist label`` that the trainers' typed sections
already hold (``rollout.*``, ``seed``, ``data.max_length``, ``data.max_prompt_length``, the
``data.*_key`` columns; ``model.dtype`` and ``resources.rollout.*`` for a ``--backend vllm``
engine): ``-c CONFIG.yaml`` and ``key=value`` overrides resolved by
:func:`~rlhf_dist.config.load_config`, so the sections' own checks apply.

A tool names the keys it takes; each key's flag is generated from it -- its last part with
dashes (``data.label_key`` → ``--label-key``), its type, and its doc as the help -- so a flag
and its key cannot drift apart.  A tool may add a short form (``-k``); the flags that had
drifted from their keys' names (:data:`DEPRECATED_FLAGS`) still work, with a warning.

Precedence, lowest first: the tool's defaults, the YAML, the flags, the overrides.
"""

from __future__ import annotations

import argparse
import sys
import typing
from typing import Dict, Optional, Sequence

from rlhf_dist.config import Config, ConfigError, load_config

# old spelling -> key: flags named before they were generated from the keys
DEPRECATED_FLAGS: Dict[str, str] = {
    "--num-samples": "rollout.n_samples_per_prompt",  # eval
    "--k": "rollout.n_samples_per_prompt",  # label (its -k stays)
    "--batch-size": "rollout.rollout_batch_size",
    "--labels-key": "data.label_key",  # eval
}
_TYPED = "_typed_flags"  # the namespace attribute: key -> the flag spelling the user typed


def flag_of(key: str) -> str:
    """A config key's flag: its last part with dashes (``data.label_key`` → ``--label-key``)."""
    return "--" + key.rsplit(".", 1)[-1].replace("_", "-")


def attr_of(key: str) -> str:
    """Where a tool finds the key's resolved value on its ``args`` (``args.label_key``)."""
    return key.rsplit(".", 1)[-1]


def _dest(key: str) -> str:
    return "cfg__" + key.replace(".", "__")


def _type_of(key: str) -> type:
    node: type = Config
    for part in key.split("."):
        node = typing.get_type_hints(node)[part]
    if typing.get_origin(node) is typing.Union:  # Optional[X] -> X
        node = next(arg for arg in typing.get_args(node) if arg is not type(None))
    return node


class _Store(argparse.Action):
    """Stores the value and remembers the spelling typed (errors name it); an old spelling
    also prints a deprecation warning naming the new flag and its key."""

    def __init__(self, *args, key: str, deprecated: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.key, self.deprecated = key, deprecated

    def __call__(self, parser, namespace, values, option_string=None):
        if self.deprecated:
            print(
                f"{parser.prog}: warning: {option_string} is deprecated, use "
                f"{flag_of(self.key)} ({self.key})",
                file=sys.stderr,
            )
        setattr(namespace, self.dest, values)
        typed = dict(getattr(namespace, _TYPED, None) or {})
        typed[self.key] = option_string
        setattr(namespace, _TYPED, typed)


def add_section_args(
    parser: argparse.ArgumentParser,
    keys: Sequence[str],
    defaults: Dict[str, object],
    short: Optional[Dict[str, str]] = None,
    title: str = "settings of the typed config sections",
) -> None:
    """``-c/--config``, positional ``key=value`` overrides and a generated flag for each of
    ``keys`` (plus its ``short`` form, if any, and its deprecated spellings); the help shows
    the key, its doc and the tool's default."""
    from rlhf_dist.config.docs import key_docs

    attrs = [attr_of(k) for k in keys]
    assert len(set(attrs)) == len(attrs), f"two keys would share a flag: {keys}"
    docs = {k.key: k for k in key_docs()}
    group = parser.add_argument_group(title)
    group.add_argument(
        "-c",
        "--config",
        default=None,
        metavar="CONFIG.yaml",
        help="a YAML config whose keys below apply (and model.dtype, "
        "resources.rollout.* for a vLLM engine)",
    )
    group.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. rollout.top_k=20 (win over the flags)",
    )
    short = short or {}
    for key in keys:
        default = defaults.get(key, docs[key].default)
        names = [short[key]] if key in short else []
        group.add_argument(
            *names,
            flag_of(key),
            dest=_dest(key),
            type=_type_of(key),
            default=None,
            action=_Store,
            key=key,
            metavar=attr_of(key).upper(),
            help=f"{key}: {docs[key].doc} (default {default})",
        )
        for old in (f for f, k in DEPRECATED_FLAGS.items() if k == key):
            group.add_argument(
                old,
                dest=_dest(key),
                type=_type_of(key),
                default=None,
                action=_Store,
                key=key,
                deprecated=True,
                help=argparse.SUPPRESS,
            )


def given(args: argparse.Namespace, key: str) -> bool:
    """Whether the command line set ``key`` by its flag (not the YAML or a default)."""
    return getattr(args, _dest(key), None) is not None


def typed_flag(args: argparse.Namespace, key: str) -> str:
    """The flag of ``key`` as the user typed it (``-k``, an old spelling), else its flag."""
    return (getattr(args, _TYPED, None) or {}).get(key) or flag_of(key)


def resolve_sections(
    args: argparse.Namespace,
    keys: Sequence[str],
    defaults: Dict[str, object],
    extra: Sequence[str] = (),
) -> Config:
    """The Config of ``args``, each key's resolved value also set on ``args`` under
    :func:`attr_of` (``args.seed`` …); ``extra`` are overrides the tool sets itself (e.g.
    ``rollout.do_sample=false`` for ``--greedy``).  A bad value raises :class:`ConfigError`
    naming the flag as typed and the key."""
    flags = [f"{key}={getattr(args, _dest(key))}" for key in keys if given(args, key)]
    try:
        cfg = load_config(
            args.config,
            [*flags, *extra, *args.overrides],
            defaults=[f"{k}={v}" for k, v in defaults.items()],
        )
        if "data.max_length" in keys:  # the tool scores prompt + response
            cfg.data.check_response_room()
    except ConfigError as err:
        raise ConfigError(_name_flag(str(err), keys, args)) from None
    for key in keys:  # args.<attr> = the resolved value, for the tool's code
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        setattr(args, attr_of(key), value)
    return cfg


def _name_flag(message: str, keys: Sequence[str], args: argparse.Namespace) -> str:
    key, _, rest = message.partition(":")
    return f"{typed_flag(args, key)} ({key}):{rest}" if key in keys else message
