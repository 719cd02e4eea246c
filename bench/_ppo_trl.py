"""Case ``trl_grpo`` of ``bench/ppo.py``: TRL's ``GRPOTrainer`` on our critic-free workload.

Same as our ``ray_grpo`` / ``single_grpo`` cases: the tiny llama with the actor's seed (saved
to disk, since TRL builds its reference model from the policy's path), our toy tokenizer,
the prompts of each iteration in the driver's order (``PPOTrainer.prompt_batch``;
``shuffle_dataset=False`` so TRL's sampler keeps it), ``group_size`` samples per prompt,
sampling at temperature 1 / top-p 1 / no top-k, exactly ``max_new_tokens`` new tokens
(``generation_kwargs={"min_new_tokens": …}``), the same minibatch / micro-batch / epoch
structure (``steps_per_generation`` micro-batches per generation, ``num_iterations`` =
``ppo_epochs``), fused AdamW (``optim="adamw_torch_fused"``, as our engine) with our lr
(constant), betas, weight decay and clipping, and a reward that is our reward model's score:
a Python reward function that rebuilds our rollout layout (left-padded prompt + response)
and calls the same RM (built with the reward worker's seed) in micro-batches.

TRL defaults turned off because we do not do them: gradient checkpointing (TRL: on), bf16
(TRL: on when available), completion logging, the progress bar.  ``beta`` (KL to the
reference, in TRL's loss) = our ``kl_coef`` (in our reward), so both run the reference model.
The iteration's phases: ``generate`` = TRL's ``_generate`` (prompt tokenisation, HF
generate, decoding), ``score`` = the rest of ``_generate_and_score_completions`` (old and
reference log-probs, the reward, group advantages), ``learn`` = the rest of the optimiser
steps (loss forwards, backward, AdamW, TRL's per-step bookkeeping).
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import torch

import _ppo_common as C


def iteration_rows(cfg, tokenizer) -> List[List[dict]]:
    """The prompt rows the PPO driver uses at each iteration (unrepeated)."""
    from rlhf_dist.data import PromptCollator, build_prompt_dataset
    from rlhf_dist.trainers.ppo import PPOTrainer

    collator, seen = PromptCollator(tokenizer.pad_token_id), []

    def collate(rows):
        seen.append(list(rows))
        return collator(rows)

    state = SimpleNamespace(
        cfg=cfg,
        prompts=build_prompt_dataset(cfg.data, tokenizer),
        collate=collate,
        drawn=0,
        n_samples=1,
    )
    for iteration in range(cfg.ppo.iterations):
        state.drawn = iteration
        PPOTrainer.prompt_batch(state)
    return seen


def reward_from_rm(rm, pad_token_id: int, micro: int, scores_log: List[float]):
    """A TRL reward function: our RM's score of (prompt, completion) in our rollout layout."""

    def rm_score(prompts, completions, completion_ids, rm_prompt_ids, **_):
        width_p = max(len(p) for p in rm_prompt_ids)
        width_r = max(len(c) for c in completion_ids)
        n = len(completion_ids)
        seq = torch.full((n, width_p + width_r), pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(seq)
        for i, (p, c) in enumerate(zip(rm_prompt_ids, completion_ids)):
            seq[i, width_p - len(p) : width_p] = torch.tensor(p)
            seq[i, width_p : width_p + len(c)] = torch.tensor(list(c))
            mask[i, width_p - len(p) : width_p + len(c)] = 1
        with torch.no_grad():
            scores = torch.cat(
                [
                    rm.sequence_scores(seq[s : s + micro], mask[s : s + micro])
                    for s in range(0, n, micro)
                ]
            )
        scores_log.append(float(scores.mean()))
        return scores.tolist()

    return rm_score


def reward_from_verifier(scores_log: List[float]):
    """A TRL reward function: the benchmark's built-in verifier on the decoded completions,
    the same function object our driver calls (``rlhf_dist.rewards``)."""
    from rlhf_dist.rewards import RewardFunction

    name, fn_args = C.VERIFIER
    verifier = RewardFunction(name, 1.0, fn_args)

    def verify(prompts, completions, **_):
        scores = verifier(
            list(prompts), list(completions), [None] * len(completions), [{}] * len(completions)
        )
        scores_log.append(float(scores.mean()))
        return scores.tolist()

    return verify


def run(args, cfg) -> Dict[str, object]:
    import datasets
    import trl
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_dist.models import load_causal_lm, load_scalar_model, load_tokenizer

    start = time.perf_counter()
    out = Path(cfg.output_dir)
    tokenizer = load_tokenizer(cfg.model, field_prefix="model")
    torch.manual_seed(cfg.seed)  # the actor worker's seed: the same initial policy
    policy_dir = out / "policy"
    load_causal_lm(cfg.model, tokenizer, field_prefix="model").save_pretrained(str(policy_dir))
    tokenizer.save_pretrained(str(policy_dir))
    torch.manual_seed(cfg.seed + 1)  # the reward worker's seed: the same RM
    rm = (
        load_scalar_model(cfg.reward_model, tokenizer, role="reward", field_prefix="reward_model")
        .requires_grad_(False)
        .eval()
    )

    rows = []
    for it_rows in iteration_rows(cfg, tokenizer):
        for row in it_rows:
            if tokenizer(row["prompt"])["input_ids"] != list(row["input_ids"]):
                raise RuntimeError(f"TRL would tokenise {row['prompt']!r} differently")
            rows.append({"prompt": row["prompt"], "rm_prompt_ids": list(row["input_ids"])})

    group, micro = cfg.rollout.n_samples_per_prompt, cfg.train.micro_batch_size
    rows_per_iter = cfg.rollout.rollout_batch_size * group
    steps_per_iter = cfg.ppo.ppo_epochs * rows_per_iter // cfg.ppo.mini_batch_size
    config = GRPOConfig(
        output_dir=str(out / "trl"),
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=cfg.ppo.mini_batch_size // micro,
        steps_per_generation=rows_per_iter // micro,
        num_generations=group,
        num_iterations=cfg.ppo.ppo_epochs,
        shuffle_dataset=False,
        max_completion_length=cfg.rollout.max_new_tokens,
        generation_kwargs={"min_new_tokens": cfg.rollout.min_new_tokens},
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        top_k=cfg.rollout.top_k,
        beta=cfg.ppo.kl_coef,
        epsilon=cfg.ppo.clip_eps,
        scale_rewards="group",
        learning_rate=cfg.train.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=cfg.train.weight_decay,
        adam_beta1=cfg.train.adam_betas[0],
        adam_beta2=cfg.train.adam_betas[1],
        max_grad_norm=cfg.train.max_grad_norm,
        optim="adamw_torch_fused",
        max_steps=cfg.ppo.iterations * steps_per_iter,
        logging_steps=steps_per_iter,
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        log_completions=False,
        model_init_kwargs={
            "attn_implementation": cfg.model.attn_implementation,
            "dtype": "float32",
        },
    )

    meter, scores, sizes = C.TreeMeter(), [], {}

    class MeteredGRPOTrainer(GRPOTrainer):
        def _generate(self, prompts):
            with meter.phase("generate"):
                return super()._generate(prompts)

        def _generate_and_score_completions(self, inputs):
            with meter.phase("generate_and_score"):
                output = super()._generate_and_score_completions(inputs)
            sizes["rows"] = float(output["prompt_mask"].shape[0])
            sizes["tokens"] = float(output["prompt_mask"].sum() + output["completion_mask"].sum())
            sizes["response_length"] = float(output["completion_mask"].sum(-1).float().mean())
            return output

    class IterationMeter(TrainerCallback):
        def on_step_begin(self, _args, state, control, **__):
            if state.global_step % steps_per_iter == 0:
                meter.begin_iteration()

        def on_step_end(self, _args, state, control, **__):
            if state.global_step % steps_per_iter == 0:
                record = meter.end_iteration(rows=sizes["rows"], tokens=sizes["tokens"])
                both = record.pop("time_generate_and_score_s")
                both_cpu = record.pop("cpu_generate_and_score_s")
                record["time_score_s"] = both - record["time_generate_s"]
                record["cpu_score_s"] = both_cpu - record["cpu_generate_s"]
                record["time_learn_s"] = record["time_s"] - both
                record["cpu_learn_s"] = record["cpu_s"] - both_cpu

    reward = (
        reward_from_rm(rm, tokenizer.pad_token_id, micro, scores)
        if args.reward == "rm"
        else reward_from_verifier(scores)
    )
    trainer = MeteredGRPOTrainer(
        model=str(policy_dir),
        args=config,
        processing_class=tokenizer,
        reward_funcs=reward,
        train_dataset=datasets.Dataset.from_list(rows),
        callbacks=[IterationMeter()],
    )
    setup_s = time.perf_counter() - start
    trainer.train()
    return {
        "impl": f"TRL {trl.__version__} GRPOTrainer",
        "groups": 0,
        "setup_s": setup_s,
        "response_length_mean": sizes["response_length"],
        "score_mean_per_iter": scores,
        "trl_loss_type": config.loss_type,
        "trl_optim": str(config.optim),
        **C.summarize(meter.records, args.warmup),
    }
