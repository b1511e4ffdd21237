"""The augmentation file (`minibert augment --out FILE`, `minibert distill --transfer FILE`).

Shape legend: M augmented sentences, T tokens (the longest of them), C classes.

A safetensors file (no pickle): ids (M,T) int32, token_type_ids (M,T) int8, lengths (M,) int32,
source (M,) int64 (the training example each sentence came from) and the teacher's logits (M,C)
float32, with a JSON record under META_KEY in the metadata: the settings, counts, timings, a few
sample pairs, and the fingerprints of the teacher (model.safetensors + config.json) and of its
tokenizer (tokenizer.json). Logits belong to one teacher and ids to one vocabulary, so distill
refuses a file whose fingerprint is not its teacher's, and one made from other training examples.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minibert.errors import MinibertError
from minibert.fast_model import classify_forward
from minibert.model import BertConfig

AUGMENT_FORMAT = 1
META_KEY = "minibert_augment"


class Augmented(NamedTuple):
    """M augmented sentences (padded to the longest) and what they came from."""
    ids: np.ndarray               # (M,T) int64
    token_type_ids: np.ndarray    # (M,T) int64
    lengths: np.ndarray           # (M,) int64 real tokens
    source: np.ndarray            # (M,) int64 index of the source example
    logits: np.ndarray | None     # (M,C) float32 teacher logits (None until labelled)
    meta: dict                    # settings, fingerprints, timings, samples



def teacher_logits(params: dict, config: BertConfig, ids: np.ndarray, lengths: np.ndarray,
                   token_type_ids: np.ndarray, batch_size: int = 64,
                   progress: bool = False) -> np.ndarray:
    """The frozen teacher's logits for M padded sentences, in length-sorted batches, eval mode,
    no caches. Inputs: ids / token_type_ids (M,T), lengths (M,). Returns: (M,C) float32."""
    from minibert.progress import progress_bar
    M = len(lengths)
    out = np.zeros((M, config.num_labels), np.float32)                   # (M,C)
    order = np.argsort(lengths, kind="stable")
    bar = progress_bar(-(-M // batch_size), "teacher labels", progress)
    for b0 in range(0, M, batch_size):
        idx = order[b0:b0 + batch_size]
        T = int(lengths[idx].max())
        mask = (np.arange(T)[None, :] < lengths[idx, None]).astype(np.int64)   # (B,T)
        logits, _, _ = classify_forward(params, config, ids[idx, :T], mask,
                                        token_type_ids[idx, :T], rng=None, keep_cache=False)
        out[idx] = logits
        bar.update(1)
    bar.close()
    return out


# ----------------------------------------------------------------------------- fingerprints and files

def _sha256_files(paths) -> str:
    from minibert.files import sha256_file
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + sha256_file(p).encode() + b"\0")
    return h.hexdigest()


def fingerprint(model_dir) -> dict:
    """{"teacher": sha256 over model.safetensors + config.json, "tokenizer": sha256 of
    tokenizer.json}: what an augmentation file's logits and ids depend on."""
    d = Path(model_dir)
    return {"teacher": _sha256_files([d / "model.safetensors", d / "config.json"]),
            "tokenizer": _sha256_files([d / "tokenizer.json"])}


def examples_fingerprint(examples) -> str:
    """sha256 of the texts (and pairs) of a list of Example, in order: which examples were augmented."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex.text.encode("utf-8") + b"\x1f" + (ex.text_pair or "").encode("utf-8") + b"\x1e")
    return h.hexdigest()


def save_augmented(path, aug: Augmented) -> None:
    """Write the file atomically (safetensors; JSON record under META_KEY in the metadata)."""
    from safetensors.numpy import save_file
    from minibert.files import atomic_write
    if aug.logits is None:
        raise ValueError("save_augmented: the sentences have no teacher logits yet")
    tensors = {"ids": aug.ids.astype(np.int32), "token_type_ids": aug.token_type_ids.astype(np.int8),
               "lengths": aug.lengths.astype(np.int32), "source": aug.source.astype(np.int64),
               "logits": np.ascontiguousarray(aug.logits, np.float32)}
    meta = {META_KEY: json.dumps({**aug.meta, "format": AUGMENT_FORMAT}, default=str)}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_augmented(path) -> Augmented:
    """Read a file written by save_augmented. MinibertError if it is missing, unreadable or not
    an augmentation file."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise MinibertError(f"--transfer {path}: no such file (make one with minibert augment)")
    try:
        with safe_open(str(path), framework="np") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:    # safetensors raises several types; one clear message
        raise MinibertError(f"--transfer {path}: not a readable augmentation file ({err})") from None
    need = {"ids", "token_type_ids", "lengths", "source", "logits"}
    if raw is None or not need <= set(tensors):
        raise MinibertError(f"--transfer {path}: not an augmentation file written by "
                            f"minibert augment (no {META_KEY} record or tensors {sorted(need)})")
    meta = json.loads(raw)
    if meta.get("format") != AUGMENT_FORMAT:
        raise MinibertError(f"--transfer {path}: format {meta.get('format')!r}, this minibert "
                            f"reads format {AUGMENT_FORMAT}; run minibert augment again")
    return Augmented(tensors["ids"].astype(np.int64), tensors["token_type_ids"].astype(np.int64),
                     tensors["lengths"].astype(np.int64), tensors["source"].astype(np.int64),
                     tensors["logits"].astype(np.float32), meta)


def check_augmented_for(aug: Augmented, teacher_dir, path="FILE") -> None:
    """MinibertError unless `aug` was made by this teacher with this tokenizer (its logits would
    be another model's, its ids another vocabulary's)."""
    want = fingerprint(teacher_dir)
    got = aug.meta.get("fingerprint", {})
    for what in ("teacher", "tokenizer"):
        if got.get(what) != want[what]:
            raise MinibertError(
                f"--transfer {path} was made by another {what} ({aug.meta.get('teacher')!r}, "
                f"{what} fingerprint {str(got.get(what))[:12]}) than --teacher {teacher_dir} "
                f"({want[what][:12]}); its teacher logits and token ids do not belong to this "
                f"teacher: run minibert augment --teacher {teacher_dir} again")


def transfer_split(aug: Augmented, max_length: int):
    """The augmented sentences as a batches.EncodedSplit with labels -1 (no gold label: only the
    teacher's logits teach them). MinibertError if they are longer than max_length (the file was
    made with a larger --max-length than this run's; its logits belong to the untruncated text)."""
    from minibert.batches import EncodedSplit
    longest = int(aug.lengths.max()) if len(aug.lengths) else 0
    if longest > max_length:
        raise MinibertError(f"--transfer: the file holds sentences of {longest} tokens (made with "
                            f"--max-length {aug.meta.get('max_length')}), longer than this run's "
                            f"--max-length {max_length}; use the same --max-length for both")
    T = max(longest, 1)
    mask = (np.arange(T)[None, :] < aug.lengths[:, None]).astype(np.int64)    # (M,T)
    return EncodedSplit(ids=aug.ids[:, :T], mask=mask, token_type_ids=aug.token_type_ids[:, :T],
                        labels=np.full(len(aug.lengths), -1, np.int64), lengths=aug.lengths)


def concat_splits(a, b):
    """Two EncodedSplits as one (rows of a, then rows of b), padded to the longer Tmax."""
    from minibert.batches import EncodedSplit
    T = max(a.ids.shape[1], b.ids.shape[1])

    def pad(x):                                                          # (N,t) -> (N,T) with zeros
        return np.pad(x, ((0, 0), (0, T - x.shape[1])))
    return EncodedSplit(ids=np.concatenate([pad(a.ids), pad(b.ids)]),
                        mask=np.concatenate([pad(a.mask), pad(b.mask)]),
                        token_type_ids=np.concatenate([pad(a.token_type_ids), pad(b.token_type_ids)]),
                        labels=np.concatenate([a.labels, b.labels]),
                        lengths=np.concatenate([a.lengths, b.lengths]))


def read_transfer(path, teacher_dir, train_examples, num_labels: int, max_length: int):
    """`distill --transfer PATH`: the checked file as (EncodedSplit with labels -1, logits (M,C)).

    MinibertError when the file is unreadable, was made by another teacher or tokenizer, from
    other training examples (another --data / --limit / --seed), or with longer sentences."""
    aug = load_augmented(path)
    check_augmented_for(aug, teacher_dir, path)
    if aug.meta.get("source_fingerprint") != examples_fingerprint(train_examples):
        raise MinibertError(
            f"--transfer {path} augments other training examples ({aug.meta.get('n_source')} from "
            f"--data {aug.meta.get('data')!r}, --limit {aug.meta.get('limit')}, --seed "
            f"{aug.meta.get('seed')}) than this run's {len(train_examples)}; make it with the "
            f"same --data, --limit and --seed as distill")
    if aug.logits.shape[1] != num_labels:
        raise MinibertError(f"--transfer {path}: {aug.logits.shape[1]} classes of teacher logits, "
                            f"the teacher has {num_labels}")
    return transfer_split(aug, max_length), aug.logits
