"""Batching: every example exactly once, similar lengths together, padding trimmed, seeded."""

import numpy as np

from minibert.batches import EncodedSplit, bucket_batches, make_batch, sorted_batches, train_batches


def random_split(rng, n, T):
    """An EncodedSplit of n examples with lengths 3..T (padding after each sequence)."""
    lengths = rng.integers(3, T + 1, size=n)
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)      # (N,T)
    ids = rng.integers(5, 50, size=(n, T)) * mask
    return EncodedSplit(ids=ids, mask=mask, token_type_ids=np.zeros_like(ids),
                        labels=rng.integers(0, 2, size=n), lengths=mask.sum(axis=1))


def test_bucket_batches_cover_every_example_once_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=1000)
    batches = bucket_batches(lengths, 16, np.random.default_rng(1), chunk_batches=10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000))
    assert sum(len(b) < 16 for b in batches) == 1            # only one short batch
    # sorting inside chunks makes the padding waste far smaller than random batching
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean([np.ptp(lengths[b]) for b in np.array_split(rng.permutation(1000), 63)])
    assert spread < 0.3 * random_spread
    again = bucket_batches(lengths, 16, np.random.default_rng(1), chunk_batches=10)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))   # seeded


def test_make_batch_trims_padding_to_the_longest_in_the_batch():
    split = random_split(np.random.default_rng(0), 40, 12)
    idx = np.argsort(split.lengths)[:5]
    b = make_batch(split, idx)
    assert b.ids.shape == (5, split.lengths[idx].max())
    assert b.mask[:, -1].any()                                # no all-padding column left
    np.testing.assert_array_equal(b.index, idx)
    np.testing.assert_array_equal(b.labels, split.labels[idx])


def test_sorted_batches_are_in_length_order_and_cover_every_example_once():
    lengths = np.random.default_rng(0).integers(1, 50, size=101)
    batches = sorted_batches(lengths, 10)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(101))
    assert [len(b) for b in batches] == [10] * 10 + [1]
    assert np.all(np.diff(lengths[flat]) >= 0)                 # no shuffling: inference order


def test_train_batches_are_a_function_of_the_rng_only():
    split = random_split(np.random.default_rng(0), 40, 12)
    a = train_batches(split, 8, np.random.default_rng(3))
    b = train_batches(split, 8, np.random.default_rng(3))
    assert len(a) == 5
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.ids, y.ids)
        np.testing.assert_array_equal(x.index, y.index)
