"""The resumable data walk: exact index lists for 2 ranks, written out by hand."""

import torch

from rlhf_dist.trainers import batches as B


def test_drop_last_gives_each_rank_its_slice_of_every_global_batch():
    order = list(range(10))  # global batches of 2 ranks × 2 = 4: [0..3], [4..7]; 8, 9 dropped
    assert B.rank_micro_batches(order, 0, 2, 2) == [[0, 1], [4, 5]]
    assert B.rank_micro_batches(order, 1, 2, 2) == [[2, 3], [6, 7]]


def test_drop_last_follows_the_given_order():
    order = [9, 3, 7, 1, 0, 8, 2, 6, 5, 4]
    assert B.rank_micro_batches(order, 0, 2, 1) == [[9], [7], [0], [2], [5]]
    assert B.rank_micro_batches(order, 1, 2, 1) == [[3], [1], [8], [6], [4]]
    assert B.rank_micro_batches(order, 1, 2, 3) == [[1, 0, 8]]  # 10 // 6 = 1 global batch


def test_without_drop_last_every_example_is_seen_once_in_short_tail_batches():
    order = list(range(10))
    assert B.rank_micro_batches(order, 0, 2, 2, drop_last=False) == [[0, 2], [4, 6], [8]]
    assert B.rank_micro_batches(order, 1, 2, 2, drop_last=False) == [[1, 3], [5, 7], [9]]


def test_without_drop_last_ranks_get_equally_many_batches():
    order = list(range(11))  # the odd one out (10) is cut: ZeRO-3 forwards are collective
    rank0 = B.rank_micro_batches(order, 0, 2, 4, drop_last=False)
    rank1 = B.rank_micro_batches(order, 1, 2, 4, drop_last=False)
    assert rank0 == [[0, 2, 4, 6], [8]]
    assert rank1 == [[1, 3, 5, 7], [9]]
    assert B.rank_micro_batches(order, 0, 1, 4, drop_last=False) == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10],
    ]


def test_steps_per_epoch():
    assert B.steps_per_epoch(224, 2, 8, 1) == 14  # the tiny configs: 224 pairs, batch 16
    assert B.steps_per_epoch(56, 2, 8, 1) == 3  # 56 // 16
    assert B.steps_per_epoch(10, 2, 2, 2) == 1  # 2 global micro-batches, 2 per step
    assert B.steps_per_epoch(7, 2, 2, 2) == 0
    assert B.steps_per_epoch(16, 1, 2, 4) == 2


def test_iterate_collates_the_selected_rows():
    data = ["a", "b", "c", "d"]
    assert list(B.iterate(data, [[3, 0], [2]], "".join)) == ["da", "c"]


def test_step_sampler_gives_each_step_its_slice_of_the_epoch_order():
    data = [{"input_ids": [0] * n} for n in (3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8)]
    sampler = B.StepSampler.for_dataset(
        data, seed=4, world_size=2, micro_batch_size=1, accumulation=2, group_by_length=True
    )
    assert sampler.lengths == [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8]
    assert sampler.steps_per_epoch == 3
    for epoch in (0, 1):  # grouped by whole steps: 2 ranks x 1 x 2 accumulation
        order = B.epoch_order(12, 4, epoch, lengths=sampler.lengths, batch_size=4)
        for rank in (0, 1):
            micro = B.rank_micro_batches(order, rank, 2, 1)
            for k in range(3):
                assert sampler.micro_batches(3 * epoch + k, rank) == micro[2 * k : 2 * k + 2]


def test_grouped_steps_hold_the_same_examples_however_they_are_split():
    """8 examples per optimiser step as 1 rank x 8, 1 rank x 4 x 2 accumulation, 2 ranks x 4,
    2 ranks x 2 x 2 accumulation: each step trains on the same examples, grouped by length."""
    lengths = [(7 * i) % 23 + 1 for i in range(40)]
    data = [{"input_ids": [0] * n} for n in lengths]

    def steps(world, micro, accum):
        sampler = B.StepSampler.for_dataset(data, 3, world, micro, accum, group_by_length=True)
        return [
            sorted(i for rank in range(world) for mb in sampler.micro_batches(s, rank) for i in mb)
            for s in range(2 * sampler.steps_per_epoch)
        ]

    want = steps(1, 8, 1)
    assert len(want) == 10 and all(len(step) == 8 for step in want)
    for split in ((1, 4, 2), (2, 4, 1), (2, 2, 2)):
        assert steps(*split) == want, split
    # grouped: a step's lengths spread less than a random step's would
    spread = [max(lengths[i] for i in s) - min(lengths[i] for i in s) for s in want]
    plain = B.StepSampler.for_dataset(data, 3, 1, 8, 1, group_by_length=False)
    plain_spread = [
        max(lengths[i] for i in plain.micro_batches(s, 0)[0])
        - min(lengths[i] for i in plain.micro_batches(s, 0)[0])
        for s in range(5)
    ]
    assert sum(spread[:5]) < sum(plain_spread)


def test_to_device_moves_tensors_and_keeps_the_rest():
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long), "prompts": ["a", "b"]}
    moved = B.to_device(batch, "meta")  # any device other than the CPU the collator used
    assert moved["input_ids"].device.type == "meta" and moved["input_ids"].shape == (2, 3)
    assert moved["prompts"] == ["a", "b"] and batch["input_ids"].device.type == "cpu"


def test_eval_micro_batches_are_the_in_order_shares():
    assert B.eval_micro_batches(7, 0, 2, 2) == [[0, 2], [4]]
    assert B.eval_micro_batches(7, 1, 2, 2) == [[1, 3], [5]]  # 6 of 7: equal counts per rank


def test_a_dataset_too_small_for_one_step_names_the_sizes():
    import pytest

    data = [{"input_ids": [1]}] * 5
    from rlhf_dist.data import DataError

    with pytest.raises(
        DataError,
        match=r"data: 5 training examples make no full step of 2 "
        r"ranks × train.micro_batch_size=2 × 2",
    ):
        B.StepSampler.for_dataset(data, 0, 2, 2, 2, group_by_length=False)
