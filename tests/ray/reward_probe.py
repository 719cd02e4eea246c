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
