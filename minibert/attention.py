"""Multi-head self-attention, forward and backward, plus a loop-based twin to test it against.

Shape legend
    B batch   T tokens   H hidden   nh heads   hs head size (H = nh * hs)

    x (B,T,H) -> qkv = x @ W_qkv + b_qkv (B,T,3H), one matmul for all three projections;
    split into q, k, v (B,nh,T,hs); scores = q k^T / sqrt(hs) + bias (B,nh,T,T);
    probs = softmax(scores) over the keys; dropout on probs; ctx = probs @ v (B,nh,T,hs);
    heads side by side again (B,T,H); y = ctx @ W_o + b_o (B,T,H).

Padding: `mask_to_bias` turns a 0/1 mask (B,T) into an additive bias (B,1,1,T) that is 0 for real
keys and MASK_NEG = -1e9 for padded ones. exp(-1e9 - max) is exactly 0.0 in float32 and float64,
so padded keys get exactly zero probability and padded tokens cannot change real outputs. The
bias is large but finite: -inf would turn a fully padded row into 0/0 = NaN (this way such a row
just gets some finite, meaningless output, which the model never reads).

Every step is a batched np.matmul over (B, nh): no Python loop over heads or tokens. The 1/sqrt(hs)
scale is applied to q (B,nh,T,hs) rather than to scores (B,nh,T,T), which is T/hs times cheaper
and differs only by rounding.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .layers import (
    DropoutCache,
    LinearCache,
    SoftmaxCache,
    check_dout,
    check_finite,
    check_float,
    check_same_dtype,
    dropout_forward,
    linear_backward,
    linear_forward,
    softmax_backward,
    softmax_forward,
)

MASK_NEG = -1e9   # additive bias for padded keys: large, finite (never -inf, never finfo.min)


def mask_to_bias(mask, dtype):
    """Turn a padding mask into an additive attention bias.

    Inputs: mask of shape (B, T), 1 = real token, 0 = padding (int, bool or float 0/1);
            dtype, the float dtype of the model (np.float32 or np.float64).
    Returns: bias of shape (B, 1, 1, T) in `dtype`: 0.0 where mask == 1, MASK_NEG where mask == 0.
    """
    mask, dtype = np.asarray(mask), np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype: expected a float dtype, got {dtype}")
    if mask.ndim != 2 or mask.dtype.kind not in "biuf":
        raise ValueError(f"mask: expected a 0/1 array of shape (B, T), got {mask.dtype} {mask.shape}")
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"mask: values must be 0 or 1, got {np.unique(mask)[:5]} (shape {mask.shape})")
    bias = np.where(mask == 0, dtype.type(MASK_NEG), dtype.type(0.0)).astype(dtype, copy=False)
    return bias[:, None, None, :]                                   # (B,T) -> (B,1,1,T)


def _check_inputs(x, W_qkv, b_qkv, W_o, b_o, bias, n_heads):
    """Validate attention's inputs (ValueError naming the argument and shapes); return them as arrays."""
    x = check_float("x", x, ndim=3)
    B, T, H = x.shape
    if not isinstance(n_heads, (int, np.integer)) or n_heads < 1 or H % n_heads:
        raise ValueError(f"n_heads: expected a positive divisor of H = {H} (x {x.shape}), got {n_heads}")
    arrays = {}
    for name, a, shape in (("W_qkv", W_qkv, (H, 3 * H)), ("b_qkv", b_qkv, (3 * H,)),
                           ("W_o", W_o, (H, H)), ("b_o", b_o, (H,))):
        a = check_float(name, a)
        if a.shape != shape:
            raise ValueError(f"{name}: expected shape {shape} for x of shape {x.shape}, got {a.shape}")
        check_same_dtype(name, a, "x", x)
        arrays[name] = a
    if bias is not None:
        bias = check_float("bias", bias)
        if bias.shape != (B, 1, 1, T):
            raise ValueError(f"bias: expected shape (B, 1, 1, T) = {(B, 1, 1, T)} for x of shape "
                             f"{x.shape}, got {bias.shape} (make it with mask_to_bias)")
        check_same_dtype("bias", bias, "x", x)
        check_finite("bias", bias)   # tiny; -inf would make fully padded rows NaN
    check_finite("x", x)
    return x, arrays["W_qkv"], arrays["b_qkv"], arrays["W_o"], arrays["b_o"], bias


class AttentionCache(NamedTuple):
    qkv: LinearCache        # input projection: x (B,T,H), W_qkv (H,3H)
    q: np.ndarray           # (B,nh,T,hs) queries, already multiplied by scale
    k: np.ndarray           # (B,nh,T,hs) keys
    v: np.ndarray           # (B,nh,T,hs) values
    scores: np.ndarray      # (B,nh,T,T) q k^T * scale + bias, before softmax (read by distillation)
    probs: np.ndarray       # (B,nh,T,T) softmax(scores), before dropout (read by distillation)
    drop: DropoutCache      # dropout on probs (mask None when inactive)
    out: LinearCache        # output projection: ctx (B,T,H), W_o (H,H)
    scale: np.floating      # 1/sqrt(hs) in x's dtype


def attention_forward(x, W_qkv, b_qkv, W_o, b_o, bias, n_heads, dropout_p=0.0, rng=None):
    """Multi-head self-attention with a padding bias.

    Inputs: x (B,T,H); W_qkv (H,3H) with columns [q | k | v], b_qkv (3H,); W_o (H,H), b_o (H,);
            bias (B,1,1,T) from mask_to_bias, or None for no padding; n_heads dividing H;
            dropout_p, dropout on the attention probabilities; rng, a Generator, None = no dropout.
    Returns a tuple of: y (B,T,H); cache (AttentionCache; cache.scores and cache.probs are the
            pre-softmax scores including the bias, and the probabilities before dropout).
    """
    x, W_qkv, b_qkv, W_o, b_o, bias = _check_inputs(x, W_qkv, b_qkv, W_o, b_o, bias, n_heads)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), got {dropout_p}")
    B, T, H = x.shape
    nh, hs = n_heads, H // n_heads
    scale = x.dtype.type(1.0 / math.sqrt(hs))
    qkv, qkv_cache = linear_forward(x, W_qkv, b_qkv)                  # (B,T,H) -> (B,T,3H)
    qkv = qkv.reshape(B, T, 3, nh, hs).transpose(2, 0, 3, 1, 4)       # -> (3,B,nh,T,hs), a view
    q = qkv[0]                                                        # (B,nh,T,hs) queries, a view
    q *= scale                                                        # scaled in place (qkv is ours)
    k, v = qkv[1], qkv[2]                                             # (B,nh,T,hs) each
    scores = q @ k.swapaxes(-1, -2)                                   # (B,nh,T,hs) @ (B,nh,hs,T) -> (B,nh,T,T)
    if bias is not None:
        scores += bias                                                # (B,nh,T,T) + (B,1,1,T)
    probs, _ = softmax_forward(scores)                                # (B,nh,T,T), rows sum to 1
    dropped, drop = dropout_forward(probs, dropout_p, rng, copy=False)   # (B,nh,T,T); eval: probs itself
    ctx = np.empty((B, T, nh, hs), dtype=x.dtype)                     # heads side by side again:
    np.matmul(dropped, v, out=ctx.transpose(0, 2, 1, 3))              # (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs) view
    ctx = ctx.reshape(B, T, H)                                        # (B,T,nh,hs) -> (B,T,H), no copy
    y, out_cache = linear_forward(ctx, W_o, b_o)                      # (B,T,H) -> (B,T,H)
    return y, AttentionCache(qkv_cache, q, k, v, scores, probs, drop, out_cache, scale)


def attention_backward(dy, cache, dscores=None, dprobs=None):
    """Backward of attention_forward.

    Inputs: dy (B,T,H), upstream gradient of y; cache from attention_forward;
            dscores, dprobs: optional extra upstream gradients (B,nh,T,T) on cache.scores and
            cache.probs (e.g. from attention-distillation losses); they are added where those
            tensors feed the rest of the computation.
    Returns a tuple of fresh arrays: dx (B,T,H), dW_qkv (H,3H), db_qkv (3H,), dW_o (H,H), db_o (H,).
    (The bias is a constant, so it gets no gradient.)
    """
    qkv_cache, q, k, v, scores, probs, drop, out_cache, scale = cache
    B, nh, T, hs = q.shape
    H = nh * hs
    check_dout("dy", dy, (B, T, H))
    for name, extra in (("dscores", dscores), ("dprobs", dprobs)):
        if extra is not None:
            check_dout(name, extra, probs.shape)
    # BEGIN EXERCISE attention_backward
    # 1) y = ctx @ W_o + b_o
    dctx, dW_o, db_o = linear_backward(dy, out_cache)                 # (B,T,H)
    dctx = dctx.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)           # -> (B,nh,T,hs)
    # the gradient of qkv, heads back side by side; its v, q and k parts are written below
    dqkv = np.empty((B, T, 3, nh, hs), dtype=dy.dtype)
    dqkv_heads = dqkv.transpose(2, 0, 3, 1, 4)                        # (3,B,nh,T,hs) view into dqkv
    # 2) ctx = dropped @ v, with dropped = probs * mask (recomputed: one multiply, saves memory)
    dropped = probs if drop.mask is None else probs * drop.mask       # (B,nh,T,T)
    np.matmul(dropped.swapaxes(-1, -2), dctx, out=dqkv_heads[2])      # dv: (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs)
    dp = dctx @ v.swapaxes(-1, -2)                                    # (B,nh,T,hs) @ (B,nh,hs,T) -> (B,nh,T,T)
    # 3) dropout, then the extra gradient on probs (which is read before dropout)
    if drop.mask is not None:
        dp *= drop.mask
    if dprobs is not None:
        dp += dprobs
    # 4) probs = softmax(scores), then the extra gradient on scores
    ds = softmax_backward(dp, SoftmaxCache(probs))                    # (B,nh,T,T)
    if dscores is not None:
        ds += dscores
    # 5) scores = (scale * q_raw) @ k^T + bias; the cached q already holds scale * q_raw
    np.matmul(ds, k, out=dqkv_heads[0])                               # (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs)
    dqkv_heads[0] *= scale
    np.matmul(ds.swapaxes(-1, -2), q, out=dqkv_heads[1])              # (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs)
    # 6) qkv = x @ W_qkv + b_qkv
    dx, dW_qkv, db_qkv = linear_backward(dqkv.reshape(B, T, 3 * H), qkv_cache)
    # END EXERCISE attention_backward
    return dx, dW_qkv, db_qkv, dW_o, db_o


# The packed attention's softmax shifts each sequence's scores by ONE max, not one per row (below).
# A row whose entries all sit far below that max would underflow; a row sum under this bound
# (about e^-46) sends the sequence back to the per-row shift. Above it, the row's largest entry is
# >= 1e-20 / n, so every entry that matters to float32 (down to 1.2e-7 of it) is a normal float.
_MIN_ROW_SUM = 1e-20


def _softmax_shared_shift(x):
    """Softmax over the last axis of x (nh,n,n), shifted by the max of the whole array.

    Any per-row constant cancels in exp(x - c) / sum exp(x - c), so one c for every row gives the
    same probabilities; c = the largest entry keeps every exp <= 1 (no overflow). One max over a
    contiguous array costs ~10x less than n*nh row maxima (which were half of the softmax's time
    here). Falls back to softmax_forward (per-row max) if some row sum underflows (see
    _MIN_ROW_SUM) or is NaN. Returns: probs, fresh, of x's shape and dtype.
    """
    y = x - x.max()                                               # (nh,n,n) <= 0
    np.exp(y, out=y)
    sums = np.einsum("...k->...", y)[..., None]                   # (nh,n,1) row sums
    if not sums.min() >= _MIN_ROW_SUM:                            # (not >=: NaN falls back too)
        return softmax_forward(x)[0]
    y /= sums
    return y


def attention_packed(qkv, starts, n_heads, keep_probs=False):
    """The attention core for inference on PACKED sequences: no padding, no mask, no backward.

    The N real tokens of a batch are rows of one array, sequence after sequence; sequence b is
    rows starts[b]:starts[b+1] and attends to itself only. That is exactly what the padded
    attention computes for real tokens (a padded key gets probability exactly 0 there), but it
    never builds the (B,nh,T,T) grid: a batch padded to T with lengths n_b costs sum(n_b^2)
    score entries instead of B*T^2 (0.47 of them on the bench's batch, lengths drawn in [T/4, T]).
    One Python iteration per sequence, each a few batched-over-heads matmuls.

    Inputs: qkv (N,3H) = x @ W_qkv + b_qkv for the packed tokens, columns [q | k | v]; its q
            block is scaled by 1/sqrt(hs) IN PLACE; starts (B+1,) ints, non-decreasing row
            offsets with starts[0] = 0 and starts[-1] = N (an empty sequence is skipped);
            n_heads dividing H; keep_probs: also return each sequence's scores and probs.
    Returns a tuple of: ctx (N,H), the heads side by side (input of the output projection);
            scores, probs: lists of B arrays (nh, n_b, n_b) when keep_probs, else None.
    """
    qkv = check_float("qkv", qkv, ndim=2)
    N, H3 = qkv.shape
    if H3 % 3 or (H3 // 3) % n_heads:
        raise ValueError(f"qkv: expected (N, 3H) with H divisible by n_heads={n_heads}, got {qkv.shape}")
    starts = np.asarray(starts)
    if starts.ndim != 1 or starts[0] != 0 or starts[-1] != N or np.any(np.diff(starts) < 0):
        raise ValueError(f"starts: expected non-decreasing row offsets from 0 to N={N}, got {starts}")
    H = H3 // 3
    nh, hs = n_heads, H // n_heads
    qkv[:, :H] *= qkv.dtype.type(1.0 / math.sqrt(hs))                # queries scaled, as in attention_forward
    ctx = np.empty((N, H), dtype=qkv.dtype)
    scores_all = [] if keep_probs else None
    probs_all = [] if keep_probs else None
    for b in range(len(starts) - 1):
        s, e = int(starts[b]), int(starts[b + 1])
        n = e - s
        if n == 0:
            if keep_probs:
                scores_all.append(np.empty((nh, 0, 0), dtype=qkv.dtype))
                probs_all.append(np.empty((nh, 0, 0), dtype=qkv.dtype))
            continue
        q, k, v = qkv[s:e].reshape(n, 3, nh, hs).transpose(1, 2, 0, 3)   # (3,nh,n,hs) -> (nh,n,hs) views
        scores = q @ k.swapaxes(-1, -2)                               # (nh,n,hs) @ (nh,hs,n) -> (nh,n,n)
        probs = _softmax_shared_shift(scores)                         # (nh,n,n), rows sum to 1
        np.matmul(probs, v, out=ctx[s:e].reshape(n, nh, hs).transpose(1, 0, 2))  # (nh,n,n) @ (nh,n,hs) -> (nh,n,hs) view
        if keep_probs:
            scores_all.append(scores)
            probs_all.append(probs)
    return ctx, scores_all, probs_all


def attention_naive(x, W_qkv, b_qkv, W_o, b_o, bias, n_heads):
    """The same attention (no dropout) written with loops over batch and heads and 2-D matmuls.

    Slow on purpose: it is the readable reference attention_forward is tested against.
    Inputs: as attention_forward. Returns a tuple of: y (B,T,H); probs (B,nh,T,T).
    """
    x, W_qkv, b_qkv, W_o, b_o, bias = _check_inputs(x, W_qkv, b_qkv, W_o, b_o, bias, n_heads)
    B, T, H = x.shape
    nh, hs = n_heads, H // n_heads
    scale = x.dtype.type(1.0 / math.sqrt(hs))
    y = np.empty((B, T, H), dtype=x.dtype)
    probs = np.empty((B, nh, T, T), dtype=x.dtype)
    for b in range(B):
        qkv = x[b] @ W_qkv + b_qkv                                    # (T,H) @ (H,3H) -> (T,3H)
        ctx = np.empty((T, H), dtype=x.dtype)
        for h in range(nh):
            cols = slice(h * hs, (h + 1) * hs)                        # this head's hs columns
            q = qkv[:, cols]                                          # (T,hs)
            k = qkv[:, H:][:, cols]                                   # (T,hs)
            v = qkv[:, 2 * H:][:, cols]                               # (T,hs)
            s = (q @ k.T) * scale                                     # (T,hs) @ (hs,T) -> (T,T)
            if bias is not None:
                s = s + bias[b, 0]                                    # (T,T) + (1,T): per key
            p = np.exp(s - s.max(axis=1, keepdims=True))              # (T,T)
            p /= p.sum(axis=1, keepdims=True)
            probs[b, h] = p
            ctx[:, cols] = p @ v                                      # (T,T) @ (T,hs) -> (T,hs)
        y[b] = ctx @ W_o + b_o                                        # (T,H) @ (H,H) -> (T,H)
    return y, probs
