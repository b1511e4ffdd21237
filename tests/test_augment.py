"""Tests for minibert/augment.py: which words are replaced, the neighbour search against a brute-force
one, masked-LM candidates against an unbatched forward, determinism, the stored teacher logits against
one-sentence forwards, the file's fingerprint check and bad input."""

import dataclasses

import numpy as np
import pytest

from minibert.augment import (AugmentSettings, augment_sentences, check_augment_settings,
                              embedding_neighbours, mlm_candidates, sentence_variants,
                              sentence_words, vocabulary)
from minibert.transfer_set import (check_augmented_for, fingerprint, load_augmented, save_augmented,
                                   teacher_logits)
from minibert.errors import MinibertError
from minibert.model import bert_forward, classify_forward, init_params, mlm_forward
from minibert.tokenizer import Tokenizer

import tiny


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return Tokenizer.from_dir(tiny.write_tiny_tokenizer(tmp_path_factory.mktemp("tok")))


def _ids(tok, text):
    return tok.encode([text]).ids[0]


def test_words_group_pieces_and_skip_specials_punctuation_unknowns(tok):
    vocab = vocabulary(tok, len(tiny.VOCAB))
    ids = _ids(tok, "i loved the movies, really!! 42 goodly")
    # [CLS] i [UNK] the movie ##s , really ! ! [UNK] good ##ly [SEP]
    w = sentence_words(ids, vocab)
    assert [tuple(tok.id_to_token(i) for i in k) for k in w.keys] == [
        ("i",), ("the",), ("movie", "##s"), ("really",), ("good", "##ly")]
    assert w.word_of.tolist() == [-1, 0, -1, 1, 2, 2, -1, 3, -1, -1, -1, 4, 4, -1]
    assert w.positions.tolist() == [1, 3, 4, 7, 11]


def test_embedding_neighbours_match_a_brute_force_search():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((40, 8)).astype(np.float32)
    allowed = np.ones(40, bool)
    allowed[[0, 1, 7]] = False
    keys = [(5,), (9,), (12, 30), (7,), (5,)]
    got = embedding_neighbours(table, keys, allowed, k=4, chunk=2)     # chunk 2: several products
    assert set(got) == {(5,), (9,), (12, 30), (7,)}
    for key, ids in got.items():
        q = table[list(key)].mean(axis=0)
        sims = []
        for v in range(40):
            if not allowed[v] or (len(key) == 1 and v == key[0]):
                continue
            e = table[v]
            sims.append((-float(q @ e) / float(np.linalg.norm(q) * np.linalg.norm(e)), v))
        assert ids.tolist() == [v for _, v in sorted(sims)[:4]], key


def test_embedding_neighbours_find_a_planted_synonym():
    rng = np.random.default_rng(1)
    table = rng.standard_normal((30, 16))
    table[20] = 3.0 * table[10] + 0.01 * rng.standard_normal(16)       # same direction, other length
    got = embedding_neighbours(table, [(10,), (20,)], np.ones(30, bool), k=1)
    assert got[(10,)].tolist() == [20] and got[(20,)].tolist() == [10]


def _words_for(tok, text):
    vocab = vocabulary(tok, len(tiny.VOCAB))
    ids = _ids(tok, text)
    return ids, sentence_words(ids, vocab)


def test_variants_replace_only_words_with_their_candidates(tok):
    ids, w = _words_for(tok, "the movie was really good, i saw it today!")
    W, K = len(w.keys), 3
    cand = 10 + np.arange(W * K).reshape(W, K) % 20                      # arbitrary vocabulary ids
    n_cand = np.full(W, K)
    n_cand[0] = 0                                                        # word 0 has no candidates
    s = AugmentSettings(per_example=50, p=0.5, candidates=K)
    out = sentence_variants(ids, np.zeros_like(ids), w, cand, n_cand, s, np.random.default_rng(0))
    assert 1 < len(out) <= 50
    assert len({r.tobytes() for r, _ in out} | {ids.tobytes()}) == len(out) + 1   # all distinct
    for row, types in out:
        assert len(row) == len(ids) and not types.any()                 # single-piece words only
        for t in range(len(ids)):
            j = w.word_of[t]
            if j < 0 or j == 0:
                assert row[t] == ids[t]                                  # specials, punctuation, word 0
            else:
                assert row[t] == ids[t] or row[t] in cand[j]


def test_variants_of_a_multi_piece_word_become_one_token(tok):
    ids, w = _words_for(tok, "movies")                                   # [CLS] movie ##s [SEP]
    s = AugmentSettings(per_example=3, p=1.0, candidates=1)
    out = sentence_variants(ids, np.zeros_like(ids), w, np.array([[8]]), np.array([1]), s,
                            np.random.default_rng(0))
    assert [r.tolist() for r, _ in out] == [[ids[0], 8, ids[-1]]]        # 3 identical: kept once


def test_variants_are_deterministic_per_seed_and_p_matters(tok):
    ids, w = _words_for(tok, "the movie was really good and the acting was great")
    W = len(w.keys)
    cand, n_cand = np.tile(np.arange(10, 16), (W, 1)), np.full(W, 6)
    s = AugmentSettings(per_example=20, p=0.4, candidates=6)

    def run(seed, p=0.4):
        return [r.tolist() for r, _ in sentence_variants(ids, np.zeros_like(ids), w, cand, n_cand,
                                                         s._replace(p=p),
                                                         np.random.default_rng(seed))]
    assert run(0) == run(0) and run(0) != run(1)
    changed = lambda rows: np.mean([np.mean(np.array(r) != ids) for r in rows])
    assert changed(run(0, p=0.1)) < changed(run(0, p=0.9))


def test_mlm_candidates_match_one_unbatched_forward(tiny_mlm_dir, tiny_tokenizer_dir):
    from minibert.weights import load_model
    params, config = load_model(tiny_mlm_dir)
    rng = np.random.default_rng(0)
    sentences = [np.concatenate([[2], rng.integers(5, 60, size=n), [3]]) for n in (3, 7, 5, 9)]
    targets = [(0, 1), (1, 4), (1, 6), (2, 2), (3, 9), (3, 1)]
    allowed = np.ones(config.vocab_size, bool)
    allowed[:5] = False
    allowed[70:] = False
    got = mlm_candidates(params, config, sentences, targets, 4, allowed, k=5, batch_size=4)
    for (s, p), row in zip(targets, got):
        ids = sentences[s].copy()[None]
        original = ids[0, p]
        ids[0, p] = 4
        out, _ = bert_forward(params, config, ids)                       # one sentence, no padding
        logits = mlm_forward(params, config, out.last)[0][0, p].astype(np.float64)
        logits[~allowed] = -np.inf
        logits[original] = -np.inf
        assert row.tolist() == np.argsort(-logits, kind="stable")[:5].tolist()


def test_mlm_candidates_refuse_a_model_without_mlm_head(tiny_cls_dir):
    from minibert.weights import load_model
    params, config = load_model(tiny_cls_dir)
    with pytest.raises(MinibertError, match="no masked-LM head"):
        mlm_candidates(params, config, [np.array([2, 9, 3])], [(0, 1)], 4,
                       np.ones(config.vocab_size, bool), 3)


def _teacher(mlm_head=False, seed=0):
    config = tiny.tiny_config(num_labels=2, mlm_head=mlm_head)
    return init_params(config, np.random.default_rng(seed)), config


def _encoded(tok, texts):
    enc = tok.encode(texts)
    return enc.ids, enc.mask, enc.token_type_ids


@pytest.mark.parametrize("mlm_head", [False, True])
def test_augment_sentences_and_logits_match_one_sentence_forwards(tok, mlm_head):
    params, config = _teacher(mlm_head)
    texts = ["the movie was good", "i hate this film , it was really bad", "great acting"]
    ids, mask, tt = _encoded(tok, texts)
    s = AugmentSettings(per_example=4, p=0.5, candidates=3, seed=1)
    aug = augment_sentences(params, config, tok, ids, mask, tt, s)
    assert aug.meta["method"].startswith("masked-LM" if mlm_head else "embedding")
    assert aug.meta["n_augmented"] == len(aug.lengths) > 0
    assert np.bincount(aug.source, minlength=3).max() <= 4
    again = augment_sentences(params, config, tok, ids, mask, tt, s)
    assert np.array_equal(again.ids, aug.ids) and np.array_equal(again.source, aug.source)
    logits = teacher_logits(params, config, aug.ids, aug.lengths, aug.token_type_ids, batch_size=2)
    for m in range(len(aug.lengths)):
        L = aug.lengths[m]
        one, _, _ = classify_forward(params, config, aug.ids[m:m + 1, :L], np.ones((1, L), int))
        np.testing.assert_allclose(logits[m], one[0], rtol=1e-4, atol=1e-5)
        assert aug.ids[m, 0] == tok.cls_id and aug.ids[m, L - 1] == tok.sep_id


def test_per_example_zero_and_other_bad_settings_are_refused():
    with pytest.raises(MinibertError, match="--per-example.*got 0"):
        check_augment_settings(AugmentSettings(per_example=0))
    with pytest.raises(MinibertError, match="--p"):
        check_augment_settings(AugmentSettings(p=0.0))
    with pytest.raises(MinibertError, match="--candidates"):
        check_augment_settings(AugmentSettings(candidates=0))


def _saved(tmp_path, tok, teacher_dir):
    params, config = _teacher()
    ids, mask, tt = _encoded(tok, ["the movie was good", "a bad film"])
    aug = augment_sentences(params, config, tok, ids, mask, tt, AugmentSettings(per_example=3))
    logits = teacher_logits(params, config, aug.ids, aug.lengths, aug.token_type_ids)
    aug = aug._replace(logits=logits, meta={**aug.meta, "fingerprint": fingerprint(teacher_dir),
                                             "teacher": str(teacher_dir)})
    path = tmp_path / "aug.safetensors"
    save_augmented(path, aug)
    return path, aug


def test_file_round_trip_and_fingerprint_check(tmp_path, tok):
    teacher = tiny.make_tiny_model_dir(tmp_path / "teacher", num_labels=2, finetuned=True)
    path, aug = _saved(tmp_path, tok, teacher)
    back = load_augmented(path)
    for name in ("ids", "token_type_ids", "lengths", "source", "logits"):
        assert np.array_equal(getattr(back, name), getattr(aug, name)), name
    check_augmented_for(back, teacher)                                   # same teacher: fine
    other = tiny.make_tiny_model_dir(tmp_path / "other", num_labels=2, finetuned=True, seed=1)
    with pytest.raises(MinibertError, match="another teacher"):
        check_augmented_for(back, other)
    retok = tmp_path / "retok"                                           # same weights, other tokenizer
    retok.mkdir()
    for f in ("model.safetensors", "config.json"):
        (retok / f).write_bytes((teacher / f).read_bytes())
    (retok / "tokenizer.json").write_text((teacher / "tokenizer.json").read_text().replace(
        '"movie"', '"movies"'))
    with pytest.raises(MinibertError, match="another tokenizer"):
        check_augmented_for(back, retok)


def test_unreadable_or_foreign_files_are_refused(tmp_path):
    from safetensors.numpy import save_file
    with pytest.raises(MinibertError, match="no such file"):
        load_augmented(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(MinibertError, match="not a readable augmentation file"):
        load_augmented(junk)
    foreign = tmp_path / "model.safetensors"
    save_file({"x": np.zeros(3, np.float32)}, str(foreign))
    with pytest.raises(MinibertError, match="not an augmentation file"):
        load_augmented(foreign)


def test_multi_piece_skip_leaves_words_of_several_pieces_alone(tok):
    params, config = _teacher()
    ids, mask, tt = _encoded(tok, ["movies movies movies"])               # 3 words of 2 pieces each
    s = AugmentSettings(per_example=5, p=1.0, candidates=3)
    assert augment_sentences(params, config, tok, ids, mask, tt, s).meta["n_augmented"] > 0
    skipped = augment_sentences(params, config, tok, ids, mask, tt, s._replace(multi_piece="skip"))
    assert skipped.meta["n_augmented"] == 0
    with pytest.raises(MinibertError, match="--multi-piece"):
        check_augment_settings(s._replace(multi_piece="drop"))


def test_top_k_columns_by_blocks_equals_a_full_sort():
    from minibert.augment import top_k_columns
    rng = np.random.default_rng(3)
    S = rng.standard_normal((50, 3001)).astype(np.float32)
    S[7, 2990:] = 10.0 + np.arange(11)                                   # all of row 7's best in the last block
    for k in (1, 5, 15):
        got = np.sort(top_k_columns(S, k, block=16), axis=1)
        want = np.sort(np.argsort(-S, axis=1, kind="stable")[:, :k], axis=1)
        assert np.array_equal(got, want), k


def test_naive_neighbour_search_agrees_with_the_batched_one():
    # the benchmark's per-occurrence baseline must compute the same lists it is compared with
    from minibert.bench_augment import naive_neighbours
    rng = np.random.default_rng(4)
    table = rng.standard_normal((60, 8))
    allowed = np.ones(60, bool)
    allowed[:3] = False
    keys = [(5,), (9, 40), (5,)]
    fast = embedding_neighbours(table, keys, allowed, k=6)
    for key, ids in zip(keys, naive_neighbours(table, keys, allowed, 6)):
        assert ids.tolist() == fast[key].tolist()


def test_augment_bench_runs_and_formats(tmp_path):
    from minibert.bench_augment import format_augment_bench, run_augment_bench
    model = tiny.make_tiny_model_dir(tmp_path / "m")                     # no head: one is added
    data = tiny.write_tiny_dataset(tmp_path / "d.csv", n=40)
    r = run_augment_bench(model, data=f"csv:{data}", n=20, per_example=3, naive_n=5)
    assert r["sentences"] == 20 and 0 < r["augmented"] <= 60 and r["naive_n"] == 5
    assert "sentences/s" in format_augment_bench(r)
