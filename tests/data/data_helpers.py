"""Helpers shared by the data tests (imported by name; conftest holds the fixtures)."""

import csv
import json

from rlhf_dist.config import DataConfig

# Word-level vocabulary with ids you can compute by hand: <pad>=0 <s>=1 </s>=2 <unk>=3,
# "Q"=4, "A:"=5, p1..p9 = 6..14, r1..r9 = 15..23.
WORDS = (
    ["<pad>", "<s>", "</s>", "<unk>", "Q", "A:"]
    + [f"p{i}" for i in range(1, 10)]
    + [f"r{i}" for i in range(1, 10)]
)
WORD_IDS = {w: i for i, w in enumerate(WORDS)}


def ids(text):
    """Hand-computed ids of a space-separated text in the word tokenizer."""
    return [WORD_IDS[w] for w in text.split()]


def make_word_tokenizer(add_bos=False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(WORD_IDS, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_bos:
        raw.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 1)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )


def write_rows(path, rows):
    """Write ``rows`` (list of dicts) to ``path``; the suffix picks the format."""
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif suffix == ".parquet":
        import datasets

        datasets.Dataset.from_list(rows).to_parquet(str(path))
    else:
        raise ValueError(suffix)
    return path


def cfg(**kw):
    """A DataConfig with small lengths unless overridden."""
    kw.setdefault("max_length", 64)
    kw.setdefault("max_prompt_length", 32)
    return DataConfig(**kw)
