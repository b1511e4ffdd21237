"""AdamW, the learning-rate schedule and gradient clipping, as plain functions on dicts.

Shape legend: every optimizer array has the shape of its parameter (e.g. embeddings.word
is (V, H) = (30522, 384)); params, grads, m and v are flat dicts with identical keys.

The optimizer state is data, not an object with hidden behaviour: `AdamWState(step, m, v)`.
`state_to_arrays` / `state_from_arrays` turn it into a flat dict of arrays (for a
safetensors checkpoint) and back, bit for bit, so an interrupted run resumes exactly.

adamw_step here is the plain update a student writes; fast_optim.adamw_step is the same update in
cache-sized blocks with in-place ufuncs (what the training loop runs), tested equal to this one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "no_decay",
    "AdamWState",
    "adamw_init",
    "adamw_step",
    "state_to_arrays",
    "state_from_arrays",
    "linear_schedule",
    "clip_grad_norm",
]

_NO_DECAY_LEAVES = {"b", "bias", "gamma", "beta"}


def no_decay(name: str) -> bool:
    """True when parameter `name` is exempt from weight decay.

    Biases and LayerNorm gain/shift are not decayed (as in BERT's original recipe): pulling
    a LayerNorm gain towards 0 or a bias towards 0 is not a sensible prior, and these
    vectors are too small to overfit with. Matrices and embedding tables are decayed.
    e.g. "encoder.0.attn.qkv.b", "mlm.bias", "embeddings.ln.gamma" -> True;
         "encoder.0.attn.qkv.W", "embeddings.word" -> False.
    """
    return name.rsplit(".", 1)[-1] in _NO_DECAY_LEAVES


@dataclass
class AdamWState:
    """step: number of updates done so far; m, v: first and second moment per parameter.

    `scratch` is workspace, not state: fast_optim.adamw_step keeps one reusable buffer per dtype
    there, so its step allocates nothing. It is never saved.
    """
    step: int = 0
    m: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)
    scratch: dict = field(default_factory=dict, repr=False, compare=False)


def adamw_init(params: dict[str, np.ndarray]) -> AdamWState:
    """A fresh AdamW state: step 0 and zero moments shaped (and typed) like each parameter.

    Inputs:
    - params: dict name -> float array
    Returns an AdamWState.
    """
    for name, p in params.items():
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
            raise ValueError(f"params[{name!r}]: expected a float ndarray, got {type(p).__name__} "
                             f"{getattr(p, 'dtype', '')}")
    return AdamWState(step=0,
                      m={k: np.zeros_like(p) for k, p in params.items()},
                      v={k: np.zeros_like(p) for k, p in params.items()})


def check_state(state, params) -> None:
    """ValueError unless state.m and state.v hold exactly the names, shapes and dtypes of params."""
    for which, d in (("m", state.m), ("v", state.v)):
        if set(d) != set(params):
            raise ValueError(f"optimizer state ({which}) does not match the parameters: missing "
                             f"{sorted(set(params) - set(d))[:5]}, unknown {sorted(set(d) - set(params))[:5]}")
        for name, p in params.items():
            if d[name].shape != p.shape or d[name].dtype != p.dtype:
                raise ValueError(f"optimizer state {which}.{name}: shape {d[name].shape} dtype "
                                 f"{d[name].dtype}, parameter has {p.shape} {p.dtype}")


def check_step_inputs(params, grads, state, lr, beta1, beta2, eps, weight_decay) -> None:
    """ValueError unless grads and state fit params and the hyper-parameters are valid."""
    if set(grads) != set(params):
        raise ValueError("grads must have exactly the keys of params: missing grads "
                         f"{sorted(set(params) - set(grads))[:5]}, unknown grads "
                         f"{sorted(set(grads) - set(params))[:5]}")
    for name, p in params.items():
        g = grads[name]
        if g.shape != p.shape or g.dtype != p.dtype:
            raise ValueError(f"grads[{name!r}]: expected shape {p.shape} dtype {p.dtype}, "
                             f"got {g.shape} {g.dtype}")
    check_state(state, params)
    for arg, val, ok in (("lr", lr, lr >= 0), ("beta1", beta1, 0 <= beta1 < 1),
                         ("beta2", beta2, 0 <= beta2 < 1), ("eps", eps, eps > 0),
                         ("weight_decay", weight_decay, weight_decay >= 0)):
        if not math.isfinite(val) or not ok:
            raise ValueError(f"{arg}: invalid value {val!r} (lr >= 0, 0 <= beta < 1, eps > 0, "
                             f"weight_decay >= 0)")


def adamw_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], state: AdamWState,
               lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
               weight_decay: float = 0.01) -> None:
    """One AdamW update (Loshchilov & Hutter), in place on params and state.

    For each parameter p with gradient g, at step t = state.step + 1:
        p <- p * (1 - lr*wd)                  decoupled decay (skipped when no_decay(name))
        m <- beta1*m + (1 - beta1)*g
        v <- beta2*v + (1 - beta2)*g^2
        p <- p - lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m/(1 - beta1^t), v_hat = v/(1 - beta2^t)
    "Decoupled": the decay shrinks the weights directly instead of being added to g, where
    Adam's per-coordinate scaling would weaken it for parameters with large gradients.
    The bias corrections undo the zero initialisation of m and v (without them the first
    steps would be tiny). The same formula as torch.optim.AdamW; test_optim compares the two.

    Inputs:
    - params, grads: dicts with identical keys; grads[k] has params[k]'s shape and dtype
    - state: AdamWState from adamw_init (or state_from_arrays)
    - lr, beta1, beta2, eps, weight_decay: floats
    Returns None (params are updated in place, state.m / state.v entries replaced, state.step
    incremented; grads are not modified).
    """
    check_step_inputs(params, grads, state, lr, beta1, beta2, eps, weight_decay)
    # BEGIN EXERCISE adamw_step
    state.step += 1
    t = state.step
    for name in params:
        p, g = params[name], grads[name]
        c = p.dtype.type                                    # scalars in the parameter's dtype
        decay = weight_decay != 0 and not no_decay(name)
        if decay:
            p *= c(1.0 - lr * weight_decay)                 # decoupled weight decay, in place
        # the moments: exponential moving averages of g and g^2
        m = c(beta1) * state.m[name] + c(1.0 - beta1) * g
        v = c(beta2) * state.v[name] + c(1.0 - beta2) * g * g
        state.m[name], state.v[name] = m, v
        # bias-corrected moments, then the step (in place on the parameter)
        m_hat = m / c(1.0 - beta1 ** t)
        v_hat = v / c(1.0 - beta2 ** t)
        p -= c(lr) * m_hat / (np.sqrt(v_hat) + c(eps))
    # END EXERCISE adamw_step


def state_to_arrays(state: AdamWState) -> dict[str, np.ndarray]:
    """Flatten an AdamWState into {"step": int64 (1,), "m.<name>": m, "v.<name>": v}.

    The moment arrays are returned as they are (no copy, no dtype change), so saving them
    with safetensors and loading them back with state_from_arrays resumes bit for bit.
    """
    out = {"step": np.array([state.step], dtype=np.int64)}
    for name in state.m:
        out["m." + name] = state.m[name]
        out["v." + name] = state.v[name]
    return out


def state_from_arrays(arrays: dict[str, np.ndarray], params: dict | None = None) -> AdamWState:
    """Inverse of state_to_arrays. With `params`, also checks every name, shape and dtype.

    Inputs:
    - arrays: dict as written by state_to_arrays
    - params: optional dict the state must fit
    Returns an AdamWState owning copies of the arrays.
    """
    if "step" not in arrays:
        raise ValueError("optimizer state: missing 'step' entry")
    step = int(np.asarray(arrays["step"]).reshape(-1)[0])
    m = {k[2:]: np.array(a) for k, a in arrays.items() if k.startswith("m.")}
    v = {k[2:]: np.array(a) for k, a in arrays.items() if k.startswith("v.")}
    if set(m) != set(v):
        raise ValueError(f"optimizer state: m and v name different parameters: {sorted(set(m) ^ set(v))[:5]}")
    state = AdamWState(step=step, m=m, v=v)
    if params is not None:
        check_state(state, params)
    return state


def linear_schedule(step: int, total_steps: int, warmup_steps: int, peak_lr: float) -> float:
    """Learning rate at `step`: linear warm-up from 0 to peak_lr, then linear decay to 0.

    lr(step) = peak_lr * step / warmup_steps                               for step < warmup_steps
             = peak_lr * (total_steps - step) / (total_steps - warmup_steps) afterwards, >= 0
    (the same shape as transformers' get_linear_schedule_with_warmup). Warm-up protects the
    freshly initialised classifier and Adam's noisy early moment estimates from a full lr.

    Inputs: step >= 0, total_steps >= 1, 0 <= warmup_steps <= total_steps, peak_lr >= 0
    Returns lr as a Python float.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps: expected >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps: expected 0 <= warmup_steps <= total_steps={total_steps}, "
                         f"got {warmup_steps}")
    if step < 0:
        raise ValueError(f"step: expected >= 0, got {step}")
    if not math.isfinite(peak_lr) or peak_lr < 0:
        raise ValueError(f"peak_lr: expected a finite number >= 0, got {peak_lr!r}")
    if step < warmup_steps:
        return float(peak_lr) * step / warmup_steps
    if total_steps == warmup_steps:
        return 0.0
    return float(peak_lr) * max(0.0, (total_steps - step) / (total_steps - warmup_steps))


def clip_grad_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most max_norm.

    The norm is taken over every gradient at once (sqrt of the sum of all squares), so the
    update keeps its direction and only its length is capped. Grads are scaled in place by
    max_norm / norm when norm > max_norm. A NaN/inf norm leaves grads untouched: the caller
    sees the returned norm and stops (see errors.TrainingDiverged).

    Inputs:
    - grads: dict name -> float array (modified in place)
    - max_norm: float > 0
    Returns the global norm BEFORE clipping, as a Python float.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm: expected a number > 0, got {max_norm!r}")
    total = 0.0
    for g in grads.values():
        flat = g.reshape(-1)
        total += float(np.dot(flat, flat))                  # BLAS dot; summed across params in float64
    norm = math.sqrt(total)
    if math.isfinite(norm) and norm > max_norm:
        for g in grads.values():
            g *= g.dtype.type(max_norm / norm)
    return norm
