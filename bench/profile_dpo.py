"""Where a DPO step's time goes, and what the usual levers would buy; one process, one rank.

    .venv/bin/python bench/profile_dpo.py --threads 1              # sections + variants
    .venv/bin/python bench/profile_dpo.py --torch-profile          # + top torch ops

The prototype behind the DPO speed levers now in the package (``dpo.layout=shared_prompt``,
``train.group_by_length``, ``dpo.precompute_ref``; see bench/RESULTS.md); it changes nothing in
the package and keeps the padded layout as its baseline.
It builds rlhf_dist's real ``DPOTrainer`` (ZeRO-0, 1 rank, ``bench/train_config.yaml``), takes
the pairs of its first ``--steps`` optimiser steps, and measures in interleaved rounds (the
machine's background load hits every variant alike; medians are reported, and tokens per
*CPU* second next to tokens per wall second, the steadier of the two on a shared machine):

* ``sections``: the trainer's step cut into named sections (the calls of
  ``LauncherTrainer.train_step`` and ``DPOTrainer.micro_batch_loss``, timers in between);
* variants: full DPO optimiser steps on the same pairs.  ``trainer`` is
  ``trainer.train_step`` itself.  The others run the same maths (``dpo_objective``'s loss)
  on plain ``nn.Module`` policy + reference, named by ``+``-joined levers:

  - ``plain``: for-loop ``torch.optim.AdamW`` (as the engine's) + ``clip_grad_norm_`` — the
    difference to ``trainer`` is what the DeepSpeed engine adds on one CPU rank;
  - ``fused``: ``AdamW(fused=True)`` (TRL's default optimiser, ``adamw_torch_fused``);
  - ``preref``: reference log-probs computed once before the steps (not timed in them; the
    pass's time is reported as ``precompute_ref_s``);
  - ``sdpa``: ``attn_implementation="sdpa"`` (rlhf_dist's default is ``eager``);
  - ``sorted``: batches drawn from length-sorted buckets (less padding);
  - ``packed``: padding-free — all 2B sequences of a batch in one row, positions restarting
    per sequence, no attention mask, so transformers builds a block-diagonal causal mask;
  - ``shared``: one row per pair, ``prompt + chosen + rejected``, with a 4D mask that hides
    the chosen tokens from the rejected ones and rejected positions continuing from the
    prompt: the shared prompt is computed once per pair instead of twice.

  ``trl_like`` = ``plain+fused`` (TRL's defaults: reference per batch, fused AdamW).  Each
  non-padded layout is checked against the padded log-probs (``max_abs_diff_vs_padded``).
tokens/s counts the pairs' real tokens (chosen + rejected, as ``perf/tokens_per_s``) in every
layout, so layouts that process fewer positions show up as faster; ``positions_per_token`` is
what the model processes per such token (padding included; below 1 for ``shared``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_VARIANTS = [
    "trainer",
    "plain",
    "trl_like",
    "plain+fused+preref",
    "plain+fused+sorted",
    "plain+fused+packed",
    "plain+fused+shared",
    "plain+fused+sdpa",
    "plain+fused+shared+sorted",
    "plain+fused+preref+sorted",
    "plain+fused+preref+shared",
    "plain+fused+preref+shared+sorted",
    "plain+fused+preref+sdpa+sorted",
]
LAYOUTS = ("sorted", "packed", "shared")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/profile_dpo.py")
    p.add_argument("--steps", type=int, default=8, help="steps per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--torch-profile", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value overrides of bench/train_config.yaml")
    return p.parse_args(argv)


class Clock:
    """Accumulates wall and process-CPU seconds per named section."""

    def __init__(self):
        self.wall, self.cpu = {}, {}
        self.start()

    def start(self) -> None:
        self.last, self.last_cpu = time.perf_counter(), time.process_time()

    def lap(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.wall[name] = self.wall.get(name, 0.0) + now - self.last
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu - self.last_cpu
        self.last, self.last_cpu = now, cpu


# --------------------------------------------------------------------------- data layouts


def step_indices(trainer, steps, sort=False):
    """Example indices of each step's micro-batches: the trainer's order, or length-sorted
    buckets spread over the epoch (``sort``)."""
    from rlhf_dist.trainers import batches as B

    ds, micro = trainer.train_set, trainer.cfg.train.micro_batch_size
    if not sort:
        order = B.epoch_order(len(ds), trainer.cfg.seed, 0)
        groups = B.rank_micro_batches(order, 0, 1, micro)
        return [groups[k * trainer.accum : (k + 1) * trainer.accum] for k in range(steps)]
    size = lambda i: len(ds[i]["chosen_input_ids"]) + len(ds[i]["rejected_input_ids"])  # noqa
    order = sorted(range(len(ds)), key=size)
    groups = [order[i : i + micro] for i in range(0, len(order) - micro + 1, micro)]
    stride = max(1, len(groups) // (steps * trainer.accum))
    flat = [groups[(k * stride) % len(groups)] for k in range(steps * trainer.accum)]
    return [flat[k * trainer.accum : (k + 1) * trainer.accum] for k in range(steps)]


def pack(batch):
    """A padded preference batch (2B, T) → one row (1, L) of its real tokens (+ seq ids)."""
    import torch

    mask = batch["attention_mask"].bool()
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    seq_ids = torch.arange(mask.shape[0]).unsqueeze(-1).expand_as(mask)
    targets = batch["labels"][mask][1:]
    scored = targets != -100  # a sequence's first label is a prompt label: nothing crosses
    return {
        "model": {
            "input_ids": batch["input_ids"][mask].unsqueeze(0),
            "position_ids": positions[mask].unsqueeze(0),
            "attention_mask": None,
        },
        "src": torch.nonzero(scored).squeeze(-1),
        "labels": targets[scored],
        "seq": seq_ids[mask][1:][scored],
        "num_seqs": int(mask.shape[0]),
        "tokens": int(mask.sum()),
        "positions": int(mask.sum()),
    }


def shared_prompt(examples, pad_id, dtype):
    """B pairs → B rows ``prompt + chosen + rejected`` with a 4D additive mask.

    Rejected tokens see the prompt and the rejected tokens before them, never the chosen
    ones; their positions continue from the prompt.  The first rejected token is scored from
    the prompt's last position.  Returns model inputs and (row, source position, label, seq)
    of every scored token; seqs are ``[chosen_1..chosen_B, rejected_1..rejected_B]``.
    """
    import torch

    B = len(examples)
    rows = [e["chosen_input_ids"] + e["rejected_input_ids"][e["prompt_len"] :] for e in examples]
    L = max(map(len, rows))
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    pos = torch.zeros(B, L, dtype=torch.long)
    allowed = torch.eye(L, dtype=torch.bool).repeat(B, 1, 1)  # padding rows see themselves
    tril = torch.ones(L, L, dtype=torch.bool).tril()
    row_i, src, labels, seq = [], [], [], []
    for b, e in enumerate(examples):
        n, full = e["prompt_len"], rows[b]
        c = len(e["chosen_input_ids"]) - n
        r = len(full) - n - c
        ids[b, : len(full)] = torch.tensor(full)
        pos[b, : len(full)] = torch.tensor(list(range(n + c)) + list(range(n, n + r)))
        block = tril[: len(full), : len(full)].clone()
        block[n + c :, n : n + c] = False
        allowed[b, : len(full), : len(full)] = block
        for t in range(n, n + c):
            row_i.append(b), src.append(t - 1), labels.append(full[t]), seq.append(b)
        for j, t in enumerate(range(n + c, n + c + r)):
            row_i.append(b), src.append(n - 1 if j == 0 else t - 1), labels.append(full[t])
            seq.append(B + b)
    mask = torch.zeros(B, 1, L, L, dtype=dtype).masked_fill(
        ~allowed.unsqueeze(1), torch.finfo(dtype).min
    )
    return {
        "model": {"input_ids": ids, "position_ids": pos, "attention_mask": mask},
        "row": torch.tensor(row_i),
        "src": torch.tensor(src),
        "labels": torch.tensor(labels),
        "seq": torch.tensor(seq),
        "num_seqs": 2 * B,
        "tokens": sum(len(e["chosen_input_ids"]) + len(e["rejected_input_ids"]) for e in examples),
        "positions": B * L,
    }


def scored_logps(model, inputs, dpo):
    """(2B,) sequence log-probs of a packed or shared-prompt batch."""
    import torch

    from rlhf_dist.algo import logprobs_from_logits

    logits = model(**inputs["model"], use_cache=False).logits
    rows = inputs.get("row", torch.zeros_like(inputs["src"]))
    picked = logits[rows, inputs["src"]].unsqueeze(0)
    logps = logprobs_from_logits(picked, inputs["labels"].unsqueeze(0))[0]
    total = torch.zeros(inputs["num_seqs"], dtype=logps.dtype).index_add(0, inputs["seq"], logps)
    if dpo.loss_type == "ipo":
        count = torch.zeros(inputs["num_seqs"]).index_add(0, inputs["seq"], torch.ones_like(logps))
        total = total / count.clamp(min=1)
    return total


# --------------------------------------------------------------------------- steps


def section_step(trainer, micro_batches, clock):
    """``train_step`` with timers (same calls, same order)."""
    from rlhf_dist.objectives import dpo_objective

    trainer.engine.train()
    clock.lap("other")
    for batch in micro_batches:
        ref = trainer.reference_logps(batch)
        clock.lap("reference_forward_logps")
        policy = trainer.layout.logps(trainer.engine, batch)
        clock.lap("policy_forward")  # + token log-probs (0.5 % of a step at vocabulary 832)
        loss, _ = dpo_objective(policy, *trainer.layout.split_rows(ref), trainer.cfg.dpo)
        clock.lap("policy_logps_loss_metrics")
        trainer.engine.backward(loss)
        clock.lap("engine_backward")
        trainer.engine.step()
        clock.lap("engine_step_optimizer")


class Plain:
    """Policy + reference as plain modules, one layout, the DPO loss of rlhf_dist."""

    def __init__(self, trainer, levers):
        import torch

        from rlhf_dist.models import load_causal_lm

        section = copy.deepcopy(trainer.cfg.model)
        if "sdpa" in levers:
            section.attn_implementation = "sdpa"
        torch.manual_seed(trainer.cfg.seed)
        self.policy = load_causal_lm(section, trainer.tokenizer)
        self.reference = copy.deepcopy(self.policy).requires_grad_(False).eval()
        t = trainer.cfg.train
        fused = "fused" in levers
        self.opt = torch.optim.AdamW(
            self.policy.parameters(),
            lr=t.lr,
            betas=tuple(t.adam_betas),
            weight_decay=t.weight_decay,
            fused=fused,
            foreach=None if fused else False,
        )
        self.layout = next((x for x in ("packed", "shared") if x in levers), "padded")
        self.cfg, self.max_norm, self.trainer = trainer.cfg, t.max_grad_norm, trainer

    def inputs(self, examples):
        """Model-ready micro-batch of this variant's layout."""
        batch = self.trainer.collate(examples)
        if self.layout == "packed":
            return pack(batch)
        if self.layout == "shared":
            return shared_prompt(
                examples, self.trainer.tokenizer.pad_token_id, next(self.policy.parameters()).dtype
            )
        batch["tokens"] = int(batch["attention_mask"].sum())
        batch["positions"] = batch["attention_mask"].numel()
        return batch

    def logps(self, model, inputs, layout=None):
        from rlhf_dist.algo import sequence_logps
        from rlhf_dist.models import causal_lm_logits

        if (layout or self.layout) != "padded":
            return scored_logps(model, inputs, self.cfg.dpo)
        logits = causal_lm_logits(model, inputs["input_ids"], inputs["attention_mask"])
        return sequence_logps(logits, inputs["labels"], average=self.cfg.dpo.loss_type == "ipo")

    def ref_logps(self, inputs, layout=None):
        import torch

        with torch.no_grad():
            return self.logps(self.reference, inputs, layout)

    def step(self, micro_inputs, ref=None):
        import torch

        from rlhf_dist.algo import dpo_loss
        from rlhf_dist.objectives import PAIR_LAYOUTS

        split_pairs = PAIR_LAYOUTS["padded"].split_rows

        self.policy.train()
        for i, inputs in enumerate(micro_inputs):
            ref_logps = ref[i] if ref is not None else self.ref_logps(inputs)
            chosen, rejected = split_pairs(self.logps(self.policy, inputs))
            ref_c, ref_r = split_pairs(ref_logps)
            losses, _, _ = dpo_loss(
                chosen,
                rejected,
                ref_c,
                ref_r,
                self.cfg.dpo.beta,
                loss_type=self.cfg.dpo.loss_type,
                label_smoothing=self.cfg.dpo.label_smoothing,
            )
            (losses.mean() / len(micro_inputs)).backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_norm)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------- main


def build_trainer(overrides):
    from rlhf_dist.config import load_config
    from rlhf_dist.trainers.dpo import DPOTrainer

    out = tempfile.mkdtemp(prefix="profile_dpo_")
    cfg = load_config(
        str(HERE / "train_config.yaml"),
        [
            f"output_dir={out}",
            "deepspeed.zero_stage=0",
            "dpo.layout=padded",  # the baseline the prototypes below started from
            *overrides,
        ],
    )
    trainer = DPOTrainer(cfg)
    trainer.setup()
    return trainer


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = build_trainer(args.overrides)
    ds = trainer.train_set
    idx = {False: step_indices(trainer, args.steps), True: step_indices(trainer, args.steps, True)}
    collated = [[trainer.collate([ds[i] for i in mb]) for mb in step] for step in idx[False]]
    trainer.step = 0
    first = next(iter(trainer.next_micro_batches()))
    assert torch.equal(first["input_ids"], collated[0][0]["input_ids"]), "order differs"

    variants = [v for v in args.variants.split(",") if v]
    plains, data, prerefs, extra = {}, {}, {}, {}
    for v in variants:
        levers = set(v.replace("trl_like", "plain+fused").split("+"))
        if "plain" not in levers:
            continue
        plain = plains[v] = Plain(trainer, levers)
        data[v] = [
            [plain.inputs([ds[i] for i in mb]) for mb in step] for step in idx["sorted" in levers]
        ]
        extra[v] = {}
        if plain.layout != "padded":
            padded = plain.ref_logps(trainer.collate([ds[i] for i in idx[False][0][0]]), "padded")
            extra[v]["max_abs_diff_vs_padded"] = float(
                (plain.ref_logps(plain.inputs([ds[i] for i in idx[False][0][0]])) - padded)
                .abs()
                .max()
            )
        if "preref" in levers:
            t0 = time.perf_counter()
            prerefs[v] = [[plain.ref_logps(x) for x in step] for step in data[v]]
            extra[v]["precompute_ref_s"] = time.perf_counter() - t0
        extra[v]["positions_per_token"] = sum(x["positions"] for st in data[v] for x in st) / sum(
            x["tokens"] for st in data[v] for x in st
        )

    wall = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    clock = Clock()
    for _ in range(args.rounds):
        for v in ["sections"] + variants:
            for k in range(args.steps):
                t0, c0 = time.perf_counter(), time.process_time()
                if v == "sections":
                    clock.start()
                    section_step(trainer, collated[k], clock)
                    continue
                if v == "trainer":
                    trainer.train_step(collated[k])
                    tokens = sum(int(b["attention_mask"].sum()) for b in collated[k])
                else:
                    plains[v].step(data[v][k], prerefs[v][k] if v in prerefs else None)
                    tokens = sum(x["tokens"] for x in data[v][k])
                wall[v].append(tokens / (time.perf_counter() - t0))
                cpu[v].append(tokens / (time.process_time() - c0))

    n = args.rounds * args.steps
    print(
        json.dumps(
            {
                "bench": "profile_dpo",
                "kind": "sections",
                "threads": torch.get_num_threads(),
                "cpu_s_per_step": sum(clock.cpu.values()) / n,
                "wall_s_per_step": sum(clock.wall.values()) / n,
                "cpu_share": {
                    k: round(s / sum(clock.cpu.values()), 4) for k, s in clock.cpu.items()
                },
                "cpu_s_per_step_by_section": {k: round(s / n, 5) for k, s in clock.cpu.items()},
            }
        ),
        flush=True,
    )
    base_w, base_c = statistics.median(wall[variants[0]]), statistics.median(cpu[variants[0]])
    for v in variants:
        rec = {
            "bench": "profile_dpo",
            "kind": "variant",
            "variant": v,
            "tokens_per_cpu_s_median": statistics.median(cpu[v]),
            "cpu_vs_first": statistics.median(cpu[v]) / base_c,
            "tokens_per_s_median": statistics.median(wall[v]),
            "wall_vs_first": statistics.median(wall[v]) / base_w,
            **extra.get(v, {}),
        }
        print(json.dumps(rec), flush=True)
    if args.torch_profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for mbs in collated[:4]:
                trainer.train_step(mbs)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    return 0


if __name__ == "__main__":
    sys.exit(main())
