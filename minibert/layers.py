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

This is the reference: plain NumPy expressions, what the lessons teach and the exercises cut out.
fast_layers.py holds the same erf and GELU computed block by block in the CPU cache (what the
pipeline runs), tested equal to these in tests/test_fast.py.
"""

from __future__ import annotations

import contextlib
import math
import threading
from typing import NamedTuple

import numpy as np

from minibert.errors import NonFiniteError

# ----------------------------------------------------------------------------------------------
# Input checks shared by the core modules (attention.py and model.py use them too)


def check_float(name: str, a, ndim: int | None = None) -> np.ndarray:
    """Return `a` as an array; ValueError unless it is a floating-point array (of `ndim` axes)."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        raise ValueError(f"{name}: expected a float array, got dtype {a.dtype} (shape {a.shape})")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} axes, got shape {a.shape}")
    return a


def check_same_dtype(name: str, a: np.ndarray, ref_name: str, ref: np.ndarray) -> None:
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


def check_finite(name: str, a: np.ndarray) -> None:
    """NonFiniteError (a ValueError) if `a` holds NaN or inf, saying how many and where the first
    one is. Costs one reduction (a sum) when everything is finite."""
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
        raise NonFiniteError(f"{name}: contains {bad} NaN/inf value(s) (shape {a.shape}), the "
                             f"first at index {first} = {a[first]}")


def check_dout(name: str, dy: np.ndarray, shape) -> None:
    """ValueError unless the upstream gradient `dy` has the forward output's shape."""
    if dy.shape != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} (the forward output), got {dy.shape}")


# ----------------------------------------------------------------------------------------------
# Linear


class LinearCache(NamedTuple):
    x: np.ndarray   # (N..., D) the input
    W: np.ndarray   # (D, M)


def linear_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, LinearCache]:
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


def linear_backward(dy: np.ndarray, cache: LinearCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def embedding_forward(ids: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, EmbeddingCache]:
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


def embedding_backward(dout: np.ndarray, cache: EmbeddingCache) -> np.ndarray:
    """Backward of embedding_forward: scatter-add each row of dout into the row of its id.

    An id that appears k times receives the sum of its k upstream rows; rows never looked up get 0.
    Inputs: dout of shape (N..., H); cache from embedding_forward.
    Returns: dtable of shape (V, H), fresh.
    """
    ids, V = cache
    if dout.shape[:-1] != ids.shape:
        raise ValueError(f"dout: expected shape {ids.shape} + (H,) to match ids, got {dout.shape}")
    # BEGIN EXERCISE embedding_backward
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
    # END EXERCISE embedding_backward


# ----------------------------------------------------------------------------------------------
# LayerNorm


class LayerNormCache(NamedTuple):
    xhat: np.ndarray    # (N..., H) the input, normalised to mean 0, variance 1 over the last axis
    rstd: np.ndarray    # (N..., 1) 1 / sqrt(var + eps)
    gamma: np.ndarray   # (H,)


def layernorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                      eps: float) -> tuple[np.ndarray, LayerNormCache]:
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
    rstd = x.dtype.type(1) / np.sqrt(var)                        # (N..., 1)
    xhat *= rstd                                                 # (N..., H) normalised
    y = xhat * gamma                                             # (N..., H) * (H,)
    y += beta
    return y, LayerNormCache(xhat, rstd, gamma)


def layernorm_backward(dy: np.ndarray, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
# the fitted quantity the absolute error of erf. Then
#     erf(z) = 1 - erfc(z) = (1 - exp(-z^2)) + exp(-z^2) * u * R(u),   erf(-z) = -erf(z),
# with 1 - exp(-z^2) computed as -expm1(-z^2), accurate even where it is tiny (small z).
# Max absolute error of the fit: 1.6e-9 for the float32 set, 3.7e-16 for the float64 set, so in
# float32 the result is as good as float32 rounding (and NumPy's float32 exp) allows: 1.3e-7.
# erf(0) == 0 exactly (u = 0 there), erf(+-inf) == +-1 (u = 2, exp(-inf) = 0), NaN stays NaN.
ERF_P32, ERF_R32 = 0.375, (
    1.5045053958892822, -1.0255191326141357, 0.38140010833740234, -0.05049240216612816,
    -0.013635626994073391, 0.0046703508123755455)
ERF_P64, ERF_R64 = 0.3125, (
    1.8054066673527833, -1.6572966663208226, 0.9725790457032273, -0.34928309685721665,
    0.056255809448441114, 0.007692671201385554, -0.004048465560782437, -0.000321637976279368,
    0.0002694932906722717, 3.827431303984888e-05, -1.4689189344657752e-05, -7.955218353298451e-06,
    2.4530040954360405e-06)


def erf(x) -> np.ndarray:
    """The error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise.

    Max error against math.erf on the tests' grid: 1.3e-7 absolute in float32 (about 2 float32
    ulps: float32 exp's own error); in float64 a few 1e-16 relative, down to tiny x.
    Float input keeps its dtype (float16 is computed in float32); other input becomes float64.
    Inputs: x, array of any shape. Returns: an array of the same shape and dtype, fresh.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if x.dtype.itemsize < 4:
        return erf(x.astype(np.float32)).astype(x.dtype)
    p, coeffs = (ERF_P32, ERF_R32) if x.dtype.itemsize == 4 else (ERF_P64, ERF_R64)
    dt = x.dtype.type
    z = np.abs(x)
    with np.errstate(divide="ignore", over="ignore"):          # 1/0 = inf and inf^2 are intended
        u = dt(2) / (dt(1) + dt(1) / (dt(p) * z))              # in [0, 2]: 0 at z = 0, 2 at z = inf
        z2 = z * z
    r = dt(coeffs[-1])                                         # Horner: R(u)
    for c in coeffs[-2::-1]:
        r = r * u + dt(c)
    y = -np.expm1(-z2) + np.exp(-z2) * u * r                   # erf(z), z = |x|
    y = np.copysign(y, x)                                      # erf is odd
    return y if y.ndim else y[()]


class GeluCache(NamedTuple):
    x: np.ndarray     # (N...) the input
    cdf: np.ndarray   # (N...) Phi(x), kept from the forward: recomputing it (erf: ~20 passes over
                      # x) would cost the backward 4x more than the rest of it does


_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_forward(x: np.ndarray) -> tuple[np.ndarray, GeluCache]:
    """The exact GELU: y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))) (not the tanh approximation).

    Inputs: x, float array of any shape. Returns a tuple of: y (same shape and dtype); cache (GeluCache).
    """
    x = check_float("x", x)
    dt = x.dtype.type
    cdf = dt(0.5) * (dt(1) + erf(x * dt(_SQRT_HALF)))         # Phi(x), the standard normal CDF
    return x * cdf, GeluCache(x, cdf)


def gelu(x: np.ndarray) -> np.ndarray:
    """The same exact GELU for inference: y only, no cache. Inputs: x, float array.
    Returns: y (same shape and dtype), equal to gelu_forward(x)[0]."""
    return gelu_forward(x)[0]


def gelu_backward(dy: np.ndarray, cache: GeluCache) -> np.ndarray:
    """Backward of gelu_forward: dx = dy * (Phi(x) + x * phi(x)), phi the standard normal density.

    Inputs: dy (same shape as x); cache from gelu_forward.
    Returns: dx, fresh.
    """
    x, cdf = cache
    check_dout("dy", dy, x.shape)
    # BEGIN EXERCISE gelu_backward
    dt = x.dtype.type
    # phi(x) = exp(-x^2 / 2) / sqrt(2 pi), the standard normal density
    pdf = np.exp(dt(-0.5) * np.square(x)) * dt(_INV_SQRT_2PI)
    pdf *= x                             # x * phi(x)
    # d gelu / dx = Phi(x) + x * phi(x), Phi(x) from the cache
    dx = dy * (cdf + pdf)
    # END EXERCISE gelu_backward
    return dx


# ----------------------------------------------------------------------------------------------
# Dropout


class DropoutCache(NamedTuple):
    mask: np.ndarray | None   # (N...) 0 or 1/(1-p) ("inverted dropout", pre-scaled); None = inactive


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None,
                    copy: bool = True) -> tuple[np.ndarray, DropoutCache]:
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
    keep = rng.random(x.shape, dtype=dt) >= dt(p)        # uniform [0, 1): True with probability 1-p
    mask = (keep * dt(1.0 / (1.0 - p))).astype(x.dtype, copy=False)   # 0 or 1/(1-p)
    return x * mask, DropoutCache(mask)


def dropout_backward(dy: np.ndarray, cache: DropoutCache) -> np.ndarray:
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


def softmax_forward(x: np.ndarray) -> tuple[np.ndarray, SoftmaxCache]:
    """Softmax over the last axis, computed as exp(x - max) / sum so that it never overflows.

    Inputs: x of shape (N..., K). Returns a tuple of: y (N..., K), rows summing to 1; cache.
    """
    x = check_float("x", x)
    y = np.exp(x - x.max(axis=-1, keepdims=True))   # (N..., K) in (0, 1]: never overflows
    y /= np.einsum("...k->...", y)[..., None]   # (N..., K) / (N..., 1) row sums (einsum: faster than .sum here)
    return y, SoftmaxCache(y)


def softmax_backward(dy: np.ndarray, cache: SoftmaxCache) -> np.ndarray:
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
