"""Multi-head self-attention, forward and backward (the reference), plus a loop-based twin to test it against.

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

fast_attention.py holds the same forward and backward with `out=` buffers, and the packed attention
core that inference runs without padding; they are tested equal to these (tests/test_fast.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from minibert.layers import (
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


def mask_to_bias(mask: np.ndarray, dtype) -> np.ndarray:
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
    # A = n_heads * hs, the attention's width: H, or less in a layer whose heads were pruned
    # (a W_qkv that cannot be (H, 3A) is reported against the unpruned (H, 3H))
    cols = np.shape(W_qkv)[1] if np.ndim(W_qkv) == 2 else 0
    A = cols // 3 if cols % 3 == 0 and 0 < cols <= 3 * H else H
    if not isinstance(n_heads, (int, np.integer)) or n_heads < 1 or A < 1 or A % n_heads:
        width = f"H = {H} (x {x.shape})" if A == H else f"the attention width A = {A} (W_qkv {np.shape(W_qkv)})"
        raise ValueError(f"n_heads: expected a positive divisor of {width}, got {n_heads}")
    arrays = {}
    for name, a, shape in (("W_qkv", W_qkv, (H, 3 * A)), ("b_qkv", b_qkv, (3 * A,)),
                           ("W_o", W_o, (A, H)), ("b_o", b_o, (H,))):
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


def attention_forward(x: np.ndarray, W_qkv: np.ndarray, b_qkv: np.ndarray, W_o: np.ndarray,
                      b_o: np.ndarray, bias: np.ndarray | None, n_heads: int, dropout_p: float = 0.0,
                      rng: np.random.Generator | None = None) -> tuple[np.ndarray, AttentionCache]:
    """Multi-head self-attention with a padding bias.

    Inputs: x (B,T,H); W_qkv (H,3H) with columns [q | k | v], b_qkv (3H,); W_o (H,H), b_o (H,);
            (a layer with pruned heads: W_qkv (H,3A), b_qkv (3A,), W_o (A,H), A = n_heads*hs < H);
            bias (B,1,1,T) from mask_to_bias, or None for no padding; n_heads dividing H;
            dropout_p, dropout on the attention probabilities; rng, a Generator, None = no dropout.
    Returns a tuple of: y (B,T,H); cache (AttentionCache; cache.scores and cache.probs are the
            pre-softmax scores including the bias, and the probabilities before dropout).
    """
    x, W_qkv, b_qkv, W_o, b_o, bias = _check_inputs(x, W_qkv, b_qkv, W_o, b_o, bias, n_heads)
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p: expected a probability in [0, 1), got {dropout_p}")
    B, T, H = x.shape
    nh, hs = n_heads, W_qkv.shape[1] // 3 // n_heads                  # hs = H / nh (A / nh if pruned)
    scale = x.dtype.type(1.0 / math.sqrt(hs))
    qkv, qkv_cache = linear_forward(x, W_qkv, b_qkv)                  # (B,T,H) -> (B,T,3H)
    qkv = qkv.reshape(B, T, 3, nh, hs).transpose(2, 0, 3, 1, 4)       # -> (3,B,nh,T,hs)
    q = qkv[0] * scale                                                # (B,nh,T,hs) queries, scaled
    k, v = qkv[1], qkv[2]                                             # (B,nh,T,hs) each
    scores = q @ k.swapaxes(-1, -2)                                   # (B,nh,T,hs) @ (B,nh,hs,T) -> (B,nh,T,T)
    if bias is not None:
        scores = scores + bias                                        # (B,nh,T,T) + (B,1,1,T)
    probs, _ = softmax_forward(scores)                                # (B,nh,T,T), rows sum to 1
    dropped, drop = dropout_forward(probs, dropout_p, rng, copy=False)   # (B,nh,T,T); eval: probs itself
    ctx = dropped @ v                                                 # (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs)
    ctx = ctx.transpose(0, 2, 1, 3).reshape(B, T, nh * hs)            # heads side by side again: (B,T,H)
    y, out_cache = linear_forward(ctx, W_o, b_o)                      # (B,T,H) -> (B,T,H)
    return y, AttentionCache(qkv_cache, q, k, v, scores, probs, drop, out_cache, scale)


def attention_backward(dy: np.ndarray, cache: AttentionCache, dscores: np.ndarray | None = None,
                       dprobs: np.ndarray | None = None,
                       dvalues: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Backward of attention_forward.

    Inputs: dy (B,T,H), upstream gradient of y; cache from attention_forward;
            dscores, dprobs: optional extra upstream gradients (B,nh,T,T) on cache.scores and
            cache.probs (e.g. from attention-distillation losses); they are added where those
            tensors feed the rest of the computation; dvalues: optional extra upstream gradient
            (B,nh,T,hs) on cache.v (MiniLM's value relation).
    Returns a tuple of fresh arrays: dx (B,T,H), dW_qkv (H,3H), db_qkv (3H,), dW_o (H,H), db_o (H,).
    (The bias is a constant, so it gets no gradient.)
    """
    qkv_cache, q, k, v, scores, probs, drop, out_cache, scale = cache
    B, nh, T, hs = q.shape
    H = nh * hs                      # the attention's width: the hidden size unless heads were pruned
    check_dout("dy", dy, (B, T, out_cache.W.shape[1]))
    for name, extra in (("dscores", dscores), ("dprobs", dprobs)):
        if extra is not None:
            check_dout(name, extra, probs.shape)
    if dvalues is not None:
        check_dout("dvalues", dvalues, v.shape)
    # BEGIN EXERCISE attention_backward
    # 1) y = ctx @ W_o + b_o
    dctx, dW_o, db_o = linear_backward(dy, out_cache)                 # (B,T,H)
    dctx = dctx.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)           # -> (B,nh,T,hs)
    # 2) ctx = dropped @ v, with dropped = probs * mask (recomputed: one multiply, saves memory)
    dropped = probs if drop.mask is None else probs * drop.mask       # (B,nh,T,T)
    # dv = dropped^T @ dctx: (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs)
    dv = dropped.swapaxes(-1, -2) @ dctx
    if dvalues is not None:
        dv = dv + dvalues                                             # v also fed a relation loss
    dp = dctx @ v.swapaxes(-1, -2)                                    # (B,nh,T,hs) @ (B,nh,hs,T) -> (B,nh,T,T)
    # 3) dropout, then the extra gradient on probs (which is read before dropout)
    if drop.mask is not None:
        dp = dp * drop.mask
    if dprobs is not None:
        dp = dp + dprobs
    # 4) probs = softmax(scores), then the extra gradient on scores
    ds = softmax_backward(dp, SoftmaxCache(probs))                    # (B,nh,T,T)
    if dscores is not None:
        ds = ds + dscores
    # 5) scores = (scale * q_raw) @ k^T + bias; the cached q already holds scale * q_raw
    # dq = ds @ k, dk = ds^T @ q: (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs), stacked as (3,B,nh,T,hs)
    dqkv_heads = np.stack([ds @ k, ds.swapaxes(-1, -2) @ q, dv])
    dqkv_heads[0] *= scale
    # heads back side by side: (3,B,nh,T,hs) -> (B,T,3,nh,hs) -> (B,T,3H)
    dqkv = dqkv_heads.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * H)
    # 6) qkv = x @ W_qkv + b_qkv
    dx, dW_qkv, db_qkv = linear_backward(dqkv, qkv_cache)
    # END EXERCISE attention_backward
    return dx, dW_qkv, db_qkv, dW_o, db_o


def attention_naive(x: np.ndarray, W_qkv: np.ndarray, b_qkv: np.ndarray, W_o: np.ndarray, b_o: np.ndarray,
                    bias: np.ndarray | None, n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """The same attention (no dropout) written with loops over batch and heads and 2-D matmuls.

    Slow on purpose: it is the readable reference attention_forward is tested against.
    Inputs: as attention_forward. Returns a tuple of: y (B,T,H); probs (B,nh,T,T).
    """
    x, W_qkv, b_qkv, W_o, b_o, bias = _check_inputs(x, W_qkv, b_qkv, W_o, b_o, bias, n_heads)
    B, T, H = x.shape
    A = W_qkv.shape[1] // 3                                           # nh*hs (H unless heads were pruned)
    nh, hs = n_heads, A // n_heads
    scale = x.dtype.type(1.0 / math.sqrt(hs))
    y = np.empty((B, T, H), dtype=x.dtype)
    probs = np.empty((B, nh, T, T), dtype=x.dtype)
    for b in range(B):
        qkv = x[b] @ W_qkv + b_qkv                                    # (T,H) @ (H,3A) -> (T,3A)
        ctx = np.empty((T, A), dtype=x.dtype)
        for h in range(nh):
            cols = slice(h * hs, (h + 1) * hs)                        # this head's hs columns
            q = qkv[:, cols]                                          # (T,hs)
            k = qkv[:, A:][:, cols]                                   # (T,hs)
            v = qkv[:, 2 * A:][:, cols]                               # (T,hs)
            s = (q @ k.T) * scale                                     # (T,hs) @ (hs,T) -> (T,T)
            if bias is not None:
                s = s + bias[b, 0]                                    # (T,T) + (1,T): per key
            p = np.exp(s - s.max(axis=1, keepdims=True))              # (T,T)
            p /= p.sum(axis=1, keepdims=True)
            probs[b, h] = p
            ctx[:, cols] = p @ v                                      # (T,T) @ (T,hs) -> (T,hs)
        y[b] = ctx @ W_o + b_o                                        # (T,H) @ (H,H) -> (T,H)
    return y, probs
