"""The general-distillation objective: what a student minimises on unlabelled text.

Shape legend: B batch, T tokens, Hs / Ht student / teacher hidden size, nh heads, V vocab,
M masked positions in a batch, Ls / Lt student / teacher layers.

    general_loss = embedding_weight * hidden_mse(h_0 @ W_0 + b_0, teacher h_0)
                 + hidden_weight    * sum_j hidden_mse(h_j @ W_j + b_j, teacher h_g(j))      j = 1..Ls
                 + attention_weight * sum_j attention_mse(scores_j, teacher scores of block g(j+1)-1)
                 + soft_mlm_weight  * T^2 * KL(teacher MLM_T || student MLM_T)  at masked positions
                 + mlm_weight       * CE(student MLM, original token)           at masked positions
                 + cosine_weight    * cosine_loss(h_Ls, teacher h_Lt)

The first three are TinyBERT's general distillation, the last three DistilBERT's (see
minibert/general_distill.py, the command, for the recipes). `minibert.losses` holds each term
with its gradient; `mlm_distill_loss` adds the masked-LM head on the masked rows only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minibert.errors import MinibertError
from minibert.losses import attention_mse, cosine_loss, cross_entropy, hidden_mse, soft_kl
from minibert.fast_model import bert_backward, bert_forward, mlm_forward
from minibert.model import BertConfig, add_grads, mlm_backward
from minibert.student import PROJ_PREFIX

DISTILBERT_WEIGHTS = {"soft_mlm_weight": 5.0, "mlm_weight": 2.0, "cosine_weight": 1.0}


class GeneralSettings(NamedTuple):
    embedding_weight: float = 1.0     # TinyBERT: hidden state 0 (embedding output) MSE
    hidden_weight: float = 1.0        # TinyBERT: mapped hidden states 1..Ls MSE (summed)
    attention_weight: float = 1.0     # TinyBERT: mapped attention scores MSE (summed)
    soft_mlm_weight: float = 0.0      # DistilBERT: T^2 * KL on the masked positions
    mlm_weight: float = 0.0           # DistilBERT: hard MLM cross-entropy on the masked positions
    cosine_weight: float = 0.0        # DistilBERT: 1 - cos(last hidden states)
    temperature: float = 2.0
    mask_prob: float = 0.15           # share of real tokens chosen for the MLM terms
    layer_map: tuple = ()             # uniform_layer_map(Ls, Lt)

    @property
    def needs_mlm(self) -> bool:
        return self.soft_mlm_weight > 0 or self.mlm_weight > 0

    @property
    def needs_scores(self) -> bool:
        return self.attention_weight > 0


def check_general_settings(s: GeneralSettings, config: BertConfig, teacher: BertConfig) -> None:
    """MinibertError naming the flag when the settings cannot work with these two models."""
    names = ("embedding_weight", "hidden_weight", "attention_weight", "soft_mlm_weight",
             "mlm_weight", "cosine_weight")
    for name in names:
        v = getattr(s, name)
        if not (np.isfinite(v) and v >= 0):
            raise MinibertError(f"--{name.replace('_', '-')}: expected a weight >= 0, got {v}")
    if not any(getattr(s, n) > 0 for n in names):
        raise MinibertError("every loss weight is 0: general distillation would learn nothing")
    if not (np.isfinite(s.temperature) and s.temperature > 0):
        raise MinibertError(f"--temperature must be positive, got {s.temperature}")
    if s.needs_mlm and not teacher.mlm_head:
        raise MinibertError(
            "--soft-mlm-weight / --mlm-weight need a teacher with a masked-LM head (its "
            "predictions are the soft targets), and this teacher has none (config mlm_head "
            "false; all-MiniLM-L6-v2 ships without one); use TinyBERT's losses only, or a teacher "
            "converted from a BertForMaskedLM checkpoint (minibert convert)")
    if s.needs_mlm and not 0.0 < s.mask_prob < 1.0:
        raise MinibertError(f"--mask-prob: expected a share in (0, 1), got {s.mask_prob}")
    if s.cosine_weight > 0 and config.hidden_size != teacher.hidden_size:
        raise MinibertError(f"--cosine-weight compares hidden states directly, so the student must "
                            f"be as wide as the teacher ({teacher.hidden_size}), got "
                            f"{config.hidden_size}")
    if s.attention_weight > 0 and config.num_heads != teacher.num_heads:
        raise MinibertError(f"--attention-weight compares heads one to one: the student needs the "
                            f"teacher's {teacher.num_heads} heads, got {config.num_heads}")
    if len(s.layer_map) != config.num_layers + 1:
        raise MinibertError(f"layer_map: expected {config.num_layers + 1} entries, got "
                            f"{len(s.layer_map)}")


# ----------------------------------------------------------------------------- masking

class Masked(NamedTuple):
    ids: np.ndarray           # (B,T) int64, the corrupted input both models see
    positions: np.ndarray     # (M,2) int64 (row, column) of the chosen tokens, row-major order
    targets: np.ndarray       # (M,) int64 the original tokens there


def mask_tokens(ids: np.ndarray, mask: np.ndarray, special: np.ndarray, mask_id: int,
                prob: float, rng: np.random.Generator) -> Masked:
    """BERT's corruption: each real, non-special token is chosen with probability `prob`
    (at least one per batch); a chosen token becomes [MASK] (80%), a random non-special token
    (10%) or stays (10%). Inputs: ids / mask (B,T), special (V,) bool, mask_id, prob, rng.
    Returns: Masked (a fresh ids array; the input is not modified)."""
    ids = np.array(ids, dtype=np.int64, copy=True)
    can = (np.asarray(mask) == 1) & ~special[ids]                        # (B,T)
    if not can.any():
        raise MinibertError("a batch has no maskable tokens (only [CLS]/[SEP]/padding)")
    chosen = can & (rng.random(ids.shape) < prob)                        # (B,T)
    if not chosen.any():                                                 # keep the MLM terms defined
        flat = np.flatnonzero(can)
        chosen.reshape(-1)[flat[rng.integers(len(flat))]] = True
    positions = np.argwhere(chosen).astype(np.int64)                     # (M,2)
    targets = ids[chosen].copy()                                         # (M,)
    action = rng.random(len(targets))                                    # (M,)
    pool = np.flatnonzero(~special)
    replacement = np.where(action < 0.8, mask_id,
                           np.where(action < 0.9, pool[rng.integers(len(pool), size=len(targets))],
                                    targets))
    ids[positions[:, 0], positions[:, 1]] = replacement
    return Masked(ids, positions, targets)


# ----------------------------------------------------------------------------- the MLM loss

def mlm_distill_loss(params: dict, config: BertConfig, last: np.ndarray, positions: np.ndarray,
                     targets: np.ndarray, teacher_logits: np.ndarray | None, T: float,
                     soft_weight: float, hard_weight: float):
    """DistilBERT's masked-LM terms, at the masked positions only.

    loss = soft_weight * T^2 * KL(softmax(t/T) || softmax(s/T)) + hard_weight * CE(s, targets),
    with s = the student's MLM logits at the M positions (mean over positions in both terms).
    Only the M rows go through the head: (M,H) @ (H,V) instead of (B*T,H) @ (H,V).

    Inputs: student params/config (with an MLM head), last (B,T,H) the student's last hidden
    state, positions (M,2) distinct (row, column), targets (M,) token ids, teacher_logits (M,V)
    (None only when soft_weight is 0), T, the two weights.
    Returns: loss (float), dlast (B,T,H) fresh (0 away from the positions), grads for mlm.* and
    embeddings.word (the tied decoder; add it with add_grads), parts {"soft_mlm", "mlm"}.
    """
    rows, cols = positions[:, 0], positions[:, 1]
    x = last[rows, cols][None]                                           # (B,T,H) -> (1,M,H)
    logits, cache = mlm_forward(params, config, x)                       # (1,M,V)
    s = logits[0]                                                        # (M,V)
    dt = s.dtype.type
    loss, ds, parts = 0.0, np.zeros_like(s), {"soft_mlm": 0.0, "mlm": 0.0}
    if soft_weight > 0:
        kl, dkl = soft_kl(s, teacher_logits, T)                          # dkl (M,V)
        w = dt(soft_weight * T * T)
        loss += float(w) * float(kl)
        ds += w * dkl
        parts["soft_mlm"] = float(kl)
    if hard_weight > 0:
        ce, dce = cross_entropy(s, targets)                              # dce (M,V)
        loss += hard_weight * float(ce)
        ds += dt(hard_weight) * dce
        parts["mlm"] = float(ce)
    dx, grads = mlm_backward(ds[None], cache)                            # (1,M,H)
    dlast = np.zeros_like(last)                                          # (B,T,H)
    dlast[rows, cols] = dx[0]                                            # positions are distinct
    return loss, dlast, grads, parts


# ----------------------------------------------------------------------------- teacher and student

class GeneralTargets(NamedTuple):
    """The teacher's side for one batch: mapped hidden states (Ls+1 of (B,T,Ht)), mapped scores
    (Ls of (B,nh,T,T)) or None, MLM logits at the masked positions (M,V) or None."""
    hidden: list
    scores: list | None
    mlm_logits: np.ndarray | None


def teacher_targets(tparams: dict, tconfig: BertConfig, ids, mask, token_type_ids,
                    settings: GeneralSettings, positions=None) -> GeneralTargets:
    """The frozen teacher on one (possibly corrupted) batch: eval mode, no caches."""
    out, _ = bert_forward(tparams, tconfig, ids, mask, token_type_ids, rng=None,
                          output_hidden=True, output_attentions=settings.needs_scores,
                          keep_cache=False)
    g = settings.layer_map
    hidden = [out.hidden_states[t] for t in g]
    scores = [out.scores[t - 1] for t in g[1:]] if settings.needs_scores else None
    mlm = None
    if settings.soft_mlm_weight > 0:
        x = out.last[positions[:, 0], positions[:, 1]][None]             # (1,M,Ht)
        mlm = mlm_forward(tparams, tconfig, x)[0][0]                     # (M,V)
    return GeneralTargets(hidden, scores, mlm)


def general_loss(params: dict, config: BertConfig, ids, mask, token_type_ids,
                 teacher: GeneralTargets, settings: GeneralSettings, positions=None,
                 targets=None, rng=None, backward: bool = True):
    """One student forward + backward of the general-distillation objective.

    Inputs: student params (may hold "distill.proj.{j}.W/.b"), config, ids (the same corrupted
    ids the teacher saw) / mask / token types (B,T), the GeneralTargets, settings, the masked
    positions (M,2) and targets (M,) (needed with MLM terms), rng (None = no dropout),
    backward (False: the loss only, for evaluation; grads is then None).
    Returns: (loss float, grads with exactly params' keys, parts: unweighted loss values).
    """
    model = {k: v for k, v in params.items() if not k.startswith(PROJ_PREFIX)}
    out, cache = bert_forward(model, config, ids, mask, token_type_ids, rng,
                              output_hidden=True, output_attentions=settings.needs_scores,
                              keep_cache=backward)
    dt = out.last.dtype.type
    L = config.num_layers
    parts = {"embedding": 0.0, "hidden": 0.0, "attention": 0.0, "soft_mlm": 0.0, "mlm": 0.0,
             "cosine": 0.0}
    loss, extra = 0.0, {}
    dhidden = [None] * (L + 1)
    for j in range(L + 1):
        w = settings.embedding_weight if j == 0 else settings.hidden_weight
        if w <= 0:
            continue
        W, b = params.get(f"{PROJ_PREFIX}{j}.W"), params.get(f"{PROJ_PREFIX}{j}.b")
        lj, dh, dW, db = hidden_mse(out.hidden_states[j], teacher.hidden[j], mask, W, b)
        parts["embedding" if j == 0 else "hidden"] += float(lj)
        loss += w * float(lj)
        dh *= dt(w)                                                      # (B,T,Hs), fresh
        dhidden[j] = dh
        if W is not None:
            extra[f"{PROJ_PREFIX}{j}.W"] = dW * dt(w)                    # (Hs,Ht)
            extra[f"{PROJ_PREFIX}{j}.b"] = db * dt(w)                    # (Ht,)
    if settings.cosine_weight > 0:
        lc, dh = cosine_loss(out.hidden_states[L], teacher.hidden[L], mask)
        parts["cosine"] = float(lc)
        loss += settings.cosine_weight * float(lc)
        dh *= dt(settings.cosine_weight)
        dhidden[L] = dh if dhidden[L] is None else dhidden[L] + dh
    dscores = None
    if settings.needs_scores:
        dscores = []
        for j, ts in enumerate(teacher.scores):
            la, ds = attention_mse(out.scores[j], ts, mask)
            parts["attention"] += float(la)
            ds *= dt(settings.attention_weight)
            dscores.append(ds)                                           # (B,nh,T,T)
        loss += settings.attention_weight * parts["attention"]
    dlast, mlm_grads = None, {}
    if settings.needs_mlm:
        lm, dlast, mlm_grads, p = mlm_distill_loss(model, config, out.last, positions, targets,
                                                    teacher.mlm_logits, settings.temperature,
                                                    settings.soft_mlm_weight, settings.mlm_weight)
        parts.update(p)
        loss += lm
    if not backward:
        return loss, None, parts
    grads = bert_backward(dlast, cache, dhidden=dhidden, dscores=dscores)
    add_grads(grads, mlm_grads)
    grads.update(extra)
    for name in params:                                                  # e.g. a projection of a 0-weight term
        if name not in grads:
            grads[name] = np.zeros_like(params[name])
    return loss, grads, parts


# ----------------------------------------------------------------------------- training

def general_student(tparams: dict, tconfig: BertConfig, config: BertConfig, init_layers,
                    settings: GeneralSettings, rng: np.random.Generator) -> dict:
    """Student parameters: init_student (teacher blocks init_layers, or random) plus a
    projection per hidden-state term when the student is narrower."""
    from minibert.student import init_projections, init_student
    params = init_student(tparams, tconfig, config, init_layers, rng)
    for name, value in init_projections(config, tconfig, rng).items():
        j = int(name[len(PROJ_PREFIX):].split(".")[0])
        if (settings.embedding_weight if j == 0 else settings.hidden_weight) > 0:
            params[name] = value
    return params


def make_general_step(tparams, tconfig, config, settings: GeneralSettings, special, mask_id):
    """step_fn for train.fit: corrupt the batch (MLM terms only), run the teacher on it, then the
    student's loss and gradients. rng draws the masking first, then the dropout masks."""
    def step(params, batch, rng):
        ids, pos, tgt = batch.ids, None, None
        if settings.needs_mlm:
            ids, pos, tgt = mask_tokens(batch.ids, batch.mask, special, mask_id,
                                        settings.mask_prob, rng)
        teacher = teacher_targets(tparams, tconfig, ids, batch.mask, batch.token_type_ids,
                                  settings, pos)
        return general_loss(params, config, ids, batch.mask, batch.token_type_ids, teacher,
                            settings, pos, tgt, rng)
    return step


def make_general_eval(tparams, tconfig, config, settings, special, mask_id, dev, batch_size,
                      seed):
    """eval_fn for train.fit: the objective on the held-out text, no dropout, the same masking
    every epoch. Returns {"neg_loss": -loss, "loss": loss} (fit keeps the highest neg_loss)."""
    from minibert.batches import make_batch, sorted_batches

    def eval_fn(params):
        rng = np.random.default_rng([seed, 4242])
        total, n = 0.0, 0
        for idx in sorted_batches(dev.lengths, batch_size):
            b = make_batch(dev, idx)
            ids, pos, tgt = b.ids, None, None
            if settings.needs_mlm:
                ids, pos, tgt = mask_tokens(b.ids, b.mask, special, mask_id, settings.mask_prob, rng)
            t = teacher_targets(tparams, tconfig, ids, b.mask, b.token_type_ids, settings, pos)
            loss, _, _ = general_loss(params, config, ids, b.mask, b.token_type_ids, t, settings,
                                      pos, tgt, None, backward=False)
            total, n = total + loss * len(idx), n + len(idx)
        return {"neg_loss": -total / n, "loss": total / n}
    return eval_fn
