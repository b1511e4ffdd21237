"""Checks for relation_kl and value_relation_backward (lesson 10: MiniLM relation distillation).

relation_kl is compared with the library's on attention-like logits (the -1e9 padding bias at
padded keys), on logits whose padded keys hold ordinary numbers (value relations carry no
bias: a student who leaves the padded keys in the softmax is caught there), without padding
and with a one-token example; its gradient against finite differences of the reference loss;
and against two closed forms written out here: identical rows give 0, and a uniform teacher
gives KL(u || p_s) = -log n - mean_j log p_s[j] per row (a KL taken the wrong way round fails).
value_relation_backward is compared with the library's and with finite differences of
value_relation_forward (exact for a quadratic: no truncation error), on a non-symmetric dr (a
symmetric one hides a missing transpose term) and on a symmetric one, against the closed form
for dr = 1, and on relation_kl's padded gradient (padded tokens must get exactly 0).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from minibert.classroom.report import CLOSED_TOL, SEED, CheckResult, Report, loss_value, run
from minibert.relation_losses import relation_kl as ref_relation_kl
from minibert.relation_losses import value_relation_backward as ref_value_relation_backward
from minibert.relation_losses import value_relation_forward


def _mask(T: int, lengths) -> np.ndarray:
    """(B, T) int64 0/1: example b has lengths[b] real tokens, then padding."""
    return (np.arange(T)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def _logits(rng: np.random.Generator, mask, nh: int, scale: float, padded: str) -> np.ndarray:
    """(B, nh, T, T) float64 logits; padded keys get the model's -1e9 bias ("bias") or stay
    ordinary numbers ("numbers", as v v^T / sqrt(hs) does)."""
    B, T = mask.shape
    z = scale * rng.standard_normal((B, nh, T, T))
    if padded == "bias":
        z += (1.0 - mask)[:, None, None, :] * -1e9
    return z


def _kl_ratios(mask, nh: int) -> dict:
    B, T = mask.shape
    n_real = int(mask.sum())
    return {n_real / (B * T): "averaged over every query row, padded ones too",
            float(nh): "not averaged over the heads",
            n_real / B: "averaged per example instead of per real query row",
            float(nh * n_real): "the sum, not the mean over heads and real query rows"}


def _pair(mask, shape) -> np.ndarray:
    real = mask.astype(bool)
    return np.broadcast_to(real[:, None, :, None] & real[:, None, None, :], shape)


def check_relation_kl(impl: Callable) -> list[CheckResult]:
    """impl(student_logits, teacher_logits, mask) -> loss, dstudent_logits: KL(p_t || p_s) of
    the softmaxes over the real keys, mean over heads and real query rows."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        T = 5
        cases = [("B=3, nh=3, lengths 5, 3, 2, -1e9 bias at padded keys", [5, 3, 2], 3, "bias"),
                 ("lengths 5, 3, 2, padded keys hold ordinary numbers (no bias)", [5, 3, 2], 3,
                  "numbers"),
                 ("no padding (mask None)", None, 2, "numbers"),
                 ("a one-token example (lengths 4, 1)", [4, 1], 2, "numbers")]
        for case, lengths, nh, padded in cases:
            mask = _mask(T, lengths if lengths is not None else [T, T])
            s = _logits(rng, mask, nh, 2.0, padded)
            t = _logits(rng, mask, nh, 3.0, padded)
            m = None if lengths is None else mask
            got = rep.call(f"relation_kl ({case})", impl, s, t, m, n_out=2, pure=True)
            loss, ds = ref_relation_kl(s, t, m)
            ratios = _kl_ratios(mask, nh) if lengths is not None else {
                float(nh): "not averaged over the heads"}
            note = ("entries at padded keys are ordinary numbers here: they must not enter "
                    "either softmax" if padded == "numbers" and lengths is not None else "")
            rep.match(f"loss ({case})", got[0], loss, ratios=ratios, note=note)
            rep.match(f"dstudent_logits ({case})", got[1], ds, ratios=ratios, note=note)
            g = np.asarray(got[1], dtype=np.float64)
            if lengths is not None and g.shape == s.shape:
                pair = _pair(mask, s.shape)
                rep.small(f"exactly 0 gradient where the query or the key is padding ({case})",
                          np.abs(g[~pair]).max(), 0.0, "max |dstudent_logits|",
                          "a padded query's row and a padded key's column get no gradient")
            if case.startswith("B=3"):
                rep.true("the loss is >= 0 (a KL divergence)", loss_value(got) >= 0,
                         f"got {loss_value(got):.4g}: KL(p_t || p_s), the teacher's weights first")
        # finite differences on a smaller case with moderate logits: the mean over nh * n_real
        # rows makes some gradient entries ~1e-4, where centred differences (h = 1e-5) lose
        # digits to round-off; here the reference measures ~1e-8 (2e-7 on the case above)
        mask = _mask(4, [4, 3])
        s, t = _logits(rng, mask, 2, 1.0, "bias"), _logits(rng, mask, 2, 1.5, "bias")
        got = rep.call("relation_kl (B=2, nh=2, lengths 4, 3)", impl, s, t, mask, n_out=2)
        rep.grad("dstudent_logits vs finite differences of the loss (B=2, nh=2, lengths 4, 3)",
                 got[1], lambda z: np.array([loss_value(ref_relation_kl(z, t, mask))]), s, np.ones(1))
        # closed forms, written out here (not the library's code)
        mask = _mask(T, [5, 3])
        s = _logits(rng, mask, 2, 2.0, "bias")
        same = rep.call("relation_kl(student == teacher)", impl, s, s.copy(), mask, n_out=2)
        rep.small("0 loss and 0 gradient when every real row matches",
                  max(abs(loss_value(same)), float(np.abs(np.asarray(same[1], dtype=float)).max())),
                  1e-12, "max |value|")
        uniform = rep.call("relation_kl(student, uniform teacher)", impl, s, np.zeros_like(s), mask,
                           n_out=2)
        rows = []
        for b, n in enumerate((5, 3)):
            z = s[b, :, :n, :n]                                          # (nh, n, n) real rows
            logp = z - z.max(-1, keepdims=True)
            logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
            rows.append((-np.log(n) - logp.mean(-1)).ravel())            # KL(u || p) per row
        rep.match("a uniform teacher: the mean over rows of -log n - mean_j log p_s[j]", uniform[0],
                  np.concatenate(rows).mean(), tol=1e-9,
                  note="KL(p_t || p_s) weights log(p_t / p_s) by the TEACHER's probabilities")
        s32 = s.astype(np.float32)
        out32 = rep.call("relation_kl in float32 (teacher in float64)", impl, s32,
                         _logits(rng, mask, 2, 3.0, "bias"), mask, n_out=2)
        rep.dtypes("float32 in, float32 out", {"loss": np.asarray(out32[0]),
                                                "dstudent_logits": out32[1]})

    return run(body)


def check_value_relation_backward(impl: Callable) -> list[CheckResult]:
    """impl(dr, cache) -> dv for r = scale * v v^T, scale = 1/sqrt(hs) (cache from
    value_relation_forward)."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        B, nh, T, hs = 2, 3, 4, 5                                        # T != hs: no shape luck
        v = rng.standard_normal((B, nh, T, hs))
        _, cache = value_relation_forward(v)
        scale = 1.0 / np.sqrt(hs)
        ratios = {1.0 / scale: "the 1/sqrt(hs) scale missing",
                  scale: "the 1/sqrt(hs) scale applied twice",
                  float(hs): "multiplied by sqrt(hs) instead of divided by it"}
        dr = rng.standard_normal((B, nh, T, T))                          # not symmetric
        sym = dr + dr.swapaxes(-1, -2)
        dv_sym = rep.call("value_relation_backward(dr, cache), dr symmetric", impl, sym, cache,
                          pure=True)
        sym_ok = rep.match("dv (dr symmetric)", dv_sym, ref_value_relation_backward(sym, cache),
                           ratios={**ratios, 0.5: "only one of v's two uses in v v^T counted"})
        dv = rep.call("value_relation_backward, dr not symmetric", impl, dr, cache, pure=True)
        rep.match("dv (dr not symmetric)", dv, ref_value_relation_backward(dr, cache), ratios=ratios,
                  note=("right for a symmetric dr, wrong for this one: v is on both sides of "
                        "v v^T, does dv see dr AND its transpose?") if sym_ok else "")
        rep.grad("dv vs finite differences of value_relation_forward", dv,
                 lambda x: value_relation_forward(x)[0], v, dr)
        ones = rep.call("value_relation_backward, dr = 1", impl, np.ones((B, nh, T, T)), cache)
        closed = np.broadcast_to(2.0 * scale * v.sum(axis=2, keepdims=True), v.shape)
        rep.match("dr = 1: every dv_k = 2 * sum_j v_j / sqrt(hs) (closed form)", ones, closed,
                  tol=CLOSED_TOL, ratios=ratios)
        mask = _mask(T, [4, 2])
        r_t, _ = value_relation_forward(rng.standard_normal((B, nh, T, hs)))
        r_s, _ = value_relation_forward(v)
        _, dr_kl = ref_relation_kl(r_s, r_t, mask)                        # 0 on padded rows/cols
        dv_kl = np.asarray(rep.call("value_relation_backward on relation_kl's gradient (padding)",
                                    impl, dr_kl, cache), dtype=np.float64)
        if dv_kl.shape == v.shape:
            rep.small("exactly 0 gradient at padded tokens (their rows and columns of dr are 0)",
                      np.abs(dv_kl.swapaxes(1, 2)[mask == 0]).max(), 0.0, "max |dv| at padded tokens",
                      "a padded token's value vector must get nothing")
        v32 = v.astype(np.float32)
        _, c32 = value_relation_forward(v32)
        out32 = rep.call("value_relation_backward in float32", impl, dr.astype(np.float32), c32)
        rep.dtypes("float32 in, float32 out", {"dv": out32})
        again = rep.call("value_relation_backward called twice", impl, dr, cache)
        rep.match("a second call returns the same dv (nothing accumulates)", again, dv,
                  tol=CLOSED_TOL)

    return run(body)
