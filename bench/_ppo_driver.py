"""Cases ``ray``, ``inproc`` and ``ray_grpo`` of ``bench/ppo.py``: the real PPO driver
(``rlhf_dist.trainers.ppo.PPOTrainer``), metered per iteration and phase.

* ``ray``: the driver on a local Ray instance, one rank per group;
* after the last iteration (both cases) idle CPU, one reference forward through the group,
  and (Ray) one remote call without work and one experience transfer are priced
  (:func:`probe_calls`).
* ``inproc``: the same driver with the same role workers (same DeepSpeed engines, same
  methods) constructed in this process and called directly (:class:`LocalGroup`).
"""

from __future__ import annotations

import time
from typing import Dict, List

import _ppo_common as C


# the asynchronous pipeline's waits and staleness (rlhf_dist.rollout.async_rollout), per iteration
ASYNC_METRICS = ("perf/rollout_idle_s", "perf/learner_idle_s", "async/staleness_mean")


def metered_trainer(cfg, meter: "C.TreeMeter", idle_s: float):
    """``PPOTrainer`` with each iteration and its generate / score / learn metered."""
    from rlhf_dist.trainers.ppo import PPOTrainer

    class MeteredPPOTrainer(PPOTrainer):
        def start(self) -> None:
            self.scores: List[float] = []
            self.async_metrics: Dict[str, List[float]] = {}
            self.setup_start = time.perf_counter()
            super().start()
            sync = self.rollout.sync_weights  # the weight sync is a phase of its own

            def metered_sync(version):
                with meter.phase("sync"):
                    return sync(version)

            self.rollout.sync_weights = metered_sync

        def build(self) -> None:
            super().build()
            self.setup_s = time.perf_counter() - self.setup_start
            for group in self.roles.all():
                locate = getattr(group, "locations", None)
                for where in locate() if locate else []:
                    meter.labels[where["pid"]] = f"worker_{group.role}"

        def iterate(self):
            meter.begin_iteration()
            metrics = super().iterate()
            meter.end_iteration(rows=self._rows, tokens=self._tokens)
            self.scores.append(metrics["reward/score_mean"])
            for key in ASYNC_METRICS:  # asynchronous rollouts: waits and staleness
                if key in metrics:
                    self.async_metrics.setdefault(key.split("/")[-1], []).append(metrics[key])
            self.last_metrics = metrics
            return metrics

        def generate(self):
            with meter.phase("generate"):
                return super().generate()

        def score(self, experience):
            self.experience = experience
            self._rows = float(len(experience))
            self._tokens = float(experience["attention_mask"].sum())
            self.response_length = float(experience["action_mask"].sum(-1).float().mean())
            with meter.phase("score"):
                return super().score(experience)

        def learn(self, experience):
            with meter.phase("learn"):
                return super().learn(experience)

        def end_metrics(self):
            self.probe = probe_calls(self.roles, self.experience, meter, idle_s=idle_s)
            return super().end_metrics()

    return MeteredPPOTrainer(cfg)


def probe_calls(
    roles, experience, meter: "C.TreeMeter", n: int = 50, idle_s: float = 3.0, n_work: int = 10
) -> Dict[str, object]:
    """Prices of the pieces, measured after the last iteration on the live groups:

    * ``idle_cpu_per_s``: CPU seconds per second of the whole tree while the driver sleeps
      (by process label) — what the processes burn doing nothing;
    * ``ref_logprobs_*``: one reference forward of the iteration's experience through the
      group (compute + transport), wall and CPU per call, and the CPU of the reference
      worker alone (``inproc``: the same call in this process);
    * Ray only: ``call_*`` one remote call without work (``ping``), ``experience_put_get_*``
      one ``ray.put`` + ``ray.get`` of the experience Batch, and its pickled size.
    """
    import pickle

    probe = C.TreeMeter()
    probe.labels = dict(meter.labels)

    def measure(name: str, body, count: int) -> Dict[str, float]:
        probe.begin_iteration()
        with probe.phase(name):
            for _ in range(count):
                body()
        record = probe.end_iteration()
        by = {k.split("/", 1)[1]: v / count for k, v in record.items() if k.startswith("cpu_by/")}
        return {
            "ms": 1e3 * record["time_s"] / count,
            "cpu_ms": 1e3 * record["cpu_s"] / count,
            "cpu_ms_by": {k: 1e3 * v for k, v in by.items()},
        }

    idle = measure("idle", lambda: time.sleep(idle_s), 1)
    out: Dict[str, object] = {
        "idle_cpu_per_s": idle["cpu_ms"] / 1e3 / idle_s,
        "idle_cpu_per_s_by": {k: v / 1e3 / idle_s for k, v in idle["cpu_ms_by"].items()},
    }
    reference = roles.reference_calls()  # the actor answers when there is no reference group
    work = measure("ref_logprobs", lambda: reference.logprobs(experience).result(), n_work)
    # the process that ran the forward: the reference worker, else the actor, else (no Ray)
    # the driver
    by = work["cpu_ms_by"]
    out.update(
        ref_logprobs_ms=work["ms"],
        ref_logprobs_cpu_ms=work["cpu_ms"],
        ref_logprobs_worker_cpu_ms=next(
            (by[k] for k in ("worker_reference", "worker_actor", "driver") if k in by), None
        ),
    )
    workers = getattr(roles.reference, "workers", None)
    if workers:
        import ray

        call = measure("ping", lambda: ray.get(workers[0].ping.remote()), n)
        move = measure("put_get", lambda: ray.get(ray.put(experience)), n)
        out.update(
            call_ms=call["ms"],
            call_cpu_ms=call["cpu_ms"],
            experience_put_get_ms=move["ms"],
            experience_put_get_cpu_ms=move["cpu_ms"],
            experience_bytes=len(pickle.dumps(experience)),
        )
    return out


def start_local_ray(cfg) -> None:
    """Ray as ``workers.cluster.start_ray`` starts it (the trainer then joins it)."""
    import ray

    from rlhf_dist.config import ppo_roles
    from rlhf_dist.models import load_tokenizer
    from rlhf_dist.rollout import make_rollout
    from rlhf_dist.workers.cluster import cpus_needed, local_ray_options

    rollout = make_rollout(cfg, load_tokenizer(cfg.model))
    ray.init(**local_ray_options(cpus_needed(cfg, ppo_roles(cfg), rollout)))


class _Done:
    """A finished call, for the driver's ``Pending.result()``."""

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class _LocalLearner:
    """``groups.Learner`` for one in-process rank: the share is the whole experience."""

    def __init__(self, run_epoch, experience, mini_batch_size: int, epochs: int, seed: int):
        from rlhf_dist.rollout.replay import learner_plan

        (self.plan,) = learner_plan(len(experience), mini_batch_size, epochs, seed)
        self.run_epoch, self.share = run_epoch, experience.index_select(self.plan.rows)

    def epoch(self, epoch: int):
        return _Done(self.run_epoch(self.share, self.plan.steps[epoch]))


class LocalGroup:
    """One role worker called directly in this process, with the group methods the PPO
    driver uses (``workers/role_groups.py``), minus Ray: no serialisation, no concurrency."""

    def __init__(self, role: str, worker):
        self.role, self.worker = role, worker

    def build(self, *args) -> "_Done":
        return _Done(self.worker.build(*args))

    def generate(self, prompts, seed: int, pad_token_id: int):
        from rlhf_dist.rollout import concat_rollouts

        return concat_rollouts([self.worker.generate(prompts, seed)], pad_token_id)

    def logprobs(self, batch):
        return _Done(self.worker.logprobs(batch)["logprobs"])

    def score(self, batch):
        return _Done(self.worker.score(batch)["scores"])

    def values(self, batch):
        return _Done(self.worker.values(batch)["values"])

    def ppo_learner(self, experience, mini_batch_size: int, epochs: int, seed: int):
        return _LocalLearner(self.worker.ppo_epoch, experience, mini_batch_size, epochs, seed)

    def value_learner(self, experience, mini_batch_size: int, epochs: int, seed: int):
        return _LocalLearner(self.worker.value_epoch, experience, mini_batch_size, epochs, seed)

    def save(self, directory: str) -> None:
        self.worker.save(directory)

    def state_checksum(self) -> float:
        return self.worker.state_checksum()

    def size_metrics(self) -> Dict[str, float]:
        return self.worker.size_metrics()

    def node_ids(self) -> List[str]:
        return ["local"]

    def kill(self) -> None:
        pass


def use_local_roles() -> None:
    """Point the driver's set-up at in-process workers (one process group of one rank)."""
    from rlhf_dist.engine.dist import init_distributed
    from rlhf_dist.workers import cluster
    from rlhf_dist.workers.role_workers import (
        ActorWorker,
        CriticWorker,
        ReferenceWorker,
        RewardWorker,
    )

    def create_roles(cfg, with_reward: bool, with_critic: bool, rollout=None):
        if rollout is not None and rollout.bundles():
            raise ValueError(
                "the in-process driver has no processes for the rollout backend: rollout.backend=hf"
            )
        init_distributed()
        actor = LocalGroup("actor", ActorWorker(cfg))
        if rollout is not None:
            rollout.start(actor, None)
        return cluster.RoleGroups(
            rollout=rollout,
            actor=actor,
            reference=LocalGroup("reference", ReferenceWorker(cfg)),
            reward=LocalGroup("reward", RewardWorker(cfg)) if with_reward else None,
            critic=LocalGroup("critic", CriticWorker(cfg)) if with_critic else None,
        )

    cluster.start_ray = lambda address, num_cpus: False
    cluster.create_roles = create_roles


def remote_calls_per_iter(cfg) -> int:
    """Remote calls the driver makes per iteration (one rank per group): generate, the
    reference / reward / critic forwards, and one update per learner per minibatch."""
    minibatches = (
        cfg.ppo.ppo_epochs
        * cfg.rollout.rollout_batch_size
        * cfg.rollout.n_samples_per_prompt
        // cfg.ppo.mini_batch_size
    )
    learners = 2 if cfg.ppo.needs_critic else 1
    return 1 + (3 if cfg.ppo.needs_critic else 2) + learners * minibatches


def run_driver(args, case: str, out_dir: str) -> Dict[str, object]:
    cfg = C.load_bench_config(
        args,
        "group_norm" if "_grpo" in case else "gae",
        out_dir,
        "vllm" if case.endswith("_vllm") else "hf",
        C.CASE_OVERRIDES.get(case, ()),
    )
    meter = C.TreeMeter()
    if case.startswith("ray"):
        start_local_ray(cfg)
    else:
        use_local_roles()
    trainer = metered_trainer(cfg, meter, args.probe_idle)
    try:
        trainer.fit()
    finally:
        if case.startswith("ray"):
            import ray

            ray.shutdown()
    return {
        "impl": "rlhf_dist PPOTrainer"
        + (" on Ray" if case.startswith("ray") else ", workers in one process"),
        "groups": len(trainer.roles.all()),
        "setup_s": trainer.setup_s,
        "remote_calls_per_iter": remote_calls_per_iter(cfg) if case.startswith("ray") else 0,
        "probe": trainer.probe,
        "response_length_mean": trainer.response_length,
        "score_mean_per_iter": trainer.scores,
        "async_per_iter": trainer.async_metrics,
        **C.summarize(meter.records, args.warmup),
    }
