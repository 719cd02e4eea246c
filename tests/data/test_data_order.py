"""The one epoch-order function (launcher data, Ray DPO, PPO prompts and minibatches): fixed
by (seed, epoch, stream), grouped by length on request; the seeds' streams by hand."""

import torch

from rlhf_dist.data import order as O
from rlhf_dist.rollout.replay import epoch_permutation
from rlhf_dist.utils.seeding import DATA_ORDER, MINIBATCH_ORDER, SAMPLING, derive_seed


def test_derive_seed_and_its_streams():
    assert derive_seed(7, 2, DATA_ORDER) == 7 * 100_003 + 2
    assert derive_seed(7, 2, MINIBATCH_ORDER) == derive_seed(7, 2, SAMPLING) == 7 * 1_000_003 + 2


def test_the_minibatch_order_is_the_same_function_on_its_own_stream():
    expected = torch.randperm(20, generator=torch.Generator().manual_seed(7 * 1_000_003 + 2))
    assert O.epoch_order(20, 7, 2, stream=MINIBATCH_ORDER) == expected.tolist()
    assert torch.equal(epoch_permutation(20, 7, 2), expected)
    assert O.epoch_order(20, 7, 2) != expected.tolist()  # the data order is another stream


def test_epoch_order_depends_only_on_seed_and_epoch():
    first = O.epoch_order(50, seed=42, epoch=3)
    torch.manual_seed(123)
    torch.rand(7)  # the global generator's state does not matter
    assert O.epoch_order(50, seed=42, epoch=3) == first
    assert sorted(first) == list(range(50))
    assert O.epoch_order(50, seed=42, epoch=4) != first
    assert O.epoch_order(50, seed=43, epoch=3) != first
    assert O.epoch_order(5, seed=1, epoch=0, shuffle=False) == [0, 1, 2, 3, 4]


def test_epoch_order_matches_its_documented_generator():
    expected = torch.randperm(20, generator=torch.Generator().manual_seed(7 * 100_003 + 2))
    assert O.epoch_order(20, seed=7, epoch=2) == expected.tolist()


def test_group_by_length_by_hand():
    # window = LENGTH_WINDOW batches; here 2 windows of batch 2 with a window of 2 batches
    lengths = [5, 1, 4, 2, 3, 9, 7]
    saved, O.LENGTH_WINDOW = O.LENGTH_WINDOW, 2
    try:
        gen = torch.Generator().manual_seed(0)
        out = O.group_by_length([0, 1, 2, 3, 4, 5, 6], lengths, 2, gen)
        # window [0..3] sorted longest first: [0, 2] [3, 1]; window [4..6]: [5, 6] + short [4]
        batches = [out[0:2], out[2:4], out[4:6], out[6:]]
        assert sorted(batches[:2]) == [[0, 2], [3, 1]]
        assert batches[2:] == [[5, 6], [4]]
        expected = torch.randperm(2, generator=torch.Generator().manual_seed(0)).tolist()
        assert batches[:2] == [[[0, 2], [3, 1]][k] for k in expected]
    finally:
        O.LENGTH_WINDOW = saved


def test_grouped_order_is_a_permutation_fixed_by_seed_and_epoch_with_less_padding():
    lengths = [
        int(x) for x in torch.randint(10, 200, (1000,), generator=torch.Generator().manual_seed(1))
    ]
    order = O.epoch_order(1000, 3, 1, lengths=lengths, batch_size=8)
    assert sorted(order) == list(range(1000))
    assert order == O.epoch_order(1000, 3, 1, lengths=lengths, batch_size=8)
    assert order != O.epoch_order(1000, 3, 2, lengths=lengths, batch_size=8)

    def padded(o):  # positions a batch of 8 pads to
        return sum(8 * max(lengths[i] for i in o[k : k + 8]) for k in range(0, 1000, 8))

    plain = O.epoch_order(1000, 3, 1)
    assert padded(order) < 0.7 * padded(plain)
