"""Environments defined outside the package, named in tests as ``user_envs:Class`` (the way a
user names theirs): a guessing game that is right by hand, and ones that break the contract."""

import threading

RELEASE = threading.Event()  # set by the tests to let a hung step's thread finish


class GuessEnv:
    """Guess the row's label: reward 1 for it, -0.25 per wrong guess, at most ``tries``."""

    def __init__(self, tries: int = 3, hint: str = "higher or lower?"):
        self.tries, self.hint = tries, hint

    def reset(self, row):
        self.label, self.left = int(row["label"]), self.tries
        return row["prompt"]

    def step(self, action):
        self.left -= 1
        guess = int(action.strip())
        if guess == self.label:
            return None, 1.0, True, {"guesses": 1}
        hint = "higher" if guess < self.label else "lower"
        return [{"role": "user", "content": hint}], -0.25, self.left == 0, {"guesses": 1}


class BadEnv:
    """``step`` returns whatever ``reply`` is (or raises it when it is an exception)."""

    reply = None

    def __init__(self, reply=None):
        self.reply = reply

    def reset(self, row):
        return row["prompt"]

    def step(self, action):
        if isinstance(self.reply, BaseException):
            raise self.reply
        return self.reply


class HangingEnv:
    """``step`` waits until the test sets :data:`RELEASE` (a hung step)."""

    def reset(self, row):
        return row["prompt"]

    def step(self, action):
        RELEASE.wait(30)
        return None, 1.0, True


class BadResetEnv:
    def __init__(self, value=None):
        self.value = value

    def reset(self, row):
        return self.value

    def step(self, action):
        return None, 0.0, True


class NoStep:
    def reset(self, row):
        return "x"


def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


class WhereEnv:
    """One step: reward ``len(action)``; info says which process stepped it (``pid``) and
    how many calls this environment object saw (``calls``: reset + step = 2)."""

    def __init__(self):
        self.calls = 0

    def reset(self, row):
        self.calls += 1
        return row["prompt"]

    def step(self, action):
        import os

        self.calls += 1
        return None, float(len(action)), True, {"pid": os.getpid(), "calls": self.calls}


class TwoTurnEnv:
    """Two model turns per trajectory: the first is answered "go on" (reward 0.25), the second
    ends it (reward 1) -- or raises when the row's label is ``broken``.  The last step's info
    says how many calls this environment object saw (``calls``: reset + 2 steps = 3) and
    whether it ran in the driver (``in_driver``: the ``rlhf_dist.cli`` process) or elsewhere
    (an env.workers actor)."""

    def __init__(self):
        self.calls, self.label = 0, None

    def reset(self, row):
        self.calls, self.label = self.calls + 1, row["label"]
        return row["prompt"]

    def step(self, action):
        import sys

        self.calls += 1
        if self.calls == 2:
            return "\nUser: go on\nAssistant:", 0.25, False
        if self.label == "broken":
            raise ValueError("this row breaks the environment")
        return (
            None,
            1.0,
            True,
            {"calls": self.calls, "in_driver": float(sys.argv[0].endswith("cli.py"))},
        )


class ProbeEnv:
    """One step, behaving as the row's label says: ``raise`` -> ValueError, ``hang`` -> sleeps
    past any test timeout, else reward len(action); info: the process (``pid``) and the calls
    this environment object saw (``calls``: reset + step = 2)."""

    def reset(self, row):
        self.label, self.calls = row["label"], 1
        return row["prompt"]

    def step(self, action):
        import os
        import time

        self.calls += 1
        if self.label == "raise":
            raise ValueError(f"cannot take {action!r}")
        if self.label == "hang":
            time.sleep(30)
        return None, float(len(action)), True, {"pid": os.getpid(), "calls": self.calls}
