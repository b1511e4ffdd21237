"""Wrong implementations of relation_kl and value_relation_backward (lesson 10, MiniLM).

Each relation_kl below is the library's function with the region rewritten the way a student
might: the checks above the region (_check_relation, _real_tokens, key_real, pair, inv_n) are
kept as the stub hands them out.
"""

import math

import numpy as np

from minibert.relation_losses import _check_pair, _check_relation, _masked_log_softmax, _real_tokens


def _relation_kl(student_logits, teacher_logits, mask, *, reverse=False, query_rows="real",
                 key_mask="both", axis=-1, count="right", grad_sign=1.0):
    """relation_kl with one slip chosen by the keywords (the defaults are the right answer)."""
    s = _check_relation("student_logits", student_logits)
    t = _check_relation("teacher_logits", teacher_logits)
    _check_pair("student_logits", s, "teacher_logits", t)
    B, nh, T, _ = s.shape
    dt = s.dtype.type
    t = t.astype(s.dtype, copy=False)
    real, n_real = _real_tokens(mask, B, T)
    key_real = real[:, None, None, :]
    pair = real[:, None, :, None] & key_real
    inv_n = dt(1.0 / (nh * n_real))
    if count == "every token":
        inv_n = dt(1.0 / (nh * B * T))
    elif count == "no heads":
        inv_n = dt(1.0 / n_real)
    if query_rows == "all":
        pair = np.broadcast_to(key_real, (B, 1, T, T))             # padded queries kept
    everywhere = np.ones_like(key_real)

    def logp(z, masked):
        if axis != -1:                                             # softmax over the queries
            zt = np.where(key_real, z, z.dtype.type(-1e9)).swapaxes(-1, -2)
            return _masked_log_softmax(zt, everywhere).swapaxes(-1, -2)
        return _masked_log_softmax(z, key_real if masked else everywhere)

    logp_s = logp(s, key_mask in ("both", "student"))
    logp_t = logp(t, key_mask == "both")
    p_s, p_t = np.exp(logp_s), np.exp(logp_t)
    terms = np.zeros_like(s)
    if reverse:                                                    # KL(p_s || p_t)
        np.subtract(logp_s, logp_t, out=terms, where=pair)
        terms *= p_s
    else:
        np.subtract(logp_t, logp_s, out=terms, where=pair)
        terms *= p_t
    loss = terms.sum() * inv_n
    dstudent = np.zeros_like(s)
    np.subtract(p_s, p_t, out=dstudent, where=pair)
    dstudent *= inv_n * dt(grad_sign)
    return dt(loss), dstudent


def relation_kl_direction_swapped(s, t, mask):
    return _relation_kl(s, t, mask, reverse=True)


def relation_kl_keeps_padded_queries(s, t, mask):
    return _relation_kl(s, t, mask, query_rows="all")


def relation_kl_leaves_padded_keys_in_the_softmax(s, t, mask):
    return _relation_kl(s, t, mask, key_mask="none")


def relation_kl_masks_only_the_student(s, t, mask):
    return _relation_kl(s, t, mask, key_mask="student")


def relation_kl_mean_over_every_token(s, t, mask):
    return _relation_kl(s, t, mask, count="every token")


def relation_kl_mean_forgets_the_heads(s, t, mask):
    return _relation_kl(s, t, mask, count="no heads")


def relation_kl_softmax_over_the_queries(s, t, mask):
    return _relation_kl(s, t, mask, axis=-2)


def relation_kl_gradient_sign_flipped(s, t, mask):
    return _relation_kl(s, t, mask, grad_sign=-1.0)


# value_relation_backward(dr, cache): r = scale * v v^T
def value_relation_backward_misses_the_transpose_term(dr, cache):
    v, scale = cache
    return (np.asarray(dr, dtype=v.dtype) @ v) * scale


def value_relation_backward_assumes_dr_symmetric(dr, cache):
    v, scale = cache
    return (2 * np.asarray(dr, dtype=v.dtype) @ v) * scale


def value_relation_backward_forgets_the_scale(dr, cache):
    v, _ = cache
    dr = np.asarray(dr, dtype=v.dtype)
    return (dr + dr.swapaxes(-1, -2)) @ v


def value_relation_backward_scales_twice(dr, cache):
    v, scale = cache
    dr = np.asarray(dr, dtype=v.dtype)
    return (dr + dr.swapaxes(-1, -2)) @ v * scale * scale


def value_relation_backward_multiplies_by_sqrt_hs(dr, cache):
    v, _ = cache
    dr = np.asarray(dr, dtype=v.dtype)
    return (dr + dr.swapaxes(-1, -2)) @ v * v.dtype.type(math.sqrt(v.shape[-1]))


def value_relation_backward_transposes_with_dot_T(dr, cache):
    v, scale = cache
    dr = np.asarray(dr, dtype=v.dtype)
    return (dr + dr.T) @ v * scale                                # .T reverses all four axes


def value_relation_backward_recomputes_the_scale_in_float64(dr, cache):
    v, _ = cache
    dr = np.asarray(dr, dtype=v.dtype)
    return (dr + dr.swapaxes(-1, -2)) @ v / np.sqrt(np.float64(v.shape[-1]))


def value_relation_backward_adds_the_transpose_in_place(dr, cache):
    v, scale = cache
    dr = np.asarray(dr, dtype=v.dtype)
    dr += dr.swapaxes(-1, -2)                                      # the caller's dr changes
    return dr @ v * scale


MISTAKES = {
    "relation_kl": [(relation_kl_direction_swapped, None),
                    (relation_kl_keeps_padded_queries, None),
                    (relation_kl_leaves_padded_keys_in_the_softmax, "must not enter"),
                    (relation_kl_masks_only_the_student, "must not enter"),
                    (relation_kl_mean_over_every_token, "padded ones too"),
                    (relation_kl_mean_forgets_the_heads, "not averaged over the heads"),
                    (relation_kl_softmax_over_the_queries, None),
                    (relation_kl_gradient_sign_flipped, "opposite sign")],
    "value_relation_backward": [
        (value_relation_backward_misses_the_transpose_term, "two uses"),
        (value_relation_backward_assumes_dr_symmetric, "AND its transpose"),
        (value_relation_backward_forgets_the_scale, "scale missing"),
        (value_relation_backward_scales_twice, "applied twice"),
        (value_relation_backward_multiplies_by_sqrt_hs, "instead of divided"),
        (value_relation_backward_transposes_with_dot_T, None),
        (value_relation_backward_recomputes_the_scale_in_float64, "float64"),
        (value_relation_backward_adds_the_transpose_in_place, "unchanged")],
}
