"""Built-in verifiable rewards and the checks every reward function's output goes through."""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.algo import NonFiniteError
from rlhf_dist.rewards import RewardError, RewardFunction, RewardSum

PROMPTS = ["q0", "q1", "q2", "q3"]


def scores(spec, responses, labels=None, **args):
    fn = RewardFunction(spec, args=args)
    labels = labels if labels is not None else [None] * len(responses)
    return fn(PROMPTS[: len(responses)], responses, labels, [{}] * len(responses)).tolist()


def test_math_compares_the_marked_final_answer_by_value():
    responses = [
        "so the answer is \\boxed{42}",  # boxed, equal
        "7 * 6 = 42\n#### 42",  # GSM8K marker
        "\\boxed{\\frac{84}{2}}",  # equal in value
        "the answer is 42",
    ]  # no marker: not a final answer
    assert scores("math", responses, [42, "#### 42", "42", "42"]) == [1.0, 1.0, 1.0, 0.0]
    assert scores("math", ["\\boxed{41}", "#### 40"], ["42", "Janet has ... #### 40"]) == [
        0.0,
        1.0,
    ]  # a GSM8K label's reasoning is dropped, its final answer kept


def test_exact_match_strips_whitespace_and_optionally_case():
    assert scores("exact_match", [" blue  sky ", "Blue sky", "red"], ["blue sky"] * 3) == [
        1.0,
        0.0,
        0.0,
    ]
    assert scores("exact_match", ["Blue sky"], ["blue sky"], ignore_case=True) == [1.0]


def test_regex_format_needs_no_label():
    pattern = r"<think>.*</think>\s*<answer>.*</answer>"
    responses = ["<think>a\nb</think> <answer>3</answer>", "<answer>3</answer>"]
    assert scores("regex_format", responses, pattern=pattern) == [1.0, 0.0]
    assert scores("regex_format", ["x <answer>3</answer> y"], pattern="<answer>", search=True) == [
        1.0
    ]


def two_argument(prompts, responses):
    return [float(len(r)) for r in responses]


def four_argument(prompts, responses, labels, extras):
    return [float(y == p) + extra["bonus"] for p, y, extra in zip(prompts, labels, extras)]


def test_both_signatures_and_the_weighted_sum():
    here = __name__
    total = RewardSum(
        [
            RewardFunction(f"{here}:two_argument", weight=0.5),
            RewardFunction(f"{here}:four_argument", weight=2.0),
        ]
    )
    got = total(["a", "b"], ["xx", "yyyy"], ["a", "z"], [{"bonus": 0.25}, {"bonus": 0.0}])
    assert got.tolist() == [0.5 * 2 + 2.0 * 1.25, 0.5 * 4 + 2.0 * 0.0]
    assert not RewardSum([])


def too_few(prompts, responses, labels, extras):
    return [1.0]


def a_word(prompts, responses, labels, extras):
    return [1.0, "high"]


def nothing(prompts, responses, labels, extras):
    return None


def nan_in_row_1(prompts, responses, labels, extras):
    return [0.0, float("nan")]


@pytest.mark.parametrize(
    "name, message",
    [
        ("too_few", r"returned 1 rewards for 2 responses"),
        ("a_word", r"returned 'high' \(str\) for row 1: expected a number"),
        ("nothing", r"returned NoneType, not a list of 2 numbers"),
    ],
)
def test_unusable_output_names_the_function_and_row(name, message):
    fn = RewardFunction(f"{__name__}:{name}", field="ppo.rewards[0].fn")
    with pytest.raises(RewardError, match=rf"^ppo.rewards\[0\].fn '{__name__}:{name}' {message}"):
        fn(["a", "b"], ["x", "y"], [None, None], [{}, {}])


def test_nan_reward_is_a_skippable_numerical_fault_naming_the_row():
    fn = RewardFunction(f"{__name__}:nan_in_row_1")
    with pytest.raises(
        NonFiniteError,
        match=r"^ppo.reward_fn '.*:nan_in_row_1' returned nan "
        r"for row 1$",
    ) as err:
        fn(["a", "b"], ["x", "y"], [None, None], [{}, {}])
    assert err.value.skippable


def test_numpy_torch_and_bool_values_are_numbers():
    import numpy as np

    from rlhf_dist.rewards.functions import check_rewards

    assert torch.equal(
        check_rewards([np.float32(0.5), torch.tensor(1.0), True], 3, "f"),
        torch.tensor([0.5, 1.0, 1.0]),
    )


@pytest.mark.parametrize(
    "spec, args, message",
    [
        (
            "no_such_module_here:score",
            {},
            r"ppo.reward_fn 'no_such_module_here:score': cannot "
            r"import module 'no_such_module_here'",
        ),
        (
            "mathh",
            {},
            r"ppo.reward_fn 'mathh': expected a built-in reward \(math, exact_match, "
            r"regex_format\) or package.module:function",
        ),
        ("os.path:sep", {}, r"ppo.reward_fn 'os.path:sep': 'sep' is a str, not callable"),
        (
            "regex_format",
            {"pattern": "("},
            r"ppo.reward_fn 'regex_format': regex_format: pattern "
            r"'\(' does not",
        ),
        ("exact_match", {"case": True}, r"ppo.reward_fn 'exact_match': .*unexpected keyword"),
        (f"{__name__}:two_argument", {"x": 1}, r"args \{'x': 1\} are for the built-in rewards"),
    ],
)
def test_bad_specs_name_the_field(spec, args, message):
    with pytest.raises(RewardError, match=message):
        RewardFunction(spec, args=args)


def test_a_verifier_without_labels_says_which_key_to_set():
    with pytest.raises(
        RewardError,
        match=r"^ppo.reward_fn 'math': math needs a label per "
        r"prompt: set data.label_key",
    ):
        RewardFunction("math")(["q"], ["\\boxed{1}"], [], [])
