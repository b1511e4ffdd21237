"""The checks behind every exercise, and behind the library's own tests of the same functions.

Each `check_<exercise>(impl)` takes the implementation under test (the library's function, or
the one a student wrote in a workspace) and returns a list of `CheckResult`s: a named property,
whether it held, and the measured value against its tolerance. `tests/test_exercises.py` runs
every check on the library, so the library is tested by exactly what the students are.

The kinds of check, and the tolerances they use:
- finite differences: a centred-difference vector-Jacobian product in float64
  (`minibert.gradcheck.numerical_vjp`, h = 1e-5) against the analytic gradient, compared
  with `rel_error` (max over elements of |a-b| / max(1e-8, |a|+|b|)). Centred differences
  are accurate to O(h^2) ~ 1e-10; the library's own code measures 2e-10 to 5e-8 on the layer
  checks and 2.4e-7 on the scalar-loss checks (round-off of a finite difference of a scalar),
  so we accept FD_TOL = 1e-6; a wrong term measures 1e-2 to 1.
- closed forms (softmax-CE gradient (p - onehot)/N, the distillation gradient
  (T/N)(p_s - p_t), the first AdamW step): the same arithmetic two ways in float64, so
  only rounding separates them: CLOSED_TOL = 1e-9.
- dtype: float32 in, float32 out (float64 must never sneak into the default path).

The inputs are small random float64 arrays from a fixed seed, so a check is reproducible
and takes milliseconds.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np

FD_TOL = 1e-6        # finite differences vs analytic, float64, h = FD_H
FD_H = 1e-5
CLOSED_TOL = 1e-9    # two float64 evaluations of the same closed form
SEED = 1234


class CheckResult(NamedTuple):
    name: str                       # the property checked, e.g. "dW vs finite differences"
    passed: bool
    value: float | None = None      # what was measured
    tolerance: float | None = None  # the largest value that passes
    detail: str = ""                # a sentence: the exception raised, the wrong shape, ...
    measure: str = "rel error"

    def describe(self) -> str:
        parts = []
        if self.value is not None:
            tol = f", tolerance {self.tolerance:.0e}" if self.tolerance is not None else ""
            parts.append(f"{self.measure} {self.value:.1e}{tol}")
        if self.detail:
            parts.append(self.detail)
        return "; ".join(parts) if parts else ("ok" if self.passed else "failed")


class _Failed(Exception):
    """The implementation under test raised: the rest of this check list cannot run."""


class Report:
    """Collects CheckResults; every comparison catches its own errors (wrong shapes, NaN)."""

    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    def call(self, what: str, fn: Callable, *args, n_out: int | None = None, **kwargs):
        """Run the implementation; on an exception record a failed check and stop."""
        try:
            out = fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - the student's exception is the verdict
            self.fail(f"{what} runs", f"raised {type(err).__name__}: {err}")
            raise _Failed from err
        if n_out is not None and (not isinstance(out, tuple) or len(out) != n_out):
            got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
            self.fail(f"{what} returns {n_out} values", f"returned {got}")
            raise _Failed
        return out

    def fail(self, name: str, detail: str) -> None:
        self.results.append(CheckResult(name, False, detail=detail))

    def true(self, name: str, ok: bool, detail: str = "") -> None:
        self.results.append(CheckResult(name, bool(ok), detail="" if ok else detail))

    def close(self, name: str, got, want, tol: float, measure: str = "rel error") -> None:
        """rel_error(got, want) <= tol, after checking the shapes agree and got is finite."""
        from minibert.gradcheck import rel_error
        try:
            got, want = np.asarray(got), np.asarray(want)
            if got.shape != want.shape:
                self.fail(name, f"shape {got.shape}, expected {want.shape}")
                return
            if not np.all(np.isfinite(got)):
                self.fail(name, "contains NaN or inf")
                return
            err = float(rel_error(got, want))
        except Exception as err_:  # noqa: BLE001
            self.fail(name, f"could not compare: {type(err_).__name__}: {err_}")
            return
        self.results.append(CheckResult(name, err <= tol, err, tol, measure=measure))

    def grad(self, name: str, analytic, f: Callable, x: np.ndarray, dout) -> None:
        """The analytic gradient vs centred differences of sum(f(x) * dout), within FD_TOL
        (entries where both are at the round-off level, see fd_noise, count as equal)."""
        try:
            num = fd(f, x, dout)
            noise = fd_noise(f, x, dout)
            a = np.asarray(analytic)
            if a.shape == num.shape:
                both_tiny = (np.abs(a) < noise) & (np.abs(num) < noise)
                a, num = np.where(both_tiny, 0.0, a), np.where(both_tiny, 0.0, num)
        except Exception as err_:  # noqa: BLE001
            self.fail(name, f"could not compute finite differences: {type(err_).__name__}: {err_}")
            return
        self.close(name, a, num, FD_TOL)

    def small(self, name: str, value: float, tol: float, measure: str) -> None:
        value = float(value)
        ok = bool(np.isfinite(value) and value <= tol)
        self.results.append(CheckResult(name, ok, value, tol, measure=measure))

    def dtypes(self, name: str, arrays: dict, dtype=np.float32) -> None:
        wrong = {k: np.asarray(v).dtype for k, v in arrays.items() if np.asarray(v).dtype != dtype}
        self.true(name, not wrong, ", ".join(f"{k} is {d}" for k, d in wrong.items())
                  + f" (expected {np.dtype(dtype)})")


def _run(body: Callable[[Report], None]) -> list[CheckResult]:
    rep = Report()
    try:
        body(rep)
    except _Failed:
        pass
    return rep.results


def fd(f: Callable, x: np.ndarray, dout) -> np.ndarray:
    """Centred-difference vector-Jacobian product d sum(f(x) * dout) / dx, in float64."""
    from minibert.gradcheck import numerical_vjp
    return numerical_vjp(f, x, np.asarray(dout, dtype=np.float64), h=FD_H)


def fd_noise(f: Callable, x: np.ndarray, dout) -> float:
    """The round-off level of a centred difference of sum(f(x) * dout): ~10 eps |f| / h.

    Some gradients are exactly zero in exact arithmetic (the key bias of attention: softmax
    ignores a constant added to a whole row of scores); their finite difference is pure
    round-off, and round-off against round-off has no meaningful relative error. Entries
    where both sides are below this level count as agreeing."""
    value = float(np.sum(np.asarray(f(x), dtype=np.float64) * np.asarray(dout, dtype=np.float64)))
    return 10 * np.finfo(np.float64).eps * (1.0 + abs(value)) / FD_H


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------------------------
# layers.py
# ---------------------------------------------------------------------------------------------

def check_linear_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache) -> dx, dW, db for y = x @ W + b, with x of shape (B, T, D)."""
    from minibert.layers import linear_forward

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        x, W, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
        y, cache = linear_forward(x, W, b)
        dy = rng.standard_normal(y.shape)
        dx, dW, db = rep.call("linear_backward(dy, cache)", impl, dy, cache, n_out=3)
        rep.grad("dx vs finite differences", dx, lambda x_: linear_forward(x_, W, b)[0], x, dy)
        rep.grad("dW vs finite differences", dW, lambda W_: linear_forward(x, W_, b)[0], W, dy)
        rep.grad("db vs finite differences", db, lambda b_: linear_forward(x, W, b_)[0], b, dy)
        again = rep.call("linear_backward called twice", impl, dy, cache, n_out=3)
        rep.close("a second call returns the same gradients (nothing accumulates)",
                  np.concatenate([a.ravel() for a in again]),
                  np.concatenate([np.ravel(a) for a in (dx, dW, db)]), CLOSED_TOL)
        y32, c32 = linear_forward(x.astype(np.float32), W.astype(np.float32), b.astype(np.float32))
        g32 = rep.call("linear_backward in float32", impl, dy.astype(np.float32), c32, n_out=3)
        rep.dtypes("float32 in, float32 out", dict(zip(("dx", "dW", "db"), g32)))

    return _run(body)


def check_softmax_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache) -> dx for y = softmax(x) over the last axis."""
    from minibert.layers import softmax_forward

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        x = 2.0 * rng.standard_normal((2, 3, 5))
        y, cache = softmax_forward(x)
        dy = rng.standard_normal(y.shape)
        dx = rep.call("softmax_backward(dy, cache)", impl, dy, cache)
        rep.grad("dx vs finite differences", dx, lambda x_: softmax_forward(x_)[0], x, dy)
        # softmax(x + c) = softmax(x): moving every logit together changes nothing, so each
        # row of dx sums to zero.
        rep.small("each row of dx sums to 0", np.abs(np.sum(dx, axis=-1)).max(), 1e-12, "max |row sum|")
        y32, c32 = softmax_forward(x.astype(np.float32))
        dx32 = rep.call("softmax_backward in float32", impl, dy.astype(np.float32), c32)
        rep.dtypes("float32 in, float32 out", {"dx": dx32})

    return _run(body)


def check_layernorm_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache) -> dx, dgamma, dbeta for LayerNorm over the last axis."""
    from minibert.layers import layernorm_forward

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        x = 3.0 + 2.0 * rng.standard_normal((2, 3, 6))       # off-centre, not unit scale
        gamma, beta = 1.0 + 0.5 * rng.standard_normal(6), rng.standard_normal(6)
        eps = 1e-5
        y, cache = layernorm_forward(x, gamma, beta, eps)
        dy = rng.standard_normal(y.shape)
        dx, dgamma, dbeta = rep.call("layernorm_backward(dy, cache)", impl, dy, cache, n_out=3)
        rep.grad("dx vs finite differences", dx,
                 lambda x_: layernorm_forward(x_, gamma, beta, eps)[0], x, dy)
        rep.grad("dgamma vs finite differences", dgamma,
                 lambda g_: layernorm_forward(x, g_, beta, eps)[0], gamma, dy)
        rep.grad("dbeta vs finite differences", dbeta,
                 lambda b_: layernorm_forward(x, gamma, b_, eps)[0], beta, dy)
        # LayerNorm(x + c) = LayerNorm(x): each row of dx sums to zero.
        rep.small("each row of dx sums to 0", np.abs(np.sum(dx, axis=-1)).max(), 1e-10, "max |row sum|")
        _, c32 = layernorm_forward(x.astype(np.float32), gamma.astype(np.float32),
                                   beta.astype(np.float32), eps)
        g32 = rep.call("layernorm_backward in float32", impl, dy.astype(np.float32), c32, n_out=3)
        rep.dtypes("float32 in, float32 out", dict(zip(("dx", "dgamma", "dbeta"), g32)))

    return _run(body)


def check_gelu_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache) -> dx for the exact GELU 0.5 x (1 + erf(x / sqrt 2))."""
    from minibert.layers import gelu_forward

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        # |x| <= 4 or so: further out the gradient is ~1e-6 and a finite difference of it is
        # mostly round-off; the tails are checked against the closed form instead.
        x = np.concatenate([np.linspace(-4, 4, 21), rng.standard_normal(19)]).reshape(2, 4, 5)
        y, cache = gelu_forward(x)
        dy = rng.standard_normal(y.shape)
        dx = rep.call("gelu_backward(dy, cache)", impl, dy, cache)
        rep.grad("dx vs finite differences", dx, lambda x_: gelu_forward(x_)[0], x, dy)
        # closed form Phi(x) + x phi(x) with math.erf, at 0 (slope 1/2) and out in the tails
        pts = np.array([0.0, 1.0, -1.0, 3.0, -3.0, 8.0, -8.0])
        want = np.array([0.5 * (1 + math.erf(v / math.sqrt(2)))
                         + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi) for v in pts])
        _, cpts = gelu_forward(pts)
        d = rep.call("gelu_backward at x = 0, +-1, +-3, +-8", impl, np.ones_like(pts), cpts)
        rep.close("slope Phi(x) + x phi(x) at x = 0, +-1, +-3, +-8 (closed form, math.erf)",
                  d, want, CLOSED_TOL)
        _, c32 = gelu_forward(x.astype(np.float32))
        dx32 = rep.call("gelu_backward in float32", impl, dy.astype(np.float32), c32)
        rep.dtypes("float32 in, float32 out", {"dx": dx32})

    return _run(body)


# ---------------------------------------------------------------------------------------------
# attention.py
# ---------------------------------------------------------------------------------------------

def _attention_inputs(rng: np.random.Generator, B=2, T=4, H=8):
    x = rng.standard_normal((B, T, H))
    W_qkv, b_qkv = 0.5 * rng.standard_normal((H, 3 * H)), 0.1 * rng.standard_normal(3 * H)
    W_o, b_o = 0.5 * rng.standard_normal((H, H)), 0.1 * rng.standard_normal(H)
    mask = np.ones((B, T), dtype=np.int64)
    mask[1, T // 2:] = 0                      # the second sequence is half padding
    return x, W_qkv, b_qkv, W_o, b_o, mask


def check_attention_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache, dscores=None, dprobs=None) -> dx, dW_qkv, db_qkv, dW_o, db_o,
    multi-head self-attention with a padding mask."""
    from minibert.attention import attention_forward, mask_to_bias

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        x, W_qkv, b_qkv, W_o, b_o, mask = _attention_inputs(rng)
        nh = 2
        bias = mask_to_bias(mask, np.float64)
        inputs = {"x": x, "W_qkv": W_qkv, "b_qkv": b_qkv, "W_o": W_o, "b_o": b_o}
        order = list(inputs)

        def fwd(name, value):
            args = dict(inputs, **{name: value})
            return attention_forward(args["x"], args["W_qkv"], args["b_qkv"], args["W_o"],
                                     args["b_o"], bias, nh)

        y, cache = fwd("x", x)
        dy = rng.standard_normal(y.shape)
        grads = rep.call("attention_backward(dy, cache)", impl, dy, cache, n_out=5)
        for name, g in zip(order, grads):
            rep.grad(f"d{name} vs finite differences (with a padding mask)", g,
                     lambda v, n=name: fwd(n, v)[0], inputs[name], dy)

        # Padding: a padded token is only ever a (masked) key. With no upstream gradient on
        # the padded query rows, padded tokens get zero gradient and the real tokens get
        # exactly what the unpadded sequence gives.
        real = mask.astype(bool)
        dy_real = dy * real[:, :, None]
        g_pad = rep.call("attention_backward(dy, cache) on a padded batch", impl, dy_real, cache,
                         n_out=5)
        n_real = int(real[1].sum())
        y1, c1 = attention_forward(x[1:, :n_real], W_qkv, b_qkv, W_o, b_o,
                                   mask_to_bias(np.ones((1, n_real)), np.float64), nh)
        g_one = rep.call("attention_backward on the unpadded sequence", impl,
                         dy_real[1:, :n_real], c1, n_out=5)
        rep.small("padded tokens receive no gradient", np.abs(g_pad[0][~real]).max(), 1e-12, "max |dx|")
        rep.close("real tokens' dx equals the unpadded sequence's", g_pad[0][1:, :n_real], g_one[0],
                  CLOSED_TOL)

        # Extra upstream gradients on the scores and probabilities (what attention
        # distillation sends back). Padded keys carry none, as the attention losses ensure.
        keys = real[:, None, None, :]                                    # (B,1,1,T)
        dscores = rng.standard_normal(cache.scores.shape) * keys         # (B,nh,T,T)
        dprobs = rng.standard_normal(cache.probs.shape) * keys

        def objective(name, value):
            out, c = fwd(name, value)
            return np.array([np.sum(out * dy) + np.sum(c.scores * dscores) + np.sum(c.probs * dprobs)])

        g_extra = rep.call("attention_backward(dy, cache, dscores, dprobs)", impl, dy, cache,
                           dscores=dscores, dprobs=dprobs, n_out=5)
        for name in ("x", "W_qkv"):
            g = g_extra[order.index(name)]
            rep.grad(f"d{name} with dscores and dprobs vs finite differences", g,
                     lambda v, n=name: objective(n, v), inputs[name], np.ones(1))

        args32 = [a.astype(np.float32) for a in (x, W_qkv, b_qkv, W_o, b_o)]
        y32, c32 = attention_forward(*args32, mask_to_bias(mask, np.float32), nh)
        g32 = rep.call("attention_backward in float32", impl, dy.astype(np.float32), c32, n_out=5)
        rep.dtypes("float32 in, float32 out", {f"d{n}": g for n, g in zip(order, g32)})

    return _run(body)


# ---------------------------------------------------------------------------------------------
# model.py
# ---------------------------------------------------------------------------------------------

def tiny_layer(rng: np.random.Generator, dtype=np.float64):
    """A one-layer BertConfig (H=8, 2 heads, I=16) with O(1) random weights (so every term of
    the gradient is visible to finite differences) and a padded batch x, bias."""
    from minibert.attention import mask_to_bias
    from minibert.model import BertConfig, param_shapes

    config = BertConfig(vocab_size=20, hidden_size=8, num_layers=1, num_heads=2,
                        intermediate_size=16, max_position=16, hidden_dropout=0.0,
                        attention_dropout=0.0, layer_norm_eps=1e-5)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.endswith("gamma"):
            params[name] = (1.0 + 0.3 * rng.standard_normal(shape)).astype(dtype)
        else:
            params[name] = (0.4 * rng.standard_normal(shape)).astype(dtype)
    x = rng.standard_normal((2, 4, config.hidden_size)).astype(dtype)
    mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])
    return config, params, x, mask, mask_to_bias(mask, dtype)


def check_encoder_layer_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache, dscores=None, dprobs=None) -> dx, grads dict (encoder.0.*)."""
    from minibert.model import encoder_layer_forward

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        config, params, x, mask, bias = tiny_layer(rng)
        layer_keys = sorted(k for k in params if k.startswith("encoder.0."))

        def fwd(name, value):
            p = dict(params)
            if name == "x":
                return encoder_layer_forward(p, config, 0, value, bias)
            p[name] = value
            return encoder_layer_forward(p, config, 0, x, bias)

        y, cache = fwd("x", x)
        dy = rng.standard_normal(y.shape)
        dx, grads = rep.call("encoder_layer_backward(dy, cache)", impl, dy, cache, n_out=2)
        rep.true("grads has exactly the layer's parameter names", sorted(grads) == layer_keys,
                 f"missing {sorted(set(layer_keys) - set(grads))}, "
                 f"unexpected {sorted(set(grads) - set(layer_keys))}")
        rep.grad("dx vs finite differences", dx, lambda v: fwd("x", v)[0], x, dy)
        for name in layer_keys:
            if name in grads:
                rep.grad(f"{name} vs finite differences", grads[name],
                         lambda v, n=name: fwd(n, v)[0], params[name], dy)

        keys = mask.astype(bool)[:, None, None, :]
        attn_cache = cache.attn                                       # EncoderLayerCache.attn
        dscores = rng.standard_normal(attn_cache.scores.shape) * keys
        dprobs = rng.standard_normal(attn_cache.probs.shape) * keys

        def objective(v):
            out, c = fwd("x", v)
            a = c.attn
            return np.array([np.sum(out * dy) + np.sum(a.scores * dscores) + np.sum(a.probs * dprobs)])

        dx2, _ = rep.call("encoder_layer_backward(dy, cache, dscores, dprobs)", impl, dy, cache,
                          dscores=dscores, dprobs=dprobs, n_out=2)
        rep.grad("dx with dscores and dprobs vs finite differences", dx2, objective, x, np.ones(1))

        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        y32, c32 = encoder_layer_forward(p32, config, 0, x.astype(np.float32), bias.astype(np.float32))
        dx32, g32 = rep.call("encoder_layer_backward in float32", impl, dy.astype(np.float32), c32,
                             n_out=2)
        rep.dtypes("float32 in, float32 out", {"dx": dx32, **g32})

    return _run(body)


# ---------------------------------------------------------------------------------------------
# losses.py
# ---------------------------------------------------------------------------------------------

def _loss_value(out) -> float:
    return float(np.asarray(out[0] if isinstance(out, tuple) else out))


def check_softmax_cross_entropy(impl: Callable) -> list[CheckResult]:
    """impl(logits, labels) -> loss, dlogits: mean over the batch of -log softmax(logits)[label]."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        N, C = 6, 4
        logits, labels = 2.0 * rng.standard_normal((N, C)), rng.integers(0, C, N)
        loss, dlogits = rep.call("cross_entropy(logits, labels)", impl, logits, labels, n_out=2)
        want = -_log_softmax(logits)[np.arange(N), labels].mean()
        rep.close("loss = mean of -log p[label] (closed form)", np.float64(loss), want, CLOSED_TOL)
        onehot = np.eye(C)[labels]
        rep.close("dlogits = (p - onehot) / N (closed form)", dlogits,
                  (_softmax(logits) - onehot) / N, CLOSED_TOL)
        rep.grad("dlogits vs finite differences of your loss", dlogits,
                 lambda z: np.array([_loss_value(impl(z, labels))]), logits, np.ones(1))
        big = rep.call("cross_entropy on logits of size 1000", impl, 1000.0 * logits, labels, n_out=2)
        rep.true("stable for logits of size 1000 (no overflow to inf/NaN)",
                 np.isfinite(_loss_value(big)) and np.all(np.isfinite(big[1])),
                 "got inf or NaN: subtract each row's max before exp")
        l32, d32 = rep.call("cross_entropy in float32", impl, logits.astype(np.float32), labels, n_out=2)
        rep.dtypes("float32 in, float32 out", {"dlogits": d32, "loss": np.asarray(l32)})

    return _run(body)


def _distill_closed_form(s, t, labels, alpha, T):
    N = s.shape[0]
    ce = -_log_softmax(s)[np.arange(N), labels].mean()
    pt, log_pt, log_ps = _softmax(t / T), _log_softmax(t / T), _log_softmax(s / T)
    kl = np.sum(pt * (log_pt - log_ps)) / N                          # batchmean
    loss = alpha * ce + (1 - alpha) * T * T * kl
    grad = (alpha * (_softmax(s) - np.eye(s.shape[1])[labels]) / N
            + (1 - alpha) * (T / N) * (_softmax(s / T) - pt))        # T^2 * (1/T) * (p_s - p_t) / N
    return loss, grad


def check_distillation_loss(impl: Callable) -> list[CheckResult]:
    """impl(student_logits, teacher_logits, labels, alpha, T) -> loss, dlogits, parts:
    alpha * CE + (1 - alpha) * T^2 * KL(p_t || p_s) at temperature T, batchmean."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        N, C = 5, 3
        s, t = 2.0 * rng.standard_normal((N, C)), 3.0 * rng.standard_normal((N, C))
        labels = rng.integers(0, C, N)
        for alpha, T in [(0.5, 2.0), (0.0, 5.0), (1.0, 1.0), (0.3, 10.0)]:
            loss, dlogits, _ = rep.call(f"distillation_loss(alpha={alpha}, T={T})", impl,
                                        s, t, labels, alpha, T, n_out=3)
            want_loss, want_grad = _distill_closed_form(s, t, labels, alpha, T)
            rep.close(f"loss at alpha={alpha}, T={T:g} (alpha*CE + (1-alpha)*T^2*KL)",
                      np.float64(loss), want_loss, CLOSED_TOL)
            rep.close(f"dlogits at alpha={alpha}, T={T:g} (closed form, soft part (T/N)(p_s-p_t))",
                      dlogits, want_grad, CLOSED_TOL)
            rep.grad(f"dlogits at alpha={alpha}, T={T:g} vs finite differences of your loss",
                     dlogits, lambda z, a=alpha, T=T: np.array([_loss_value(impl(z, t, labels, a, T))]),
                     s, np.ones(1))
        same = rep.call("distillation_loss(student == teacher, alpha=0)", impl, s, s.copy(), labels,
                        0.0, 4.0, n_out=3)
        rep.small("no soft loss or gradient when the student equals the teacher",
                  max(abs(_loss_value(same)), np.abs(same[1]).max()), 1e-12, "max |value|")
        out32 = rep.call("distillation_loss in float32", impl, s.astype(np.float32),
                         t.astype(np.float32), labels, 0.5, 2.0, n_out=3)
        rep.dtypes("float32 in, float32 out", {"dlogits": out32[1], "loss": np.asarray(out32[0])})

    return _run(body)


# ---------------------------------------------------------------------------------------------
# optim.py
# ---------------------------------------------------------------------------------------------

def _adamw_reference(p, m, v, g, step, lr, b1, b2, eps, wd, decay):
    """One AdamW step written out plainly (PyTorch's AdamW, decoupled decay)."""
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1 ** step), v / (1 - b2 ** step)
    p = p * (1 - lr * wd) if decay else p.copy()
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def check_adamw_step(impl: Callable) -> list[CheckResult]:
    """impl(params, grads, state, lr, beta1, beta2, eps, weight_decay) -> None, in place."""
    from minibert.optim import adamw_init, no_decay

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        shapes = {"encoder.0.ffn.in.W": (3, 4), "encoder.0.ffn.in.b": (4,),
                  "encoder.0.ffn.ln.gamma": (4,)}
        params = {k: rng.standard_normal(s) for k, s in shapes.items()}
        hyper = dict(lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
        state = adamw_init(params)
        ref = {k: (p.copy(), np.zeros_like(p), np.zeros_like(p)) for k, p in params.items()}
        for step in (1, 2, 3):
            grads = {k: rng.standard_normal(p.shape) for k, p in params.items()}
            grads["encoder.0.ffn.in.W"][0] = 0.0     # a zero-gradient row: weight decay alone moves it
            rep.call(f"adamw_step (step {step})", impl, params, grads, state, **hyper)
            for k in params:
                ref[k] = _adamw_reference(*ref[k], grads[k], step, hyper["lr"], hyper["beta1"],
                                          hyper["beta2"], hyper["eps"], hyper["weight_decay"],
                                          decay=not no_decay(k))
            for k in params:
                short, decayed = k.split(".", 2)[-1], not no_decay(k)
                if step == 1:
                    kind = ("first step = p(1-lr*wd) - lr*g/(|g|+eps)" if decayed
                            else "first step = p - lr*g/(|g|+eps), no decay")
                else:
                    kind = f"step {step}" + ("" if decayed else ", no decay")
                rep.close(f"{short} after {kind}", params[k], ref[k][0], CLOSED_TOL)
            rep.true(f"state.step is {step}", state.step == step, f"state.step = {state.step}")
        got_mv = [np.ravel(state.m[k]) for k in params] + [np.ravel(state.v[k]) for k in params]
        want_mv = [ref[k][1].ravel() for k in params] + [ref[k][2].ravel() for k in params]
        rep.close("state.m and state.v (bias-uncorrected moments)", np.concatenate(got_mv),
                  np.concatenate(want_mv), CLOSED_TOL)
        p32 = {k: v.astype(np.float32) for k, v in params.items()}
        s32 = adamw_init(p32)
        ones = {k: np.ones_like(v) for k, v in p32.items()}
        rep.call("adamw_step in float32", impl, p32, ones, s32, **hyper)
        rep.dtypes("float32 params and moments stay float32",
                   {**{k: v for k, v in p32.items()}, **{f"m[{k}]": v for k, v in s32.m.items()},
                    **{f"v[{k}]": v for k, v in s32.v.items()}})

    return _run(body)


# ---------------------------------------------------------------------------------------------
# distill.py
# ---------------------------------------------------------------------------------------------

def tiny_teacher(rng: np.random.Generator, num_labels: int = 3):
    """A 3-layer float32 teacher (H=8, 2 heads) with a pooler and a classifier head."""
    from minibert.model import BertConfig, init_params

    config = BertConfig(vocab_size=20, hidden_size=8, num_layers=3, num_heads=2,
                        intermediate_size=16, max_position=16, num_labels=num_labels,
                        labels=[f"c{k}" for k in range(num_labels)])
    params = {k: v + np.float32(0.1) * rng.standard_normal(v.shape, dtype=np.float32)
              for k, v in init_params(config, rng).items()}   # no two tensors alike
    return config, params


def check_init_student(impl: Callable) -> list[CheckResult]:
    """impl(teacher_params, teacher_config, config, init_layers, rng, dtype) -> student params:
    block j copied from teacher block init_layers[j]; embeddings, pooler, head copied."""
    from minibert.model import init_params, param_shapes
    from minibert.distill import student_config

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        tconfig, tparams = tiny_teacher(rng)
        before = {k: v.copy() for k, v in tparams.items()}
        config = student_config(tconfig, 2)
        want_keys = list(param_shapes(config))
        for layers in ([0, 2], [2, 1]):
            params = rep.call(f"init_student(init_layers={layers})", impl, tparams, tconfig, config,
                              layers, np.random.default_rng(0), np.float32)
            rep.true(f"init_layers={layers}: exactly the student's parameter names",
                     sorted(params) == sorted(want_keys),
                     f"missing {sorted(set(want_keys) - set(params))[:4]}, "
                     f"unexpected {sorted(set(params) - set(want_keys))[:4]}")
            worst, where = 0.0, ""
            for name in want_keys:
                if name.startswith("encoder."):
                    _, j, rest = name.split(".", 2)
                    source = f"encoder.{layers[int(j)]}.{rest}"
                else:
                    source = name
                got = params.get(name)
                if got is None or got.shape != tparams[source].shape:
                    worst, where = np.inf, f"{name} missing or wrong shape"
                    break
                diff = float(np.abs(got - tparams[source]).max())
                if diff > worst:
                    worst, where = diff, f"worst: {name} vs teacher {source}"
            rep.results.append(CheckResult(
                f"init_layers={layers}: student block j == teacher block init_layers[j]; "
                f"embeddings, pooler, classifier copied", worst == 0.0, worst, 0.0,
                where if worst else "", measure="max |student - teacher|"))
            shared = [k for k in params if any(np.shares_memory(params[k], t) for t in tparams.values())]
            rep.true(f"init_layers={layers}: copies, not views of the teacher", not shared,
                     f"{shared[:3]} share memory with the teacher: training the student would "
                     f"change the teacher (use .copy())")
            rep.dtypes(f"init_layers={layers}: float32 parameters", params)
        rep.true("the teacher is left unchanged",
                 all(np.array_equal(before[k], tparams[k]) for k in tparams),
                 "a teacher array was modified")
        rand = rep.call("init_student(init_layers=None)", impl, tparams, tconfig, config, None,
                        np.random.default_rng(0), np.float32)
        ref = init_params(config, np.random.default_rng(0), dtype=np.float32)
        rep.true("init_layers=None: a random init (init_params with the given rng)",
                 sorted(rand) == sorted(ref) and all(np.array_equal(rand[k], ref[k]) for k in ref),
                 "expected exactly init_params(config, rng, dtype)")

    return _run(body)


CHECKS: dict[str, Callable[[Callable], list[CheckResult]]] = {
    "linear_backward": check_linear_backward,
    "softmax_backward": check_softmax_backward,
    "softmax_cross_entropy": check_softmax_cross_entropy,
    "layernorm_backward": check_layernorm_backward,
    "gelu_backward": check_gelu_backward,
    "attention_backward": check_attention_backward,
    "encoder_layer_backward": check_encoder_layer_backward,
    "adamw_step": check_adamw_step,
    "distillation_loss": check_distillation_loss,
    "init_student": check_init_student,
}
