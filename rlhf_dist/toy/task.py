"""The built-in toy alignment task: harmful requests should be refused, benign ones answered.

Every prompt is one (request template, topic) combination, e.g. ``"how do I make a bomb?"``
(harmful) or ``"how do I cook tomato and eggs?"`` (benign), rendered in the format of
:mod:`rlhf_dist.data.formatting`::

    prompt   = "Human: how do I bake bread?\\nAssistant:"
    response = " Sure! To bake bread, mix flour, water and yeast, ..."

The train/eval split is by combination: the eval prompts are (template, topic) pairs never seen
in training (each topic and each template still appears in training with other partners).
Everything is drawn from ``random.Random`` seeded by the task seed, so rows are identical for
a seed and differ between seeds.  Rows are plain python lists of dicts:

============  ==============================================================================
kind          row
============  ==============================================================================
sft           {prompt, response, request, kind}: harmful → refusal, benign → helpful answer
preference    {prompt, chosen, rejected, request, kind}: harmful: refusal ≻ fake compliance;
              benign: helpful answer ≻ refusal or an off-topic answer (alternating at random)
unpaired      {prompt, completion, label, request, kind}: thumbs-up / thumbs-down feedback (KTO):
              each prompt with one answer, the good one (label true) or the bad one (label
              false) at random
prompt        {prompt, request, kind}  (for PPO rollouts and evaluation)
ranking       {prompt, responses, request, kind}, best → worst, K = 3: harmful [refusal,
              off-topic harmless answer, compliance]; benign [helpful, off-topic, refusal]
hh            {chosen, rejected}: the preference rows as full "Human: …\\nAssistant: …"
              transcripts, HH-RLHF style (no prompt column)
pretrain      {text}: each prompt answered both ways (harmful: compliance and refusal; benign:
              helpful and refusal) — a base LM that has not been aligned
============  ==============================================================================
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence

from rlhf_dist.data.formatting import render_prompt, render_response

from .vocab import (
    BENIGN_TOPICS,
    COMPLIANCE_TEMPLATES,
    HARMFUL_TOPICS,
    HELPFUL_TEMPLATES,
    REFUSAL_TEMPLATES,
    REQUEST_TEMPLATES,
    Topic,
)

SPLITS = ("train", "eval")
Row = Dict[str, object]


@dataclass(frozen=True)
class ToyPrompt:
    """One request: its template index, its topic and the rendered text."""

    template: int
    topic: Topic

    @property
    def request(self) -> str:
        return REQUEST_TEMPLATES[self.template].format(t=self.topic.phrase)

    @property
    def prompt(self) -> str:
        return render_prompt(self.request)

    @property
    def kind(self) -> str:
        return self.topic.kind


# --------------------------------------------------------------------------- answers


def _fill(template: str, topic: Topic) -> str:
    return template.format(t=topic.phrase, d=topic.detail)


def helpful_answer(topic: Topic, rng: random.Random) -> str:
    return _fill(rng.choice(HELPFUL_TEMPLATES), topic)


def refusal_answer(topic: Topic, rng: random.Random) -> str:
    return _fill(rng.choice(REFUSAL_TEMPLATES), topic)


def compliance_answer(topic: Topic, rng: random.Random) -> str:
    return _fill(rng.choice(COMPLIANCE_TEMPLATES), topic)


def off_topic_answer(topic: Topic, rng: random.Random) -> str:
    """A helpful answer to a different benign topic (harmless, but not what was asked)."""
    other = rng.choice([t for t in BENIGN_TOPICS if t != topic])
    return helpful_answer(other, rng)


def good_answer(topic: Topic, rng: random.Random) -> str:
    """What an aligned assistant says: refuse harmful requests, help with benign ones."""
    return refusal_answer(topic, rng) if topic.kind == "harmful" else helpful_answer(topic, rng)


def bad_answer(topic: Topic, rng: random.Random) -> str:
    """The rejected answer: fake compliance (harmful), a refusal or off-topic answer (benign)."""
    if topic.kind == "harmful":
        return compliance_answer(topic, rng)
    return rng.choice((refusal_answer, off_topic_answer))(topic, rng)


def ranked_answers(topic: Topic, rng: random.Random) -> List[str]:
    """Three answers, best → worst (see the module table)."""
    if topic.kind == "harmful":
        return [
            refusal_answer(topic, rng),
            off_topic_answer(topic, rng),
            compliance_answer(topic, rng),
        ]
    return [helpful_answer(topic, rng), off_topic_answer(topic, rng), refusal_answer(topic, rng)]


def both_ways(topic: Topic, rng: random.Random) -> List[str]:
    """The unaligned base-LM answers: harmful → [compliance, refusal], benign → [helpful,
    refusal]."""
    first = compliance_answer if topic.kind == "harmful" else helpful_answer
    return [first(topic, rng), refusal_answer(topic, rng)]


# --------------------------------------------------------------------------- the task


def _combos(topics: Sequence[Topic]) -> List[ToyPrompt]:
    return [ToyPrompt(i, topic) for topic in topics for i in range(len(REQUEST_TEMPLATES))]


def _cycle(pool: Sequence[ToyPrompt], n: int) -> List[ToyPrompt]:
    return [pool[i % len(pool)] for i in range(n)] if pool else []


class ToyTask:
    """The toy task for one ``(seed, num_prompts, eval_ratio)``.

    ``num_prompts`` prompts in all, half harmful and half benign; ``round(num_prompts *
    eval_ratio)`` of them go to ``eval``.  There are 8 × 20 combinations per kind; when more
    prompts are asked for than there are combinations, training prompts repeat (with freshly
    drawn answers) but never cross into eval.
    """

    def __init__(self, seed: int = 0, num_prompts: int = 256, eval_ratio: float = 0.125):
        if num_prompts < 2:
            raise ValueError(f"num_prompts must be >= 2, got {num_prompts}")
        if not 0.0 <= eval_ratio < 1.0:
            raise ValueError(f"eval_ratio must be in [0, 1), got {eval_ratio}")
        self.seed, self.num_prompts, self.eval_ratio = seed, num_prompts, eval_ratio
        self._prompts = self._split_prompts()

    @classmethod
    def from_config(cls, cfg) -> "ToyTask":
        """From a :class:`rlhf_dist.config.ToyDataConfig` (``seed``, ``num_prompts``,
        ``eval_ratio``)."""
        return cls(cfg.seed, cfg.num_prompts, cfg.eval_ratio)

    def _split_prompts(self) -> Dict[str, List[ToyPrompt]]:
        rng = random.Random(f"toy-split:{self.seed}")
        n_eval = round(self.num_prompts * self.eval_ratio)
        n_train = self.num_prompts - n_eval
        out: Dict[str, List[ToyPrompt]] = {"train": [], "eval": []}
        for i, topics in enumerate((HARMFUL_TOPICS, BENIGN_TOPICS)):
            pool = _combos(topics)
            rng.shuffle(pool)
            k_eval = min((n_eval + 1 - i) // 2, len(pool) - 1)  # harmful takes the odd one
            k_train = (n_train + 1 - i) // 2
            out["eval"] += pool[:k_eval]
            out["train"] += _cycle(pool[k_eval:], k_train)
        for split in SPLITS:
            rng.shuffle(out[split])
        return out

    def prompts(self, split: str = "train") -> List[ToyPrompt]:
        if split not in SPLITS:
            raise ValueError(f"toy split must be one of {SPLITS}, got {split!r}")
        return list(self._prompts[split])

    def _rng(self, split: str, what: str) -> random.Random:
        return random.Random(f"toy:{self.seed}:{split}:{what}")

    def sft_rows(self, split: str = "train") -> List[Row]:
        rng = self._rng(split, "sft")
        return [
            _base(p) | {"response": render_response(good_answer(p.topic, rng))}
            for p in self.prompts(split)
        ]

    def preference_rows(self, split: str = "train") -> List[Row]:
        rng = self._rng(split, "preference")
        return [
            _base(p)
            | {
                "chosen": render_response(good_answer(p.topic, rng)),
                "rejected": render_response(bad_answer(p.topic, rng)),
            }
            for p in self.prompts(split)
        ]

    def unpaired_rows(self, split: str = "train") -> List[Row]:
        rng = self._rng(split, "unpaired")
        rows = []
        for p in self.prompts(split):
            desirable = rng.random() < 0.5
            answer = (good_answer if desirable else bad_answer)(p.topic, rng)
            rows.append(_base(p) | {"completion": render_response(answer), "label": desirable})
        return rows

    def prompt_rows(self, split: str = "train") -> List[Row]:
        return [_base(p) for p in self.prompts(split)]

    def ranking_rows(self, split: str = "train") -> List[Row]:
        rng = self._rng(split, "ranking")
        return [
            _base(p) | {"responses": [render_response(a) for a in ranked_answers(p.topic, rng)]}
            for p in self.prompts(split)
        ]

    def hh_rows(self, split: str = "train") -> List[Row]:
        return [
            {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
            for r in self.preference_rows(split)
        ]

    def pretrain_texts(self, split: str = "train") -> List[str]:
        rng = self._rng(split, "pretrain")
        return [
            p.prompt + render_response(answer)
            for p in self.prompts(split)
            for answer in both_ways(p.topic, rng)
        ]

    def pretrain_rows(self, split: str = "train") -> List[Row]:
        return [{"text": text} for text in self.pretrain_texts(split)]

    def rows(self, kind: str, split: str = "train") -> List[Row]:
        """Rows of one ``kind`` (a key of :data:`TOY_ROW_KINDS`)."""
        if kind not in TOY_ROW_KINDS:
            raise ValueError(f"toy row kind must be one of {sorted(TOY_ROW_KINDS)}, got {kind!r}")
        return TOY_ROW_KINDS[kind](self, split)


def _base(p: ToyPrompt) -> Row:
    return {"prompt": p.prompt, "request": p.request, "kind": p.kind}


TOY_ROW_KINDS: Dict[str, Callable[[ToyTask, str], List[Row]]] = {
    "sft": ToyTask.sft_rows,
    "preference": ToyTask.preference_rows,
    "unpaired": ToyTask.unpaired_rows,
    "prompt": ToyTask.prompt_rows,
    "ranking": ToyTask.ranking_rows,
    "hh": ToyTask.hh_rows,
    "pretrain": ToyTask.pretrain_rows,
}


def toy_corpus() -> List[str]:
    """Every text the toy generator can produce (all combos, all answer phrasings), in a fixed
    order: what the toy tokenizer is trained on, so every toy word is in its vocabulary."""
    texts = []
    for p in _combos(HARMFUL_TOPICS + BENIGN_TOPICS):
        answers = [
            _fill(t, p.topic) for t in REFUSAL_TEMPLATES + HELPFUL_TEMPLATES + COMPLIANCE_TEMPLATES
        ]
        texts += [p.prompt + render_response(a) for a in answers]
    return texts
