"""A scoring function loaded by import path in the judge tests (``judge_fixture:score``)."""

NOT_CALLABLE = 3


def score(prompts, responses):
    """Number of words of the response, minus 10 when it says "bad"."""
    return [float(len(r.split())) - (10.0 if "bad" in r else 0.0) for r in responses]


class Scorers:
    @staticmethod
    def length(prompts, responses):
        return [float(len(r)) for r in responses]
