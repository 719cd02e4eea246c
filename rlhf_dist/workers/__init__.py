"""Ray actors, one role each, and the groups the drivers call (imports ray).

* :mod:`.worker_group` -- a group of Ray actors placed on a placement group: calls split by
  data-parallel rank, waits with timeouts, lost workers named (``WorkerGroup``, ``RayGroup``);
* :mod:`.model_worker` -- what every role actor holding a model shares (``ModelWorker``: its
  engine, idle offload around each call, checkpoints, export, checksum);
* :mod:`.role_workers` -- the actors of each role (``ActorWorker``, ``CriticWorker``,
  ``ReferenceWorker``, ``RewardWorker``), thin over ``engine/`` and ``objectives/``;
* :mod:`.role_groups` -- each role's group API the drivers call (``ActorGroup.generate``,
  ``CriticGroup.values``, the learners of a PPO iteration);
* :mod:`.cluster` -- places and creates every role of a run (``RoleGroups``);
* :mod:`.rollout_engines`, :mod:`.reward_pool` -- the vLLM engines, the reward-function pool.
"""
