"""What `minibert demo` keeps in its --out folder and reuses with --resume: the teacher's
logits on the transfer set, the augmented transfer set (TinyBERT's data augmentation, labelled
by the teacher) and finished students. Each is stored with a key (the settings it was made with)
and reused only while the key matches; a missing or unreadable marker means "make it again"."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from minibert.files import atomic_write_json, atomic_write_npy

STUDENT_MARKER = "demo_student.json"


def read_marker(path: Path) -> dict:
    """A cache marker written by an earlier run; {} if it is missing or unreadable (a stale cache)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def cached_teacher(params, config, split, student_layers: int, out_dir: Path, key: dict,
                   progress: bool = True):
    """distill.TeacherCache on the transfer set (layer map for a student of `student_layers`),
    with its logits saved in out_dir (teacher_logits.npy + .json) and reused while `key`
    (teacher + data settings) matches.
    The teacher runs in batches of 64 (inference keeps no caches, so bigger batches fit)."""
    from minibert.objective import DistillSettings
    from minibert.student import uniform_layer_map
    from minibert.teacher_cache import TeacherCache
    settings = DistillSettings(layer_map=tuple(uniform_layer_map(student_layers,
                                                                 config.num_layers)))
    npy, meta = out_dir / "teacher_logits.npy", out_dir / "teacher_logits.json"
    key = json.loads(json.dumps(key, default=str))
    if npy.is_file() and read_marker(meta).get("key") == key:
        logits = np.load(npy)
        if logits.shape == (len(split.labels), config.num_labels):
            print(f"reusing cached teacher logits {npy} {logits.shape}")
            return TeacherCache(params, config, split, settings, logits=logits), 0.0
    t0 = time.perf_counter()
    cache = TeacherCache(params, config, split, settings, batch_size=64, progress=progress)
    elapsed = time.perf_counter() - t0
    atomic_write_npy(npy, cache.logits)
    atomic_write_json(meta, {"key": key, "time_s": elapsed})
    return cache, elapsed


def augmented_transfer(params, config, tokenizer, split, per_example: int, seed: int,
                       out_dir: Path, key: dict, progress: bool = True):
    """TinyBERT's augmentation of the transfer set: `per_example` word-replacement variants of
    each sentence (minibert.augment, candidates from the teacher's word embeddings; `seed`: the
    demo passes its fixed data seed, the augmentation is data), labelled once by the teacher.
    Saved in out_dir/augmented.safetensors and reused while `key` (teacher + data) matches.
    Returns: (EncodedSplit of the new sentences with labels -1, their logits (M,C), seconds)."""
    from minibert.augment import AugmentSettings, augment_sentences
    from minibert.transfer_set import (load_augmented, save_augmented, teacher_logits,
                                       transfer_split)
    path = out_dir / "augmented.safetensors"
    key = json.loads(json.dumps({**key, "per_example": per_example, "seed": seed}, default=str))
    if path.is_file():
        aug = load_augmented(path)
        if aug.meta.get("key") == key:
            print(f"reusing the augmented transfer set {path} ({len(aug.lengths)} sentences)")
            return transfer_split(aug, int(split.ids.shape[1])), aug.logits, 0.0
    t0 = time.perf_counter()
    aug = augment_sentences(params, config, tokenizer, split.ids, split.mask,
                            split.token_type_ids, AugmentSettings(per_example, seed=seed))
    logits = teacher_logits(params, config, aug.ids, aug.lengths, aug.token_type_ids,
                            progress=progress)
    elapsed = time.perf_counter() - t0
    save_augmented(path, aug._replace(logits=logits, meta={**aug.meta, "key": key,
                                                           "time_s": elapsed}))
    print(f"augmented the transfer set: {len(split.labels)} -> {len(aug.lengths)} new sentences, "
          f"labelled by the teacher ({elapsed:.0f} s)")
    return transfer_split(aug, int(split.ids.shape[1])), logits, elapsed


def reused_student(out_dir: Path, key: dict) -> dict | None:
    """A student this demo folder already trained with the same settings (demo_student.json
    next to its model), as student_run's summary dict; None if there is none."""
    from minibert.weights import load_model
    saved = read_marker(out_dir / STUDENT_MARKER)
    if saved.get("key") != key or not (out_dir / "model.safetensors").is_file():
        return None
    params, config = load_model(out_dir)
    print(f"reusing the student trained with the same settings in {out_dir}")
    return {**saved["summary"], "params": params, "config": config, "reused": True}
