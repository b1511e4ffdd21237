"""The frozen teacher's outputs on the training split, computed once where they fit.

Shape legend: N examples, B batch, T tokens, Tmax longest in the split, Ht teacher hidden
size, nh heads, C classes, Ls student layers.

The teacher's logits on the training set are computed ONCE and cached (N, C); they do not
change because the teacher is frozen. Teacher hidden states / attention scores (only needed
for the intermediate losses) are much bigger (N*T*Ht floats per layer), so they are cached
only when they fit in a memory budget, and otherwise recomputed per batch with a cheap,
cache-free teacher forward (see `TeacherCache`). A hard-only run (alpha = 1, no intermediate
loss) uses nothing of the teacher, so it computes nothing.

On disk (`cached_logits`): the logits for one teacher, split and max_length are saved under a
fingerprint (`teacher_fingerprint`: sha256 over the teacher's weights, config and tokenizer
files, the split's token ids / masks / types, max_length and what is cached) in the run's own
folder (teacher_logits.npy + .json, so `--resume` reuses them) and in the shared cache
`shared_cache_dir()/<fingerprint>/`, so a KD run, its hard-only control, a sweep and a resumed
run compute them once. A changed teacher, tokenizer, data or max_length gives a new fingerprint
and a fresh computation. Hidden states / scores are not cached on disk (too big; see above).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from minibert.batches import make_batch, sorted_batches
from minibert.files import atomic_write_json, atomic_write_npy, cache_dir, sha256_file
from minibert.fast_model import classify_forward
from minibert.model import BertConfig
from minibert.objective import DistillSettings, TeacherBatch
from minibert.progress import progress_bar


TEACHER_CACHE_MB = 256   # cache teacher hidden states / scores only if they fit in this many MB
CACHE_ENV = "MINIBERT_TEACHER_CACHE"       # overrides shared_cache_dir() (the tests use it)
LOGITS_NAME, LOGITS_META = "teacher_logits.npy", "teacher_logits.json"
CACHE_FORMAT = "minibert-teacher-logits-1"


def teacher_forward(params: dict, config: BertConfig, batch, settings: DistillSettings):
    """The frozen teacher on one batch, in eval mode and without caches (cheap inference).

    Inputs: teacher params/config, a batch with .ids/.mask/.token_type_ids (B,T), settings
    (which intermediate outputs are needed). Returns: TeacherBatch (logits (B,C) and, if
    needed, the mapped hidden states / scores). Every teacher forward goes through here,
    which is how the tests count them.
    """
    rel = settings.needs_relation
    logits, out, _ = classify_forward(params, config, batch.ids, batch.mask, batch.token_type_ids,
                                      rng=None, output_hidden=settings.needs_hidden or rel,
                                      output_attentions=settings.needs_scores or rel,
                                      keep_cache=False)
    hidden, scores = select_teacher_outputs(out, settings)
    relation = None
    if rel:
        L = config.num_layers
        values = layer_values(params, config, L - 1, out.hidden_states[L - 1])   # (B,nh,T,hs)
        relation = (out.scores[L - 1], values)
    return TeacherBatch(logits, hidden, scores, relation)


def layer_values(params: dict, config: BertConfig, i: int, x: np.ndarray) -> np.ndarray:
    """The value vectors of encoder block i for its input x (B,T,H): v = x W_v + b_v, per head.
    (The cache-free teacher forward keeps no attention caches, so they are recomputed from the
    block's input hidden state: one (B,T,H) @ (H,H) matmul.) Returns: (B,nh,T,hs)."""
    H, nh = config.hidden_size, config.num_heads
    W = params[f"encoder.{i}.attn.qkv.W"][:, 2 * H:]                  # (H,H), columns q | k | v
    b = params[f"encoder.{i}.attn.qkv.b"][2 * H:]                     # (H,)
    B, T, _ = x.shape
    v = x @ W + b                                                     # (B,T,H)
    return v.reshape(B, T, nh, H // nh).transpose(0, 2, 1, 3)         # -> (B,nh,T,hs)


def select_teacher_outputs(out, settings: DistillSettings) -> tuple[list | None, list | None]:
    """Pick the mapped teacher hidden states / scores out of a teacher BertOutput."""
    g = settings.layer_map
    hidden = [out.hidden_states[t] for t in g] if settings.needs_hidden else None
    scores = [out.scores[t - 1] for t in g[1:]] if settings.needs_scores else None
    return hidden, scores



def intermediate_cache_bytes(split, config: BertConfig, settings: DistillSettings) -> int:
    """Bytes (float32) to keep the mapped teacher hidden states / scores for a whole split,
    each padded to the split's longest sequence Tmax."""
    n, tmax = split.ids.shape
    ls = len(settings.layer_map) - 1
    total = 0
    if settings.needs_hidden:
        total += n * tmax * config.hidden_size * (ls + 1)         # (N,Tmax,Ht) per mapped state
    if settings.needs_scores:
        total += n * config.num_heads * tmax * tmax * ls          # (N,nh,Tmax,Tmax) per block
    if settings.needs_relation:
        total += n * tmax * (config.num_heads * tmax + config.hidden_size)   # last scores + values
    return 4 * total


class TeacherCache:
    """The teacher's outputs on the training split, looked up by example index.

    - logits (N, C): computed ONCE at construction (`teacher_forward` over sorted batches);
      the teacher is frozen, so recomputing them every epoch would only waste time.
    - hidden states / attention scores (only with intermediate losses): kept for the whole
      split when `intermediate_cache_bytes` <= max_mb, otherwise recomputed for each batch
      with a cache-free teacher forward (keep_cache=False). Per-example tensors are padded
      to the split's Tmax; a batch slices [:, :T] (positions past a sequence's end are padding,
      which every loss masks, so the padding length does not matter).

    How big: for 4000 examples at Tmax = 64 with the MiniLM teacher (Ht = 384, nh = 12) and a
    2-layer student, the 3 mapped hidden states take 3*4000*64*384*4 B = 1.2 GB and the 2
    mapped score tensors 2*4000*12*64*64*4 B = 1.6 GB: far over the default 256 MB, so they are
    recomputed per batch: one teacher forward per student step (on the bench's batch 0.22 s,
    against 0.35 s for a 2-layer student's train step). The logits take 4000*3*4 B = 48 KB.
    """

    def __init__(self, params: dict, config: BertConfig, split, settings: DistillSettings,
                 batch_size: int = 64, max_mb: float = TEACHER_CACHE_MB, progress: bool = False,
                 logits: np.ndarray | None = None):
        """logits: the (N, C) logits from an earlier run (e.g. saved by the demo); with them
        and no intermediate losses, the teacher does not run at all."""
        self.params, self.config, self.settings = params, config, settings
        self.batch_size = batch_size
        self.hard_only = settings.hard_only
        if self.hard_only:                   # alpha = 1, no intermediate loss: no teacher at all
            self.intermediate = self.stored = False
            self.logits = self.hidden = self.scores = None
            return
        n, tmax = split.ids.shape
        self.cache_bytes = intermediate_cache_bytes(split, config, settings)
        self.intermediate = (settings.needs_hidden or settings.needs_scores
                             or settings.needs_relation)
        self.stored = self.intermediate and self.cache_bytes <= max_mb * 2**20
        self.hidden = self.scores = self.relation = None
        if logits is not None:
            if logits.shape != (n, config.num_labels):
                raise ValueError(f"logits: expected shape {(n, config.num_labels)} (N, C), "
                                 f"got {logits.shape}")
            self.logits = np.asarray(logits, dtype=np.float32)
            if not self.stored:
                return                       # logits known; intermediate outputs per batch
        self.logits = np.zeros((n, config.num_labels), dtype=np.float32)      # (N,C)
        if self.stored and settings.needs_hidden:
            self.hidden = [np.zeros((n, tmax, config.hidden_size), np.float32)
                           for _ in settings.layer_map]                        # (N,Tmax,Ht) each
        if self.stored and settings.needs_scores:
            self.scores = [np.zeros((n, config.num_heads, tmax, tmax), np.float32)
                           for _ in settings.layer_map[1:]]                    # (N,nh,Tmax,Tmax)
        if self.stored and settings.needs_relation:
            hs = config.hidden_size // config.num_heads
            self.relation = (np.zeros((n, config.num_heads, tmax, tmax), np.float32),
                             np.zeros((n, config.num_heads, tmax, hs), np.float32))
        want = settings if self.stored else settings._replace(hidden_weight=0.0,
                                                              attention_weight=0.0,
                                                              cosine_weight=0.0,
                                                              relation_weight=0.0)
        batches = sorted_batches(split.lengths, batch_size)
        bar = progress_bar(len(batches), "teacher outputs", progress)
        for idx in batches:
            b = make_batch(split, idx)
            tb = teacher_forward(params, config, b, want)
            self.logits[idx] = tb.logits
            T = b.ids.shape[1]
            for j, h in enumerate(tb.hidden or []):
                self.hidden[j][idx, :T] = h                                     # (B,T,Ht)
            for j, s in enumerate(tb.scores or []):
                self.scores[j][idx, :, :T, :T] = s                              # (B,nh,T,T)
            if tb.relation is not None:
                self.relation[0][idx, :, :T, :T] = tb.relation[0]               # (B,nh,T,T)
                self.relation[1][idx, :, :T] = tb.relation[1]                   # (B,nh,T,hs)
            bar.update(1)
        bar.close()

    def describe(self) -> str:
        if self.hard_only:
            return "hard-only (alpha 1, no intermediate loss): the teacher's outputs are not used"
        if not self.intermediate:
            return f"teacher logits cached once ({self.logits.shape[0]} x {self.logits.shape[1]})"
        mb = self.cache_bytes / 2**20
        how = ("cached once" if self.stored else
               "recomputed per batch (cache-free teacher forward), too big to cache")
        return (f"teacher logits cached once; intermediate outputs ({mb:.0f} MB "
                f"for the split) {how}")

    def batch(self, batch) -> TeacherBatch:
        """The teacher's targets for a LabeledBatch (rows batch.index of the split)."""
        idx, T = batch.index, batch.ids.shape[1]
        if self.hard_only:
            return TeacherBatch(None)
        logits = self.logits[idx]                                               # (B,C)
        if not self.intermediate:
            return TeacherBatch(logits)
        if not self.stored:
            fresh = teacher_forward(self.params, self.config, batch, self.settings)
            return fresh._replace(logits=logits)
        hidden = None if self.hidden is None else [h[idx, :T] for h in self.hidden]
        scores = None if self.scores is None else [s[idx, :, :T, :T] for s in self.scores]
        relation = None if self.relation is None else (self.relation[0][idx, :, :T, :T],
                                                       self.relation[1][idx, :, :T])
        return TeacherBatch(logits, hidden, scores, relation)



# ----------------------------------------------------------------------------- on disk

def shared_cache_dir() -> Path:
    """Where teacher logits are shared between runs: $MINIBERT_TEACHER_CACHE, else
    files.cache_dir()/teacher_outputs (~/.cache/minibert/teacher_outputs)."""
    return Path(os.environ.get(CACHE_ENV) or cache_dir() / "teacher_outputs")


def teacher_fingerprint(teacher_dir, split, max_length: int, what: str = "logits") -> str:
    """sha256 (hex) of everything the teacher's cached outputs depend on.

    Inputs: the teacher's model directory (model.safetensors, config.json, tokenizer.json,
    vocab.txt when present), an EncodedSplit (its ids, mask, token types and lengths, in order),
    max_length, what is cached ("logits"). Returns: 64 hex characters.
    """
    d = Path(teacher_dir)
    files = {name: sha256_file(d / name) for name in
             ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt")
             if (d / name).is_file()}
    h = hashlib.sha256()
    for a in (split.ids, split.mask, split.token_type_ids, split.lengths):
        a = np.ascontiguousarray(a, dtype=np.int64)
        h.update(str(a.shape).encode() + a.tobytes())
    record = {"format": CACHE_FORMAT, "files": files, "split": h.hexdigest(),
              "max_length": int(max_length), "what": what}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def _read_cached(folder: Path, fp: str, shape: tuple) -> np.ndarray | None:
    """The logits saved in folder under fingerprint fp, or None (missing, stale or damaged)."""
    try:
        meta = json.loads((folder / LOGITS_META).read_text(encoding="utf-8"))
        if meta.get("format") != CACHE_FORMAT or meta.get("fingerprint") != fp:
            return None
        logits = np.load(folder / LOGITS_NAME, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return logits if logits.shape == shape and logits.dtype == np.float32 else None


def _ours_or_missing(folder: Path) -> bool:
    """True if folder holds no teacher_logits files, or ones this module wrote (never replace
    a file minibert did not write)."""
    npy, meta = folder / LOGITS_NAME, folder / LOGITS_META
    if not npy.exists() and not meta.exists():
        return True
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("format") == CACHE_FORMAT
    except (OSError, ValueError):
        return False


def cached_logits(params: dict, config: BertConfig, split, fingerprint: str, folders: list,
                  batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, Path | None]:
    """The teacher's (N, C) logits on split, read from the first folder that holds them under
    `fingerprint`, else computed once (TeacherCache, logits only); saved into every other folder.

    Inputs: teacher params/config, an EncodedSplit, its teacher_fingerprint, folders to look in
    and save to (e.g. [run folder, shared_cache_dir()/fingerprint]), batch size, progress.
    Returns: (logits float32 (N, C), the folder they were read from or None if computed).
    A folder that cannot be written (read-only cache) is skipped with a note.
    """
    shape = (len(split.labels), config.num_labels)
    folders = [Path(f) for f in folders]
    found = next((f for f in folders if _read_cached(f, fingerprint, shape) is not None), None)
    if found is not None:
        logits = _read_cached(found, fingerprint, shape)
    else:
        logits = TeacherCache(params, config, split, DistillSettings(), batch_size,
                              progress=progress).logits
    for folder in folders:
        if folder == found:
            continue
        if not _ours_or_missing(folder):
            print(f"note: {folder} holds teacher_logits files minibert did not write; "
                  f"not caching there")
            continue
        try:
            (folder / LOGITS_META).unlink(missing_ok=True)   # no old record over the new array
            atomic_write_npy(folder / LOGITS_NAME, logits)
            atomic_write_json(folder / LOGITS_META, {"format": CACHE_FORMAT,
                                                     "fingerprint": fingerprint,
                                                     "shape": list(shape)})
        except OSError as err:
            print(f"note: could not cache the teacher logits in {folder} ({err})")
    return logits, found
