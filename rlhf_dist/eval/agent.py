"""A model evaluated as an agent (``rlhf-dist eval --env``): every prompt row is the start of
a multi-turn trajectory against the ``env`` section's environment, run by the PPO driver's
own code -- :class:`~rlhf_dist.rollout.multi_turn.MultiTurnRollout` around a
:class:`~rlhf_dist.rollout.local.SamplerRollout` of the backend's in-process sampler (HF
generate on the loaded model, or one vLLM engine), the environments in this process's
threads.

Prompts go in batches of ``batch_size`` rows, batch ``b`` seeded ``derive_seed(seed, b,
SAMPLING)`` as :func:`~rlhf_dist.rollout.sampling.sample_texts` seeds single answers; each
row gets ``rollout.n_samples_per_prompt`` trajectories.  A row is ``{prompt, label,
extras}`` as the PPO driver gives its environment (``label``: the ``data.label_key`` column).
The answer text of a trajectory is its transcript after the prompt (model turns and
observations, special tokens dropped); its metrics are the episode's log line
(:func:`~rlhf_dist.eval.metrics.agent_metrics` averages them).
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from rlhf_dist.config import Config
from rlhf_dist.data import Encoder
from rlhf_dist.rollout.local import SamplerRollout
from rlhf_dist.rollout.multi_turn import MultiTurnRollout, left_padded
from rlhf_dist.utils.seeding import SAMPLING, derive_seed


class AgentRun(NamedTuple):
    """``responses[j]``: trajectory ``j``'s transcript; ``trajectories[j]``: its metrics
    (``reward``, ``turns``, ``tool_calls``...); the n of prompt ``i`` at ``i·n … i·n+n−1``."""

    responses: List[str]
    trajectories: List[Dict[str, float]]


def run_agent(
    policy: Any,
    prompts: Sequence[str],
    labels: Optional[Sequence[Any]],
    agent: Config,
    seed: Optional[int] = 0,
    batch_size: int = 16,
    backend: str = "hf",
    model_dir: Optional[str] = None,
    engines: Any = None,
) -> AgentRun:
    """The trajectories of ``policy`` (a loaded :class:`~rlhf_dist.eval.loading.Policy`)
    from each of ``prompts`` against ``agent.env`` (``agent``: a config whose ``env``,
    ``rollout`` and ``data`` sections apply; ``data.max_prompt_length`` cuts prompts)."""
    from rlhf_dist.rollout import make_sampler

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    tokenizer = policy.tokenizer
    sampler = make_sampler(
        backend,
        model_dir=model_dir,
        model=policy.model,
        tokenizer=tokenizer,
        rollout=agent.rollout,
        seed=seed or 0,
        engines=engines,
        max_model_len=agent.longest_sequence,
    )
    rollout = MultiTurnRollout(SamplerRollout(agent, tokenizer, sampler))
    encoder = Encoder(
        tokenizer,
        agent.data.max_length,
        agent.data.max_prompt_length,
        add_bos=not agent.data.apply_chat_template,
    )
    responses: List[str] = []
    metrics: List[Dict[str, float]] = []
    try:
        for b, start in enumerate(range(0, len(prompts), batch_size)):
            part = range(start, min(start + batch_size, len(prompts)))
            rows = [
                {"prompt": prompts[i], "label": None if labels is None else labels[i], "extras": {}}
                for i in part
            ]
            ids = left_padded([encoder.prompt(row["prompt"]) for row in rows], sampler.pad_token_id)
            batch_seed = derive_seed(seed or 0, b, SAMPLING)
            for trajectory in rollout.run(ids, batch_seed, rows):
                responses.append(tokenizer.decode(trajectory.tokens, skip_special_tokens=True))
                metrics.append(trajectory.episode.metrics())
    finally:
        sampler.close()
    return AgentRun(responses, metrics)


__all__ = ["AgentRun", "run_agent"]
