"""Knowledge distillation: a shallow student learns from a fine-tuned teacher.

Shape legend: B batch, T tokens, Hs / Ht student / teacher hidden size, nh heads,
C classes, N training examples, Ls / Lt student / teacher layers.

The recipe (Hinton et al. 2015; DistilBERT, Sanh et al. 2019; TinyBERT, Jiao et al. 2020):

1. The teacher is fine-tuned on the task first. A pre-trained teacher without a trained
   classifier head has nothing to teach (its "soft labels" are noise), so we refuse it.
2. The student is the teacher with fewer layers. Student layer j (1-based) is tied to teacher
   layer g(j) = j*Lt//Ls, the *uniform* mapping: for 2 layers out of 6, g = (3, 6). Hidden
   states are indexed with 0 = the embedding output, so hidden states map 0->0, 1->3, 2->6,
   and attention scores of student block 0/1 map to teacher block 2/5 (0-based blocks).
   By default the student's encoder block j-1 starts as a copy of teacher block g(j)-1, and
   the embeddings, pooler and classifier head are copied too (same width only).
3. The loss is  alpha*CE(student, gold) + (1-alpha)*T^2*KL(teacher_T || student_T), plus
   optional intermediate terms: hidden-state MSE (through a learned projection when the
   student is narrower), attention-score MSE (padding masked) and the DistilBERT cosine
   loss on the last hidden state.
4. The teacher's logits on the training set are computed ONCE and cached (N, C); they do not
   change because the teacher is frozen. Teacher hidden states / attention scores (only
   needed for the intermediate losses) are much bigger (N*T*Ht floats per layer), so they are
   cached only when they fit in a memory budget, and otherwise recomputed per batch with a
   cheap, cache-free teacher forward (see `TeacherCache`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minibert.errors import MinibertError
from minibert.losses import (attention_mse, cosine_loss, cross_entropy, distillation_loss,
                             hidden_mse, soft_kl)
from minibert.model import BertConfig, classify_backward, classify_forward, init_params

PROJ_PREFIX = "distill.proj."   # learned projections live in the student params under this prefix


# ----------------------------------------------------------------------------- layer mapping

def uniform_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """The uniform student -> teacher hidden-state mapping g.

    Inputs: n_student (Ls) and n_teacher (Lt) encoder layers, 1 <= Ls <= Lt.
    Returns: a list g of length Ls+1 with g[0] = 0 (embeddings) and g[j] = j*Lt//Ls,
    so g[Ls] = Lt: the student's last layer always learns from the teacher's last layer.
    """
    check_layer_counts(n_student, n_teacher)
    return [j * n_teacher // n_student for j in range(n_student + 1)]


def check_layer_counts(n_student: int, n_teacher: int) -> None:
    if not 1 <= n_student <= n_teacher:
        raise MinibertError(
            f"--layers: the student needs between 1 and {n_teacher} layers (the teacher's "
            f"count), got {n_student}; a student deeper than its teacher is not a distillation")


def default_init_layers(n_student: int, n_teacher: int) -> list[int]:
    """0-based teacher blocks to copy into the student's blocks: g(j)-1 for j = 1..Ls."""
    return [g - 1 for g in uniform_layer_map(n_student, n_teacher)[1:]]


def parse_init_from(text: str | None, n_student: int, n_teacher: int) -> list[int]:
    """Parse `--init-from "2,5"` into [2, 5] (0-based teacher blocks), or the uniform default.

    Raises MinibertError when the count differs from the student's layers or a block does
    not exist in the teacher.
    """
    check_layer_counts(n_student, n_teacher)
    if text is None or text.strip() == "":
        return default_init_layers(n_student, n_teacher)
    try:
        layers = [int(tok) for tok in text.split(",")]
    except ValueError:
        raise MinibertError(f"--init-from: expected comma-separated layer numbers like "
                            f"'0,5', got {text!r}") from None
    if len(layers) != n_student:
        raise MinibertError(f"--init-from: the student has {n_student} layers, so name "
                            f"{n_student} teacher layers; got {len(layers)} ({text!r})")
    bad = [k for k in layers if not 0 <= k < n_teacher]
    if bad:
        raise MinibertError(f"--init-from: teacher layer(s) {bad} do not exist; the teacher has "
                            f"{n_teacher} layers, numbered 0..{n_teacher - 1}")
    return layers


def describe_mapping(init_layers: list[int] | None, n_student: int, n_teacher: int) -> str:
    """A few human-readable lines: which teacher layers initialise / supervise which student layers."""
    g = uniform_layer_map(n_student, n_teacher)
    lines = []
    if init_layers is None:
        lines.append("init: random (no teacher layers copied)")
    else:
        pairs = ", ".join(f"student {j} <- teacher {t}" for j, t in enumerate(init_layers))
        lines.append(f"init: encoder blocks {pairs} (0-based; embeddings, pooler, head copied)")
    lines.append("hidden states (0 = embeddings): "
                 + ", ".join(f"{j}->{g[j]}" for j in range(n_student + 1)))
    lines.append("attention (0-based blocks): "
                 + ", ".join(f"{j}->{g[j + 1] - 1}" for j in range(n_student)))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- student

def student_config(teacher: BertConfig, layers: int, hidden_size: int | None = None,
                   intermediate_size: int | None = None, heads: int | None = None) -> BertConfig:
    """The student's config: the teacher's with fewer layers (and optionally narrower).

    A narrower student keeps the teacher's head size where it can (heads = H / hs) and the
    teacher's FFN ratio. The classifier head (num_labels, labels) is the teacher's; no MLM head.
    """
    check_layer_counts(layers, teacher.num_layers)
    d = teacher.to_dict()
    h = teacher.hidden_size if hidden_size is None else int(hidden_size)
    if h <= 0:
        raise MinibertError(f"--hidden-size must be positive, got {h}")
    if heads is None:
        heads = teacher.num_heads if h == teacher.hidden_size else max(1, h // teacher.head_size)
    if h % heads != 0:
        raise MinibertError(f"--heads: the hidden size {h} must be divisible by the number of "
                            f"heads, got {heads}")
    if intermediate_size is None:
        intermediate_size = h * teacher.intermediate_size // teacher.hidden_size
    d.update(num_layers=layers, hidden_size=h, num_heads=heads,
             intermediate_size=int(intermediate_size), mlm_head=False)
    return BertConfig.from_dict(d)


def same_shape_layers(teacher: BertConfig, student: BertConfig) -> bool:
    return (teacher.hidden_size == student.hidden_size
            and teacher.intermediate_size == student.intermediate_size
            and teacher.num_heads == student.num_heads)


def init_student(teacher_params: dict, teacher_config: BertConfig, config: BertConfig,
                 init_layers: list[int] | None, rng: np.random.Generator,
                 dtype=np.float32) -> dict:
    """Build the student's parameters.

    Inputs: the teacher's params/config, the student's config, init_layers (0-based teacher
    blocks to copy, one per student block; None = random init), a Generator, a dtype.
    Returns: a fresh params dict (copies; the teacher is never aliased). With init_layers,
    student block j is teacher block init_layers[j], and the embeddings, pooler and
    classifier head are the teacher's; every other tensor (none, when the shapes match) is
    drawn from init_params.
    """
    # BEGIN EXERCISE init_student
    params = init_params(config, rng, dtype=dtype)
    if init_layers is None:
        return params
    if not same_shape_layers(teacher_config, config):
        raise MinibertError(
            f"--init-from copies teacher layers (hidden {teacher_config.hidden_size}, "
            f"intermediate {teacher_config.intermediate_size}, heads {teacher_config.num_heads}) "
            f"but the student has hidden {config.hidden_size}, intermediate "
            f"{config.intermediate_size}, heads {config.num_heads}; there is no projection for "
            f"weights: use --init random (the --hidden-weight loss learns a projection)")
    if len(init_layers) != config.num_layers:
        raise MinibertError(f"init_layers: expected {config.num_layers} teacher layers, "
                            f"got {len(init_layers)}")
    for name in params:
        if name.startswith("encoder."):
            _, j, rest = name.split(".", 2)               # "encoder.1.attn.qkv.W"
            source = f"encoder.{init_layers[int(j)]}.{rest}"
        else:
            source = name                                 # embeddings.*, pooler.*, classifier.*
        if source not in teacher_params:                  # e.g. the teacher has no pooler
            continue
        if teacher_params[source].shape != params[name].shape:
            raise MinibertError(f"init_student: teacher {source} has shape "
                                f"{teacher_params[source].shape}, student {name} needs "
                                f"{params[name].shape}")
        params[name] = teacher_params[source].astype(dtype, copy=True)
    return params
    # END EXERCISE init_student


def init_projections(config: BertConfig, teacher_config: BertConfig,
                     rng: np.random.Generator, dtype=np.float32) -> dict:
    """Learned projections Hs -> Ht, one per student hidden state (0..Ls), for the hidden MSE.

    Only needed when the student is narrower; returns {} when widths match (identity).
    Names: "distill.proj.{j}.W" (Hs, Ht), "distill.proj.{j}.b" (Ht,). They train with the
    student but are not part of the saved model (`strip_projections`).
    """
    hs, ht = config.hidden_size, teacher_config.hidden_size
    if hs == ht:
        return {}
    out = {}
    for j in range(config.num_layers + 1):
        out[f"{PROJ_PREFIX}{j}.W"] = (rng.standard_normal((hs, ht))
                                      * config.initializer_range).astype(dtype)
        out[f"{PROJ_PREFIX}{j}.b"] = np.zeros(ht, dtype=dtype)
    return out


def strip_projections(params: dict) -> dict:
    """The student's own parameters (what is saved and counted), without the projections."""
    return {k: v for k, v in params.items() if not k.startswith(PROJ_PREFIX)}


# ----------------------------------------------------------------------------- the loss

class DistillSettings(NamedTuple):
    alpha: float = 0.5            # weight of the hard-label CE
    temperature: float = 2.0
    hidden_weight: float = 0.0    # TinyBERT hidden-state MSE (summed over mapped layers)
    attention_weight: float = 0.0 # TinyBERT attention-score MSE (summed over mapped blocks)
    cosine_weight: float = 0.0    # DistilBERT cosine loss on the last hidden state
    layer_map: tuple = ()         # uniform_layer_map(Ls, Lt): hidden-state indices, g[0] = 0

    @property
    def needs_hidden(self) -> bool:
        return self.hidden_weight > 0 or self.cosine_weight > 0

    @property
    def needs_scores(self) -> bool:
        return self.attention_weight > 0


class TeacherBatch(NamedTuple):
    """What the student learns from, for one batch. hidden / scores only hold the mapped
    entries: hidden[j] is teacher hidden state g[j] (B,T,Ht) for student state j = 0..Ls,
    scores[j] is teacher block g[j+1]-1's pre-softmax scores (B,nh,T,T) for student block j."""
    logits: np.ndarray                    # (B, C)
    hidden: list | None = None
    scores: list | None = None


def check_settings(settings: DistillSettings, config: BertConfig,
                   teacher_config: BertConfig) -> None:
    """Clear errors for loss settings that cannot work with these two models."""
    if not 0.0 <= settings.alpha <= 1.0:
        raise MinibertError(f"--alpha must be in [0, 1], got {settings.alpha}")
    if not settings.temperature > 0:
        raise MinibertError(f"--temperature must be positive, got {settings.temperature}")
    for name in ("hidden_weight", "attention_weight", "cosine_weight"):
        if getattr(settings, name) < 0:
            raise MinibertError(f"--{name.replace('_', '-')} must be >= 0, "
                                f"got {getattr(settings, name)}")
    if settings.cosine_weight > 0 and config.hidden_size != teacher_config.hidden_size:
        raise MinibertError(f"--cosine-weight compares hidden states directly, so the student "
                            f"must be as wide as the teacher ({teacher_config.hidden_size}), got "
                            f"{config.hidden_size}; use --hidden-weight (learned projection)")
    if settings.attention_weight > 0 and config.num_heads != teacher_config.num_heads:
        raise MinibertError(f"--attention-weight compares attention heads one to one, so the "
                            f"student needs the teacher's {teacher_config.num_heads} heads, "
                            f"got {config.num_heads}")
    if len(settings.layer_map) != config.num_layers + 1:
        raise MinibertError(f"layer_map: expected {config.num_layers + 1} entries "
                            f"(hidden states 0..{config.num_layers}), got {len(settings.layer_map)}")


def select_teacher_outputs(out, settings: DistillSettings) -> tuple[list | None, list | None]:
    """Pick the mapped teacher hidden states / scores out of a teacher BertOutput."""
    g = settings.layer_map
    hidden = [out.hidden_states[t] for t in g] if settings.needs_hidden else None
    scores = [out.scores[t - 1] for t in g[1:]] if settings.needs_scores else None
    return hidden, scores


def soft_hard_loss(logits: np.ndarray, teacher_logits: np.ndarray, labels: np.ndarray,
                   settings: DistillSettings) -> tuple[float, np.ndarray, dict]:
    """alpha*CE + (1-alpha)*T^2*KL, where a label of -1 means "no gold label" (an example of a
    transfer set that only the teacher labels): CE is then the mean over the labelled rows
    only (0 if there are none) and the KL still covers every row.

    Inputs: logits / teacher_logits (B,C), labels (B,) int (-1 = unlabelled), settings.
    Returns: loss (float), dlogits (B,C) fresh, parts {"ce","kl","hidden","attention","cosine"}.
    """
    labels = np.asarray(labels)
    has = labels >= 0                                                   # (B,)
    a, T = settings.alpha, settings.temperature
    if has.all():
        loss, dlogits, p = distillation_loss(logits, teacher_logits, labels, a, T)
        ce, kl = float(p["ce"]), float(p["kl"])
    else:
        dt = logits.dtype.type
        kl, dkl = soft_kl(logits, teacher_logits, T)
        dlogits = dkl * dt((1.0 - a) * T * T)                           # (B,C)
        ce = 0.0
        if has.any():
            ce, dce = cross_entropy(logits[has], labels[has])           # mean over labelled rows
            dlogits[has] += dce * dt(a)
        kl = float(kl)
        loss = a * float(ce) + (1.0 - a) * T * T * kl
    return float(loss), dlogits, {"ce": float(ce), "kl": kl, "hidden": 0.0, "attention": 0.0,
                                  "cosine": 0.0}


def distill_loss(params: dict, config: BertConfig, ids: np.ndarray, mask: np.ndarray,
                 token_type_ids: np.ndarray | None, labels: np.ndarray,
                 teacher: TeacherBatch, settings: DistillSettings,
                 rng: np.random.Generator | None = None) -> tuple[float, dict, dict]:
    """One student forward + backward against the teacher's targets.

    Inputs: student params (may include "distill.proj.*"), config, ids/mask/token types
    (B,T), gold labels (B,) (-1 = none: see soft_hard_loss), the TeacherBatch, the settings, rng (None = no dropout).
    Returns: (loss, grads, parts). grads are fresh arrays with the keys of params;
    parts = {"ce", "kl", "hidden", "attention", "cosine"} as floats (unweighted values).
    """
    want_h, want_s = settings.needs_hidden, settings.needs_scores
    model_params = strip_projections(params)             # the model checks its keys exactly
    logits, out, cache = classify_forward(model_params, config, ids, mask, token_type_ids, rng=rng,
                                          output_hidden=want_h, output_attentions=want_s)
    loss, dlogits, parts = soft_hard_loss(logits, teacher.logits, labels, settings)
    dt = logits.dtype.type
    extra = {}                                           # projection grads
    dhidden = dscores = None
    if want_h:
        dhidden = [None] * (config.num_layers + 1)
    if settings.hidden_weight > 0:
        w = dt(settings.hidden_weight)
        for j, th in enumerate(teacher.hidden):
            W = params.get(f"{PROJ_PREFIX}{j}.W")
            b = params.get(f"{PROJ_PREFIX}{j}.b")
            lj, dh, dW, db = hidden_mse(out.hidden_states[j], th, mask, W, b)
            parts["hidden"] += float(lj)
            dh *= w                                       # (B,T,Hs); the losses' grads are fresh
            dhidden[j] = dh
            if W is not None:
                dW *= w
                db *= w
                extra[f"{PROJ_PREFIX}{j}.W"] = dW         # (Hs,Ht)
                extra[f"{PROJ_PREFIX}{j}.b"] = db         # (Ht,)
        loss += settings.hidden_weight * parts["hidden"]
    if settings.cosine_weight > 0:
        L = config.num_layers
        lc, dh = cosine_loss(out.hidden_states[L], teacher.hidden[L], mask)
        parts["cosine"] = float(lc)
        dh *= dt(settings.cosine_weight)
        if dhidden[L] is None:
            dhidden[L] = dh
        else:
            dhidden[L] += dh
        loss += settings.cosine_weight * parts["cosine"]
    if want_s:
        w = dt(settings.attention_weight)
        dscores = []
        for j, ts in enumerate(teacher.scores):
            la, ds = attention_mse(out.scores[j], ts, mask)
            parts["attention"] += float(la)
            ds *= w
            dscores.append(ds)                            # (B,nh,T,T)
        loss += settings.attention_weight * parts["attention"]
    grads = classify_backward(dlogits, cache, dhidden=dhidden, dscores=dscores)
    grads.update(extra)
    return loss, grads, parts


# ----------------------------------------------------------------------------- teacher outputs

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
        from minibert.train import make_batch, progress_bar, sorted_batches
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


# ----------------------------------------------------------------------------- checks on inputs

def check_teacher(model_dir, config: BertConfig) -> dict:
    """Refuse a teacher that was not fine-tuned. Returns its head.json record.

    A pre-trained checkpoint (all-MiniLM-L6-v2 as downloaded) has no classifier, and one with a
    random head would hand the student noise as "soft labels": distillation needs a teacher
    that already solves the task (`minibert finetune` writes head.json to say so).
    """
    import json
    from pathlib import Path
    fix = f"fine-tune it first: minibert finetune --model {model_dir} --data SPEC --out DIR"
    if config.num_labels == 0:
        raise MinibertError(f"--teacher {model_dir} has no classification head (num_labels 0): "
                            f"it is a pre-trained, not a fine-tuned model; {fix}")
    path = Path(model_dir) / "head.json"
    if not path.is_file():
        raise MinibertError(f"--teacher {model_dir} has a {config.num_labels}-way head but no "
                            f"head.json, so nothing says the head was trained (an untrained head "
                            f"teaches noise); {fix}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MinibertError(f"--teacher {model_dir}: head.json is unreadable ({err})") from None
    if not isinstance(record, dict) or record.get("finetuned") is not True:
        raise MinibertError(f"--teacher {model_dir}: head.json does not say "
                            f"'finetuned': true; {fix}")
    return record


def label_map(data_labels: list[str], config: BertConfig) -> np.ndarray:
    """Dataset label index -> teacher label index. The label SETS must be equal (a teacher that
    was fine-tuned on other classes cannot teach this task); their order may differ."""
    from minibert.evaluate import align_labels
    if config.labels and sorted(config.labels) != sorted(data_labels):
        raise MinibertError(f"label mismatch: the teacher was fine-tuned on labels "
                            f"{list(config.labels)} but --data has labels {list(data_labels)}")
    return align_labels(data_labels, config)      # by name; an unnamed head by position


# ----------------------------------------------------------------------------- training a student

class StudentRun(NamedTuple):
    params: dict             # the best epoch's student parameters (projections stripped)
    config: BertConfig
    fit: object              # train.FitResult
    init_layers: list | None


def make_distill_step(config: BertConfig, teacher: TeacherCache, settings: DistillSettings):
    """step_fn for train.fit: the student's loss against the cached teacher outputs."""
    def step(params, batch, rng):
        tb = teacher.batch(batch)
        return distill_loss(params, config, batch.ids, batch.mask, batch.token_type_ids,
                            batch.labels, tb, settings, rng)
    return step


def student_init_rng(seed: int) -> np.random.Generator:
    """The Generator that draws a student's random tensors: a function of the seed only, so two
    students with the same seed (e.g. distilled vs hard-label control) start identical."""
    return np.random.default_rng([seed, 20150309])


def train_student(teacher_params: dict, teacher_config: BertConfig, config: BertConfig,
                  init_layers: list[int] | None, settings: DistillSettings, teacher: TeacherCache,
                  train_split, dev_split, out_dir, tcfg, tokenizer_dir=None,
                  run_config: dict | None = None, resume: bool = False,
                  data_spec: str = "?") -> StudentRun:
    """Initialise a student and train it with train.fit on the distillation loss.

    Inputs: the teacher (params, config), the student config, init_layers (None = random),
    settings, a TeacherCache built on train_split, encoded train/dev splits (labels in the
    teacher's indices), out_dir, a train.TrainConfig, the tokenizer directory to copy, a
    run_config for the checkpoint, resume, data_spec: the data named in the student's head.json.
    Returns: StudentRun. out_dir receives the best epoch's model (model.safetensors,
    config.json, tokenizer, head.json) plus fit's run_config/metrics/curves/checkpoint.
    """
    from minibert.train import fit, make_eval_fn, train_batches, write_head_record
    from minibert.weights import save_model
    check_settings(settings, config, teacher_config)
    rng = student_init_rng(tcfg.seed)
    params = init_student(teacher_params, teacher_config, config, init_layers, rng)
    if settings.hidden_weight > 0:
        params.update(init_projections(config, teacher_config, rng))
    base_eval = make_eval_fn(config, dev_split, tcfg.batch_size)
    best = {}

    def on_best(p, epoch, metrics):
        best["params"] = {k: v.copy() for k, v in strip_projections(p).items()}
        save_model(out_dir, best["params"], config, tokenizer_dir=tokenizer_dir)
        write_head_record(out_dir, data_spec, config.labels or [],
                          metrics["accuracy"], epoch)

    res = fit(params, make_distill_step(config, teacher, settings),
              lambda epoch, r: train_batches(train_split, tcfg.batch_size, r),
              lambda p: base_eval(strip_projections(p)), out_dir, tcfg, resume=resume,
              run_config=run_config, on_best=on_best)
    if "params" not in best:                       # resumed after the best epoch: reload it
        from minibert.weights import load_model
        best["params"], _ = load_model(out_dir)
    return StudentRun(best["params"], config, res, init_layers)


# ----------------------------------------------------------------------------- evaluation

def compare_models(models: list[tuple[str, dict, BertConfig]], split, batch_size: int = 32,
                   rounds: int = 3, repeats: int = 3) -> list[dict]:
    """Accuracy, macro-F1, parameters, latency and speed-up (vs the FIRST model, the teacher).

    Inputs: models as (name, params, config), an EncodedSplit with labels in the models'
    indices, batch_size, timing rounds x repeats. Latencies are measured in interleaved
    rounds (teacher, student, teacher, ...) and the median taken, so a burst of load on a
    shared machine hits every model alike.
    Returns: one dict per model: name, accuracy, macro_f1, params, ms_per_example, speedup, n.
    """
    from minibert.evaluate import measure_latency, predict_and_score
    from minibert.model import count_params
    rows = []
    for name, params, config in models:
        _, m = predict_and_score(params, config, split, batch_size)
        rows.append({"name": name, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                     "params": count_params(params), "n": int(len(split.labels))})
    times = [[] for _ in models]
    for _ in range(rounds):
        for k, (_, params, config) in enumerate(models):
            times[k].append(measure_latency(params, config, split, batch_size, repeats))
    for row, t in zip(rows, times):
        row["ms_per_example"] = float(np.median(t))
        row["speedup"] = float(np.median(times[0]) / row["ms_per_example"])
    return rows


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def format_table(rows: list[dict], title: str | None = None) -> str:
    """A markdown table of compare_models rows (readable in a terminal too)."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| model | accuracy | macro-F1 | params | ms/example | speed-up |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{_count(r['params'])} | {r['ms_per_example']:.3f} | "
                     f"{r['speedup']:.2f}x |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- minibert distill

def resolve_init(args, teacher_config: BertConfig, config: BertConfig) -> list[int] | None:
    """--init / --init-from -> 0-based teacher blocks to copy (None = random), with clear errors."""
    if args.init == "random":
        if args.init_from:
            raise MinibertError("--init-from names teacher layers to copy, which --init random "
                                "does not do; drop one of them")
        return None
    layers = parse_init_from(args.init_from, config.num_layers, teacher_config.num_layers)
    if not same_shape_layers(teacher_config, config):
        which = f"--init-from {args.init_from}" if args.init_from else "--init teacher (default)"
        raise MinibertError(
            f"{which} copies teacher layers of width {teacher_config.hidden_size} (FFN "
            f"{teacher_config.intermediate_size}, {teacher_config.num_heads} heads) into a student "
            f"of width {config.hidden_size} (FFN {config.intermediate_size}, {config.num_heads} "
            f"heads); weights cannot be copied without a projection: use --init random (the "
            f"--hidden-weight loss learns a {config.hidden_size}->{teacher_config.hidden_size} "
            f"projection)")
    return layers


def cli_distill(args) -> int:
    """minibert distill: distil a fine-tuned teacher into a shallow student; OUT holds the
    best-dev student plus a teacher-vs-student evaluation (evaluation.json)."""
    from minibert.data import load_dataset
    from minibert.errors import DataError
    from minibert.train import TrainConfig, check_out_dir, encode_examples, write_json
    from minibert.weights import load_model_and_tokenizer
    tcfg = TrainConfig.from_args(args)
    tcfg.validate()
    out = check_out_dir(args.out, args.teacher)
    tparams, tconfig, tokenizer = load_model_and_tokenizer(args.teacher)
    check_teacher(args.teacher, tconfig)
    config = student_config(tconfig, args.layers, args.hidden_size, args.intermediate_size,
                            args.heads)
    init_layers = resolve_init(args, tconfig, config)
    settings = DistillSettings(args.alpha, args.temperature, args.hidden_weight,
                               args.attention_weight, args.cosine_weight,
                               tuple(uniform_layer_map(config.num_layers, tconfig.num_layers)))
    check_settings(settings, config, tconfig)
    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column,
                        text_pair_column=args.text_pair_column, limit=args.limit, seed=args.seed)
    lmap = label_map(data.labels, tconfig)
    if not data.train or not data.dev:
        raise DataError(f"--data {args.data}: distillation needs train and dev examples, got "
                        f"{len(data.train)} train / {len(data.dev)} dev")
    splits = {}
    for name, examples in (("train", data.train), ("dev", data.dev), ("test", data.test)):
        if examples:
            s = encode_examples(tokenizer, examples, tcfg.max_length)
            splits[name] = s._replace(labels=lmap[s.labels])           # teacher's label indices
    print(f"teacher {args.teacher}: {tconfig.num_layers} layers, hidden {tconfig.hidden_size}; "
          f"student: {config.num_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_heads} heads, FFN {config.intermediate_size}")
    print(describe_mapping(init_layers, config.num_layers, tconfig.num_layers))
    print(f"loss: {settings.alpha:g}*CE + {1 - settings.alpha:g}*T^2*KL at T={settings.temperature:g}"
          f" + {settings.hidden_weight:g}*hidden MSE + {settings.attention_weight:g}*attention MSE"
          f" + {settings.cosine_weight:g}*cosine; {len(data.train)} train / {len(data.dev)} dev "
          f"examples, max_length {tcfg.max_length}, {tcfg.epochs} epochs")
    teacher = TeacherCache(tparams, tconfig, splits["train"], settings, tcfg.batch_size,
                           progress=True)
    print(teacher.describe())
    run_config = {"command": "distill", "teacher": str(args.teacher), "data": args.data,
                  "limit": args.limit, "labels": list(tconfig.labels or []),
                  "student": config.to_dict(), "init_layers": init_layers,
                  "settings": {k: v for k, v in settings._asdict().items()}}
    run = train_student(tparams, tconfig, config, init_layers, settings, teacher,
                        splits["train"], splits["dev"], out, tcfg, tokenizer_dir=args.teacher,
                        run_config=run_config, resume=args.resume,
                        data_spec=args.data)
    split_name = "test" if "test" in splits else "dev"
    rows = compare_models([("teacher", tparams, tconfig), ("student", run.params, config)],
                          splits[split_name], tcfg.batch_size)
    write_json(out / "evaluation.json", {"split": split_name, "rows": rows,
                                         "best_epoch": run.fit.best_epoch,
                                         "init_layers": init_layers,
                                         "layer_map": list(settings.layer_map)})
    print(format_table(rows, title=f"{data.name} {split_name} ({rows[0]['n']} examples)"))
    print(f"student written to {out}")
    return 0
