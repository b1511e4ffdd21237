"""Check results, and the Report that collects them while an exercise's checks run.

The kinds of check, and their tolerances:
- match: the student's output against the library's reference on the same inputs, in float64,
  within MATCH_TOL = 1e-7 (the same maths in another order agrees to ~1e-13); a failure says
  how it differs (minibert.classroom.diagnose).
- finite differences: the analytic gradient against centred differences of the forward in
  float64 (h = 1e-5), within FD_TOL = 1e-6: the library's own code measures 2e-10 to 5e-8 on
  the layer checks and ~2e-7 on scalar losses; a wrong term measures 1e-2 to 1. These check
  the reference too, against something nobody wrote by hand.
- properties (rows of the softmax gradient sum to 0, padded tokens get no gradient, ...) and
  dtypes: float32 in, float32 out.
Every input is a small random float64 array from a fixed seed: reproducible, milliseconds.
"""

from __future__ import annotations

import copy
from typing import Callable, NamedTuple

import numpy as np

from minibert.classroom.diagnose import MATCH_TOL, explain
# bound here, so `minibert exercises test` swapping the library's functions for a student's
# never swaps the checker's own tools
from minibert.gradcheck import numerical_vjp as _numerical_vjp
from minibert.gradcheck import rel_error as _rel_error

FD_TOL = 1e-6        # finite differences vs analytic, float64, h = FD_H
FD_H = 1e-5
CLOSED_TOL = 1e-9    # two float64 evaluations of the same closed form
SEED = 1234


class CheckResult(NamedTuple):
    name: str                       # the property checked, e.g. "dx (with dropout p=0.3)"
    passed: bool
    value: float | None = None      # what was measured
    tolerance: float | None = None  # the largest value that passes
    detail: str = ""                # how it failed: the diagnosis, the exception, ...
    measure: str = "rel error"

    def describe(self) -> str:
        parts = []
        if self.value is not None and np.isfinite(self.value):
            tol = f", tolerance {self.tolerance:.0e}" if self.tolerance is not None else ""
            parts.append(f"{self.measure} {self.value:.1e}{tol}")
        if self.detail:
            parts.append(self.detail)
        return "; ".join(parts) if parts else ("ok" if self.passed else "failed")


class Failed(Exception):
    """The implementation under test raised: the rest of this check list cannot run."""


class Report:
    """Collects CheckResults; every comparison catches its own errors (wrong shapes, NaN)."""

    def __init__(self) -> None:
        self.results: list[CheckResult] = []

    def call(self, what: str, fn: Callable, *args, n_out: int | None = None, pure: bool = False,
             copy_args: bool = True, **kwargs):
        """Run the implementation on copies of the arguments (unless not copy_args); on an
        exception record a failed check and stop. pure: also check that it left its (copied)
        arguments unchanged."""
        args_c, kwargs_c = (copy.deepcopy(args), copy.deepcopy(kwargs)) if copy_args else (args, kwargs)
        try:
            out = fn(*args_c, **kwargs_c)
        except (Exception, SystemExit) as err:   # the student's exception is the verdict
            self.fail(f"{what} runs", f"raised {type(err).__name__}: {err}")
            raise Failed from err
        if n_out is not None and (not isinstance(out, tuple) or len(out) != n_out):
            got = f"a tuple of {len(out)}" if isinstance(out, tuple) else type(out).__name__
            self.fail(f"{what} returns {n_out} values", f"returned {got}")
            raise Failed
        if pure:
            changed = _changed(args, args_c) or _changed(kwargs, kwargs_c)
            self.true(f"{what} leaves its inputs unchanged", not changed,
                      f"it modified {changed} in place: the caller still needs it (work on a copy)")
        return out

    def fail(self, name: str, detail: str) -> None:
        self.results.append(CheckResult(name, False, detail=detail))

    def true(self, name: str, ok: bool, detail: str = "") -> None:
        self.results.append(CheckResult(name, bool(ok), detail="" if ok else detail))

    def match(self, name: str, got, want, *, tol: float = MATCH_TOL, blocks=None, ratios=None,
              see: str = "", note: str = "") -> bool:
        """The student's value against the reference's, with a diagnosis when they differ
        (`note`: a case-specific diagnosis, added in front when it fails)."""
        try:
            err, why = explain(got, want, tol, blocks=blocks, ratios=ratios)
        except Exception as err_:  # noqa: BLE001 - a value we cannot even compare
            err, why = np.inf, f"could not compare: {type(err_).__name__}: {err_}"
        ok = bool(err <= tol)
        if note and not ok:
            why = f"{note}; {why}" if why else note
        detail = why + (f" (see {see})" if see and not ok else "")
        self.results.append(CheckResult(name, ok, err, tol, detail=detail, measure="rel error"))
        return ok

    def grad(self, name: str, analytic, f: Callable, x: np.ndarray, dout) -> None:
        """The analytic gradient vs centred differences of sum(f(x) * dout), within FD_TOL
        (entries where both are at the round-off level, see fd_noise, count as equal)."""
        try:
            num = fd(f, x, dout)
            noise = fd_noise(f, x, dout)
            a = np.asarray(analytic, dtype=np.float64)
            if a.shape == num.shape:
                both_tiny = (np.abs(a) < noise) & (np.abs(num) < noise)
                a, num = np.where(both_tiny, 0.0, a), np.where(both_tiny, 0.0, num)
        except Exception as err_:  # noqa: BLE001
            self.fail(name, f"could not compute finite differences: {type(err_).__name__}: {err_}")
            return
        if a.shape != num.shape:
            self.fail(name, f"shape {a.shape}, expected {num.shape}")
            return
        if not np.all(np.isfinite(a)):
            self.fail(name, "contains NaN or inf")
            return
        err = float(_rel_error(a, num))
        self.results.append(CheckResult(name, err <= FD_TOL, err, FD_TOL))

    def small(self, name: str, value: float, tol: float, measure: str, detail: str = "") -> None:
        value = float(value)
        ok = bool(np.isfinite(value) and value <= tol)
        self.results.append(CheckResult(name, ok, value, tol, measure=measure,
                                        detail="" if ok else detail))

    def dtypes(self, name: str, arrays: dict, dtype=np.float32) -> None:
        wrong = {k: np.asarray(v).dtype for k, v in arrays.items() if np.asarray(v).dtype != dtype}
        self.true(name, not wrong, ", ".join(f"{k} is {d}" for k, d in wrong.items())
                  + f" (expected {np.dtype(dtype)}: a Python float or a float64 constant "
                    f"promoted it?)")


def _changed(before, after) -> str:
    """The name (or position) of the first argument whose arrays differ, else ""."""
    items = before.items() if isinstance(before, dict) else enumerate(before)
    other = after if isinstance(after, dict) else list(after)
    for key, b in items:
        if not _same(b, other[key]):
            return f"argument {key!r}" if isinstance(key, str) else f"argument {key + 1}"
    return ""


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return True


def run(body: Callable[[Report], None]) -> list[CheckResult]:
    rep = Report()
    try:
        body(rep)
    except Failed:
        pass
    return rep.results


def fd(f: Callable, x: np.ndarray, dout) -> np.ndarray:
    """Centred-difference vector-Jacobian product d sum(f(x) * dout) / dx, in float64."""
    return _numerical_vjp(f, x, np.asarray(dout, dtype=np.float64), h=FD_H)


def fd_noise(f: Callable, x: np.ndarray, dout) -> float:
    """The round-off level of a centred difference of sum(f(x) * dout): ~10 eps |f| / h.
    Entries where both sides are below it count as agreeing (round-off against round-off)."""
    value = float(np.sum(np.asarray(f(x), dtype=np.float64) * np.asarray(dout, dtype=np.float64)))
    return 10 * np.finfo(np.float64).eps * (1.0 + abs(value)) / FD_H


def loss_value(out) -> float:
    return float(np.asarray(out[0] if isinstance(out, tuple) else out))
