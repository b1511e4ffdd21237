"""The student's objective: everything a distilled student is trained to minimise.

Shape legend: B batch, T tokens, Hs / Ht student / teacher hidden size, nh heads, C classes,
Ls student layers.

    student_objective = distillation_loss(logits)          alpha*CE + (1-alpha)*T^2*KL
                      + hidden_weight    * sum_j hidden_mse(h_j @ W_j + b_j, teacher h_g(j))
                      + attention_weight * sum_j attention_mse(scores_j, teacher scores)
                      + cosine_weight    * cosine_loss(h_Ls, teacher h_Lt)
                      + relation_weight  * (KL of attention distributions + KL of value
                                            relations, student block Ls vs teacher block Lt)

`minibert.losses` holds each term with its gradient; this module weighs them, runs the
student's forward and backward, and returns (loss, grads, parts) for the training step.
The teacher's side (TeacherBatch) comes from `minibert.teacher_cache`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from minibert.errors import MinibertError
from minibert.losses import attention_mse, cosine_loss, distillation_loss, hidden_mse
from minibert.fast_model import attention_values, classify_backward, classify_forward
from minibert.model import BertConfig
from minibert.relation_losses import attention_relation_loss, value_relation_loss
from minibert.student import PROJ_PREFIX, strip_projections


class DistillSettings(NamedTuple):
    alpha: float = 0.5            # weight of the hard-label CE
    temperature: float = 2.0
    hidden_weight: float = 0.0    # TinyBERT hidden-state MSE (summed over mapped layers)
    attention_weight: float = 0.0 # TinyBERT attention-score MSE (summed over mapped blocks)
    cosine_weight: float = 0.0    # DistilBERT cosine loss on the last hidden state
    layer_map: tuple = ()         # uniform_layer_map(Ls, Lt): hidden-state indices, g[0] = 0
    relation_weight: float = 0.0  # MiniLM: attention-distribution + value-relation KL, last layers
    prediction_weight: float = 1.0  # weight of the logit loss (0: TinyBERT's intermediate stage)

    @property
    def needs_hidden(self) -> bool:
        return self.hidden_weight > 0 or self.cosine_weight > 0

    @property
    def needs_scores(self) -> bool:
        return self.attention_weight > 0

    @property
    def hard_only(self) -> bool:
        """alpha = 1 and no intermediate loss: nothing of the teacher is used, so it never runs."""
        return self.alpha == 1.0 and not (self.needs_hidden or self.needs_scores
                                           or self.needs_relation)

    @property
    def needs_relation(self) -> bool:
        return self.relation_weight > 0


class TeacherBatch(NamedTuple):
    """What the student learns from, for one batch. hidden / scores only hold the mapped
    entries: hidden[j] is teacher hidden state g[j] (B,T,Ht) for student state j = 0..Ls,
    scores[j] is teacher block g[j+1]-1's pre-softmax scores (B,nh,T,T) for student block j.
    relation: the teacher's LAST block (scores (B,nh,T,T), values (B,nh,T,hs_t)) for MiniLM.
    logits None: a hard-only run (settings.hard_only), where the teacher is not consulted."""
    logits: np.ndarray | None             # (B, C)
    hidden: list | None = None
    scores: list | None = None
    relation: tuple | None = None


def check_settings(settings: DistillSettings, config: BertConfig,
                   teacher_config: BertConfig) -> None:
    """Clear errors for loss settings that cannot work with these two models."""
    if not 0.0 <= settings.alpha <= 1.0:
        raise MinibertError(f"--alpha must be in [0, 1], got {settings.alpha}")
    if not settings.temperature > 0:
        raise MinibertError(f"--temperature must be positive, got {settings.temperature}")
    for name in ("hidden_weight", "attention_weight", "cosine_weight", "relation_weight",
                 "prediction_weight"):
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
    if ((settings.attention_weight > 0 or settings.relation_weight > 0)
            and (config.pruned_heads or teacher_config.pruned_heads)):
        pruned = "student" if config.pruned_heads else "teacher"
        raise MinibertError(f"--attention-weight / --relation-weight compare attention heads "
                            f"one to one, but the "
                            f"{pruned} has pruned heads ({(config.pruned_heads or teacher_config.pruned_heads)}); "
                            f"use the logit and hidden-state losses with a pruned model")
    if settings.relation_weight > 0 and config.num_heads != teacher_config.num_heads:
        raise MinibertError(f"--relation-weight (MiniLM) compares the last layers' attention "
                            f"distributions and value relations head by head, so the student "
                            f"needs the teacher's {teacher_config.num_heads} heads, got "
                            f"{config.num_heads} (pass --heads {teacher_config.num_heads}; the "
                            f"width may differ)")
    if len(settings.layer_map) != config.num_layers + 1:
        raise MinibertError(f"layer_map: expected {config.num_layers + 1} entries "
                            f"(hidden states 0..{config.num_layers}), got {len(settings.layer_map)}")



def student_objective(params: dict, config: BertConfig, ids: np.ndarray, mask: np.ndarray,
                 token_type_ids: np.ndarray | None, labels: np.ndarray,
                 teacher: TeacherBatch, settings: DistillSettings,
                 rng: np.random.Generator | None = None) -> tuple[float, dict, dict]:
    """One student forward + backward against the teacher's targets.

    Inputs: student params (may include "distill.proj.*"), config, ids/mask/token types
    (B,T), gold labels (B,) (-1 = none: see losses.distillation_loss), the TeacherBatch, the settings, rng (None = no dropout).
    Returns: (loss, grads, parts). grads are fresh arrays with the keys of params;
    parts = {"ce", "kl", "hidden", "attention", "cosine", "relation"} as floats (unweighted).
    The logit loss is weighted by settings.prediction_weight (0 in TinyBERT's first stage).
    """
    want_h, want_s = settings.needs_hidden, settings.needs_scores or settings.needs_relation
    model_params = strip_projections(params)             # the model checks its keys exactly
    logits, out, cache = classify_forward(model_params, config, ids, mask, token_type_ids, rng=rng,
                                          output_hidden=want_h, output_attentions=want_s)
    # hard-only (no teacher logits): the student's own logits stand in for the teacher's, so the
    # KL term is exactly 0 with a 0 gradient and, weighted by 1 - alpha = 0, changes nothing
    target = logits.copy() if teacher.logits is None else teacher.logits
    kd, dlogits, kd_parts = distillation_loss(logits, target, labels, settings.alpha,
                                              settings.temperature)
    dt = logits.dtype.type
    loss = settings.prediction_weight * float(kd)
    if settings.prediction_weight != 1.0:
        dlogits *= dt(settings.prediction_weight)
    parts = {"ce": float(kd_parts["ce"]), "kl": float(kd_parts["kl"]), "hidden": 0.0,
             "attention": 0.0, "cosine": 0.0, "relation": 0.0}
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
    dvalues = None
    if want_s:
        dscores = [None] * config.num_layers
    if settings.needs_scores:
        w = dt(settings.attention_weight)
        for j, ts in enumerate(teacher.scores):
            la, ds = attention_mse(out.scores[j], ts, mask)
            parts["attention"] += float(la)
            ds *= w
            dscores[j] = ds                               # (B,nh,T,T)
        loss += settings.attention_weight * parts["attention"]
    if settings.needs_relation:
        # MiniLM: the student's LAST block against the teacher's last block, no layer map
        L = config.num_layers
        w = dt(settings.relation_weight)
        t_scores, t_values = teacher.relation
        la, ds = attention_relation_loss(out.scores[L - 1], t_scores, mask)   # (B,nh,T,T)
        lv, dv = value_relation_loss(attention_values(cache.bert, L - 1), t_values, mask)  # (B,nh,T,hs)
        parts["relation"] = float(la) + float(lv)
        ds *= w
        dv *= w
        dscores[L - 1] = ds if dscores[L - 1] is None else dscores[L - 1] + ds
        dvalues = [None] * (L - 1) + [dv]
        loss += settings.relation_weight * parts["relation"]
    grads = classify_backward(dlogits, cache, dhidden=dhidden, dscores=dscores, dvalues=dvalues)
    grads.update(extra)
    return loss, grads, parts


def make_distill_step(config: BertConfig, teacher, settings: DistillSettings):
    """step_fn for train.train_step: student_objective on one batch against the teacher's
    targets for it. teacher: anything with .batch(LabeledBatch) -> TeacherBatch (a
    teacher_cache.TeacherCache); a hard-only run (settings.hard_only) never asks it."""
    def step(params, batch, rng):
        tb = TeacherBatch(None) if settings.hard_only else teacher.batch(batch)
        return student_objective(params, config, batch.ids, batch.mask, batch.token_type_ids,
                            batch.labels, tb, settings, rng)
    return step
