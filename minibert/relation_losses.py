"""MiniLM relation distillation: the student copies how the teacher's last layer relates tokens.

Shape legend
    B batch   T tokens   nh heads (the same for student and teacher)
    hs_s / hs_t  student / teacher head size (they may differ: nothing here needs a projection)

MiniLM (Wang et al. 2020) transfers two "relations" of the LAST self-attention layer, each a
(T x T) distribution per head and query token, so their shape does not depend on the width:

- self-attention distributions: A = softmax(q k^T / sqrt(hs)) over the keys, the attention
  probabilities themselves;
- value relations: VR = softmax(v v^T / sqrt(hs)) over the keys, the same construction with the
  values in place of queries and keys (scaled dot products between value vectors).

The loss of each is the KL divergence KL(teacher row || student row) per head and real query
token, averaged over heads and real queries:

    L = 1 / (nh * sum_b n_b) * sum_{b, head, real query i} sum_{real key j}
            p_t[b,h,i,j] * (log p_t[b,h,i,j] - log p_s[b,h,i,j])

where n_b is the number of real tokens of example b. MiniLM's total is L_AT + L_VR.

Padding: a padded KEY gets probability exactly 0 on both sides (its logit is replaced by the
large finite MASK_NEG before the softmax, whatever it was), and a padded QUERY's row is left out
of the sum and of the mean; every padded entry gets gradient exactly 0.

Why we differentiate through the logits, not the probabilities: for a softmax p = softmax(z),
d KL(p_t || p) / dz = p - p_t (the same fused form as softmax cross-entropy), which needs no
division by p (a student probability can underflow to 0 in float32 and 1/p would blow up).
The student's attention logits are attention_forward's cache.scores, so that gradient enters
the model through attention_backward's `dscores`; the value-relation gradient goes back
through v v^T (value_relation_backward) to the values.

Every function returns FRESH arrays; float32 in, float32 out (teacher arrays are cast to the
student's dtype).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from minibert.attention import MASK_NEG
from minibert.layers import check_finite, check_float

__all__ = [
    "relation_kl",
    "ValueRelationCache",
    "value_relation_forward",
    "value_relation_backward",
    "attention_relation_loss",
    "value_relation_loss",
]


# ---------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------

def _check_relation(name, x, ndim=4):
    x = check_float(name, x, ndim)
    check_finite(name, x)
    return x


def _real_tokens(mask, B, T):
    """(B, T) 0/1 mask -> bool (B, T) and the number of real tokens; ValueError if unusable."""
    if mask is None:
        return np.ones((B, T), dtype=bool), B * T
    mask = np.asarray(mask)
    if mask.shape != (B, T):
        raise ValueError(f"mask: expected shape {(B, T)} (B, T), got {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(f"mask: expected only 0/1 values, got {np.unique(mask)[:5]}")
    real = mask.astype(bool)
    n_real = int(np.count_nonzero(real))
    if n_real == 0:
        raise ValueError("mask: has no real tokens (every entry is 0); the loss would be 0/0")
    return real, n_real


def _check_pair(s_name, s, t_name, t):
    """Student and teacher relations must have one shape (B, nh, T, T); T x T must be square."""
    if s.shape != t.shape:
        hint = ""
        if s.ndim == 4 and t.ndim == 4 and s.shape[1] != t.shape[1]:
            hint = (f"; the student has {s.shape[1]} heads and the teacher {t.shape[1]}: MiniLM "
                    f"compares heads one to one, so both need the same number of heads")
        raise ValueError(f"{s_name} and {t_name} must have the same shape, got {s.shape} and "
                         f"{t.shape}{hint}")
    if s.shape[-1] != s.shape[-2]:
        raise ValueError(f"{s_name}: expected square (B, nh, T, T) relations, got {s.shape}")


def _masked_log_softmax(z, key_real):
    """log softmax over the last axis with padded keys taken out.

    Inputs: z (B,nh,T,T) logits; key_real (B,1,1,T) bool, True for real keys.
    Returns: logp (B,nh,T,T), fresh: padded keys have logp ~ MASK_NEG, i.e. probability exactly 0
    (exp(-1e9) is 0.0 in float32 and float64). A row whose example has no real key at all gets
    a finite, meaningless uniform distribution (its queries are padded and never read).
    """
    x = np.where(key_real, z, z.dtype.type(MASK_NEG))          # (B,nh,T,T), a fresh array
    x -= x.max(axis=-1, keepdims=True)                          # largest entry of each row: 0
    x -= np.log(np.exp(x).sum(axis=-1, keepdims=True))          # (B,nh,T,T) - (B,nh,T,1)
    return x


# ---------------------------------------------------------------------------------------
# the shared KL between two rows-of-distributions tensors
# ---------------------------------------------------------------------------------------

def relation_kl(student_logits, teacher_logits, mask):
    """KL(softmax(teacher row) || softmax(student row)), mean over heads and real query rows.

    Inputs:
    - student_logits: (B, nh, T, T) float; row i holds query i's logits over the T keys
      (attention scores, or v v^T / sqrt(hs) for value relations); entries at padded keys may
      hold anything (e.g. the -1e9 padding bias): they are replaced, not read
    - teacher_logits: (B, nh, T, T) float, the same shape (cast to the student's dtype)
    - mask: (B, T) 0/1, 1 = real token (None = no padding)
    Returns a tuple of:
    - loss: 0-d scalar of student_logits.dtype, >= 0, 0 iff every real row matches
    - dstudent_logits: (B, nh, T, T), fresh: (p_s - p_t) / (nh * n_real) on real (query, key)
      pairs, exactly 0 wherever the query or the key is padded
    """
    s = _check_relation("student_logits", student_logits)
    t = _check_relation("teacher_logits", teacher_logits)
    _check_pair("student_logits", s, "teacher_logits", t)
    B, nh, T, _ = s.shape
    dt = s.dtype.type
    t = t.astype(s.dtype, copy=False)
    real, n_real = _real_tokens(mask, B, T)                     # (B,T) bool
    key_real = real[:, None, None, :]                           # (B,1,1,T)
    pair = real[:, None, :, None] & key_real                    # (B,1,T,T): real query AND key
    inv_n = dt(1.0 / (nh * n_real))
    # BEGIN EXERCISE relation_kl
    # 1. log-probabilities of both sides over the real keys of each row
    logp_s = _masked_log_softmax(s, key_real)                   # (B,nh,T,T)
    logp_t = _masked_log_softmax(t, key_real)                   # (B,nh,T,T)
    p_t = np.exp(logp_t)                                        # (B,nh,T,T), 0 at padded keys
    # 2. the KL terms p_t * (log p_t - log p_s), only on real (query, key) pairs
    terms = np.zeros_like(s)                                    # (B,nh,T,T)
    np.subtract(logp_t, logp_s, out=terms, where=pair)
    terms *= p_t
    loss = terms.sum() * inv_n                                  # scalar
    # 3. gradient through the softmax: d KL / d logits = p_s - p_t on each real row
    dstudent = np.zeros_like(s)                                 # (B,nh,T,T)
    np.subtract(np.exp(logp_s), p_t, out=dstudent, where=pair)
    dstudent *= inv_n
    # END EXERCISE relation_kl
    return dt(loss), dstudent


# ---------------------------------------------------------------------------------------
# value relations: v v^T / sqrt(hs), a layer with its own backward
# ---------------------------------------------------------------------------------------

class ValueRelationCache(NamedTuple):
    v: np.ndarray           # (B,nh,T,hs) the values the relation was built from
    scale: np.floating      # 1/sqrt(hs) in v's dtype


def value_relation_forward(v):
    """Scaled dot products between the value vectors of each head: the value-relation logits.

    Inputs: v (B, nh, T, hs) float, one layer's value vectors per head (attention_forward's
            cache.v, or the teacher's values).
    Returns a tuple of: r (B, nh, T, T) = v v^T / sqrt(hs), fresh (softmax over the last axis
            gives MiniLM's value relation VR); cache (ValueRelationCache).
    """
    v = _check_relation("v", v)
    scale = v.dtype.type(1.0 / math.sqrt(v.shape[-1]))
    # r = v v^T: (B,nh,T,hs) @ (B,nh,hs,T) -> (B,nh,T,T)
    r = v @ v.swapaxes(-1, -2)
    r *= scale
    return r, ValueRelationCache(v, scale)


def value_relation_backward(dr, cache):
    """Backward of value_relation_forward.

    Inputs: dr (B, nh, T, T) upstream gradient on r; cache from value_relation_forward.
    Returns: dv (B, nh, T, hs), fresh. v appears on both sides of r = scale * v v^T, so
    dv = scale * (dr + dr^T) v.
    """
    v, scale = cache
    B, nh, T, hs = v.shape
    if np.shape(dr) != (B, nh, T, T):
        raise ValueError(f"dr: expected shape {(B, nh, T, T)}, got {np.shape(dr)}")
    dr = np.asarray(dr, dtype=v.dtype)
    # BEGIN EXERCISE value_relation_backward
    # dv = (dr + dr^T) @ v * scale: (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs)
    dv = (dr + dr.swapaxes(-1, -2)) @ v
    dv *= scale
    # END EXERCISE value_relation_backward
    return dv


# ---------------------------------------------------------------------------------------
# the two MiniLM losses
# ---------------------------------------------------------------------------------------

def attention_relation_loss(student_scores, teacher_scores, mask):
    """MiniLM self-attention distribution transfer on one layer.

    Inputs: student_scores, teacher_scores (B, nh, T, T): pre-softmax attention scores
            (attention_forward's cache.scores, which include the padding bias; the teacher's
            from bert_forward(output_attentions=True)); mask (B, T) 0/1.
    Returns a tuple of: loss (0-d); dstudent_scores (B, nh, T, T), fresh, for attention_backward's
            `dscores`.
    """
    return relation_kl(student_scores, teacher_scores, mask)


def value_relation_loss(student_v, teacher_v, mask):
    """MiniLM value-relation transfer: relation_kl between softmax(v v^T / sqrt(hs)) of each side.

    Inputs: student_v (B, nh, T, hs_s), teacher_v (B, nh, T, hs_t): the last layer's values per
            head (the head sizes may differ: the relations are (B, nh, T, T) either way; the
            head COUNTS must match); mask (B, T) 0/1. Values at padded tokens are never read.
    Returns a tuple of: loss (0-d, student dtype); dstudent_v (B, nh, T, hs_s), fresh, exactly 0
            at padded tokens.
    """
    sv = _check_relation("student_v", student_v)
    tv = _check_relation("teacher_v", teacher_v)
    if sv.shape[:3] != tv.shape[:3]:
        raise ValueError(f"student_v and teacher_v must agree on (B, nh, T), got {sv.shape} and "
                         f"{tv.shape}" + ("; MiniLM compares heads one to one, so both need the "
                                          "same number of heads" if sv.shape[1] != tv.shape[1]
                                          else ""))
    r_s, cache = value_relation_forward(sv)                     # (B,nh,T,T)
    r_t, _ = value_relation_forward(tv.astype(sv.dtype, copy=False))   # (B,nh,T,T)
    loss, dr = relation_kl(r_s, r_t, mask)
    return loss, value_relation_backward(dr, cache)             # (B,nh,T,hs_s)
