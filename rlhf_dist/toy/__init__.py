"""The built-in toy alignment task: harmful requests should be refused, benign ones answered.

* :mod:`.task` -- :class:`ToyTask`: seeded rows of every kind (sft, preference, prompt,
  ranking, hh, pretrain), the data sources' built-in dataset (``data.*_path: null``);
* :mod:`.tokenizer` -- a byte-level BPE tokenizer trained on the task's text, cached on disk;
* :mod:`.judges` -- :func:`judge`: refusal / topic / kind of a (prompt, response), used by
  evaluation and the RLAIF rule judge;
* :mod:`.vocab` -- the word tables.

The task is written in the project's conversation format (:mod:`rlhf_dist.data.formatting`).
Importing it is cheap (``tokenizers``/``transformers`` load when a tokenizer is trained).
"""

from .judges import Verdict, find_topic, is_on_topic, is_refusal, judge, prompt_kind
from .task import TOY_ROW_KINDS, ToyPrompt, ToyTask, toy_corpus
from .tokenizer import (
    BOS,
    EOS,
    PAD,
    UNK,
    default_cache_dir,
    toy_tokenizer,
    toy_tokenizer_path,
    train_toy_tokenizer,
)

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "TOY_ROW_KINDS",
    "ToyPrompt",
    "ToyTask",
    "UNK",
    "Verdict",
    "default_cache_dir",
    "find_topic",
    "is_on_topic",
    "is_refusal",
    "judge",
    "prompt_kind",
    "toy_corpus",
    "toy_tokenizer",
    "toy_tokenizer_path",
    "train_toy_tokenizer",
]
