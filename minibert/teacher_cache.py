"""The frozen teacher's outputs on the training split, computed once where they fit.

Shape legend: N examples, B batch, T tokens, Tmax longest in the split, Ht teacher hidden
size, nh heads, C classes, Ls student layers.

The teacher's logits on the training set are computed ONCE and cached (N, C); they do not
change because the teacher is frozen. Teacher hidden states / attention scores (only needed
for the intermediate losses) are much bigger (N*T*Ht floats per layer), so they are cached
only when they fit in a memory budget, and otherwise recomputed per batch with a cheap,
cache-free teacher forward (see `TeacherCache`).
"""

from __future__ import annotations

import numpy as np

from minibert.batches import make_batch, sorted_batches
from minibert.fast_model import classify_forward
from minibert.model import BertConfig
from minibert.objective import DistillSettings, TeacherBatch
from minibert.progress import progress_bar


TEACHER_CACHE_MB = 256   # cache teacher hidden states / scores only if they fit in this many MB


def teacher_forward(params: dict, config: BertConfig, batch, settings: DistillSettings):
    """The frozen teacher on one batch, in eval mode and without caches (cheap inference).

    Inputs: teacher params/config, a batch with .ids/.mask/.token_type_ids (B,T), settings
    (which intermediate outputs are needed). Returns: TeacherBatch (logits (B,C) and, if
    needed, the mapped hidden states / scores). Every teacher forward goes through here,
    which is how the tests count them.
    """
    logits, out, _ = classify_forward(params, config, batch.ids, batch.mask, batch.token_type_ids,
                                      rng=None, output_hidden=settings.needs_hidden,
                                      output_attentions=settings.needs_scores, keep_cache=False)
    hidden, scores = select_teacher_outputs(out, settings)
    return TeacherBatch(logits, hidden, scores)


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
        n, tmax = split.ids.shape
        self.cache_bytes = intermediate_cache_bytes(split, config, settings)
        self.intermediate = settings.needs_hidden or settings.needs_scores
        self.stored = self.intermediate and self.cache_bytes <= max_mb * 2**20
        self.hidden = self.scores = None
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
        want = settings if self.stored else settings._replace(hidden_weight=0.0,
                                                              attention_weight=0.0,
                                                              cosine_weight=0.0)
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
            bar.update(1)
        bar.close()

    def describe(self) -> str:
        if not self.intermediate:
            return f"teacher logits cached once ({self.logits.shape[0]} x {self.logits.shape[1]})"
        mb = self.cache_bytes / 2**20
        how = ("cached once" if self.stored else
               "recomputed per batch (cache-free teacher forward), too big to cache")
        return (f"teacher logits cached once; hidden states/attention scores ({mb:.0f} MB "
                f"for the split) {how}")

    def batch(self, batch) -> TeacherBatch:
        """The teacher's targets for a LabeledBatch (rows batch.index of the split)."""
        idx, T = batch.index, batch.ids.shape[1]
        logits = self.logits[idx]                                               # (B,C)
        if not self.intermediate:
            return TeacherBatch(logits)
        if not self.stored:
            fresh = teacher_forward(self.params, self.config, batch, self.settings)
            return TeacherBatch(logits, fresh.hidden, fresh.scores)
        hidden = None if self.hidden is None else [h[idx, :T] for h in self.hidden]
        scores = None if self.scores is None else [s[idx, :, :T, :T] for s in self.scores]
        return TeacherBatch(logits, hidden, scores)

