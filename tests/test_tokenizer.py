"""The tokenizer: padding to the longest, the attention mask, pairs, truncation that is reported,
special tokens read from the file, and clear errors. Runs on a tiny tokenizer written by
conftest.write_tiny_tokenizer; the real teacher's is checked against transformers' ids."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import FIXTURES, write_tiny_tokenizer
from minibert.errors import TokenizerError
from minibert.tokenizer import Tokenizer, TruncationWarning, check_tokenizer_fits


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return Tokenizer.from_dir(tiny_tokenizer_dir)


def test_special_ids_come_from_the_file(tok, tmp_path):
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.vocab_size == 100
    # a file with other names and positions for the special tokens
    other = Tokenizer.from_dir(write_tiny_tokenizer(tmp_path, specials=["<pad>", "<unk>", "<s>", "</s>", "<mask>"]))
    assert other.tokenize("cat") == ["cat"]
    ids = other.encode(["the cat", "the"]).ids
    assert (ids[0, 0], ids[0, 3], ids[1, 3]) == (other.cls_id, other.sep_id, other.pad_id)
    assert other.id_to_token(other.mask_id) == "<mask>"


def test_batch_is_padded_to_the_longest_with_a_mask(tok):
    batch = tok.encode(["the cat sat on the mat", "a dog", "hello"])
    assert all(a.dtype == np.int64 for a in batch)
    assert batch.ids.shape == batch.mask.shape == batch.token_type_ids.shape == (3, 8)
    np.testing.assert_array_equal(batch.mask.sum(1), [8, 4, 3])          # [CLS] words [SEP]
    assert (batch.ids[batch.mask == 0] == tok.pad_id).all()
    assert batch.ids[2, 1] == tok.unk_id                                   # "hello" is not in the vocab
    assert (batch.token_type_ids == 0).all()
    assert (batch.ids[:, 0] == tok.cls_id).all()
    assert batch.ids[1, 3] == tok.sep_id


def test_fixed_padding_in_the_file_is_ignored(tmp_path):
    fixed = Tokenizer.from_dir(write_tiny_tokenizer(tmp_path, fixed_padding=40))
    assert fixed.encode(["the cat"]).ids.shape == (1, 4)


def test_pairs_get_token_type_ids(tok):
    batch = tok.encode(["the cat", "a dog sat"], pairs=["sat on the mat", "good"])
    tokens = [tok.id_to_token(i) for i in batch.ids[0]]
    assert tokens == ["[CLS]", "the", "cat", "[SEP]", "sat", "on", "the", "mat", "[SEP]"]
    np.testing.assert_array_equal(batch.token_type_ids[0], [0, 0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(batch.token_type_ids[1], [0, 0, 0, 0, 0, 1, 1, 0, 0])  # padding: 0
    np.testing.assert_array_equal(batch.mask[1], [1, 1, 1, 1, 1, 1, 1, 0, 0])


def test_truncation_is_reported_with_the_count(tok):
    texts = ["the cat sat on the mat", "a dog", "one two three four five six seven"]
    with pytest.warns(TruncationWarning, match="2 of 3 sequence.*max_length=6"):
        batch = tok.encode(texts, max_length=6)
    assert tok.last_truncated == 2
    assert batch.ids.shape == (3, 6)
    assert batch.ids[0, -1] == tok.sep_id                                  # still ends with [SEP]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                     # no warning when nothing is cut
        tok.encode(texts, max_length=64)
    assert tok.last_truncated == 0


def test_pair_truncation_cuts_the_longer_segment_first(tok):
    with pytest.warns(TruncationWarning):
        batch = tok.encode(["one two three four five six"], pairs=["cat"], max_length=8)
    tokens = [tok.id_to_token(i) for i in batch.ids[0]]
    assert tokens == ["[CLS]", "one", "two", "three", "four", "[SEP]", "cat", "[SEP]"]


def test_tokenize_and_decode(tok):
    assert tok.tokenize("The playing cats") == ["the", "play", "##ing", "cat", "##s"]
    ids = tok.encode(["the playing cats"]).ids[0]
    assert tok.decode(ids) == "the playing cats"


@pytest.mark.parametrize("args,match", [
    (([],), "texts: expected at least one"),
    (([3],), "texts: expected strings"),
    ((["a", "b"], ["x"]), "pairs: expected 2"),
    ((["a"], None, 2), "max_length"),
])
def test_bad_arguments_are_named(tok, args, match):
    with pytest.raises(ValueError, match=match):
        tok.encode(*args)


def test_missing_or_unreadable_tokenizer_is_a_tokenizer_error(tmp_path):
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        Tokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{ this is not a tokenizer")
    with pytest.raises(TokenizerError, match="not a readable tokenizer"):
        Tokenizer.from_dir(tmp_path)


def test_vocab_larger_than_the_embedding_table_is_refused(tmp_path):
    from minibert.model import BertConfig

    big = Tokenizer.from_dir(write_tiny_tokenizer(tmp_path, vocab_size=150))
    check_tokenizer_fits(big, BertConfig(vocab_size=150, hidden_size=8, num_heads=2))
    with pytest.raises(TokenizerError, match="150 tokens.*vocab_size=100"):
        check_tokenizer_fits(big, BertConfig(vocab_size=100, hidden_size=8, num_heads=2))


@pytest.mark.teacher
def test_teacher_tokenizer_matches_transformers_ids(teacher_dir):
    """Same ids, mask and token types as transformers' BertTokenizerFast (stored by make_reference.py)."""
    ref = np.load(FIXTURES / "teacher_reference.npz")
    tok = Tokenizer.from_dir(teacher_dir)
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    T = ref["ids"].shape[1]
    for i, (text, pair) in enumerate(zip(ref["texts"], ref["pairs"])):
        b = tok.encode([str(text)], pairs=[str(pair)] if pair else None)
        n = b.ids.shape[1]
        assert n == ref["mask"][i].sum()
        np.testing.assert_array_equal(b.ids[0], ref["ids"][i, :n])
        np.testing.assert_array_equal(b.token_type_ids[0], ref["token_type_ids"][i, :n])
    singles = [str(t) for t, p in zip(ref["texts"], ref["pairs"]) if not p]
    rows = [i for i, p in enumerate(ref["pairs"]) if not p]
    b = tok.encode(singles)                                   # one padded batch, file padding ignored
    assert b.ids.shape == (len(singles), T)
    np.testing.assert_array_equal(b.ids, ref["ids"][rows])
    np.testing.assert_array_equal(b.mask, ref["mask"][rows])
