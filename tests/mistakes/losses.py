"""Wrong implementations of the loss exercises."""

import numpy as np

from minibert.losses import _log_softmax, cross_entropy, soft_kl


def _softmax(z):
    return np.exp(_log_softmax(z))


# cross_entropy(logits, labels)
def ce_no_mean(logits, labels):
    n = logits.shape[0]
    logp = _log_softmax(logits)
    d = np.exp(logp)
    d[np.arange(n), labels] -= 1
    return logits.dtype.type(-logp[np.arange(n), labels].sum()), d             # summed, not mean


def ce_grad_without_onehot(logits, labels):
    n = logits.shape[0]
    logp = _log_softmax(logits)
    return logits.dtype.type(-logp[np.arange(n), labels].mean()), np.exp(logp) / n


def ce_unstable(logits, labels):
    n = logits.shape[0]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        e = np.exp(logits)                                                      # no max subtracted
        p = e / e.sum(axis=1, keepdims=True)
        loss = -np.log(p[np.arange(n), labels]).mean()
    d = p.copy()
    d[np.arange(n), labels] -= 1
    return logits.dtype.type(loss), d / logits.dtype.type(n)


def ce_mean_over_classes(logits, labels):
    n, c = logits.shape
    loss, d = cross_entropy(logits, labels)
    return loss / logits.dtype.type(c), d / logits.dtype.type(c)


# soft_kl(s, t, T)
def kl_mean_over_classes(s, t, T):
    loss, d = soft_kl(s, t, T)
    c = s.shape[1]
    return loss / s.dtype.type(c), d / s.dtype.type(c)


def kl_missing_one_over_T(s, t, T):
    n = s.shape[0]
    ls, lt = _log_softmax(s / T), _log_softmax(t / T)
    pt = np.exp(lt)
    return s.dtype.type((pt * (lt - ls)).sum() / n), (np.exp(ls) - pt) / n      # no 1/T


def kl_with_T_squared(s, t, T):
    loss, d = soft_kl(s, t, T)
    return loss * s.dtype.type(T * T), d * s.dtype.type(T * T)


def kl_reversed(s, t, T):
    n = s.shape[0]
    ls, lt = _log_softmax(s / T), _log_softmax(t / T)
    ps = np.exp(ls)
    loss = (ps * (ls - lt)).sum() / n                                            # KL(p_s || p_t)
    _, d = soft_kl(s, t, T)
    return s.dtype.type(loss), d


def kl_teacher_not_softened(s, t, T):
    n = s.shape[0]
    ls, lt = _log_softmax(s / T), _log_softmax(t)                                # teacher at T=1
    pt = np.exp(lt)
    return s.dtype.type((pt * (lt - ls)).sum() / n), (np.exp(ls) - pt) / (n * T)


# distillation_loss(s, t, labels, alpha, T)
def _parts(s, t, labels, T):
    """CE over the labelled rows (0 if none; its gradient scattered back), KL over every row."""
    lab = labels >= 0
    dce = np.zeros_like(s)
    ce = s.dtype.type(0.0)
    if lab.any():
        ce, dce[lab] = cross_entropy(s[lab], labels[lab])
    kl, dkl = soft_kl(s, t, T)
    return ce, dce, kl, dkl


def distill_ce_over_every_row(s, t, labels, alpha, T):
    lab = labels >= 0
    ce, dce, kl, dkl = _parts(s, t, labels, T)
    frac = lab.sum() / len(labels)                                              # mean over all N rows
    w = (1 - alpha) * T * T
    return alpha * ce * frac + w * kl, alpha * dce * frac + w * dkl, {"ce": ce * frac, "kl": kl}


def distill_unlabelled_as_last_class(s, t, labels, alpha, T):
    fixed = np.where(labels < 0, s.shape[1] - 1, labels)                       # -1 indexes the last class
    ce, dce = cross_entropy(s, fixed)
    kl, dkl = soft_kl(s, t, T)
    w = (1 - alpha) * T * T
    return alpha * ce + w * kl, alpha * dce + w * dkl, {"ce": ce, "kl": kl}


def distill_missing_T2(s, t, labels, alpha, T):
    ce, dce, kl, dkl = _parts(s, t, labels, T)
    return alpha * ce + (1 - alpha) * kl, alpha * dce + (1 - alpha) * dkl, {"ce": ce, "kl": kl}


def distill_kl_part_with_T2(s, t, labels, alpha, T):
    ce, dce, kl, dkl = _parts(s, t, labels, T)
    w = (1 - alpha) * T * T
    return alpha * ce + w * kl, alpha * dce + w * dkl, {"ce": ce, "kl": T * T * kl}


def distill_alpha_swapped(s, t, labels, alpha, T):
    ce, dce, kl, dkl = _parts(s, t, labels, T)
    w = alpha * T * T
    return (1 - alpha) * ce + w * kl, (1 - alpha) * dce + w * dkl, {"ce": ce, "kl": kl}


def distill_grad_T_not_T2(s, t, labels, alpha, T):
    ce, dce, kl, dkl = _parts(s, t, labels, T)
    w = (1 - alpha) * T * T
    return alpha * ce + w * kl, alpha * dce + (1 - alpha) * T * dkl, {"ce": ce, "kl": kl}


def distill_weighted_parts(s, t, labels, alpha, T):
    ce, dce, kl, dkl = _parts(s, t, labels, T)
    w = (1 - alpha) * T * T
    return alpha * ce + w * kl, alpha * dce + w * dkl, {"ce": alpha * ce, "kl": w * kl}


# hidden_mse(s, t, mask, W, b)
def _hidden(s, t, mask, W, b, *, count_padding=False, factor=2.0, mask_grad=True, dW_T=False,
            by_hs=False):
    B, T, hs = s.shape
    ht = t.shape[2]
    m = np.ones((B, T)) if mask is None else np.asarray(mask, float)
    proj = s if W is None else s @ W
    if b is not None:
        proj = proj + b
    diff = proj - t
    masked = diff * m[:, :, None]
    n = B * T if count_padding else m.sum()
    denom = n * (hs if by_hs else ht)
    loss = (masked ** 2).sum() / denom
    dproj = factor * (masked if mask_grad else diff) / denom
    if W is None:
        return loss, dproj, None, None
    ds = dproj @ W.T
    dW = s.reshape(-1, hs).T @ dproj.reshape(-1, ht)
    return loss, ds, (dW.T if dW_T else dW), (None if b is None else dproj.sum(axis=(0, 1)))


def hidden_mean_over_padding(s, t, mask=None, W=None, b=None):
    return _hidden(s, t, mask, W, b, count_padding=True)


def hidden_missing_factor_2(s, t, mask=None, W=None, b=None):
    return _hidden(s, t, mask, W, b, factor=1.0)


def hidden_unmasked_gradient(s, t, mask=None, W=None, b=None):
    return _hidden(s, t, mask, W, b, mask_grad=False)


def hidden_dW_transposed(s, t, mask=None, W=None, b=None):
    return _hidden(s, t, mask, W, b, dW_T=True)


def hidden_db_always(s, t, mask=None, W=None, b=None):
    loss, ds, dW, db = _hidden(s, t, mask, W, b)
    return loss, ds, dW, (np.zeros(t.shape[2]) if W is not None and db is None else db)


# attention_mse(s, t, mask)
def _att(s, t, mask, *, queries=True, every_entry=False, factor=2.0):
    B, nh, T, _ = s.shape
    real = np.asarray(mask).astype(bool)
    pair = real[:, None, None, :] & (real[:, None, :, None] if queries else True)
    pair = np.broadcast_to(pair, s.shape)
    diff = np.where(pair, s - t, 0.0)
    n = s.size if every_entry else int(pair.sum())
    return (diff ** 2).sum() / n, factor * diff / n


def att_keys_only(s, t, mask):
    return _att(s, t, mask, queries=False)


def att_mean_over_all(s, t, mask):
    return _att(s, t, mask, every_entry=True)


def att_missing_factor_2(s, t, mask):
    return _att(s, t, mask, factor=1.0)


def att_no_mask(s, t, mask):
    diff = s - t
    return (diff ** 2).mean(), 2 * diff / diff.size


# cosine_loss(s, t, mask)
def _cos(s, t, mask, *, norm_const=False, all_tokens=False, sign=1.0):
    m = np.asarray(mask, float)
    sl = np.linalg.norm(s, axis=-1, keepdims=True)
    tl = np.linalg.norm(t, axis=-1, keepdims=True)
    u, v = s / sl, t / tl
    cos = (u * v).sum(-1)
    n = m.size if all_tokens else m.sum()
    loss = ((1 - cos) * m).sum() / n
    g = v if norm_const else v - cos[..., None] * u
    return loss, sign * -(g / sl) * m[..., None] / n


def cos_norm_treated_constant(s, t, mask):
    return _cos(s, t, mask, norm_const=True)


def cos_mean_over_padding(s, t, mask):
    return _cos(s, t, mask, all_tokens=True)


def cos_gradient_sign(s, t, mask):
    return _cos(s, t, mask, sign=-1.0)


def cos_without_over_norm(s, t, mask):
    loss, d = _cos(s, t, mask)
    return loss, d * np.linalg.norm(s, axis=-1, keepdims=True)                  # no 1/|s|


MISTAKES = {
    "softmax_cross_entropy": [(ce_no_mean, "summed over the batch"), (ce_grad_without_onehot, None),
                              (ce_unstable, "NaN"), (ce_mean_over_classes, "averaged over the classes")],
    "soft_kl": [(kl_mean_over_classes, "averaged over the classes"),
                (kl_missing_one_over_T, "T=2"),
                (kl_with_T_squared, "missing or extra T^2"), (kl_reversed, "loss"),
                (kl_teacher_not_softened, "T=2")],
    "distillation_loss": [(distill_missing_T2, "missing or extra T^2"),
                          (distill_kl_part_with_T2, "parts['kl']"),
                          (distill_alpha_swapped, "alpha=0,"), (distill_grad_T_not_T2, "dlogits"),
                          (distill_weighted_parts, "parts['ce']"),
                          (distill_ce_over_every_row, "the unlabelled ones too"),
                          (distill_unlabelled_as_last_class, "unlabelled")],
    "hidden_mse": [(hidden_mean_over_padding, "padded ones too"),
                   (hidden_missing_factor_2, "a factor of 2 missing"),
                   (hidden_unmasked_gradient, "padding"), (hidden_dW_transposed, "dW"),
                   (hidden_db_always, "is None")],
    "attention_mse": [(att_keys_only, "three sequences"), (att_mean_over_all, "padded ones too"),
                      (att_missing_factor_2, "a factor of 2 missing"), (att_no_mask, None)],
    "cosine_loss": [(cos_norm_treated_constant, "dstudent_h"), (cos_mean_over_padding, "padded ones too"),
                    (cos_gradient_sign, "opposite sign"), (cos_without_over_norm, "dstudent_h")],
}
