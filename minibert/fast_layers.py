"""The fast kernels of layers.py: the same erf, GELU forward (and its inference twin) and GELU
backward, computed block by block in the CPU cache with `out=` buffers.

Each function here stands in for the function of the same name in layers.py (see fast.py's
STANDS_IN_FOR) and is tested equal to it in tests/test_fast.py: float64 to ~1e-15 relative, float32
to its rounding. The reference functions are what the lessons teach and the exercises cut out; these
are what the pipeline runs (model.py picks them with `fast=True`).

Why faster: erf takes ~20 elementwise passes. Run on whole (B,T,I) arrays, each pass streams
megabytes through memory and every temporary is a fresh allocation; run on blocks of 64K elements,
the block and its two scratch buffers stay in the CPU cache. The coefficients are layers.py's (its
comment says how they were fitted); only the order of work differs, and the scaled argument: here
erf(x / sqrt 2) folds 1/sqrt 2 into the polynomial's constants instead of rounding x / sqrt 2 first.
"""

from __future__ import annotations

import math

import numpy as np

from minibert.layers import ERF_P32, ERF_P64, ERF_R32, ERF_R64, GeluCache, check_dout, check_float

_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

# ----------------------------------------------------------------------------------------------
# erf, block by block

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
    p, coeffs = (ERF_P32, ERF_R32) if x.dtype.itemsize == 4 else (ERF_P64, ERF_R64)
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


def erf_scaled(x, scale: float = 1.0) -> np.ndarray:
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


def erf(x) -> np.ndarray:
    """The error function erf(x) = 2/sqrt(pi) * integral_0^x exp(-t^2) dt, elementwise.

    Max absolute error against math.erf on the tests' dense grid: 1.3e-7 in float32 (about 2 float32
    ulps: float32 exp's own error) and 4.4e-16 in float64 (the tests allow 1.5e-7 and 2e-15).
    Float input keeps its dtype; other input is computed in float64.
    Inputs: x, array of any shape. Returns: an array of the same shape and dtype, fresh.
    """
    y = erf_scaled(x)
    return y if np.ndim(x) else y[()]


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


def gelu_forward(x: np.ndarray) -> tuple[np.ndarray, GeluCache]:
    """The exact GELU: y = x * Phi(x) = 0.5 * x * (1 + erf(x / sqrt(2))) (not the tanh approximation).

    Inputs: x, float array of any shape. Returns a tuple of: y (same shape and dtype); cache (GeluCache).
    """
    x = check_float("x", x)
    y, cdf = _gelu(x, keep_cdf=True)
    return y, GeluCache(x, cdf)


def gelu(x: np.ndarray) -> np.ndarray:
    """The same exact GELU for inference: y only, no cache (gelu_forward keeps Phi(x) for the backward).

    Inputs: x, float array of any shape. Returns: y (same shape and dtype), bit-identical to gelu_forward's.
    """
    return _gelu(check_float("x", x), keep_cdf=False)[0]


def gelu_backward(dy: np.ndarray, cache: GeluCache) -> np.ndarray:
    """layers.gelu_backward with in-place passes (no temporaries): dx = dy * (Phi(x) + x * phi(x)).

    Inputs: dy (same shape as x); cache from gelu_forward.
    Returns: dx, fresh.
    """
    x, cdf = cache
    check_dout("dy", dy, x.shape)
    dt = x.dtype.type
    pdf = np.square(x)                   # phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
    pdf *= dt(-0.5)
    np.exp(pdf, out=pdf)
    pdf *= dt(_INV_SQRT_2PI)
    pdf *= x                             # x * phi(x)
    dx = pdf
    dx += cdf                            # d gelu / dx = Phi(x) + x * phi(x), Phi(x) from the cache
    dx *= dy
    return dx
