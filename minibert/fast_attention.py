"""The fast kernels of attention.py: the same attention forward and backward with `out=` buffers,
and the packed attention core (forward with optional dropout, and its backward) for inference and
training on the real tokens, which never builds the padded (B,nh,T,T) grid.

Shape legend
    B batch   T tokens   H hidden   nh heads   hs head size (H = nh * hs)   N real tokens of a batch

Each function stands in for a reference in attention.py (see fast.py's STANDS_IN_FOR) and is tested
equal to it in tests/test_fast.py. The pipeline runs these (model.py's `fast=True`).
"""

from __future__ import annotations

import math

import numpy as np

from minibert.attention import AttentionCache, _check_inputs
from minibert.layers import (
    SoftmaxCache,
    check_dout,
    check_float,
    dropout_forward,
    linear_backward,
    linear_forward,
    softmax_backward,
    softmax_forward,
)


def attention_forward(x: np.ndarray, W_qkv: np.ndarray, b_qkv: np.ndarray, W_o: np.ndarray,
                      b_o: np.ndarray, bias: np.ndarray | None, n_heads: int, dropout_p: float = 0.0,
                      rng: np.random.Generator | None = None) -> tuple[np.ndarray, AttentionCache]:
    """attention.attention_forward writing its context straight into the (B,T,H) layout (`out=`)
    and scaling q in place inside the projection's output: the same numbers, two copies fewer.

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
    nh, hs = n_heads, W_qkv.shape[1] // 3 // n_heads                  # hs = H / nh (A / nh if pruned)
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
    ctx = ctx.reshape(B, T, nh * hs)                                  # (B,T,nh,hs) -> (B,T,H), no copy
    y, out_cache = linear_forward(ctx, W_o, b_o)                      # (B,T,H) -> (B,T,H)
    return y, AttentionCache(qkv_cache, q, k, v, scores, probs, drop, out_cache, scale)


def attention_backward(dy: np.ndarray, cache: AttentionCache, dscores: np.ndarray | None = None,
                       dprobs: np.ndarray | None = None,
                       dvalues: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """attention.attention_backward writing dq, dk, dv straight into one (B,T,3H) buffer (`out=`):
    the same numbers, no stacking copy. Works on a cache from either attention_forward.

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
    # 1) y = ctx @ W_o + b_o
    dctx, dW_o, db_o = linear_backward(dy, out_cache)                 # (B,T,H)
    dctx = dctx.reshape(B, T, nh, hs).transpose(0, 2, 1, 3)           # -> (B,nh,T,hs)
    # the gradient of qkv, heads back side by side; its v, q and k parts are written below
    dqkv = np.empty((B, T, 3, nh, hs), dtype=dy.dtype)
    dqkv_heads = dqkv.transpose(2, 0, 3, 1, 4)                        # (3,B,nh,T,hs) view into dqkv
    # 2) ctx = dropped @ v, with dropped = probs * mask (recomputed: one multiply, saves memory)
    dropped = probs if drop.mask is None else probs * drop.mask       # (B,nh,T,T)
    np.matmul(dropped.swapaxes(-1, -2), dctx, out=dqkv_heads[2])      # dv: (B,nh,T,T) @ (B,nh,T,hs) -> (B,nh,T,hs)
    if dvalues is not None:
        dqkv_heads[2] += dvalues                                      # v also fed a relation loss
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


def attention_packed(qkv: np.ndarray, starts: np.ndarray, n_heads: int, keep_probs: bool = False,
                     drop: list | None = None) -> tuple[np.ndarray, list | None, list | None]:
    """The attention core on PACKED sequences: no padding, no mask (attention_packed_backward is
    its backward, for training).

    The N real tokens of a batch are rows of one array, sequence after sequence; sequence b is
    rows starts[b]:starts[b+1] and attends to itself only. That is exactly what the padded
    attention computes for real tokens (a padded key gets probability exactly 0 there), but it
    never builds the (B,nh,T,T) grid: a batch padded to T with lengths n_b costs sum(n_b^2)
    score entries instead of B*T^2 (0.47 of them on the bench's batch, lengths drawn in [T/4, T]).
    One Python iteration per sequence, each a few batched-over-heads matmuls.

    Inputs: qkv (N,3H) = x @ W_qkv + b_qkv for the packed tokens, columns [q | k | v]; its q
            block is scaled by 1/sqrt(hs) IN PLACE; starts (B+1,) ints, non-decreasing row
            offsets with starts[0] = 0 and starts[-1] = N (an empty sequence is skipped);
            n_heads dividing H; keep_probs: also return each sequence's scores and probs;
            drop: None (no dropout), or B dropout masks (nh, n_b, n_b), 0 or 1/(1-p), applied to
            the probabilities before they weight the values (None entries for empty sequences).
    Returns a tuple of: ctx (N,H), the heads side by side (input of the output projection);
            scores, probs: lists of B arrays (nh, n_b, n_b) when keep_probs, else None (probs
            are before dropout, as attention_forward's cache.probs).
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
        dropped = probs if drop is None else probs * drop[b]          # (nh,n,n)
        np.matmul(dropped, v, out=ctx[s:e].reshape(n, nh, hs).transpose(1, 0, 2))  # (nh,n,n) @ (nh,n,hs) -> (nh,n,hs) view
        if keep_probs:
            scores_all.append(scores)
            probs_all.append(probs)
    return ctx, scores_all, probs_all


def attention_packed_backward(dctx: np.ndarray, qkv: np.ndarray, starts: np.ndarray, n_heads: int,
                              probs: list, drop: list | None = None, dscores: list | None = None,
                              dprobs: list | None = None, dvalues: list | None = None) -> np.ndarray:
    """Backward of attention_packed (the core qkv -> ctx), sequence by sequence: what
    attention_backward does between its two linear layers, on each sequence's own rows.

    Inputs: dctx (N,A), upstream gradient of ctx; qkv (N,3A) as attention_packed left it (q
            block scaled); starts (B+1,) as given to it; n_heads; probs: its B arrays (nh,n_b,n_b);
            drop: the B dropout masks it applied, or None; dscores, dprobs: None, or B extra
            gradients (nh,n_b,n_b) on each sequence's scores / probs (None entries allowed);
            dvalues: None, or B extra gradients (nh,n_b,hs) on each sequence's values.
    Returns: dqkv (N,3A), fresh, columns [dq | dk | dv] (dq with respect to the UNSCALED q).
    """
    N, H3 = qkv.shape
    H = H3 // 3
    nh, hs = n_heads, H // n_heads
    check_dout("dctx", dctx, (N, H))
    scale = qkv.dtype.type(1.0 / math.sqrt(hs))
    dqkv = np.empty((N, 3, nh, hs), dtype=qkv.dtype)
    for b in range(len(starts) - 1):
        s, e = int(starts[b]), int(starts[b + 1])
        n = e - s
        if n == 0:
            continue
        q, k, v = qkv[s:e].reshape(n, 3, nh, hs).transpose(1, 2, 0, 3)   # (nh,n,hs) views each
        dq, dk, dv = dqkv[s:e].transpose(1, 2, 0, 3)                  # (nh,n,hs) views into dqkv
        dc = dctx[s:e].reshape(n, nh, hs).transpose(1, 0, 2)          # (nh,n,hs)
        p, mask = probs[b], None if drop is None else drop[b]         # (nh,n,n)
        dropped = p if mask is None else p * mask                     # (nh,n,n)
        np.matmul(dropped.swapaxes(-1, -2), dc, out=dv)               # (nh,n,n) @ (nh,n,hs) -> (nh,n,hs)
        if dvalues is not None and dvalues[b] is not None:
            dv += dvalues[b]                                          # v also fed a relation loss
        dp = dc @ v.swapaxes(-1, -2)                                  # (nh,n,hs) @ (nh,hs,n) -> (nh,n,n)
        if mask is not None:
            dp *= mask                                                # dropout
        if dprobs is not None and dprobs[b] is not None:
            dp += dprobs[b]                                           # probs read before dropout
        ds = softmax_backward(dp, SoftmaxCache(p))                    # (nh,n,n)
        if dscores is not None and dscores[b] is not None:
            ds += dscores[b]
        np.matmul(ds, k, out=dq)                                      # (nh,n,n) @ (nh,n,hs) -> (nh,n,hs)
        dq *= scale                                                   # scores = (scale q) k^T
        np.matmul(ds.swapaxes(-1, -2), q, out=dk)                     # (nh,n,n) @ (nh,n,hs) -> (nh,n,hs)
    return dqkv.reshape(N, 3 * H)
