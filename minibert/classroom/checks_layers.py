"""Checks for the lesson 1-3 exercises and the embedding backward: rel_error, numerical_vjp,
linear_backward, softmax_backward, layernorm_backward, gelu_backward, embedding_backward.

Each `check_<name>(impl)` runs `impl` (the library's function or a student's) on several cases
that reach every branch used in practice, compares every output with the library's reference
(with a diagnosis when it differs), checks the gradient against finite differences (which tests
the reference as well) and the properties the lessons teach, and returns CheckResults.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from minibert.classroom.report import CLOSED_TOL, FD_TOL, SEED, CheckResult, Report, run
from minibert.gradcheck import numerical_vjp as ref_numerical_vjp
from minibert.gradcheck import rel_error as ref_rel_error
from minibert.layers import embedding_backward as ref_embedding_backward
from minibert.layers import embedding_forward, gelu_forward, layernorm_forward, linear_forward
from minibert.layers import gelu_backward as ref_gelu_backward
from minibert.layers import layernorm_backward as ref_layernorm_backward
from minibert.layers import linear_backward as ref_linear_backward
from minibert.layers import softmax_backward as ref_softmax_backward
from minibert.layers import softmax_forward


def _match_all(rep: Report, case: str, names, got, want, **opts) -> None:
    for name, g, w in zip(names, got, want):
        rep.match(f"{name} ({case})", g, w, **opts.get(name, {}))


def _float32(rep: Report, what: str, impl: Callable, names, *args, n_out=None) -> None:
    out = rep.call(what, impl, *args, n_out=n_out)
    out = out if isinstance(out, tuple) else (out,)
    rep.dtypes("float32 in, float32 out", dict(zip(names, out)))


# ---------------------------------------------------------------------------------------------
# gradcheck.py (lesson 1)
# ---------------------------------------------------------------------------------------------

def check_rel_error(impl: Callable) -> list[CheckResult]:
    """impl(a, b, floor=1e-8) -> max over entries of |a - b| / max(floor, |a| + |b|)."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
        cases = [("two random arrays", (a, b), {}),
                 ("a close to b", (a, a + 1e-6 * rng.standard_normal(a.shape)), {}),
                 ("b = -a (the denominator adds sizes, not values)", (a, -a), {}),
                 ("0 vs 1e-20 (the floor)", (np.zeros(2), np.array([1e-20, 0.0])), {}),
                 ("floor=1.0", (np.array([0.0, 2.0]), np.array([1e-3, 2.0])), {"floor": 1.0}),
                 ("one entry far off among many equal", (np.ones(50), np.r_[np.ones(49), 3.0]), {})]
        for case, args, kw in cases:
            got = rep.call(f"rel_error ({case})", impl, *args, pure=True, **kw)
            rep.match(f"the error ({case})", got, ref_rel_error(*args, **kw), tol=CLOSED_TOL)
        got = rep.call("rel_error of two empty arrays", impl, np.zeros(0), np.zeros(0))
        rep.true("two empty arrays: 0.0", got == 0.0, f"returned {got!r}")
        got = rep.call("rel_error (result type)", impl, a, b)
        rep.true("returns a Python float (one number, not an array)", type(got) is float,
                 f"returned {type(got).__name__}")

    return run(body)


def check_numerical_vjp(impl: Callable) -> list[CheckResult]:
    """impl(f, x, dout, h=1e-5, indices=None) -> centred differences of sum(f(x) * dout)."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        x = rng.standard_normal((3, 4))
        dout = rng.standard_normal((3, 4))
        x_before = x.copy()
        cube = lambda z: z ** 3                                  # noqa: E731 - (x^3)' = 3x^2
        got = rep.call("numerical_vjp(x**3)", impl, cube, x, dout, copy_args=False)
        rep.match("gradient of sum(x**3 * dout) against 3 x**2 dout (closed form)", got,
                  3 * x_before ** 2 * dout, tol=1e-8)
        rep.true("x is restored exactly after every nudge", np.array_equal(x, x_before),
                 "x differs from before the call: put every entry back as it was")
        idx = np.array([0, 5, 11])
        got = rep.call("numerical_vjp(x**3, indices=[0, 5, 11])", impl, cube, x, dout, indices=idx)
        rep.match("only the requested entries (indices=[0, 5, 11])", got,
                  (3 * x_before ** 2 * dout).reshape(-1)[idx], tol=1e-8)
        got = rep.call("numerical_vjp with h=1e-2", impl, cube, x, dout, h=1e-2)
        rep.match("uses the step h it is given (h=1e-2)", got,
                  ref_numerical_vjp(cube, x.copy(), dout, h=1e-2), tol=1e-9)
        two = lambda z: (z ** 2, np.sin(z).sum(axis=0))         # noqa: E731 - two outputs
        d2 = (rng.standard_normal((3, 4)), rng.standard_normal(4))
        got = rep.call("numerical_vjp of a function with two outputs", impl, two, x, d2)
        rep.match("two outputs (a tuple): both contribute", got,
                  2 * x_before * d2[0] + np.cos(x_before) * d2[1], tol=1e-8)
        view = lambda z: z.reshape(-1)                          # noqa: E731 - a view of x
        got = rep.call("numerical_vjp of a function returning a view of x", impl, view, x,
                       dout.reshape(-1))
        rep.match("f returning a view of x (copy each evaluation before the next nudge)",
                  got, dout, tol=1e-8)

    return run(body)


# ---------------------------------------------------------------------------------------------
# layers.py
# ---------------------------------------------------------------------------------------------

def check_linear_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache) -> dx, dW, db for y = x @ W + b, x of shape (N..., D)."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        W, b = rng.standard_normal((4, 5)), rng.standard_normal(5)
        for shape in [(2, 3, 4), (6, 4), (2, 2, 3, 4)]:
            x = rng.standard_normal(shape)
            y, cache = linear_forward(x, W, b)
            dy = rng.standard_normal(y.shape)
            n = int(np.prod(shape[:-1]))
            case = f"x of shape {shape}"
            got = rep.call(f"linear_backward ({case})", impl, dy, cache, n_out=3, pure=True)
            ratios = {1 / n: f"averaged over the {n} rows instead of summed",
                      float(n): "summed where it should not be"}
            _match_all(rep, case, ("dx", "dW", "db"), got, ref_linear_backward(dy, cache),
                       db={"ratios": ratios}, dW={"ratios": ratios})
            if shape == (2, 3, 4):
                dx, dW, db = got
                rep.grad("dx vs finite differences", dx, lambda x_: linear_forward(x_, W, b)[0], x, dy)
                rep.grad("dW vs finite differences", dW, lambda W_: linear_forward(x, W_, b)[0], W, dy)
                rep.grad("db vs finite differences", db, lambda b_: linear_forward(x, W, b_)[0], b, dy)
                again = rep.call("linear_backward called twice", impl, dy, cache, n_out=3)
                rep.match("a second call returns the same gradients (nothing accumulates)",
                          np.concatenate([np.ravel(a) for a in again]),
                          np.concatenate([np.ravel(a) for a in got]))
        x = rng.standard_normal((2, 3, 4)).astype(np.float32)
        _, c32 = linear_forward(x, W.astype(np.float32), b.astype(np.float32))
        _float32(rep, "linear_backward in float32", impl, ("dx", "dW", "db"),
                 rng.standard_normal((2, 3, 5)).astype(np.float32), c32, n_out=3)

    return run(body)


def check_softmax_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache) -> dx for y = softmax(x) over the last axis."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        for case, x in [("x of shape (2, 3, 5)", 2.0 * rng.standard_normal((2, 3, 5))),
                        ("x of shape (4, 6)", rng.standard_normal((4, 6))),
                        ("peaked rows (large logits)", 8.0 * rng.standard_normal((3, 4)))]:
            y, cache = softmax_forward(x)
            dy = rng.standard_normal(y.shape)
            dx = rep.call(f"softmax_backward ({case})", impl, dy, cache, pure=True)
            rep.match(f"dx ({case})", dx, ref_softmax_backward(dy, cache))
            if x.ndim == 3:
                rep.grad("dx vs finite differences", dx, lambda x_: softmax_forward(x_)[0], x, dy)
                # softmax(x + c) = softmax(x): moving a whole row together changes nothing
                rep.small("each row of dx sums to 0 (softmax ignores a shift of its row)",
                          np.abs(np.sum(dx, axis=-1)).max(), 1e-12, "max |row sum|",
                          "see the lesson: what does adding a constant to a row do to y?")
        _, c32 = softmax_forward(rng.standard_normal((2, 5)).astype(np.float32))
        _float32(rep, "softmax_backward in float32", impl, ("dx",),
                 rng.standard_normal((2, 5)).astype(np.float32), c32)

    return run(body)


def check_layernorm_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache) -> dx, dgamma, dbeta for LayerNorm over the last axis."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        gamma, beta = 1.0 + 0.5 * rng.standard_normal(6), rng.standard_normal(6)
        cases = [("x of shape (2, 3, 6), off-centre", 3.0 + 2.0 * rng.standard_normal((2, 3, 6)), 1e-5),
                 ("x of shape (4, 6)", rng.standard_normal((4, 6)), 1e-5),
                 ("eps = 1e-12", 2.0 * rng.standard_normal((3, 6)), 1e-12)]
        for case, x, eps in cases:
            y, cache = layernorm_forward(x, gamma, beta, eps)
            dy = rng.standard_normal(y.shape)
            got = rep.call(f"layernorm_backward ({case})", impl, dy, cache, n_out=3, pure=True)
            _match_all(rep, case, ("dx", "dgamma", "dbeta"), got, ref_layernorm_backward(dy, cache))
            dx = np.asarray(got[0], dtype=np.float64)
            if x.ndim == 3:
                rep.grad("dx vs finite differences", got[0],
                         lambda x_: layernorm_forward(x_, gamma, beta, eps)[0], x, dy)
                rep.grad("dgamma vs finite differences", got[1],
                         lambda g_: layernorm_forward(x, g_, beta, eps)[0], gamma, dy)
                rep.grad("dbeta vs finite differences", got[2],
                         lambda b_: layernorm_forward(x, gamma, b_, eps)[0], beta, dy)
            if eps == 1e-12 and dx.shape == x.shape:
                # LayerNorm(x + c) = LayerNorm(x), and (at eps -> 0) LayerNorm(c x) = LayerNorm(x)
                rep.small("each row of dx sums to 0 (a shift of the row changes nothing)",
                          np.abs(dx.sum(axis=-1)).max() / np.abs(dx).max(), 1e-10,
                          "max |row sum| / max |dx|", "which term removes the row's mean?")
                rep.small("each row of dx is orthogonal to xhat (a rescaling changes nothing)",
                          np.abs((dx * cache.xhat).sum(axis=-1)).max() / np.abs(dx).max(), 1e-9,
                          "max |dx . xhat| / max |dx|", "which term removes the part along xhat?")
        x = rng.standard_normal((2, 6)).astype(np.float32)
        _, c32 = layernorm_forward(x, gamma.astype(np.float32), beta.astype(np.float32), 1e-5)
        _float32(rep, "layernorm_backward in float32", impl, ("dx", "dgamma", "dbeta"),
                 rng.standard_normal((2, 6)).astype(np.float32), c32, n_out=3)

    return run(body)


def check_gelu_backward(impl: Callable) -> list[CheckResult]:
    """impl(dy, cache) -> dx for the exact GELU 0.5 x (1 + erf(x / sqrt 2))."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        # |x| <= 4: further out the slope is ~1e-6 and its finite difference mostly round-off;
        # the tails are checked against the closed form instead.
        x = np.concatenate([np.linspace(-4, 4, 21), rng.standard_normal(19)]).reshape(2, 4, 5)
        y, cache = gelu_forward(x)
        dy = rng.standard_normal(y.shape)
        dx = rep.call("gelu_backward", impl, dy, cache, pure=True)
        rep.match("dx (x in [-4, 4])", dx, ref_gelu_backward(dy, cache))
        rep.grad("dx vs finite differences", dx, lambda x_: gelu_forward(x_)[0], x, dy)
        pts = np.array([0.0, 1.0, -1.0, 3.0, -3.0, 8.0, -8.0])
        want = np.array([0.5 * (1 + math.erf(v / math.sqrt(2)))
                         + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi) for v in pts])
        _, cpts = gelu_forward(pts)
        d = rep.call("gelu_backward at x = 0, +-1, +-3, +-8", impl, np.ones_like(pts), cpts)
        rep.match("the slope at x = 0, +-1, +-3, +-8 (closed form with math.erf)", d, want,
                  tol=CLOSED_TOL)
        _, c32 = gelu_forward(x.astype(np.float32))
        _float32(rep, "gelu_backward in float32", impl, ("dx",), dy.astype(np.float32), c32)

    return run(body)


def _embedding_note(got, want, ids) -> str:
    """Which rows are wrong, in terms of the ids: repeated ones only? never looked up?"""
    try:
        g = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        return ""
    if g.shape != want.shape:
        return ""
    ids_, counts = np.unique(ids, return_counts=True)
    wrong = {int(v) for v in np.flatnonzero(np.abs(g - want).max(axis=1) > 1e-9 * np.abs(want).max())}
    repeated = {int(v) for v, c in zip(ids_, counts) if c > 1}
    unused = set(range(len(want))) - set(ids_.tolist())
    if wrong and wrong <= repeated:
        return (f"only the rows of ids that occur more than once are wrong (rows {sorted(wrong)}): "
                f"what should happen when an id occurs twice?")
    if wrong & unused:
        return f"rows {sorted(wrong & unused)} are never looked up, yet are not 0"
    return ""


def check_embedding_backward(impl: Callable) -> list[CheckResult]:
    """impl(dout, cache) -> dtable (V, H): each row of dout added into the row of its id."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        table = rng.standard_normal((9, 4))
        cases = [("ids of shape (2, 4), some repeated", np.array([[1, 3, 3, 0], [5, 3, 1, 8]])),
                 ("ids of shape (5,), all distinct", np.array([4, 0, 2, 7, 6])),
                 ("one id repeated 6 times", np.full((2, 3), 2))]
        for case, ids in cases:
            out, cache = embedding_forward(ids, table)
            dout = rng.standard_normal(out.shape)
            got = rep.call(f"embedding_backward ({case})", impl, dout, cache, pure=True)
            want = ref_embedding_backward(dout, cache)
            rep.match(f"dtable ({case})", got, want, note=_embedding_note(got, want, ids))
            if ids.ndim == 2 and ids[0, 1] == 3:
                rep.grad("dtable vs finite differences", got,
                         lambda t_: embedding_forward(ids, t_)[0], table, dout)
        out, c32 = embedding_forward(np.array([[1, 1, 2]]), table.astype(np.float32))
        _float32(rep, "embedding_backward in float32", impl, ("dtable",),
                 rng.standard_normal(out.shape).astype(np.float32), c32)

    return run(body)
