"""The building blocks of the encoder, each as a pair of pure functions.

    y, cache = thing_forward(inputs...)      # cache: a small NamedTuple, what the backward needs
    grads    = thing_backward(dy, cache)     # FRESH arrays, in the order of the forward's inputs

Nothing here keeps state and no backward accumulates into anything: call it twice, get the same
arrays twice. Everything runs in the dtype it is given (float32 by default; float64 for gradient
checks): Python constants are cast with `x.dtype.type(c)` so float64 never sneaks in.

Shape legend
    N...  any number of leading axes (e.g. B, T)     D  input features     M  output features
    B batch   T tokens   H hidden (the normalised axis)   V vocab (rows of an embedding table)

Input checks (ValueError naming the argument and the shapes) happen at the forward entry points and
are kept cheap: shapes and dtypes always; NaN/inf only on the data input `x` of `linear_forward` and
`layernorm_forward` (one `sum` over x: NaN and inf always reach the sum, and only when the sum is not
finite do we look element by element). GELU, softmax and dropout only ever see outputs of those.
bert_forward switches these scans off inside (`_skip_finite_checks`) and scans its output once.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import NamedTuple

import numpy as np

# ----------------------------------------------------------------------------------------------
# Input checks shared by the core modules (attention.py and model.py use them too)


def check_float(name, a, ndim=None):
    """Return `a` as an array; ValueError unless it is a floating-point array (of `ndim` axes)."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: expected a float array, got dtype {a.dtype} (shape {a.shape})")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} axes, got shape {a.shape}")
    return a


def check_same_dtype(name, a, ref_name, ref):
    """ValueError if `a` and `ref` differ in dtype (mixing them would silently promote to float64)."""
    if a.dtype != ref.dtype:
        raise ValueError(f"{name}: dtype {a.dtype} does not match {ref_name} dtype {ref.dtype} "
                         f"(cast both to one dtype; mixing them promotes to float64)")


_finite = threading.local()   # .skip: True inside _skip_finite_checks() (in this thread only)


@contextlib.contextmanager
def _skip_finite_checks():
    """Private: inside this block, in this thread, check_finite does nothing. For bert_forward, which
    scans its output once instead of every layer's inputs (49 sums in a 6-layer forward):
    NaN/inf from anywhere inside (a parameter, an overflow) reaches the output."""
    before = getattr(_finite, "skip", False)
    _finite.skip = True
    try:
        yield
    finally:
        _finite.skip = before


def check_finite(name, a):
    """ValueError if `a` holds NaN or inf, saying how many and where the first one is. Costs one
    reduction (a sum) when everything is finite."""
    if getattr(_finite, "skip", False):
        return
    with np.errstate(over="ignore", invalid="ignore"):
        total = a.sum()
    if np.isfinite(total):
        return
    finite = np.isfinite(a)                               # the sum may merely have overflowed
    bad = np.size(a) - np.count_nonzero(finite)
    if bad:
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{name}: contains {bad} NaN/inf value(s) (shape {a.shape}), the first "
                         f"at index {first} = {a[first]}")


def check_dout(name, dy, shape):
    """ValueError unless the upstream gradient `dy` has the forward output's shape."""
    if dy.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (the forward output), got {dy.shape}")


# ----------------------------------------------------------------------------------------------
# Linear


class LinearCache(NamedTuple):
    x: np.ndarray   # (N..., D) the input
    W: np.ndarray   # (D, M)


def linear_forward(x, W, b):
    """Affine map of the last axis: y = x @ W + b.

    Inputs: x of shape (N..., D); W of shape (D, M) (stored (in, out)); b of shape (M,); one float dtype.
    Returns a tuple of: y of shape (N..., M); cache (LinearCache).
    """
    x, W, b = check_float("x", x), check_float("W", W, ndim=2), check_float("b", b)
    if x.ndim < 1 or x.shape[-1] != W.shape[0]:
        raise ValueError(f"W: expected shape (D, M) with D = x.shape[-1], got W {W.shape} for x {x.shape}")
    if b.shape != (W.shape[1],):
        raise ValueError(f"b: expected shape (M,) = ({W.shape[1]},) to match W {W.shape}, got {b.shape}")
    check_same_dtype("W", W, "x", x)
    check_same_dtype("b", b, "x", x)
    check_finite("x", x)
    D, M = W.shape
    y = x.reshape(-1, D) @ W                  # (N, D) @ (D, M) -> (N, M): one big matmul
    y += b                                    # (N, M) += (M,)
    return y.reshape(*x.shape[:-1], M), LinearCache(x, W)


def linear_backward(dy, cache):
    """Backward of linear_forward.

    Inputs: dy of shape (N..., M), upstream gradient; cache from linear_forward.
    Returns a tuple of fresh arrays: dx (N..., D), dW (D, M), db (M,).
    """
    x, W = cache
    check_dout("dy", dy, (*x.shape[:-1], W.shape[1]))
    # BEGIN EXERCISE linear_backward
    D, M = W.shape
    x2, dy2 = x.reshape(-1, D), dy.reshape(-1, M)   # flatten the leading axes: (N, D), (N, M)
    dx = (dy2 @ W.T).reshape(x.shape)               # (N, M) @ (M, D) -> (N, D) -> (N..., D)
    dW = x2.T @ dy2                                 # (D, N) @ (N, M) -> (D, M)
    db = dy2.sum(axis=0)                            # (N, M) -> (M,)
    # END EXERCISE linear_backward
    return dx, dW, db


# ----------------------------------------------------------------------------------------------
# Embedding lookup


class EmbeddingCache(NamedTuple):
    ids: np.ndarray        # (N...) integer ids used to index the table
    num_embeddings: int    # V, rows of the table


def embedding_forward(ids, table):
    """Look up one row of `table` per id.

    Inputs: ids, integer array of any shape (N...), usually (B, T), each in [0, V);
            table of shape (V, H).
    Returns a tuple of: out of shape (N..., H) (a fresh array); cache (EmbeddingCache).
    """
    ids, table = np.asarray(ids), check_float("table", table, ndim=2)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"ids: expected an integer array, got dtype {ids.dtype} (shape {ids.shape})")
    V = table.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise ValueError(f"ids: values must lie in [0, {V}) for a table of shape {table.shape}, "
                         f"got min {ids.min()} and max {ids.max()}")
    return table[ids], EmbeddingCache(ids, V)       # (N...) -> (N..., H)


def embedding_backward(dout, cache):
    """Backward of embedding_forward: scatter-add each row of dout into the row of its id.

    An id that appears k times receives the sum of its k upstream rows; rows never looked up get 0.
    Inputs: dout of shape (N..., H); cache from embedding_forward.
    Returns: dtable of shape (V, H), fresh.
    """
    ids, V = cache
    if dout.shape[:-1] != ids.shape:
        raise ValueError(f"dout: expected shape {ids.shape} + (H,) to match ids, got {dout.shape}")
    H = dout.shape[-1]
    dtable = np.zeros((V, H), dtype=dout.dtype)     # (V, H)
    # np.add.at, unlike dtable[ids] += dout, adds once per occurrence (repeated ids accumulate).
    # It is fastest on flat 1-D indices: entry (id, h) of the table is element id*H + h of its
    # ravel. Measured for 2048 ids (Zipf-distributed, like text) into 30522x384 float32:
    # 1-D add.at 12 ms, 2-D add.at 60 ms, sort + add.reduceat 16 ms, unique + bincount 17 ms;
    # for 16384 ids: 53, 195, 63, 82 ms. (About 7 ms of each is the kernel zeroing dtable's pages.)
    flat = ids.reshape(-1, 1).astype(np.intp) * H + np.arange(H)   # (B*T, H) indices into the ravel
    np.add.at(dtable.reshape(-1), flat.reshape(-1), dout.reshape(-1))   # (V*H,) += (B*T*H,)
    return dtable


# ----------------------------------------------------------------------------------------------
# LayerNorm


class LayerNormCache(NamedTuple):
    xhat: np.ndarray    # (N..., H) the input, normalised to mean 0, variance 1 over the last axis
    rstd: np.ndarray    # (N..., 1) 1 / sqrt(var + eps)
    gamma: np.ndarray   # (H,)


def layernorm_forward(x, gamma, beta, eps):
    """Normalise the last axis, then scale and shift: y = (x - mean) / sqrt(var + eps) * gamma + beta.

    The variance is the biased one (divide by H), as in BERT; BERT uses eps = 1e-12.
    Inputs: x of shape (N..., H); gamma, beta of shape (H,); eps > 0.
    Returns a tuple of: y of shape (N..., H); cache (LayerNormCache).
    """
    x, gamma, beta = check_float("x", x), check_float("gamma", gamma), check_float("beta", beta)
    H = x.shape[-1] if x.ndim else None
    for name, p in (("gamma", gamma), ("beta", beta)):
        if p.shape != (H,):
            raise ValueError(f"{name}: expected shape (H,) = ({H},) to match x {x.shape}, got {p.shape}")
        check_same_dtype(name, p, "x", x)
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number, got {eps}")
    check_finite("x", x)
    # Row sums with einsum: over a short last axis it is ~3x faster than .mean/.sum (and the
    # variance needs no squared temporary).
    inv_h = x.dtype.type(1.0 / x.shape[-1])
    mean = np.einsum("...h->...", x)[..., None]                  # (N..., 1) sum over H
    mean *= inv_h
    xhat = x - mean                                              # (N..., H) centred
    var = np.einsum("...h,...h->...", xhat, xhat)[..., None]     # (N..., 1) sum of squares
    var *= inv_h                                                 # biased variance
    var += x.dtype.type(eps)
    rstd = np.reciprocal(np.sqrt(var, out=var), out=var)         # (N..., 1)
    xhat *= rstd                                                 # (N..., H) normalised
    y = xhat * gamma                                             # (N..., H) * (H,)
    y += beta
    return y, LayerNormCache(xhat, rstd, gamma)


def layernorm_backward(dy, cache):
    """Backward of layernorm_forward.

    Inputs: dy of shape (N..., H); cache from layernorm_forward.
    Returns a tuple of fresh arrays: dx (N..., H), dgamma (H,), dbeta (H,).
    """
    xhat, rstd, gamma = cache
    check_dout("dy", dy, xhat.shape)
    # BEGIN EXERCISE layernorm_backward
    H = xhat.shape[-1]
    # 1) y = xhat * gamma + beta: the parameters collect over every leading position
    dbeta = dy.reshape(-1, H).sum(axis=0)                        # (H,)
    dgamma = (dy * xhat).reshape(-1, H).sum(axis=0)              # (H,)
    # 2) back through the scale: dxhat = dy * gamma
    dxhat = dy * gamma                                           # (N..., H)
    # 3) xhat = (x - mean) * rstd, where mean and rstd depend on x too; with the means over H,
    #    dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
    m1 = dxhat.mean(axis=-1, keepdims=True)                      # (N..., 1)
    m2 = np.einsum("...h,...h->...", dxhat, xhat)[..., None]     # (N..., 1) sum(dxhat * xhat)
    m2 /= xhat.dtype.type(H)                                     # ... its mean
    dx = dxhat
    dx -= m1
    dx -= xhat * m2                                              # (N..., H)
    dx *= rstd
    # END EXERCISE layernorm_backward
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------------------------
# erf and the exact GELU
#
# NumPy has no erf, so we build one. For z = |x| >= 0 write
#     erfc(z) = exp(-z^2) * (1 - u * R(u)),     u = 2 p z / (1 + p z) = 2 / (1 + 1/(p z))  in [0, 2],
# where R is a smooth function of u, approximated by a polynomial. The coefficients below are a
# weighted least-squares fit (Chebyshev nodes in u, reweighted towards equal ripple) of
# (1 - exp(z^2) erfc(z)) / u, computed once against 40-digit values; the weight exp(-z^2) u makes
# the fitted quantity the absolute error of erf. Then erf(x) = sign(x) * (1 - erfc(|x|)).
# Max absolute error of the fit: 1.6e-9 for the float32 set, 3.7e-16 for the float64 set, so in
# float32 the result is as good as float32 rounding (and NumPy's float32 exp) allows: 1.3e-7.
# erf(0) == 0 exactly (u = 0 there), erf(+-inf) == +-1 (u = 2, exp(-inf) = 0), NaN stays NaN.
_ERF_P32, _ERF_R32 = 0.375, (
    1.5045053958892822, -1.0255191326141357, 0.38140010833740234, -0.05049240216612816,
    -0.013635626994073391, 0.0046703508123755455)
_ERF_P64, _ERF_R64 = 0.3125, (
    1.8054066673527833, -1.6572966663208226, 0.9725790457032273, -0.34928309685721665,
    0.056255809448441114, 0.007692671201385554, -0.004048465560782437, -0.000321637976279368,
    0.0002694932906722717, 3.827431303984888e-05, -1.4689189344657752e-05, -7.955218353298451e-06,
    2.4530040954360405e-06)

# erf takes ~20 elementwise passes. Run on whole (B,T,I) arrays, each pass streams megabytes
# through memory and every temporary is a fresh allocation; run on blocks of 64K elements, the
# block and its two scratch buffers (256 KB each in float32) stay in the CPU cache. Measured on
# (2048, 1536) float32: ~1.5x faster.
_BLOCK = 1 << 16


# np.copysign is not vectorised (as slow as np.exp); for out >= 0, copying x's sign is one OR of the
# sign bit, on the same memory viewed as unsigned integers: two integer passes, ~3x faster.
_SIGN_BITS = {4: (np.uint32, np.uint32(1 << 31)), 8: (np.uint64, np.uint64(1 << 63))}


def _copysign_nonneg(out, x, scratch):
    """out = copysign(out, x) in place, for out >= 0 (or NaN); 1-D contiguous blocks, scratch too."""
    if out.dtype.itemsize not in _SIGN_BITS:
        np.copysign(out, x, out=out)
        return
    uint, bit = _SIGN_BITS[out.dtype.itemsize]
    sign = np.bitwise_and(x.view(uint), bit, out=scratch.view(uint))   # x's sign bit alone
    np.bitwise_or(out.view(uint), sign, out=out.view(uint))


def _erf_block(x, scale, out, u, e, p, coeffs, dt):
    """erf(z) into out and exp(-z^2) into e, z = scale * x (scale > 0), for 1-D blocks of one length;
    u is scratch."""
    np.square(x, out=e)
    e *= dt(-scale * scale)
    np.exp(e, out=e)                                       # exp(-z^2)
    np.abs(x, out=u)
    u *= dt(p * scale)                                     # p z, z = |scale x|
    np.divide(dt(1), u, out=u)                             # 1 / (p z): inf at z = 0, 0 at z = inf
    u += dt(1)
    np.divide(dt(2), u, out=u)                             # u = 2 / (1 + 1/(p z)) in [0, 2]
    np.multiply(u, dt(coeffs[-1]), out=out)                # Horner: R(u)
    for c in coeffs[-2:0:-1]:
        out += dt(c)
        out *= u
    out += dt(coeffs[0])
    out *= u                                               # u R(u)
    out *= e
    np.subtract(dt(1), e, out=u)                           # 1 - exp(-z^2), exact while |z| < 0.83
    out += u                                               # erf(|z|) = 1 - exp(-z^2) (1 - u R(u))
    _copysign_nonneg(out, x, u)                            # erf is odd (and z has the sign of x)


def _erf_blocks(x, scale, out, finish=None):
    """erf(scale * x) for float32/64 x, run block by block (_BLOCK elements, in the CPU cache).

    out: array of x's size to receive erf, or None to keep each block in a reused scratch block
    (for callers that only need what `finish` makes of it). finish(x_block, erf_block, i, j), if
    given, runs on each block right after erf, while both are still in the cache."""
    p, coeffs = (_ERF_P32, _ERF_R32) if x.dtype.itemsize == 4 else (_ERF_P64, _ERF_R64)
    dt = x.dtype.type
    flat = x.reshape(-1)
    n = min(_BLOCK, flat.size)
    u, e = np.empty(n, dtype=x.dtype), np.empty(n, dtype=x.dtype)   # scratch for every block
    scratch = np.empty(n, dtype=x.dtype) if out is None else None
    with np.errstate(divide="ignore", over="ignore"):      # 1/0 = inf and inf^2 are intended
        for i in range(0, flat.size, _BLOCK):
            j = min(i + _BLOCK, flat.size)
            o = scratch[:j - i] if out is None else out[i:j]
            _erf_block(flat[i:j], scale, o, u[:j - i], e[:j - i], p, coeffs, dt)
            if finish is not None:
                finish(flat[i:j], o, i, j)


def erf_scaled(x, scale=1.0):
    """erf(z) for z = scale * x, elementwise (GELU needs erf(x / sqrt 2)).

    Inputs: x, array of any shape (float input keeps its dtype, other input becomes float64);
            scale > 0.
    Returns: a fresh array of x's shape and dtype.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if not scale > 0:
        raise ValueError(f"scale: expected a positive number, got {scale}")
    if x.dtype.itemsize < 4:                               # float16: compute in float32
        return erf_scaled(x.astype(np.float32), scale).astype(x.dtype)
    out = np.empty(x.size, dtype=x.dtype)
    _erf_blocks(x, scale, out)
    return out.reshape(x.shape)


def erf(x):
    """The error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise.

    Max absolute error against math.erf on the tests' dense grid: 1.3e-7 in float32 (about 2 float32
    ulps: float32 exp's own error) and 4.4e-16 in float64 (the tests allow 1.5e-7 and 2e-15).
    Float input keeps its dtype; other input is computed in float64.
    Inputs: x, array of any shape. Returns: an array of the same shape and dtype, fresh.
    """
    y = erf_scaled(x)
    return y if np.ndim(x) else y[()]


class GeluCache(NamedTuple):
    x: np.ndarray     # (N...) the input
    cdf: np.ndarray   # (N...) Phi(x), kept from the forward: recomputing it (erf: ~20 passes over
                      # x) would cost the backward 4x more than the rest of it does


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu(x, keep_cdf):
    """y = x * Phi(x) for float x; Phi(x) too when keep_cdf (else None). Runs erf's blocks and
    finishes each (Phi, then y) while it is still in the CPU cache; without keep_cdf Phi never
    leaves it (one (N..., I) array less to write: ~13% of GELU's time on the teacher's FFN)."""
    dt = x.dtype.type
    if x.dtype.itemsize < 4:                                   # float16: erf computes in float32
        cdf = erf_scaled(x, _SQRT_HALF)
        cdf += dt(1)
        cdf *= dt(0.5)
        return x * cdf, cdf if keep_cdf else None
    y = np.empty(x.size, dtype=x.dtype)
    cdf = np.empty(x.size, dtype=x.dtype) if keep_cdf else None

    def finish(xb, c, i, j):                                   # c = erf(x / sqrt 2) of this block
        c += dt(1)
        c *= dt(0.5)                                           # Phi(x) = 0.5 * (1 + erf(x / sqrt 2))
        np.multiply(xb, c, out=y[i:j])                         # y = x * Phi(x)
    _erf_blocks(x, _SQRT_HALF, cdf, finish)
    return y.reshape(x.shape), cdf.reshape(x.shape) if keep_cdf else None


def gelu_forward(x):
    """The exact GELU: y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))) (not the tanh approximation).

    Inputs: x, float array of any shape. Returns a tuple of: y (same shape and dtype); cache (GeluCache).
    """
    x = check_float("x", x)
    y, cdf = _gelu(x, keep_cdf=True)
    return y, GeluCache(x, cdf)


def gelu(x):
    """The same exact GELU for inference: y only, no cache (gelu_forward keeps Phi(x) for the backward).

    Inputs: x, float array of any shape. Returns: y (same shape and dtype), bit-identical to gelu_forward's.
    """
    return _gelu(check_float("x", x), keep_cdf=False)[0]


def gelu_backward(dy, cache):
    """Backward of gelu_forward: dx = dy * (Phi(x) + x * phi(x)), phi the standard normal density.

    Inputs: dy (same shape as x); cache from gelu_forward.
    Returns: dx, fresh.
    """
    x, cdf = cache
    check_dout("dy", dy, x.shape)
    # BEGIN EXERCISE gelu_backward
    dt = x.dtype.type
    pdf = np.square(x)                   # phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    pdf *= dt(-0.5)
    np.exp(pdf, out=pdf)
    pdf *= dt(_INV_SQRT_2PI)
    pdf *= x                             # x * phi(x)
    dx = pdf
    dx += cdf                            # d gelu / dx = Phi(x) + x * phi(x), Phi(x) from the cache
    dx *= dy
    # END EXERCISE gelu_backward
    return dx


# ----------------------------------------------------------------------------------------------
# Dropout


class DropoutCache(NamedTuple):
    mask: np.ndarray | None   # (N...) 0 or 1/(1-p) ("inverted dropout", pre-scaled); None = inactive


def dropout_forward(x, p, rng, copy=True):
    """Inverted dropout: zero each entry with probability p, scale the survivors by 1/(1-p).

    Inputs: x, float array; p in [0, 1); rng, np.random.Generator, or None for eval mode;
            copy: when inactive, return a copy of x (default) or, copy=False, x itself (for
            callers that never write into the result: no copy in eval mode).
    Returns a tuple of: y (a fresh array when active, or when copy); cache (DropoutCache).
    Inactive (rng None or p == 0): y is x or a copy of it, and the mask is None.
    """
    x = check_float("x", x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p: dropout probability must be in [0, 1), got {p}")
    if rng is None or p == 0:
        return (x.copy() if copy else x), DropoutCache(None)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy.random.Generator or None, got {type(rng).__name__}")
    dt = x.dtype.type if x.dtype in (np.float32, np.float64) else np.float64
    mask = rng.random(x.shape, dtype=dt)                 # uniform [0, 1)
    np.greater_equal(mask, dt(p), out=mask)              # 1.0 keep / 0.0 drop, in place
    mask *= dt(1.0 / (1.0 - p))
    mask = mask.astype(x.dtype, copy=False)
    return x * mask, DropoutCache(mask)


def dropout_backward(dy, cache):
    """Backward of dropout_forward: dx = dy * mask (a copy of dy when inactive).

    Inputs: dy; cache from dropout_forward. Returns: dx, fresh.
    """
    if cache.mask is None:
        return dy.copy()
    check_dout("dy", dy, cache.mask.shape)
    return dy * cache.mask


# ----------------------------------------------------------------------------------------------
# Softmax


class SoftmaxCache(NamedTuple):
    y: np.ndarray   # (N..., K) the output probabilities


def softmax_forward(x):
    """Softmax over the last axis, computed as exp(x - max) / sum so that it never overflows.

    Inputs: x of shape (N..., K). Returns a tuple of: y (N..., K), rows summing to 1; cache.
    """
    x = check_float("x", x)
    y = x - x.max(axis=-1, keepdims=True)   # (N..., K) <= 0
    np.exp(y, out=y)
    y /= np.einsum("...k->...", y)[..., None]   # (N..., K) / (N..., 1) row sums (einsum: faster than .sum here)
    return y, SoftmaxCache(y)


def softmax_backward(dy, cache):
    """Backward of softmax_forward: dx = y * (dy - sum(dy * y)) over the last axis.

    Inputs: dy of shape (N..., K); cache from softmax_forward. Returns: dx, fresh.
    """
    y = cache.y
    check_dout("dy", dy, y.shape)
    # BEGIN EXERCISE softmax_backward
    s = np.einsum("...k,...k->...", dy, y)[..., None]   # (N..., 1) sum_k dy_k y_k
    dx = dy - s                                         # (N..., K)
    dx *= y
    # END EXERCISE softmax_backward
    return dx
