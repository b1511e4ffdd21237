"""Losses for fine-tuning and for distillation, each with its hand-written gradient.

Shape legend
    N   examples in the batch (N = B for sentence classification)
    C   classes
    B   batch, T tokens, nh heads
    Hs  student hidden size, Ht teacher hidden size (H when they are equal)

Every function returns the loss first (a 0-d NumPy scalar of the input dtype) followed by
FRESH gradient arrays for the inputs it differentiates (the teacher is frozen: no teacher
gradients). Nothing is accumulated into existing arrays.

Numerics: softmaxes are computed as log-softmax with the row maximum subtracted first, so
no `exp` ever overflows and no `log(0)` is ever taken. float32 in gives float32 out: Python
scalars are cast with `dtype.type(...)` before they touch an array.

Masks are (B, T) arrays of 0/1 in any int/bool/float dtype; 1 marks a real token. Padded
positions are excluded from the loss AND from the gradient (their gradient entries are 0).
"""

from __future__ import annotations

import numpy as np

from minibert.layers import check_finite, check_float

__all__ = [
    "cross_entropy",
    "soft_kl",
    "distillation_loss",
    "hidden_mse",
    "attention_mse",
    "cosine_loss",
]


# ---------------------------------------------------------------------------------------
# input checks (public functions validate; the maths below trusts its inputs)
# ---------------------------------------------------------------------------------------

def _check_float(name, x, ndim=None):
    """The core's float-array check (dtype, axes) plus the NaN/inf scan, as one call."""
    x = check_float(name, x, ndim)
    check_finite(name, x)
    return x


def _check_same_shape(name_a, a, name_b, b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def _check_labels(labels, logits, unlabelled_ok=False):
    """Integer (N,) labels in 0..C-1; with unlabelled_ok, -1 ("no gold label") is allowed too."""
    labels = np.asarray(labels)
    n, c = logits.shape
    if labels.dtype.kind not in "iu":
        raise ValueError(f"labels: expected an integer array, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) to match logits {logits.shape}, got {labels.shape}")
    bad = (labels < (-1 if unlabelled_ok else 0)) | (labels >= c)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"labels: label {int(labels[i])} at index {i} is out of range "
                         f"for {c} classes (valid labels are 0..{c - 1}"
                         f"{', or -1 for no gold label' if unlabelled_ok else ''})")
    return labels


def _check_temperature(T):
    if not np.isscalar(T) or not np.isfinite(T) or not T > 0:
        raise ValueError(f"T (temperature): expected a finite number > 0, got {T!r}")
    return float(T)


def _check_mask(mask, shape, dtype):
    """(B, T) 0/1 mask of any dtype -> float mask in `dtype` and its number of real tokens."""
    if mask is None:
        return np.ones(shape, dtype=dtype), int(np.prod(shape))
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask: expected shape {shape} (B, T), got {mask.shape}")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(f"mask: expected only 0/1 values, got {np.unique(mask)[:5]}")
    n_real = int(np.count_nonzero(mask))
    if n_real == 0:
        raise ValueError("mask: has no real tokens (every entry is 0); the loss would be 0/0")
    return mask.astype(dtype), n_real


def _log_softmax(x):
    """Row-wise log-softmax over the last axis, with the max subtracted (never overflows)."""
    z = x - x.max(axis=-1, keepdims=True)                   # (N,C), largest entry 0
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # (N,C)


# ---------------------------------------------------------------------------------------
# classification losses
# ---------------------------------------------------------------------------------------

def cross_entropy(logits, labels):
    """Softmax cross-entropy with hard labels, averaged over the batch.

    loss = -(1/N) sum_n log softmax(logits_n)[labels_n]
    Its gradient is the classic (softmax - onehot) / N: no need to backprop through the
    softmax and the log separately (their Jacobians cancel into this simple form).

    Inputs:
    - logits: (N, C) float, finite
    - labels: (N,) integer, 0 <= label < C
    Returns a tuple of:
    - loss: 0-d scalar of logits.dtype
    - dlogits: (N, C), a fresh array
    """
    logits = _check_float("logits", logits, ndim=2)
    labels = _check_labels(labels, logits)
    # BEGIN EXERCISE softmax_cross_entropy
    n = logits.shape[0]
    rows = np.arange(n)
    # 1. log-probabilities, stably: log p = z - log(sum(exp(z))) with z = logits - row max
    logp = _log_softmax(logits)                             # (N,C)
    # 2. loss: mean over the batch of -log p[label]
    loss = -logp[rows, labels].sum() / logits.dtype.type(n)  # scalar
    # 3. gradient: (p - onehot) / N, built in place in one fresh array
    dlogits = np.exp(logp)                                  # (N,C) softmax probabilities
    dlogits[rows, labels] -= 1                              # (N,C) p - onehot
    dlogits /= logits.dtype.type(n)
    return logits.dtype.type(loss), dlogits
    # END EXERCISE softmax_cross_entropy


def soft_kl(student_logits, teacher_logits, T):
    """KL(p_teacher || p_student) between the temperature-softened distributions.

    p_t = softmax(teacher_logits / T), p_s = softmax(student_logits / T)
    loss = (1/N) sum_n sum_c p_t[n,c] * (log p_t[n,c] - log p_s[n,c])

    Reduction is "batchmean": sum over classes, mean over examples. That is the true KL
    divergence per example; a plain mean over all N*C entries would divide by C as well,
    silently shrinking the soft term (and its gradient) by the number of classes.

    No T^2 factor here (see distillation_loss). The gradient is
    dloss/dstudent_logits = (p_s - p_t) / (N * T).

    Inputs:
    - student_logits: (N, C) float, finite
    - teacher_logits: (N, C) float, finite (cast to the student's dtype)
    - T: temperature > 0 (T > 1 softens, exposing the teacher's "dark knowledge")
    Returns a tuple of:
    - loss: 0-d scalar of student_logits.dtype (>= 0; 0 iff the distributions match)
    - dstudent: (N, C), a fresh array
    """
    s = _check_float("student_logits", student_logits, ndim=2)
    t = _check_float("teacher_logits", teacher_logits, ndim=2)
    _check_same_shape("student_logits", s, "teacher_logits", t)
    T = _check_temperature(T)
    # BEGIN EXERCISE soft_kl
    dt = s.dtype.type
    t = t.astype(s.dtype, copy=False)
    n = s.shape[0]
    inv_T = dt(1.0 / T)
    logp_s = _log_softmax(s * inv_T)                        # (N,C)
    logp_t = _log_softmax(t * inv_T)                        # (N,C), finite, so p_t*logp_t is never 0*inf
    p_t = np.exp(logp_t)                                    # (N,C)
    loss = (p_t * (logp_t - logp_s)).sum() / dt(n)          # scalar
    dstudent = np.exp(logp_s)                               # (N,C) p_s
    dstudent -= p_t                                         # (N,C) p_s - p_t
    dstudent *= dt(1.0 / (n * T))
    return dt(loss), dstudent
    # END EXERCISE soft_kl


def distillation_loss(student_logits, teacher_logits, labels, alpha, T):
    """Hinton et al. (2015) distillation: L = alpha * CE(hard labels) + (1 - alpha) * T^2 * KL.

    The one function for this loss: fine-tuning is alpha = 1, pure soft-label distillation
    alpha = 0. A label of -1 means "no gold label" (a transfer-set example only the teacher
    labels): the CE is then the mean over the labelled rows only (0 if there are none), while
    the KL still covers every row.

    Why T^2: the soft term's gradient w.r.t. the student logits is (p_s - p_t) / (N*T), and
    for large T (with zero-mean logits) p_s - p_t itself shrinks like 1/T, so the gradient
    scales as 1/T^2. Multiplying by T^2 keeps the soft term's pull comparable to the hard
    term's when T changes, so alpha means the same thing at every temperature.
    The gradient of T^2 * KL is (T/N) * (p_s - p_t).

    Why batchmean (in both terms): the loss is a mean over examples, so its size does not
    depend on the batch size (the learning rate stays meaningful) nor on the number of
    classes (the KL is summed over classes, as a KL divergence is).

    Inputs:
    - student_logits: (N, C) float
    - teacher_logits: (N, C) float (frozen; no gradient is returned for it)
    - labels: (N,) integer, 0 <= label < C, or -1 for a row without a gold label
    - alpha: weight of the hard-label term, in [0, 1] (1 = plain fine-tuning)
    - T: temperature > 0 of the soft term
    Returns a tuple of:
    - loss: 0-d scalar of student_logits.dtype
    - dlogits: (N, C), a fresh array of student_logits.dtype
    - parts: {"ce": cross-entropy (over the labelled rows), "kl": KL at temperature T
      WITHOUT the T^2 factor}
    """
    if not np.isscalar(alpha) or not np.isfinite(alpha) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a number in [0, 1], got {alpha!r}")
    T = _check_temperature(T)
    student_logits = _check_float("student_logits", student_logits, ndim=2)
    labels = _check_labels(labels, student_logits, unlabelled_ok=True)
    # BEGIN EXERCISE distillation_loss
    dt = student_logits.dtype.type
    labelled = labels >= 0                                  # (N,) False = no gold label (-1)
    # 1. the soft loss over every row and its gradient w.r.t. the student logits
    kl, dkl = soft_kl(student_logits, teacher_logits, T)   # dkl = (p_s - p_t) / (N*T)
    # 2. weights: alpha for the hard term, (1 - alpha) * T^2 for the soft one
    w_hard = dt(alpha)
    w_soft = dt((1.0 - alpha) * T * T)                      # T^2 restores the soft gradient's scale
    # 3. the weighted soft gradient, then the hard term on the labelled rows (none: CE = 0)
    dlogits = dkl                                           # (N,C), fresh: safe to scale in place
    dlogits *= w_soft
    if labelled.all():
        ce, dce = cross_entropy(student_logits, labels)
        dlogits += w_hard * dce                             # (N,C)
        loss = w_hard * ce + w_soft * kl
        return dt(loss), dlogits, {"ce": ce, "kl": kl}
    ce = dt(0.0)
    if labelled.any():
        ce, dce = cross_entropy(student_logits[labelled], labels[labelled])   # mean over labelled rows
        dlogits[labelled] += w_hard * dce                   # (n_labelled,C)
    loss = w_hard * ce + w_soft * kl
    return dt(loss), dlogits, {"ce": ce, "kl": kl}
    # END EXERCISE distillation_loss


# ---------------------------------------------------------------------------------------
# intermediate-layer losses (TinyBERT, DistilBERT)
# ---------------------------------------------------------------------------------------

def hidden_mse(student_h, teacher_h, mask=None, W=None, b=None):
    """TinyBERT hidden-state loss: MSE(student_h @ W + b, teacher_h) over real tokens.

    A student narrower than its teacher (Hs < Ht) cannot be compared directly, so TinyBERT
    learns a projection W (Hs, Ht) (and here an optional bias b) trained with the student and
    thrown away afterwards. With W None the comparison is direct (Hs must equal Ht).
    The mean runs over real tokens and features: loss = sum(mask * (proj - t)^2) / (n_real * Ht).

    Inputs:
    - student_h: (B, T, Hs) float
    - teacher_h: (B, T, Ht) float (cast to the student's dtype)
    - mask: (B, T) 0/1, or None for "all tokens are real"
    - W: (Hs, Ht) or None; b: (Ht,) or None (b needs W)
    Returns a tuple of:
    - loss: 0-d scalar of student_h.dtype
    - dstudent_h: (B, T, Hs), fresh; 0 at padded tokens
    - dW: (Hs, Ht) or None (when W is None); db: (Ht,) or None (when b is None)
    """
    s = _check_float("student_h", student_h, ndim=3)
    t = _check_float("teacher_h", teacher_h, ndim=3)
    if s.shape[:2] != t.shape[:2]:
        raise ValueError(f"student_h and teacher_h must agree on (B, T), got {s.shape} and {t.shape}")
    hs, ht = s.shape[2], t.shape[2]
    if W is None:
        if b is not None:
            raise ValueError("b: a projection bias needs a projection matrix W (got W=None)")
        if hs != ht:
            raise ValueError(f"student_h width {hs} != teacher_h width {ht}: pass a projection "
                             f"W of shape ({hs}, {ht})")
    else:
        W = _check_float("W", W, ndim=2)
        if W.shape != (hs, ht):
            raise ValueError(f"W: expected shape ({hs}, {ht}) (student width, teacher width), got {W.shape}")
        if W.dtype != s.dtype:
            raise ValueError(f"W: dtype {W.dtype} differs from student_h dtype {s.dtype}")
        if b is not None:
            b = _check_float("b", b, ndim=1)
            if b.shape != (ht,):
                raise ValueError(f"b: expected shape ({ht},), got {b.shape}")
            if b.dtype != s.dtype:
                raise ValueError(f"b: dtype {b.dtype} differs from student_h dtype {s.dtype}")
    # BEGIN EXERCISE hidden_mse
    dt = s.dtype.type
    t = t.astype(s.dtype, copy=False)
    m, n_real = _check_mask(mask, s.shape[:2], s.dtype)     # (B,T)

    B, T = s.shape[:2]
    # matmuls on 2-D views: (B*T, Hs) @ (Hs, Ht) is one BLAS call (a 3-D @ is often slower)
    proj = s if W is None else (s.reshape(-1, hs) @ W).reshape(B, T, ht)   # (B,T,Hs) -> (B,T,Ht)
    if b is not None:
        proj = proj + b                                     # (B,T,Ht)
    diff = proj - t                                         # (B,T,Ht), fresh
    diff *= m[:, :, None]                                   # padded tokens drop out
    scale = dt(1.0 / (n_real * ht))
    loss = np.vdot(diff, diff) * scale                      # scalar
    dproj = diff
    dproj *= dt(2.0) * scale                                # (B,T,Ht) d loss / d proj
    if W is None:
        return dt(loss), dproj, None, None
    dstudent = (dproj.reshape(-1, ht) @ W.T).reshape(B, T, hs)   # (B*T,Ht) @ (Ht,Hs) -> (B,T,Hs)
    dW = s.reshape(-1, hs).T @ dproj.reshape(-1, ht)        # (Hs,B*T) @ (B*T,Ht) -> (Hs,Ht)
    db = None if b is None else dproj.sum(axis=(0, 1))      # (Ht,)
    return dt(loss), dstudent, dW, db
    # END EXERCISE hidden_mse


def attention_mse(student_scores, teacher_scores, mask):
    """TinyBERT attention loss: MSE between pre-softmax attention scores over real positions.

    The scores (B, nh, Tq, Tk) include the additive padding bias (MASK_NEG = -1e9 at padded
    keys). Those entries are huge and meaningless, so every entry whose query OR key is a
    padded token is left out: it is never subtracted, squared or summed (the difference is
    only computed where both are real), and its gradient is exactly 0.
    loss = sum over real (q, k) pairs and heads of (s - t)^2 / (nh * sum_b n_b^2),
    where n_b is the number of real tokens in example b.

    Inputs:
    - student_scores: (B, nh, T, T) float (attention_forward's cache.scores)
    - teacher_scores: (B, nh, T, T) float (same head count; cast to the student's dtype)
    - mask: (B, T) 0/1
    Returns a tuple of:
    - loss: 0-d scalar of student_scores.dtype
    - dstudent_scores: (B, nh, T, T), fresh; 0 wherever the query or the key is padded
    """
    s = _check_float("student_scores", student_scores, ndim=4)
    t = _check_float("teacher_scores", teacher_scores, ndim=4)
    _check_same_shape("student_scores", s, "teacher_scores", t)
    B, nh, Tq, Tk = s.shape
    if Tq != Tk:
        raise ValueError(f"student_scores: expected square (B, nh, T, T) self-attention scores, got {s.shape}")
    # BEGIN EXERCISE attention_mse
    dt = s.dtype.type
    t = t.astype(s.dtype, copy=False)
    m, _ = _check_mask(mask, (B, Tq), s.dtype)              # (B,T)
    real = m.astype(bool)                                   # (B,T)
    pair = real[:, None, :, None] & real[:, None, None, :]  # (B,1,T,T) both query and key real
    n_pairs = nh * int(np.count_nonzero(pair))
    diff = np.zeros_like(s)                                 # (B,nh,T,T)
    np.subtract(s, t, out=diff, where=pair)                 # only real pairs are ever touched
    loss = np.vdot(diff, diff) * dt(1.0 / n_pairs)          # scalar
    diff *= dt(2.0 / n_pairs)                               # (B,nh,T,T) d loss / d student_scores
    return dt(loss), diff
    # END EXERCISE attention_mse


def cosine_loss(student_h, teacher_h, mask):
    """DistilBERT hidden-state loss: mean over real tokens of 1 - cos(student_h, teacher_h).

    It aligns the directions of the hidden states and ignores their lengths. Student and
    teacher must have the same width (DistilBERT students copy the teacher's width).
    Norms are clamped below at eps = 1e-8 (a zero vector has cosine 0, not NaN).
    Per token, with u = s / |s| and v = t / |t|:  d(1 - cos)/ds = -(v - cos * u) / |s|.

    Inputs:
    - student_h: (B, T, H) float
    - teacher_h: (B, T, H) float (cast to the student's dtype)
    - mask: (B, T) 0/1
    Returns a tuple of:
    - loss: 0-d scalar of student_h.dtype, in [0, 2]
    - dstudent_h: (B, T, H), fresh; 0 at padded tokens
    """
    s = _check_float("student_h", student_h, ndim=3)
    t = _check_float("teacher_h", teacher_h, ndim=3)
    _check_same_shape("student_h", s, "teacher_h", t)
    # BEGIN EXERCISE cosine_loss
    dt = s.dtype.type
    t = t.astype(s.dtype, copy=False)
    m, n_real = _check_mask(mask, s.shape[:2], s.dtype)     # (B,T)
    eps = dt(1e-8)
    s_norm = np.sqrt((s * s).sum(axis=-1))                  # (B,T)
    s_len = np.maximum(s_norm, eps)                         # (B,T)
    t_len = np.maximum(np.sqrt((t * t).sum(axis=-1)), eps)  # (B,T)
    u = s / s_len[..., None]                                # (B,T,H)
    v = t / t_len[..., None]                                # (B,T,H)
    cos = (u * v).sum(axis=-1)                              # (B,T)
    loss = ((1 - cos) * m).sum() / dt(n_real)               # scalar
    # d cos / d s = (v - cos*u) / |s|; where |s| was clamped, cos = s.v/eps and only v remains.
    cos_u = (cos * (s_norm > eps).astype(s.dtype))[..., None] * u   # (B,T,H)
    coef = -m / (s_len * dt(n_real))                        # (B,T), 0 at padded tokens
    dstudent = v - cos_u                                    # (B,T,H)
    dstudent *= coef[..., None]
    return dt(loss), dstudent
    # END EXERCISE cosine_loss
