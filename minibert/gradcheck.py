"""Checking hand-written backward passes against finite differences.

For a function y = f(x) and an upstream gradient dout (same shape as y), the backward pass computes
the vector-Jacobian product dx = J^T dout, i.e. the gradient of the scalar  L(x) = sum(f(x) * dout).
Nudging one entry of x both ways measures the same number without any calculus:

    dL/dx_i  ~=  (L(x + h e_i) - L(x - h e_i)) / (2h)          (centred difference, error O(h^2))

In float64 with h = 1e-5 the two agree to about 1e-9 relative; a wrong backward is off by 1e-2 or
more. Float32 cannot do this (its rounding, 1e-7, divided by h swamps the result), so every
check here runs in float64.

How to check any forward/backward pair (a single layer or a composite one):

    def forward(x, W, b):                 # takes the checked inputs as keyword arguments
        return linear_forward(x, W, b)    # -> (out, cache)
    def backward(dout, cache):
        return linear_backward(dout, cache)   # -> tuple in input order, or dict {name: grad}
    errors = check_gradients(forward, backward, {"x": x, "W": W, "b": b}, rng)
    assert max(errors.values()) < 1e-7

A composite layer whose parameters live in a dict with dotted names works the same way, because
**kwargs accepts any string key:

    def forward(x, **params):
        return encoder_layer_forward(params, config, 0, x, bias)
    def backward(dy, cache):
        dx, grads = encoder_layer_backward(dy, cache)
        return {"x": dx, **grads}
    check_gradients(forward, backward, {"x": x, **params}, rng)

Several outputs (e.g. attention's y, scores, probs): let forward return a tuple of arrays as `out`;
`dout` is then a tuple of random upstream gradients in the same order. Dropout: create a fresh
Generator with a fixed seed INSIDE forward, so every call draws the same mask.
"""

from __future__ import annotations

import numpy as np


def rel_error(a, b, floor=1e-8):
    """Largest elementwise relative error: max |a - b| / max(floor, |a| + |b|) (cs231n's measure).

    Inputs: a, b arrays of one shape; floor keeps 0 vs 1e-20 from counting as a 100% error.
    Returns: a Python float (0.0 for empty arrays).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, a {a.shape} vs b {b.shape}")
    # BEGIN EXERCISE rel_error
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))))
    # END EXERCISE rel_error


def _copy(out):
    if isinstance(out, (tuple, list)):
        return tuple(_copy(o) for o in out)
    return np.array(out, dtype=np.float64)


def _projected_difference(plus, minus, dout):
    """sum((plus - minus) * dout), over every output when they are tuples/lists of arrays.

    Subtracting the outputs BEFORE summing matters: outputs that the nudge did not change cancel
    exactly, so roundoff comes only from what did change, not from the size of the whole sum.
    """
    if isinstance(plus, (tuple, list)):
        return sum(_projected_difference(p, m, d) for p, m, d in zip(plus, minus, dout))
    diff = np.asarray(plus, dtype=np.float64) - np.asarray(minus, dtype=np.float64)
    return float(np.sum(diff * dout))


def numerical_vjp(f, x, dout, h=1e-5, indices=None):
    """Centred-difference estimate of the gradient of sum(f(x) * dout) with respect to x.

    Inputs: f, a function of x returning an array (or a tuple of arrays); x, a float64 array that
            is nudged IN PLACE and restored (so f may also read it through a closure);
            dout, the upstream gradient, like f's output; h, the step;
            indices, optional 1-D array of flat indices into x to check (the rest is skipped).
    Returns: an array like x (indices None) or the gradient at `indices` (1-D).
    """
    if x.dtype != np.float64:
        raise ValueError(f"x: numerical gradients need float64 (float32 rounding / h is too big), got {x.dtype}")
    flat = x.reshape(-1)
    if not np.shares_memory(flat, x):
        raise ValueError("x: must be contiguous (it is nudged in place)")
    which = np.arange(flat.size) if indices is None else np.asarray(indices).reshape(-1)
    grad = np.zeros(which.size)                  # grad[n]: the estimate for entry which[n]
    # BEGIN EXERCISE numerical_vjp
    for n, i in enumerate(which):
        old = flat[i]
        flat[i] = old + h
        plus = _copy(f(x))              # copies: f may return a view of x (e.g. a reshape)
        flat[i] = old - h
        minus = _copy(f(x))
        flat[i] = old
        grad[n] = _projected_difference(plus, minus, dout) / (2 * h)
    # END EXERCISE numerical_vjp
    return grad.reshape(x.shape) if indices is None else grad


def _random_like(rng, out):
    """A random upstream gradient shaped like out: N(0,1), so no symmetry can hide a bug."""
    if isinstance(out, (tuple, list)):
        return tuple(_random_like(rng, o) for o in out)
    return rng.standard_normal(np.shape(out))


def sample_indices(analytic, k, rng):
    """k distinct flat indices into `analytic` to check: half of them where the analytic gradient
    is non-zero (as many as there are), the rest uniformly from the others. Uniform sampling
    alone can miss a sparse gradient entirely (an embedding table: only the rows of ids in the
    batch are non-zero) and then compares zeros with zeros.
    (check_gradients does not use this: it must not let the gradient under test choose where
    it is checked; see uniform_indices.)"""
    flat = np.asarray(analytic).reshape(-1)
    nonzero = np.flatnonzero(flat)
    picked = rng.choice(nonzero, size=min(k // 2, nonzero.size), replace=False)
    rest = np.setdiff1d(np.arange(flat.size), picked, assume_unique=True)
    return np.concatenate([picked, rng.choice(rest, size=k - picked.size, replace=False)])


def uniform_indices(size, k, rng):
    """k distinct flat indices into a tensor of `size` entries, drawn uniformly by `rng`.

    The choice never looks at the gradient under test: a backward that wrongly returns zeros
    (or garbage) somewhere must not be able to steer the check away from its mistake. A sparse
    true gradient (an embedding table: only the rows of the batch's ids are non-zero) is caught
    anyway by the directional check of check_gradients, which covers every entry at once."""
    return np.sort(rng.choice(size, size=min(k, size), replace=False))


def _directional(f, x, dout, analytic, u, h):
    """(analytic . u, centred difference of sum(f(x) * dout) along u): one number each."""
    old = x.copy()
    x += h * u
    plus = _copy(f(x))
    x[...] = old - h * u
    minus = _copy(f(x))
    x[...] = old
    return float(np.sum(np.asarray(analytic, dtype=np.float64) * u)), \
        _projected_difference(plus, minus, dout) / (2 * h)


def check_gradients(forward, backward, inputs, rng, h=1e-5, max_checks=4096, wrt=None, floor=None):
    """Compare backward's gradients with centred differences, for every float input.

    Inputs:
      forward(**inputs) -> (out, cache); out an array or a tuple of arrays.
      backward(dout, cache) -> the gradients: a dict {name: grad} or a tuple in the order of `wrt`
          (a None gradient means "not differentiable here" and is skipped). Every name to check
          must get a gradient: a dict without it, or a tuple shorter than the names, is an error
          (a forgotten dbeta must not pass as "a constant"). Pass constants (a mask bias) through
          a closure, or list the names to check in `wrt`.
      inputs: dict name -> value. Float arrays are copied to float64 and checked; anything else
          (int ids, eps, n_heads, None...) is passed through unchanged.
      rng: np.random.Generator for the random upstream gradient, the sampled entries and the
          random direction.
      h: finite-difference step.
      max_checks: a tensor of at most this many entries (default 4096) is checked entry by
          entry; a bigger one at `max_checks` entries drawn uniformly (uniform_indices), plus
          once along a random direction u over the whole tensor (grad . u against the centred
          difference of the loss along u), so an error anywhere in it shows. Lower it only for
          expensive forwards (a whole training step).
      wrt: names to check; default every float array input, in order.
      floor: denominator floor of rel_error. Default: 1e-8, raised to 1e-3 * max|numerical|
          over the checked entries (see below).
    Returns: dict name -> the largest rel_error (entries and direction) for that input.

    Why the floor: both estimates carry absolute rounding errors, so an entry whose gradient is
    tiny next to the others cannot be compared relatively. Example: GELU at x = -7 has slope
    ~1e-11, but 0.5*x*(1 + erf(x/sqrt 2)) itself is only known to +-1e-16*|x| in float64, so its
    centred difference is +-4e-11: "100% wrong" against cs231n's floor of 1e-8, though the
    backward is right. Entries smaller than 1e-3 of the tensor's largest (numerical) gradient are
    therefore measured against that size (an absolute accuracy of 1e-10 * max|grad| at the 1e-7
    level); larger entries are compared purely relatively. The scale comes from the finite
    differences, never from the gradient under test, so a wrong backward cannot raise its own
    floor. A wrong backward still shows errors >= 1e-3.
    """
    inputs = {k: (np.array(v, dtype=np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                  else v) for k, v in inputs.items()}
    names = list(wrt) if wrt is not None else [k for k, v in inputs.items()
                                               if isinstance(v, np.ndarray) and v.dtype.kind == "f"]
    out, cache = forward(**inputs)
    dout = _random_like(rng, out)
    grads = backward(dout, cache)
    if not isinstance(grads, dict):
        grads = tuple(grads) if isinstance(grads, (tuple, list)) else (grads,)
        if len(grads) != len(names):
            raise ValueError(f"backward returned {len(grads)} gradients for the {len(names)} inputs "
                             f"{names}; pass constants through a closure, or list the names to "
                             f"check in `wrt`")
        grads = dict(zip(names, grads))
    missing = [name for name in names if name not in grads]
    if missing:
        raise ValueError(f"backward returned no gradient for {missing}; pass constants through a "
                         f"closure, or list the names to check in `wrt`")
    errors = {}
    for name in names:
        analytic, x = grads[name], inputs[name]
        if analytic is None:
            continue
        if np.shape(analytic) != x.shape:
            raise ValueError(f"gradient of {name}: expected shape {x.shape}, got {np.shape(analytic)}")

        def f(_x):
            return forward(**inputs)[0]       # inputs[name] is x itself, nudged in place

        idx = None if x.size <= max_checks else uniform_indices(x.size, max_checks, rng)
        numeric = numerical_vjp(f, x, dout, h=h, indices=idx).reshape(-1)
        ana = np.asarray(analytic, dtype=np.float64).reshape(-1)
        ana = ana if idx is None else ana[idx]
        scale = float(np.max(np.abs(numeric), initial=0.0))
        fl = floor if floor is not None else max(1e-8, 1e-3 * scale)
        errors[name] = rel_error(ana, numeric, floor=fl)
        if idx is not None:
            a_u, n_u = _directional(f, x, dout, analytic, rng.standard_normal(x.shape), h)
            errors[name] = max(errors[name], rel_error(np.array([a_u]), np.array([n_u]), floor=fl))
    return errors
