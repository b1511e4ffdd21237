"""The fast AdamW step: optim.adamw_step run in cache-sized blocks with in-place ufuncs.

The word-embedding table is updated every step (its gradient is dense after the backward pass),
so the update runs as in-place ufuncs with `out=` and a single reused scratch buffer: no float64 and
no full-size temporaries. NumPy cannot fuse the ~14 elementwise passes, so each parameter is updated
in cache-sized blocks (see _blocks). Stands in for optim.adamw_step (fast.py's STANDS_IN_FOR), tested
equal to it over several steps in tests/test_fast.py. The training loop runs this one.
"""

from __future__ import annotations

import math

import numpy as np

from minibert.optim import AdamWState, check_step_inputs, no_decay

# Parameters are updated in flat blocks of at most _BLOCK entries. Each update is ~14 elementwise
# passes; over the whole 30522x384 word table every pass would stream 47 MB through memory, while
# the five arrays of one block (1 MB each in float32) stay in the CPU cache for all 14.
# Measured, teacher-sized step (22.7M parameters, float32, one core): 57 ms whole, 41 ms blocked.
_BLOCK = 1 << 18


def _blocks(state, *arrays):
    """Yield (*flat views of one block of each array, scratch of the same length), block by block.

    The arrays share one shape; the views write through to them. The scratch is a view into
    state.scratch (one buffer per dtype, reused by every step: contents undefined). An array
    that is not C-contiguous (no flat view of it exists) makes one whole-array block instead.
    """
    if not all(a.flags.c_contiguous for a in arrays):
        yield (*arrays, np.empty_like(arrays[0]))
        return
    flats = [a.reshape(-1) for a in arrays]
    n = flats[0].size
    buf = state.scratch.get(flats[0].dtype)
    if buf is None or buf.size < min(n, _BLOCK):
        buf = state.scratch[flats[0].dtype] = np.empty(min(max(n, 1), _BLOCK), dtype=flats[0].dtype)
    for i in range(0, n, _BLOCK):
        j = min(i + _BLOCK, n)
        yield (*(f[i:j] for f in flats), buf[:j - i])


def adamw_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], state: AdamWState,
               lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.01) -> None:
    """optim.adamw_step, block by block with in-place ufuncs and one reused scratch buffer
    (state.scratch). The same update, in place on params and state; see optim.adamw_step.

    For each parameter p with gradient g, at step t = state.step + 1:
        p <- p * (1 - lr*wd)                  decoupled decay (skipped when no_decay(name))
        m <- beta1*m + (1 - beta1)*g
        v <- beta2*v + (1 - beta2)*g^2
        p <- p - lr/(1 - beta1^t) * m / (sqrt(v)/sqrt(1 - beta2^t) + eps)
    "Decoupled": the decay shrinks the weights directly instead of being added to g, where
    Adam's per-coordinate scaling would weaken it for parameters with large gradients.
    The bias corrections undo the zero initialisation of m and v (without them the first
    steps would be tiny). The same formula as torch.optim.AdamW, which orders the operations
    differently (lerp for m, a division by sqrt(1 - beta2^t)); test_optim compares the two.

    Inputs:
    - params, grads: dicts with identical keys; grads[k] has params[k]'s shape and dtype
    - state: AdamWState from adamw_init (or state_from_arrays)
    - lr, beta1, beta2, eps, weight_decay: floats
    Returns None (params, state.m, state.v, state.step are updated; grads are not modified).
    """
    check_step_inputs(params, grads, state, lr, beta1, beta2, eps, weight_decay)
    state.step += 1
    t = state.step
    step_size = lr / (1.0 - beta1 ** t)                     # bias correction of m folded into lr
    inv_sqrt_bc2 = 1.0 / math.sqrt(1.0 - beta2 ** t)        # bias correction of v
    for name in params:
        decay = weight_decay != 0 and not no_decay(name)
        # p, g, m, v: flat views of one block of this parameter (updated in place); tmp: scratch
        for p, g, m, v, tmp in _blocks(state, params[name], grads[name], state.m[name], state.v[name]):
            c = p.dtype.type                                # scalars in the parameter's dtype
            if decay:
                p *= c(1.0 - lr * weight_decay)             # decoupled weight decay
            m *= c(beta1)                                   # m = beta1*m + (1-beta1)*g
            np.multiply(g, c(1.0 - beta1), out=tmp)
            m += tmp
            v *= c(beta2)                                   # v = beta2*v + (1-beta2)*g*g
            np.multiply(g, g, out=tmp)
            tmp *= c(1.0 - beta2)
            v += tmp
            np.sqrt(v, out=tmp)                             # denom = sqrt(v)/sqrt(bc2) + eps
            tmp *= c(inv_sqrt_bc2)
            tmp += c(eps)
            np.divide(m, tmp, out=tmp)                      # update direction m / denom
            tmp *= c(-step_size)
            p += tmp
