"""Rankings → pairs, and labelling with a known scoring function: exact expected pairs."""

import math
import statistics

import pytest

from rlhf_dist.data import RowKeys, Renderer, preference_texts
from rlhf_dist.rlaif import (
    candidate_pairs,
    label,
    label_with_stats,
    rank_responses,
    ranking_to_pairs,
)


def pair(prompt, chosen, rejected, cs, rs):
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "chosen_score": cs,
        "rejected_score": rs,
    }


def test_rank_responses_best_first_ties_by_index():
    assert rank_responses([0.1, 0.9, 0.1, 0.5]) == [1, 3, 0, 2]
    assert rank_responses([2, 2, 2]) == [0, 1, 2]
    assert rank_responses([]) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, None, "1.0", True])
def test_rank_responses_rejects_non_numbers(bad):
    with pytest.raises(ValueError, match="score 1"):
        rank_responses([1.0, bad])


def test_all_pairs_exact():
    rows = ranking_to_pairs("P", [" a", " b", " c", " d"], [0.5, 2.0, -1.0, 1.0])
    # ranked: b (2.0) > d (1.0) > a (0.5) > c (-1.0)
    assert rows == [
        pair("P", " b", " d", 2.0, 1.0),
        pair("P", " b", " a", 2.0, 0.5),
        pair("P", " b", " c", 2.0, -1.0),
        pair("P", " d", " a", 1.0, 0.5),
        pair("P", " d", " c", 1.0, -1.0),
        pair("P", " a", " c", 0.5, -1.0),
    ]


def test_all_pairs_match_the_data_packages_ranking_conversion():
    responses, scores = [" a", " b", " c", " d"], [0.5, 2.0, -1.0, 1.0]
    ranked = [responses[i] for i in rank_responses(scores)]
    expected = [
        (good.text, bad.text)
        for _, good, bad in preference_texts(
            {"prompt": "P", "responses": ranked}, RowKeys(), Renderer()
        )
    ]
    got = [(r["chosen"], r["rejected"]) for r in ranking_to_pairs("P", responses, scores)]
    assert got == expected


def test_ties_and_duplicates_are_skipped_and_counted():
    skipped = {}
    rows = ranking_to_pairs("P", [" x", " y", " x", " z"], [1.0, 1.0, 3.0, 0.0], skipped=skipped)
    # ranked: " x"(3.0, i=2) > " x"(1.0, i=0) > " y"(1.0, i=1) > " z"(0.0)
    assert rows == [
        pair("P", " x", " y", 3.0, 1.0),
        pair("P", " x", " z", 3.0, 0.0),
        pair("P", " x", " z", 1.0, 0.0),
        pair("P", " y", " z", 1.0, 0.0),
    ]
    assert skipped == {"duplicate": 1, "tie": 1}


def test_min_margin():
    skipped = {}
    rows = ranking_to_pairs(
        "P", [" a", " b", " c"], [1.0, 0.7, 0.0], min_margin=0.5, skipped=skipped
    )
    assert rows == [pair("P", " a", " c", 1.0, 0.0), pair("P", " b", " c", 0.7, 0.0)]
    assert skipped == {"below_margin": 1}
    # a margin exactly equal to min_margin is kept
    assert ranking_to_pairs("P", [" a", " b"], [1.5, 1.0], min_margin=0.5) == [
        pair("P", " a", " b", 1.5, 1.0)
    ]


def test_best_worst_one_pair_per_prompt():
    assert ranking_to_pairs(
        "P", [" a", " b", " c", " d"], [0.5, 2.0, -1.0, 1.0], strategy="best_worst"
    ) == [pair("P", " b", " c", 2.0, -1.0)]
    skipped = {}
    assert ranking_to_pairs("P", [" a", " b"], [1.0, 1.0], "best_worst", skipped=skipped) == []
    assert skipped == {"tie": 1}
    assert (
        ranking_to_pairs("P", [" a", " b", " c"], [3.0, 2.0, 2.9], "best_worst", min_margin=1.5)
        == []
    )


def test_fewer_than_two_responses_and_bad_arguments():
    assert ranking_to_pairs("P", [" a"], [1.0]) == []
    assert candidate_pairs([], "best_worst") == []
    with pytest.raises(ValueError, match="strategy"):
        ranking_to_pairs("P", [" a", " b"], [1.0, 0.0], strategy="top2")
    with pytest.raises(ValueError, match="2 responses but 1 scores"):
        ranking_to_pairs("P", [" a", " b"], [1.0])
    with pytest.raises(ValueError, match="min_margin"):
        ranking_to_pairs("P", [" a", " b"], [1.0, 0.0], min_margin=-1)


def length_judge(prompts, responses):
    """Known scoring function: response word count, +10 when the prompt asks for "long"."""
    return [len(r.split()) + (10 if "long" in p else 0) for p, r in zip(prompts, responses)]


def test_label_with_a_known_scoring_function_gives_exactly_the_expected_pairs():
    prompts = ["Human: short?\nAssistant:", "Human: long?\nAssistant:", "Human: q?\nAssistant:"]
    responses = [
        [" one two three", " one", " one two"],
        [" a b", " c d", "  ", " e"],  # a tie, a blank (not judged), 1 word
        [" same", " same"],
    ]  # a duplicate (and a tie)
    rows, stats = label_with_stats(prompts, responses, length_judge)
    p0, p1 = prompts[0], prompts[1]
    assert rows == [
        pair(p0, " one two three", " one two", 3.0, 2.0),
        pair(p0, " one two three", " one", 3.0, 1.0),
        pair(p0, " one two", " one", 2.0, 1.0),
        pair(p1, " a b", " e", 12.0, 11.0),
        pair(p1, " c d", " e", 12.0, 11.0),
    ]
    assert stats.to_dict() == {
        "prompts": 3,
        "responses": 9,
        "empty_responses": 1,
        "candidate_pairs": 7,
        "pairs": 5,
        "skipped": {"duplicate": 1, "tie": 1, "below_margin": 0},
        "score_mean": pytest.approx(43 / 8),
        "score_std": pytest.approx(statistics.pstdev([3, 1, 2, 12, 12, 11, 1, 1])),
        "margin_mean": pytest.approx((1 + 2 + 1 + 1 + 1) / 5),
    }
    assert label(prompts, responses, length_judge, "best_worst") == [
        pair(p0, " one two three", " one", 3.0, 1.0),
        pair(p1, " a b", " e", 12.0, 11.0),
    ]
    assert label(prompts, responses, length_judge, min_margin=1.5) == [
        pair(p0, " one two three", " one", 3.0, 1.0)
    ]


def test_label_calls_the_judge_once_on_non_blank_responses():
    calls = []

    def judge(prompts, responses):
        calls.append((list(prompts), list(responses)))
        return [0.0] * len(responses)

    label(["A", "B"], [[" x", ""], [" y", " z"]], judge)
    assert calls == [(["A", "B", "B"], [" x", " y", " z"])]


@pytest.mark.parametrize(
    "judge, message",
    [
        (lambda p, r: [1.0], "returned 1 scores for 2 responses"),
        (lambda p, r: [1.0, math.nan], "bad score: score 1"),
        (lambda p, r: None, "returned a NoneType"),
    ],
)
def test_label_checks_the_judges_output(judge, message):
    with pytest.raises(ValueError, match=message):
        label(["P"], [[" a", " b"]], judge)
