"""A small byte-level BPE tokenizer trained on the toy task's text, cached on disk.

* Trained with the ``tokenizers`` library on :func:`~rlhf_dist.toy.task.toy_corpus` (every
  prompt and every answer phrasing of both kinds, all splits), byte-level, so every toy word is
  a handful of tokens (most are one) and *any* text still encodes (256-byte alphabet, no
  ``<unk>`` in practice).  ``decode(encode(x)) == x`` exactly.  Up to 1024 entries (the merges
  saturate at ~830 with the current tables).
* Special tokens: ``<pad>`` = 0, ``<s>`` = 1 (bos), ``</s>`` = 2 (eos), ``<unk>`` = 3.
  **Nothing is added automatically** (no bos, no eos): the tokenisation code appends eos to
  responses explicitly.
* ``chat_template`` renders the :mod:`~rlhf_dist.data.formatting` format
  (``"Human: …\\nAssistant: …"``), so ``apply_chat_template`` agrees with the plain path.
* Cached with ``save_pretrained`` under ``$RLHF_DIST_CACHE`` (default ``~/.cache/rlhf_dist``)
  in ``toy_tokenizer-<hash>``, the hash covering the generator version, the corpus and these
  settings.  Writers build in a temporary directory and ``rename`` it into place; a process
  that loses the race discards its copy and loads the winner's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from rlhf_dist.data.formatting import CHAT_TEMPLATE

from .task import toy_corpus
from .vocab import TOY_VERSION

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
VOCAB_SIZE = 1024
MODEL_MAX_LENGTH = 1024


def default_cache_dir() -> Path:
    """``$RLHF_DIST_CACHE`` or ``~/.cache/rlhf_dist``."""
    return Path(os.environ.get("RLHF_DIST_CACHE") or Path.home() / ".cache" / "rlhf_dist")


def toy_tokenizer_key() -> str:
    """Hash of everything that determines the trained tokenizer."""
    spec = {
        "version": TOY_VERSION,
        "vocab_size": VOCAB_SIZE,
        "special": SPECIAL_TOKENS,
        "template": CHAT_TEMPLATE,
        "max_len": MODEL_MAX_LENGTH,
        "corpus": toy_corpus(),
    }
    return hashlib.sha256(json.dumps(spec).encode("utf-8")).hexdigest()[:16]


def train_toy_tokenizer():
    """Train the toy tokenizer from scratch (deterministic): a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token=UNK))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(toy_corpus(), trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def _load(path: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))


def _publish(tok, final: Path) -> None:
    """Save into a temp dir next to ``final`` and rename it into place (atomic on POSIX)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        tok.save_pretrained(str(tmp))
        os.rename(tmp, final)
    except OSError:
        if not (final / "tokenizer.json").is_file():  # not a lost race: a real failure
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def toy_tokenizer(cache_dir: Optional[str] = None):
    """The toy tokenizer: loaded from the cache when present, else trained and cached.

    ``cache_dir`` defaults to :func:`default_cache_dir`; the tokenizer lives in its
    ``toy_tokenizer-<hash>`` subdirectory (also the path to give ``AutoTokenizer``).
    """
    final = Path(cache_dir or default_cache_dir()) / f"toy_tokenizer-{toy_tokenizer_key()}"
    if (final / "tokenizer.json").is_file():
        return _load(final)
    _publish(train_toy_tokenizer(), final)
    return _load(final)


def toy_tokenizer_path(cache_dir: Optional[str] = None) -> Path:
    """Directory of the cached toy tokenizer (created on first use)."""
    toy_tokenizer(cache_dir)
    return Path(cache_dir or default_cache_dir()) / f"toy_tokenizer-{toy_tokenizer_key()}"
