"""Batching: tokenise a split once, then cut it into padded batches.

Shape legend: N examples in a split, B batch, T tokens (longest in the batch), Tmax longest in
the split.

- `encode_examples` tokenises a list of data.Example once: every split becomes padded int64
  arrays plus lengths (EncodedSplit).
- `make_batch` gathers some examples and trims the padding to the longest of them.
- Training (`train_batches`): each epoch, `bucket_batches` shuffles, sorts by length inside
  chunks of ~50 batches and shuffles the batches, so a batch holds similar lengths and is
  padded only to its longest. `epoch_rngs` gives each epoch its shuffle and dropout
  randomness from (seed, epoch) only, which is what makes a resumed run replay exactly.
- Inference (`sorted_batches`): batches of similar length, in a fixed order.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from minibert.errors import DataError


class EncodedSplit(NamedTuple):
    """A tokenised split, padded once to its longest sequence (batches trim it further)."""
    ids: np.ndarray             # (N, Tmax) int64
    mask: np.ndarray            # (N, Tmax) int64, 1 = real token, 0 = padding
    token_type_ids: np.ndarray  # (N, Tmax) int64
    labels: np.ndarray          # (N,) int64
    lengths: np.ndarray         # (N,) int64, real tokens per example


class LabeledBatch(NamedTuple):
    """What step_fn receives. `index` says which examples of the split these are
    (distillation uses it to look up cached teacher outputs)."""
    ids: np.ndarray             # (B, T) int64
    mask: np.ndarray            # (B, T) int64
    token_type_ids: np.ndarray  # (B, T) int64
    labels: np.ndarray          # (B,) int64
    index: np.ndarray           # (B,) int64 positions in the EncodedSplit


def encode_examples(tokenizer, examples, max_length: int) -> EncodedSplit:
    """Tokenise a list of data.Example once.

    Inputs: tokenizer (minibert.tokenizer.Tokenizer), examples (list of Example with .text,
    .label, .text_pair), max_length (truncation, in tokens including [CLS]/[SEP]).
    Returns: EncodedSplit. Raises DataError on an empty list.
    """
    if len(examples) == 0:
        raise DataError("no examples to encode (the split is empty)")
    texts = [ex.text for ex in examples]
    has_pair = [ex.text_pair is not None for ex in examples]
    if any(has_pair) and not all(has_pair):
        raise DataError("some examples have a text pair and some do not")
    pairs = [ex.text_pair for ex in examples] if has_pair[0] else None
    enc = tokenizer.encode(texts, pairs=pairs, max_length=max_length)
    labels = np.asarray([ex.label for ex in examples], dtype=np.int64)      # (N,)
    mask = np.asarray(enc.mask, dtype=np.int64)
    return EncodedSplit(ids=np.asarray(enc.ids, dtype=np.int64), mask=mask,
                        token_type_ids=np.asarray(enc.token_type_ids, dtype=np.int64),
                        labels=labels, lengths=mask.sum(axis=1))


def make_batch(split: EncodedSplit, index: np.ndarray) -> LabeledBatch:
    """Gather examples `index` and trim the padding to the longest of them."""
    index = np.asarray(index, dtype=np.int64)
    T = int(split.lengths[index].max())
    return LabeledBatch(ids=split.ids[index, :T], mask=split.mask[index, :T],       # (B, T)
                        token_type_ids=split.token_type_ids[index, :T],
                        labels=split.labels[index], index=index)


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   chunk_batches: int = 50) -> list[np.ndarray]:
    """Sort-ish bucketing: shuffle, sort by length inside chunks of `chunk_batches` batches,
    cut into batches, shuffle the batch order. Returns a list of index arrays covering every
    example exactly once (only the last batch may be short)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = rng.permutation(len(lengths))
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """For inference: batches of similar length, deterministic, no shuffling."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class Batches(Sequence):
    """A list of LabeledBatch that gathers each batch only when it is used."""

    def __init__(self, split: EncodedSplit, index_lists: list[np.ndarray]):
        self.split, self.index_lists = split, index_lists

    def __len__(self) -> int:
        return len(self.index_lists)

    def __getitem__(self, i: int) -> LabeledBatch:
        return make_batch(self.split, self.index_lists[i])


def train_batches(split: EncodedSplit, batch_size: int, rng: np.random.Generator) -> Batches:
    """One epoch of bucketed, shuffled training batches."""
    return Batches(split, bucket_batches(split.lengths, batch_size, rng))


def epoch_rngs(seed: int, epoch: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(shuffle_rng, dropout_rng) for an epoch, a function of (seed, epoch) only: this is
    what makes a resumed run replay exactly."""
    return (np.random.default_rng([seed, epoch, 0]), np.random.default_rng([seed, epoch, 1]))

