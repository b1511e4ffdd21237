"""Checks for quantize, dequantize and head_gate_backward (lesson 11)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from minibert.classroom.report import CLOSED_TOL, SEED, CheckResult, Report, run
from minibert.prune import head_gate_forward
from minibert.quantize import dequantize as ref_dequantize
from minibert.quantize import quantize as ref_quantize


def _weights(rng: np.random.Generator) -> np.ndarray:
    """A (6, 5) float32 weight whose columns differ 100x in range, like real ones."""
    return (rng.standard_normal((6, 5)) * np.geomspace(0.01, 1.0, 5)).astype(np.float32)


def check_quantize(impl: Callable) -> list[CheckResult]:
    """impl(w, bits=8, axis=None) -> q (int8), scale (float32 of w's rank, size 1 on the reduced
    axes): symmetric quantization, one scale per tensor (axis None), column (1) or row (0)."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        w = _weights(rng)
        for axis, shape in ((None, (1, 1)), (1, (1, 5)), (0, (6, 1))):
            case = {None: "one scale for the tensor", 1: "one scale per column (axis=1)",
                    0: "one scale per row (axis=0)"}[axis]
            q, s = rep.call(f"quantize(w, 8, axis={axis})", impl, w, 8, axis, n_out=2)
            q, s = np.asarray(q), np.asarray(s)
            ok = q.dtype == np.int8 and s.dtype == np.float32 and s.shape == shape and q.shape == w.shape
            rep.true(f"{case}: q int8 {w.shape}, scale float32 {shape}", ok,
                     f"got q {q.dtype} {q.shape}, scale {s.dtype} {s.shape}: which axes does max "
                     f"reduce over, and did you keep them (keepdims)?")
            if not ok:
                continue
            q_ref, s_ref = ref_quantize(w, 8, axis)
            rep.match(f"{case}: the scales", s, s_ref,
                      note="the largest |w| of each slice should land exactly on the top level")
            err = np.abs(q.astype(np.float64) * s - w) / s
            rep.small(f"{case}: every rounding error at most half a step", float(err.max()), 0.5 + 1e-5,
                      "max |w - q*scale| / scale",
                      detail="round to the NEAREST level (truncating toward zero loses up to a whole step)")
            rep.true(f"{case}: the levels", np.array_equal(q, q_ref),
                     f"{int((q != q_ref).sum())} of {q.size} levels differ from the reference")
        q4, _ = rep.call("quantize(w, 4, axis=1)", impl, w, 4, 1, n_out=2)
        top = int(np.abs(np.asarray(q4, dtype=np.int64)).max())
        rep.true("4 bits: the levels stay within [-7, 7] and reach 7", top == 7,
                 f"the largest |level| is {top}: the range depends on `bits`")
        z = w.copy()
        z[:, 2] = 0
        qz, sz = rep.call("quantize of a weight with an all-zero column", impl, z, 8, 1, n_out=2)
        sz = np.asarray(sz, dtype=np.float64)
        ok = bool(np.all(np.isfinite(sz)) and np.all(sz > 0) and not np.asarray(qz)[:, 2].any())
        rep.true("an all-zero column: a positive finite scale and zero levels (no 0/0)", ok,
                 "the column's max is 0: what scale avoids dividing by zero?")

    return run(body)


def check_dequantize(impl: Callable) -> list[CheckResult]:
    """impl(q, scale, dtype=np.float32) -> q * scale in dtype, scale broadcasting over q."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        q = rng.integers(-127, 128, size=(6, 5)).astype(np.int8)
        for s in (np.float32([[0.5]]), rng.uniform(0.01, 1, (1, 5)).astype(np.float32),
                  rng.uniform(0.01, 1, (6, 1)).astype(np.float32)):
            w = rep.call(f"dequantize(q, scale of shape {s.shape})", impl, q, s)
            rep.dtypes(f"scale {s.shape}: float32 out", {"w": w})
            rep.match(f"scale {s.shape}: the weights", w, ref_dequantize(q, s, np.float64))
        big = np.full((2, 2), 127, np.int8)
        w = rep.call("dequantize(127s, scale 2)", impl, big, np.float32([[2.0]]))
        rep.match("no int8 overflow: 127 * 2 = 254", w, np.full((2, 2), 254.0), tol=CLOSED_TOL,
                  note="multiplying in int8 wraps around: cast the levels to float first")
        w64 = rep.call("dequantize(q, scale, np.float64)", impl, q, np.float32([[0.5]]), np.float64)
        rep.dtypes("dtype=np.float64 is honoured", {"w": w64}, dtype=np.float64)

    return run(body)


def check_head_gate_backward(impl: Callable) -> list[CheckResult]:
    """impl(dout, cache) -> dctx, dgates for out_h = g_h * ctx_h (heads side by side in ctx)."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        ctx, g = rng.standard_normal((2, 3, 12)), rng.standard_normal(4)      # 4 heads of size 3
        out, cache = head_gate_forward(ctx, g)
        dout = rng.standard_normal(out.shape)
        dctx, dg = rep.call("head_gate_backward(dout, cache)", impl, dout, cache, n_out=2, pure=True)
        rep.grad("dctx vs finite differences", dctx, lambda c: head_gate_forward(c, g)[0], ctx, dout)
        rep.grad("dgates vs finite differences", dg, lambda g_: head_gate_forward(ctx, g_)[0], g, dout)
        ones = np.ones(4)
        _, c1 = head_gate_forward(ctx, ones)
        _, dg1 = rep.call("head_gate_backward at g = 1", impl, dout, c1, n_out=2)
        rep.match("at g = 1 (the unchanged model): dL/dg_h, the head importance of lesson 11", dg1,
                  np.einsum("btnd,btnd->n", dout.reshape(2, 3, 4, 3), ctx.reshape(2, 3, 4, 3)))
        again = rep.call("head_gate_backward called twice", impl, dout, cache, n_out=2)
        rep.match("a second call returns the same gradients (nothing accumulates)",
                  np.concatenate([np.ravel(a) for a in again]),
                  np.concatenate([np.ravel(a) for a in (dctx, dg)]), tol=CLOSED_TOL)

    return run(body)
