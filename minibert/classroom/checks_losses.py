"""Checks for the loss exercises: softmax_cross_entropy, soft_kl, distillation_loss (lessons 2
and 7), hidden_mse, attention_mse, cosine_loss (lesson 8).

Each loss is compared with the library's on several cases (temperatures other than 1, alpha
other than 0.5, padding, a projection with and without its bias, ...), every promised output
included (parts["kl"] without T^2, dW None without W), and its gradient is checked against
finite differences of the reference loss. Constant ratios get named causes ("missing or extra
T^2", "averaged over classes"), case by case.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from minibert.classroom.report import FD_TOL, SEED, CheckResult, Report, loss_value, run
from minibert.losses import attention_mse as ref_attention_mse
from minibert.losses import cosine_loss as ref_cosine_loss
from minibert.losses import cross_entropy as ref_cross_entropy
from minibert.losses import distillation_loss as ref_distillation_loss
from minibert.losses import hidden_mse as ref_hidden_mse
from minibert.losses import soft_kl as ref_soft_kl


def _scalar_grad(rep: Report, name: str, grad, loss_fn: Callable, x: np.ndarray) -> None:
    rep.grad(name, grad, lambda z: np.array([loss_value(loss_fn(z))]), x, np.ones(1))


def _batch_ratios(N: int, C: int) -> dict:
    return {float(N): "summed over the batch instead of averaged",
            1.0 / N: "divided by N once too often",
            1.0 / C: "averaged over the classes too (a KL sums over classes)",
            float(C): "multiplied by the number of classes"}


def check_softmax_cross_entropy(impl: Callable) -> list[CheckResult]:
    """impl(logits, labels) -> loss, dlogits: mean over the batch of -log softmax(logits)[label]."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        for case, N, C, scale in [("N=6, C=4", 6, 4, 2.0), ("N=1, C=2", 1, 2, 1.0),
                                  ("N=5, C=7, peaked logits", 5, 7, 6.0)]:
            logits, labels = scale * rng.standard_normal((N, C)), rng.integers(0, C, N)
            got = rep.call(f"cross_entropy ({case})", impl, logits, labels, n_out=2, pure=True)
            loss, dlogits = ref_cross_entropy(logits, labels)
            rep.match(f"loss ({case})", got[0], loss, ratios=_batch_ratios(N, C))
            rep.match(f"dlogits ({case})", got[1], dlogits, ratios=_batch_ratios(N, C))
            if N == 6:
                _scalar_grad(rep, "dlogits vs finite differences of the loss", got[1],
                             lambda z: ref_cross_entropy(z, labels), logits)
        logits, labels = 1000.0 * rng.standard_normal((4, 3)), rng.integers(0, 3, 4)
        big = rep.call("cross_entropy on logits of size 1000", impl, logits, labels, n_out=2)
        ok = np.isfinite(loss_value(big)) and np.all(np.isfinite(np.asarray(big[1], dtype=float)))
        rep.true("stable for logits of size 1000 (no overflow to inf/NaN)", ok,
                 "got inf or NaN: what does exp(1000) give, and how does lesson 2 avoid it?")
        if ok:
            rep.match("loss for logits of size 1000", big[0], ref_cross_entropy(logits, labels)[0])
        l32 = rep.call("cross_entropy in float32", impl, logits.astype(np.float32) / 1000, labels,
                       n_out=2)
        rep.dtypes("float32 in, float32 out", {"loss": np.asarray(l32[0]), "dlogits": l32[1]})

    return run(body)


def _temperature_ratios(T: float, N: int, C: int) -> dict:
    r = _batch_ratios(N, C)
    if T != 1:
        r.update({T * T: "missing or extra T^2", 1 / (T * T): "missing or extra T^2",
                  T: "a factor of T too many", 1 / T: "a factor of 1/T missing or extra"})
    return r


def check_soft_kl(impl: Callable) -> list[CheckResult]:
    """impl(student_logits, teacher_logits, T) -> loss, dstudent: KL(p_t || p_s) at temperature
    T, summed over classes and averaged over examples, no T^2."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        for N, C, T in [(5, 3, 1.0), (5, 3, 2.0), (4, 10, 5.0), (1, 4, 3.0)]:
            case = f"N={N}, C={C}, T={T:g}"
            s, t = 2.0 * rng.standard_normal((N, C)), 3.0 * rng.standard_normal((N, C))
            got = rep.call(f"soft_kl ({case})", impl, s, t, T, n_out=2, pure=True)
            loss, ds = ref_soft_kl(s, t, T)
            ratios = _temperature_ratios(T, N, C)
            rep.match(f"loss ({case})", got[0], loss, ratios=ratios)
            rep.match(f"dstudent ({case})", got[1], ds, ratios=ratios)
            if T == 2.0:
                _scalar_grad(rep, f"dstudent vs finite differences of the loss ({case})", got[1],
                             lambda z: ref_soft_kl(z, t, T), s)
                rep.true("the loss is >= 0 (a KL divergence)", loss_value(got) >= 0,
                         f"got {loss_value(got):.4g}: KL(p_t || p_s), teacher first")
        s = rng.standard_normal((3, 4))
        same = rep.call("soft_kl(student == teacher)", impl, s, s.copy(), 2.0, n_out=2)
        rep.small("0 loss and 0 gradient when the student equals the teacher",
                  max(abs(loss_value(same)), float(np.abs(same[1]).max())), 1e-12, "max |value|")
        out32 = rep.call("soft_kl in float32", impl, s.astype(np.float32),
                         rng.standard_normal((3, 4)).astype(np.float32), 2.0, n_out=2)
        rep.dtypes("float32 in, float32 out", {"loss": np.asarray(out32[0]), "dstudent": out32[1]})

    return run(body)


def check_distillation_loss(impl: Callable) -> list[CheckResult]:
    """impl(student_logits, teacher_logits, labels, alpha, T) -> loss, dlogits, parts:
    alpha * CE + (1 - alpha) * T^2 * KL(p_t || p_s), parts = the unweighted ce and kl; label -1
    marks a row without a gold label (CE over the labelled rows only, 0 if none; KL over all)."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        N, C = 6, 3
        s, t = 2.0 * rng.standard_normal((N, C)), 3.0 * rng.standard_normal((N, C))
        labels = rng.integers(0, C, N)
        some = labels.copy()
        some[[1, 4]] = -1                                   # -1: a row without a gold label
        cases = [(0.0, 2.0, labels, ""), (0.5, 2.0, labels, ""), (1.0, 1.0, labels, ""),
                 (0.3, 4.0, labels, ""), (0.8, 10.0, labels, ""),
                 (0.5, 2.0, some, ", rows 1 and 4 unlabelled (-1)"),
                 (0.3, 3.0, np.full(N, -1), ", every row unlabelled (-1)")]   # pure soft first
        for alpha, T, labels, rows in cases:
            case = f"alpha={alpha:g}, T={T:g}{rows}"
            got = rep.call(f"distillation_loss ({case})", impl, s, t, labels, alpha, T, n_out=3,
                           pure=True)
            loss, dlogits, parts = ref_distillation_loss(s, t, labels, alpha, T)
            n_lab = int((labels >= 0).sum())
            ratios = _temperature_ratios(T, N, C) if alpha == 0 else {}
            if 0 < n_lab < N:
                ratios = {n_lab / N: "averaged over every row, the unlabelled ones too",
                          N / n_lab: "divided by the labelled rows where every row counts"}
            # the ingredients first, then what is made of them
            p = got[2]
            if not (isinstance(p, dict) and {"ce", "kl"} <= set(p)):
                rep.fail(f"parts ({case})", f"expected a dict with 'ce' and 'kl', got {p!r:.60}")
            else:
                rep.match(f"parts['ce'] ({case}, unweighted)", p["ce"], parts["ce"], ratios=ratios)
                rep.match(f"parts['kl'] ({case}, unweighted: no T^2, no 1 - alpha)", p["kl"],
                          parts["kl"], ratios={**_temperature_ratios(T, N, C),
                                               **({1 - alpha: "weighted by 1 - alpha"} if alpha else {})})
            rep.match(f"loss ({case})", got[0], loss, ratios=ratios)
            rep.match(f"dlogits ({case})", got[1], dlogits, ratios=ratios)
            if (alpha, T) in ((0.5, 2.0), (0.3, 4.0)):            # also with unlabelled rows
                _scalar_grad(rep, f"dlogits vs finite differences of the loss ({case})", got[1],
                             lambda z, a=alpha, T=T: ref_distillation_loss(z, t, labels, a, T), s)
        labels = cases[0][2]
        same = rep.call("distillation_loss(student == teacher, alpha=0)", impl, s, s.copy(), labels,
                        0.0, 4.0, n_out=3)
        rep.small("no soft loss or gradient when the student equals the teacher (alpha=0)",
                  max(abs(loss_value(same)), float(np.abs(same[1]).max())), 1e-12, "max |value|")
        out32 = rep.call("distillation_loss in float32", impl, s.astype(np.float32),
                         t.astype(np.float32), labels, 0.5, 2.0, n_out=3)
        rep.dtypes("float32 in, float32 out", {"loss": np.asarray(out32[0]), "dlogits": out32[1]})

    return run(body)


# ---------------------------------------------------------------------------------------------
# intermediate losses (lesson 8)
# ---------------------------------------------------------------------------------------------

def _mask(B: int, T: int, lengths) -> np.ndarray:
    return (np.arange(T)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def check_hidden_mse(impl: Callable) -> list[CheckResult]:
    """impl(student_h, teacher_h, mask=None, W=None, b=None) -> loss, dstudent_h, dW, db."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        B, T, Hs, Ht = 2, 4, 4, 6
        mask = _mask(B, T, [4, 2])
        n_real = int(mask.sum())
        cases = [("same width, no mask", Ht, None, False, False),
                 ("same width, padding", Ht, mask, False, False),
                 ("projection W, padding", Hs, mask, True, False),
                 ("projection W and bias b, padding", Hs, mask, True, True),
                 ("projection W and bias b, no mask", Hs, None, True, True)]
        for case, hs, m, use_W, use_b in cases:
            s, t = rng.standard_normal((B, T, hs)), rng.standard_normal((B, T, Ht))
            W = 0.5 * rng.standard_normal((hs, Ht)) if use_W else None
            b = 0.1 * rng.standard_normal(Ht) if use_b else None
            got = rep.call(f"hidden_mse ({case})", impl, s, t, m, W, b, n_out=4, pure=True)
            want = ref_hidden_mse(s, t, m, W, b)
            ratios = {}
            if m is not None:
                ratios[n_real / (B * T)] = "divided by every token, padded ones too"
            ratios[float(Ht)] = "not averaged over the features"
            for name, g, w in zip(("loss", "dstudent_h", "dW", "db"), got, want):
                if w is None:
                    rep.true(f"{name} is None ({case}, as the docstring promises)", g is None,
                             f"returned {type(g).__name__}")
                else:
                    rep.match(f"{name} ({case})", g, w, ratios=ratios)
            if use_b and m is not None:
                f = lambda z, which: ref_hidden_mse(**{"student_h": s, "teacher_h": t, "mask": m,  # noqa: E731
                                                       "W": W, "b": b, which: z})
                for i, (name, x) in enumerate((("student_h", s), ("W", W), ("b", b)), 1):
                    if got[i] is not None:
                        _scalar_grad(rep, f"d{name} vs finite differences ({case})", got[i],
                                     lambda z, n=name: f(z, n), x)
            if m is not None and got[1] is not None and np.shape(got[1]) == s.shape:
                rep.small(f"padded tokens get no gradient ({case})",
                          np.abs(np.asarray(got[1])[mask == 0]).max(), 0.0, "max |dstudent_h|")
        s, t = rng.standard_normal((B, T, Hs)), rng.standard_normal((B, T, Ht))
        out32 = rep.call("hidden_mse in float32", impl, s.astype(np.float32), t.astype(np.float32),
                         mask, rng.standard_normal((Hs, Ht)).astype(np.float32),
                         rng.standard_normal(Ht).astype(np.float32), n_out=4)
        rep.dtypes("float32 in, float32 out", dict(zip(("loss", "dstudent_h", "dW", "db"),
                                                       [np.asarray(out32[0]), *out32[1:]])))

    return run(body)


def check_attention_mse(impl: Callable) -> list[CheckResult]:
    """impl(student_scores, teacher_scores, mask) -> loss, dstudent_scores, every entry whose
    query or key is padding left out."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        B, nh, T = 3, 2, 5
        for case, lengths in [("three sequences of 5, 2 and 3 tokens", [5, 2, 3]),
                              ("no padding", [5, 5, 5])]:
            mask = _mask(B, T, lengths)
            keys = (1.0 - mask)[:, None, None, :] * -1e9           # the padding bias, as in the model
            s = rng.standard_normal((B, nh, T, T)) + keys
            t = 2.0 * rng.standard_normal((B, nh, T, T)) + keys
            got = rep.call(f"attention_mse ({case})", impl, s, t, mask, n_out=2, pure=True)
            loss, ds = ref_attention_mse(s, t, mask)
            n_pairs = nh * sum(n * n for n in lengths)
            ratios = {n_pairs / (B * nh * T * T): "averaged over every entry, padded ones too",
                      float(nh): "not averaged over the heads", float(B): "averaged per example"}
            rep.match(f"loss ({case})", got[0], loss, ratios=ratios)
            rep.match(f"dstudent_scores ({case})", got[1], ds, ratios=ratios)
            g = np.asarray(got[1], dtype=np.float64)
            if lengths[1] < T and g.shape == s.shape:
                real = mask.astype(bool)
                pair = real[:, None, :, None] & real[:, None, None, :]
                pair = np.broadcast_to(pair, s.shape)
                rep.small(f"no gradient where the query or the key is padding ({case})",
                          np.abs(g[~pair]).max(), 0.0, "max |dstudent_scores|",
                          "both the query AND the key must be a real token")
                rep.true(f"a finite loss despite the -1e9 padding bias ({case})",
                         np.isfinite(loss_value(got)) and abs(loss_value(got)) < 1e3,
                         f"loss {loss_value(got):.3g}: the padded entries were included")
                s2 = s[:, :, :, :].copy()
                _scalar_grad(rep, f"dstudent_scores vs finite differences ({case}, real entries)",
                             np.where(pair, g, 0.0),
                             lambda z: ref_attention_mse(np.where(pair, z, s2), t, mask), s2 * pair)
        mask = _mask(B, T, [5, 2, 3])
        out32 = rep.call("attention_mse in float32", impl,
                         rng.standard_normal((B, nh, T, T)).astype(np.float32),
                         rng.standard_normal((B, nh, T, T)).astype(np.float32), mask, n_out=2)
        rep.dtypes("float32 in, float32 out", {"loss": np.asarray(out32[0]), "dstudent_scores": out32[1]})

    return run(body)


def check_cosine_loss(impl: Callable) -> list[CheckResult]:
    """impl(student_h, teacher_h, mask) -> loss, dstudent_h: mean over real tokens of 1 - cos."""

    def body(rep: Report) -> None:
        rng = np.random.default_rng(SEED)
        B, T, H = 2, 4, 5
        for case, lengths, scale in [("padding", [4, 2], 1.0), ("no padding", [4, 4], 1.0),
                                     ("long student vectors (|s| ~ 10)", [3, 4], 10.0)]:
            mask = _mask(B, T, lengths)
            s, t = scale * rng.standard_normal((B, T, H)), rng.standard_normal((B, T, H))
            got = rep.call(f"cosine_loss ({case})", impl, s, t, mask, n_out=2, pure=True)
            loss, ds = ref_cosine_loss(s, t, mask)
            n_real = int(mask.sum())
            ratios = {n_real / (B * T): "divided by every token, padded ones too",
                      1.0 / H: "averaged over the features", float(scale): "a missing 1/|s|"}
            rep.match(f"loss ({case})", got[0], loss, ratios=ratios)
            rep.match(f"dstudent_h ({case})", got[1], ds, ratios=ratios)
            if lengths == [4, 2]:
                _scalar_grad(rep, f"dstudent_h vs finite differences ({case})", got[1],
                             lambda z: ref_cosine_loss(z, t, mask), s)
        t = rng.standard_normal((B, T, H))
        same = rep.call("cosine_loss(student = 3 x teacher)", impl, 3.0 * t, t, _mask(B, T, [4, 3]),
                        n_out=2)
        rep.small("0 loss and 0 gradient when the student points where the teacher does",
                  max(abs(loss_value(same)), float(np.abs(same[1]).max())), 1e-12, "max |value|",
                  "the cosine ignores lengths: only the direction may matter")
        out32 = rep.call("cosine_loss in float32", impl, t.astype(np.float32),
                         rng.standard_normal((B, T, H)).astype(np.float32), _mask(B, T, [4, 3]), n_out=2)
        rep.dtypes("float32 in, float32 out", {"loss": np.asarray(out32[0]), "dstudent_h": out32[1]})

    return run(body)
