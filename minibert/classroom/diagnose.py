"""Saying HOW a result is wrong, without saying what the right one is.

`explain(got, want)` compares a student's array with the reference's and, when they differ,
describes the difference in words a student can act on: a wrong shape (transposed?), NaN,
all zeros or zeros where the reference is not, the opposite sign, the transpose, a constant
ratio (x4 at T=2 reads "missing or extra T^2"), per-block errors of a fused tensor (the q, k,
v thirds of dW_qkv), and the worst entry. It never prints a formula.
"""

from __future__ import annotations

import numpy as np

MATCH_TOL = 1e-7     # student vs reference in float64: the same maths in another order ~1e-13


def _as_array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def match_error(got, want) -> float:
    """max |got - want| / max(floor, |got| + |want|), floor = 1e-7 * max|want| (>= 1e-12):
    relative where the entries matter, absolute (to 1e-14 of the scale) where they are ~0."""
    got, want = _as_array(got), _as_array(want)
    if want.size == 0:
        return 0.0
    floor = max(1e-12, 1e-7 * float(np.max(np.abs(want))))
    return float(np.max(np.abs(got - want) / np.maximum(floor, np.abs(got) + np.abs(want))))


def _ratio(got: np.ndarray, want: np.ndarray) -> float | None:
    """got / want when it is the same number (to 1e-6: a constant factor is exact up to
    rounding) wherever want is not ~0, and not 1; else None."""
    scale = float(np.max(np.abs(want), initial=0.0))
    sel = np.abs(want) > 1e-6 * scale
    if scale == 0.0 or not sel.any():
        return None
    r = got[sel] / want[sel]
    mid = float(np.median(r))
    if mid == 0.0 or not np.all(np.isfinite(r)) or np.ptp(r) > 1e-6 * abs(mid) or abs(mid - 1) < 1e-6:
        return None
    return mid


def _fmt_index(idx) -> str:
    return "(" + ", ".join(str(int(i)) for i in idx) + ")" if len(idx) != 1 else f"[{int(idx[0])}]"


GENERIC_RATIOS = {2.0: "a factor of 2 too many", 0.5: "a factor of 2 missing",
                  -1.0: "the opposite sign"}


def explain(got, want, tol: float = MATCH_TOL, blocks=None, ratios=None) -> tuple[float, str]:
    """(error, description) of got against want; description is "" when error <= tol.

    blocks: optional list of (name, index) pairs, each index selecting one part of a fused
        tensor (e.g. ("q", np.s_[..., 0:H])); a per-block error is reported.
    ratios: optional {value: meaning} for constant ratios that have a known cause in this
        case (e.g. {4.0: "missing or extra T^2"} at T = 2).
    """
    if got is None:
        return np.inf, "is None"
    try:
        got = _as_array(got)
    except (TypeError, ValueError) as err:
        return np.inf, f"is not an array of numbers ({type(err).__name__}: {err})"
    want = _as_array(want)
    if got.shape != want.shape:
        hint = ""
        if got.ndim >= 2 and got.shape[:-2] + got.shape[-2:][::-1] == want.shape:
            hint = ": transposed?"
        elif got.size == want.size:
            hint = ": the right number of entries, arranged differently"
        elif got.ndim < want.ndim:
            hint = ": summed over an axis that should stay?"
        elif got.ndim > want.ndim:
            hint = ": an axis that should be summed over is still there?"
        return np.inf, f"has shape {got.shape}, expected {want.shape}{hint}"
    bad = ~np.isfinite(got)
    if bad.any():
        first = np.argwhere(bad)[0]
        return np.inf, (f"contains NaN or inf ({int(bad.sum())} of {got.size} entries, the first "
                        f"at index {_fmt_index(first)}): an overflow, or a division by zero?")
    err = match_error(got, want)
    if err <= tol:
        return err, ""
    notes = []
    scale = float(np.max(np.abs(want), initial=0.0))
    if scale > 0 and not np.any(got):
        notes.append("is all zeros, the expected values are not")
    else:
        zeros = (got == 0) & (np.abs(want) > 1e-3 * scale)
        if zeros.any():
            notes.append(f"is 0 at {int(zeros.sum())} of {got.size} entries where the expected "
                         f"value is not (the first at index {_fmt_index(np.argwhere(zeros)[0])})")
        extra = (want == 0) & (np.abs(got) > 1e-9 * max(scale, 1e-30))
        if extra.any() and not zeros.any():
            notes.append(f"is non-zero at {int(extra.sum())} entries where the expected value is "
                         f"exactly 0 (the first at index {_fmt_index(np.argwhere(extra)[0])})")
        r = _ratio(got, want)
        if r is not None:
            meaning = ""
            for value, why in {**GENERIC_RATIOS, **(ratios or {})}.items():
                if abs(r - value) <= 1e-6 * abs(value):
                    meaning = f" ({why}?)"
            if got.size > 1:
                notes.append(f"is {r:.4g} x the expected value everywhere{meaning}")
            elif meaning:
                notes.append(f"is {r:.4g} x the expected value{meaning}")
        elif got.ndim >= 2 and got.shape[-1] == got.shape[-2] and \
                match_error(np.swapaxes(got, -1, -2), want) <= tol:
            notes.append("is the transpose of the expected one (the last two axes swapped)")
    if blocks:
        parts = []
        for name, index in blocks:
            e = match_error(got[index], want[index])
            parts.append(f"{name} {'ok' if e <= tol else f'rel error {e:.1e}'}")
        notes.append("by block: " + ", ".join(parts))
    floor = max(1e-12, 1e-7 * scale)
    per = np.abs(got - want) / np.maximum(floor, np.abs(got) + np.abs(want))
    worst = np.unravel_index(int(np.argmax(per)), per.shape) if per.ndim else ()
    if per.ndim:
        notes.append(f"worst entry at index {_fmt_index(worst)}: yours {got[worst]:.4g}, "
                     f"expected {want[worst]:.4g}")
    else:
        notes.append(f"yours {float(got):.6g}, expected {float(want):.6g}")
    return err, "; ".join(notes)
