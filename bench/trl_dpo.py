"""The bench's DPO workload through TRL's ``DPOTrainer``, on one process; prints one JSON line.

    python bench/trl_dpo.py --rows ROWS.jsonl --tokenizer DIR --out-dir DIR [sizes ...]

``bench_train.py --with-trl`` writes ``ROWS.jsonl`` (one pair per line: ``prompt_ids``,
``chosen_ids``, ``rejected_ids`` — rlhf_dist's tokenised pairs, in the order rlhf_dist's
trainer visits them on one rank) and runs this script with the same sizes, seed, batch size,
max length, beta, lr and steps.  What is kept equal, and how:

* model: built by ``rlhf_dist.models.load_causal_lm`` from the same ``model.tiny`` sizes after
  ``torch.manual_seed(seed)``, as the rlhf_dist trainer does — the same weights; the reference
  is a deep copy (equal to the policy at the start, as in rlhf_dist);
* data: TRL's own text tokenisation is bypassed (``_prepare_dataset`` returns the rows as given),
  batches are taken in file order (``train_sampling_strategy="sequential"``) and TRL's
  ``DataCollatorForPreference`` pads them like rlhf_dist's collator (chosen rows, then rejected);
* numerics: float32, no gradient checkpointing (TRL's default is on), no bf16 (TRL's default
  on CPU is on), AdamW with the same betas, clipping 1.0, cosine schedule, sigmoid loss.

tokens/s is counted as in rlhf_dist's ``perf/tokens_per_s``: non-pad tokens (``attention_mask``)
of chosen + rejected rows per optimiser step divided by the step's time (``on_step_begin`` →
``on_step_end``: forward, backward, clipping, optimiser step), averaged over the steps after
``--warmup``.  ``tokens_per_s_wall`` divides by the time between consecutive step ends instead
(it also covers data loading and logging); ``tokens_per_cpu_s`` divides by the process's CPU
time over that span (steadier than wall time on a shared machine).  Needs ``trl`` (tested:
1.16.0, which relies on transformers >= 5 for ``train_sampling_strategy``) and ``rlhf_dist``
importable (a separate TRL venv installs rlhf_dist with ``pip install -e <repo> --no-deps``).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import statistics
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="bench/trl_dpo.py")
    p.add_argument("--rows", required=True, help="jsonl of prompt_ids/chosen_ids/rejected_ids")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory (the toy tokenizer)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--attn", default="eager", help="as model.attn_implementation")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--batch", type=int, default=8, help="pairs per optimiser step")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.95))
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the averages")
    p.add_argument(
        "--precompute-ref",
        action="store_true",
        help="TRL's precompute_ref_log_probs (off in the bench: rlhf_dist does not)",
    )
    return p.parse_args(argv)


def build_model(args, tokenizer):
    import torch

    from rlhf_dist.config import ModelConfig, TinyModelConfig
    from rlhf_dist.models import load_causal_lm

    section = ModelConfig(
        attn_implementation=args.attn,
        tiny=TinyModelConfig(
            arch="llama",
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=args.intermediate,
        ),
    )
    torch.manual_seed(args.seed)  # as LauncherTrainer.build_engines
    return load_causal_lm(section, tokenizer)


def main(argv=None) -> int:
    args = parse_args(argv)
    import datasets
    import torch
    import trl
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in open(args.rows, encoding="utf-8") if line.strip()]
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    if tokenizer.pad_token is None:
        raise SystemExit(f"trl_dpo: the tokenizer in {args.tokenizer} has no pad token")
    model = build_model(args, tokenizer)
    reference = copy.deepcopy(model)
    timing = {"begin": None, "step_s": [], "end_s": [], "end_cpu_s": [], "tokens": [], "pending": 0}
    t0 = time.perf_counter()

    class Timer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            timing["begin"] = time.perf_counter()

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            timing["step_s"].append(now - timing["begin"])
            timing["end_s"].append(now - t0)
            timing["end_cpu_s"].append(time.process_time())
            timing["tokens"].append(timing["pending"])
            timing["pending"] = 0

    class BenchDPOTrainer(DPOTrainer):
        def _prepare_dataset(self, dataset, *_, **__):
            return dataset  # rows are already tokenised by rlhf_dist

        def training_step(self, model, inputs, *rest, **kw):
            timing["pending"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *rest, **kw)

    config = DPOConfig(
        output_dir=args.out_dir,
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.steps,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=args.adam_betas[0],
        adam_beta2=args.adam_betas[1],
        max_grad_norm=1.0,
        beta=args.beta,
        loss_type=["sigmoid"],
        max_length=args.max_length,
        precompute_ref_log_probs=args.precompute_ref,
        train_sampling_strategy="sequential",
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
    )
    trainer = BenchDPOTrainer(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    trainer.train()

    w = args.warmup
    tokens, step_s = timing["tokens"][w:], timing["step_s"][w:]
    wall = timing["end_s"][-1] - timing["end_s"][w - 1] if w > 0 else timing["end_s"][-1]
    cpu = timing["end_cpu_s"][-1] - (timing["end_cpu_s"][w - 1] if w > 0 else 0.0)
    per_step = [t / s for t, s in zip(tokens, step_s)]
    print(
        json.dumps(
            {
                "bench": "train",
                "impl": "trl",
                "trl_version": trl.__version__,
                "job": "dpo",
                "zero": None,
                "ranks": 1,
                "steps": len(timing["step_s"]),
                "warmup": w,
                "tokens_per_s": sum(tokens) / sum(step_s),
                "tokens_per_s_median": statistics.median(per_step),
                "tokens_per_s_wall": sum(tokens) / wall,
                "tokens_per_cpu_s": sum(tokens) / cpu,
                "tokens_per_step": sum(tokens) / len(tokens),
                "step_time_s_mean": sum(step_s) / len(step_s),
                "peak_rss_mb_per_rank": [
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
                ],
                "threads_per_rank": torch.get_num_threads(),
                "precompute_ref_log_probs": args.precompute_ref,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
