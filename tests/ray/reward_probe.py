"""A reward function for the PPO runs of the tests: it scores 0 and checks that each label it
is given (the raw ``prompt`` column, via ``data.label_key=prompt``) is the prompt of that very
response -- after the shuffle, the split over actor ranks and ``n_samples_per_prompt``.  Each
call appends ``rows checked`` to the file named by ``$REWARD_PROBE_LOG``; a mismatch raises,
which stops the run naming the function and the row."""

from __future__ import annotations

import os


def label_is_own_prompt(prompts, responses, labels, extras):
    for row, (prompt, label) in enumerate(zip(prompts, labels)):
        if " ".join(label.split()) not in " ".join(prompt.split()):
            raise ValueError(f"row {row}: label {label!r} is not the prompt {prompt!r}")
    with open(os.environ["REWARD_PROBE_LOG"], "a") as log:
        log.write(f"{len(labels)}\n")
    return [0.0] * len(responses)


def slow_reward(prompts, responses, labels, extras):
    """Sleeps 30 s: longer than the pool test's ppo.reward_timeout_s."""
    import time

    time.sleep(30)
    return [0.0] * len(responses)


def text_for_p4(prompts, responses, labels, extras):
    """A string instead of a number for the prompt "p4" (row 4 of the pool test's batch)."""
    return ["x" if prompt == "p4" else 0.0 for prompt in prompts]


def label_length(prompts, responses, labels, extras):
    """len(label) for each row, and the process that computed it (so a test can tell the
    pool's workers from the driver)."""
    with open(os.environ["REWARD_PROBE_LOG"], "a") as log:
        log.write(f"{os.getpid()} {len(labels)}\n")
    return [float(len(label)) for label in labels]
