"""Every config key with its type, default and one-line doc, read from the comment beside (or
the comment lines right above) its field in the section's source: one place to document a key,
shown by ``rlhf-dist <job> --help-config``, written to ``docs/config.md`` by
``python -m rlhf_dist.config.docs > docs/config.md`` and checked by the tests (no field
without a doc, the committed reference up to date).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence


class KeyDoc(NamedTuple):
    key: str  # dotted, e.g. "train.lr"
    type: str
    default: Any
    doc: str


def _comments(source: str) -> Dict[int, str]:
    """Line number (1-based) → the text of the comment on that line."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


def field_docs(cls: type) -> Dict[str, str]:
    """``{field: doc}`` of a dataclass: the comment lines right above the field, then the
    comment at the end of its line (each optional; "" when the field has neither)."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines, comments = source.splitlines(), _comments(source)
    docs = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, line = [], node.lineno - 1
        while line >= 1 and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        trailing = [
            comments[n]
            for n in range(node.lineno, node.end_lineno + 1)
            if n in comments and not lines[n - 1].lstrip().startswith("#")
        ]
        docs[node.target.id] = " ".join(above + trailing)
    return docs


def _type_name(annotation: Any) -> str:
    text = (
        annotation
        if isinstance(annotation, str)
        else getattr(annotation, "__name__", str(annotation))
    )
    return text.replace("typing.", "")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def iter_keys(cls: type, prefix: str = "") -> Iterator[KeyDoc]:
    """Every leaf key under ``cls`` (a config dataclass), sub-sections expanded."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from iter_keys(hint, key + ".")
            continue
        yield KeyDoc(key, _type_name(f.type), _default(f), docs.get(f.name, ""))


def key_docs(sections: Optional[Sequence[str]] = None) -> List[KeyDoc]:
    """Every key of :class:`rlhf_dist.config.Config`, or of the named top-level
    ``sections`` (a section name or a top-level key such as ``seed``)."""
    from rlhf_dist.config import Config

    keys = list(iter_keys(Config))
    if sections is None:
        return keys
    wanted = set(sections)
    return [k for k in keys if k.key.split(".")[0] in wanted]


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if value == "" else value
    return str(value)


def help_text(
    sections: Optional[Sequence[str]] = None,
    notes: Optional[Dict[str, str]] = None,
    width: int = 100,
) -> str:
    """One block per key: ``key: type = default`` then its doc (and its ``notes`` entry, e.g.
    why a job does not read it), indented and wrapped."""
    out = []
    for k in key_docs(sections):
        out.append(f"{k.key}: {k.type} = {_show(k.default)}")
        doc = (k.doc + (f" [{notes[k.key]}]" if notes and k.key in notes else "")).strip()
        out += textwrap.wrap(doc, width=width, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(out) + "\n"


REFERENCE_HEADER = """\
# Configuration reference

<!-- Generated from the comment at each field of rlhf_dist/config/ by
     `python -m rlhf_dist.config.docs > docs/config.md`; do not edit by hand
     (tests/test_config_docs.py fails when this file is out of date). -->

Every key of the typed config, with its type, default and the one-line doc written at its
field. How the config works (YAML + `key=value` overrides, the sections, warnings and
errors): [configuration.md](configuration.md). `rlhf-dist <job> --help-config` prints the
keys one job reads.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """The configuration reference (``docs/config.md``): one table per top-level section,
    in the order of :class:`rlhf_dist.config.Config`, top-level keys first."""
    sections: Dict[str, List[KeyDoc]] = {}
    for k in key_docs():
        head = k.key.split(".")[0] if "." in k.key else ""
        sections.setdefault(head, []).append(k)
    out = [REFERENCE_HEADER]
    for head, keys in sections.items():
        out.append(f"## `{head}`\n" if head else "## Top-level keys\n")
        out.append("| key | type | default | doc |\n|---|---|---|---|")
        out += [
            f"| `{k.key}` | `{_cell(k.type)}` | `{_cell(_show(k.default))}` | {_cell(k.doc)} |"
            for k in keys
        ]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
