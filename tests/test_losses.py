"""Tests for minibert/losses.py: gradients against finite differences, closed forms, masking,
dtypes and bad input.

Gradient tolerance: rel_error <= 1e-7. All gradient checks run in float64 with centred
differences (h = 1e-5): the truncation error is O(h^2) ~ 1e-10 and the round-off
O(eps * |loss| / h) ~ 1e-11, so a correct gradient measures ~1e-9 or better, while a wrong
factor or a missing term gives errors of order 1e-1.
"""

import numpy as np
import pytest

from minibert.attention import mask_to_bias
from minibert.gradcheck import numerical_vjp, rel_error
from minibert.losses import (attention_mse, cosine_loss, cross_entropy, distillation_loss,
                             hidden_mse, soft_kl)

GRAD_TOL = 1e-7   # see the module docstring


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _check_grad(name, loss_of_x, x, analytic):
    """Finite-difference gradient of the scalar loss_of_x(x) vs the analytic one; returns rel error."""
    num = numerical_vjp(lambda z: np.asarray(loss_of_x(z), dtype=np.float64), x, np.array(1.0))
    err = rel_error(num, analytic)
    print(f"gradcheck {name}: rel error {err:.1e}")
    assert err <= GRAD_TOL, f"{name}: rel error {err:.2e} > {GRAD_TOL}"
    return err


def _padded_mask():
    # (B=3, T=5): 5, 3 and 2 real tokens
    return np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=np.int64)


# ----------------------------------------------------------------------------- gradient checks

@pytest.mark.exercise("softmax_cross_entropy")
def test_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5))
    labels = np.array([0, 4, 2, 2])
    _, dlogits = cross_entropy(logits, labels)
    _check_grad("cross_entropy dlogits", lambda z: cross_entropy(z, labels)[0], logits, dlogits)


@pytest.mark.exercise("soft_kl")
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_soft_kl_gradient_matches_finite_differences(T):
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((4, 6)), 2 * rng.standard_normal((4, 6))
    _, ds = soft_kl(s, t, T)
    _check_grad(f"soft_kl dstudent (T={T})", lambda z: soft_kl(z, t, T)[0], s, ds)


@pytest.mark.exercise("distillation_loss")
def test_distillation_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    s, t = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    labels = np.array([0, 1, 2, 1, 0])
    _, ds, _ = distillation_loss(s, t, labels, 0.3, 2.0)
    _check_grad("distillation_loss dlogits", lambda z: distillation_loss(z, t, labels, 0.3, 2.0)[0],
                s, ds)



@pytest.mark.exercise("distillation_loss")
def test_unlabelled_rows_only_feel_the_teacher():
    # label -1 = no gold label: CE is the mean over the labelled rows, the KL covers every row
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    labels = np.array([2, -1, 0, -1])
    loss, d, parts = distillation_loss(s, t, labels, 0.5, 2.0)
    _, d_soft, p_soft = distillation_loss(s, t, np.full(4, -1), 0.5, 2.0)    # no labels at all
    ce, dce = cross_entropy(s[[0, 2]], labels[[0, 2]])
    assert p_soft["ce"] == 0.0 and np.isclose(parts["ce"], ce)
    np.testing.assert_allclose(d[[1, 3]], d_soft[[1, 3]])                   # rows 1, 3: KL only
    np.testing.assert_allclose(d[[0, 2]], d_soft[[0, 2]] + 0.5 * dce)
    assert np.isclose(loss, 0.5 * ce + 0.5 * 4 * parts["kl"])


def test_label_minus_one_is_the_only_unlabelled_marker():
    with pytest.raises(ValueError, match="or -1 for no gold label"):
        distillation_loss(_logits(), _logits(), np.array([0, -2, 1]), 0.5, 2.0)
    with pytest.raises(ValueError, match="out of range"):
        cross_entropy(_logits(), np.array([0, -1, 1]))          # plain CE has no unlabelled rows


@pytest.mark.exercise("hidden_mse")
def test_hidden_mse_gradients_wrt_student_projection_and_bias():
    # a student narrower than the teacher (Hs=4 < Ht=6), with padding
    rng = np.random.default_rng(3)
    mask = _padded_mask()
    s, t = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 6))
    W, b = rng.standard_normal((4, 6)), rng.standard_normal(6)
    _, ds, dW, db = hidden_mse(s, t, mask, W, b)
    _check_grad("hidden_mse dstudent_h", lambda z: hidden_mse(z, t, mask, W, b)[0], s, ds)
    _check_grad("hidden_mse dW", lambda z: hidden_mse(s, t, mask, z, b)[0], W, dW)
    _check_grad("hidden_mse db", lambda z: hidden_mse(s, t, mask, W, z)[0], b, db)


@pytest.mark.exercise("hidden_mse")
def test_hidden_mse_gradient_without_projection():
    rng = np.random.default_rng(4)
    mask = _padded_mask()
    s, t = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 4))
    loss, ds, dW, db = hidden_mse(s, t, mask)
    assert dW is None and db is None
    _check_grad("hidden_mse dstudent_h (no W)", lambda z: hidden_mse(z, t, mask)[0], s, ds)


@pytest.mark.exercise("attention_mse")
def test_attention_mse_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    mask = _padded_mask()
    bias = mask_to_bias(mask, np.float64)                                # (B,1,1,T)
    s = rng.standard_normal((3, 2, 5, 5)) + bias
    t = rng.standard_normal((3, 2, 5, 5)) + bias
    _, ds = attention_mse(s, t, mask)
    _check_grad("attention_mse dstudent_scores", lambda z: attention_mse(z, t, mask)[0], s, ds)


@pytest.mark.exercise("cosine_loss")
def test_cosine_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(6)
    mask = _padded_mask()
    s, t = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 4))
    _, ds = cosine_loss(s, t, mask)
    _check_grad("cosine_loss dstudent_h", lambda z: cosine_loss(z, t, mask)[0], s, ds)


# ----------------------------------------------------------------------------- closed forms

@pytest.mark.exercise("distillation_loss")
@pytest.mark.parametrize("T", [1.0, 4.0])
def test_grad_of_T2_kl_is_T_over_N_times_ps_minus_pt(T):
    rng = np.random.default_rng(7)
    N = 6
    s, t = rng.standard_normal((N, 4)), 3 * rng.standard_normal((N, 4))
    labels = np.zeros(N, dtype=np.int64)
    expected = (T / N) * (_softmax(s / T) - _softmax(t / T))
    # alpha = 0 leaves only the T^2 * KL term
    _, dlogits, parts = distillation_loss(s, t, labels, 0.0, T)
    # two float64 evaluations of the same quantity: agreement to a few ulps
    np.testing.assert_allclose(dlogits, expected, rtol=1e-12, atol=1e-15)
    _, dkl = soft_kl(s, t, T)
    np.testing.assert_allclose(T * T * dkl, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.exercise("soft_kl")
def test_kl_matches_its_definition():
    rng = np.random.default_rng(8)
    s, t, T = rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), 2.0
    ps, pt = _softmax(s / T), _softmax(t / T)
    expected = np.sum(pt * np.log(pt / ps)) / 3          # batchmean: sum over classes, mean over N
    np.testing.assert_allclose(soft_kl(s, t, T)[0], expected, rtol=1e-12)


@pytest.mark.exercise("distillation_loss")
def test_alpha_one_is_exactly_cross_entropy():
    rng = np.random.default_rng(9)
    s = rng.standard_normal((4, 3)).astype(np.float32)
    t = rng.standard_normal((4, 3)).astype(np.float32)
    labels = np.array([2, 0, 1, 1])
    loss, dlogits, parts = distillation_loss(s, t, labels, 1.0, 3.0)
    ce, dce = cross_entropy(s, labels)
    assert loss == ce and parts["ce"] == ce
    np.testing.assert_array_equal(dlogits, dce)


@pytest.mark.exercise("softmax_cross_entropy")
def test_cross_entropy_matches_its_definition():
    logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]])
    labels = np.array([0, 2])
    p = _softmax(logits)
    expected = -(np.log(p[0, 0]) + np.log(p[1, 2])) / 2
    np.testing.assert_allclose(cross_entropy(logits, labels)[0], expected, rtol=1e-12)


@pytest.mark.exercise("softmax_cross_entropy")
def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]], dtype=np.float32)
    loss, d = cross_entropy(logits, np.array([1, 0]))
    assert np.isfinite(loss) and np.isfinite(d).all()
    np.testing.assert_allclose(loss, 500.0, rtol=1e-6)   # (1000 + 0) / 2


@pytest.mark.exercise("soft_kl", "distillation_loss")
def test_kl_and_its_gradient_are_zero_when_student_equals_teacher():
    rng = np.random.default_rng(10)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    loss, d = soft_kl(x, x.copy(), 2.0)
    assert loss == 0.0
    assert not d.any()
    assert soft_kl(x, x[::-1].copy(), 2.0)[0] > 0


# ----------------------------------------------------------------------------- masking

@pytest.mark.exercise("attention_mse")
def test_attention_mse_ignores_padded_queries_and_keys():
    rng = np.random.default_rng(11)
    mask = _padded_mask()
    bias = mask_to_bias(mask, np.float32)
    s = (rng.standard_normal((3, 2, 5, 5)) + bias).astype(np.float32)
    t = (rng.standard_normal((3, 2, 5, 5)) + bias).astype(np.float32)
    loss, ds = attention_mse(s, t, mask)

    pad = ~((mask[:, None, :, None] == 1) & (mask[:, None, None, :] == 1))  # (B,1,T,T)
    pad = np.broadcast_to(pad, s.shape)
    assert not ds[pad].any(), "gradient must be exactly 0 where the query or key is padded"

    s2, t2 = s.copy(), t.copy()
    s2[pad] = rng.uniform(-1e9, 1e9, size=pad.sum()).astype(np.float32)
    t2[pad] = 7.0
    loss2, ds2 = attention_mse(s2, t2, mask)
    assert loss2 == loss
    np.testing.assert_array_equal(ds2, ds)

    # and the value: the mean over heads and real (query, key) pairs, example by example
    sq, n = 0.0, 0
    for bi in range(3):
        r = int(mask[bi].sum())
        d = s[bi, :, :r, :r].astype(np.float64) - t[bi, :, :r, :r]
        sq, n = sq + (d ** 2).sum(), n + d.size
    np.testing.assert_allclose(loss, sq / n, rtol=1e-5)   # float32 sum of ~60 terms


@pytest.mark.exercise("hidden_mse")
def test_hidden_mse_excludes_padded_tokens():
    rng = np.random.default_rng(12)
    mask = _padded_mask()
    s, t = rng.standard_normal((3, 5, 4)), rng.standard_normal((3, 5, 4))
    loss, ds, _, _ = hidden_mse(s, t, mask)
    real = mask == 1
    np.testing.assert_allclose(loss, np.mean((s[real] - t[real]) ** 2), rtol=1e-12)
    assert not ds[~real].any()
    s2, t2 = s.copy(), t.copy()
    s2[~real], t2[~real] = 100.0, -100.0
    assert hidden_mse(s2, t2, mask)[0] == loss


@pytest.mark.exercise("hidden_mse")
def test_hidden_mse_projection_closed_form():
    # token 0: proj = s @ W + b = 1 * [2, 2] + [1, 1] = [3, 3] vs teacher [0, 3]:
    # loss = (3^2 + 0^2) / (1 real token * 2 features) = 4.5; token 1 is padding
    s = np.array([[[1.0], [3.0]]])                          # (1, 2, 1)
    t = np.array([[[0.0, 3.0], [0.0, 0.0]]])                # (1, 2, 2)
    W, b = np.array([[2.0, 2.0]]), np.array([1.0, 1.0])
    loss, ds, dW, db = hidden_mse(s, t, np.array([[1, 0]]), W, b)
    assert loss == pytest.approx(4.5)
    # dproj = 2 * [3, 0] / 2 = [3, 0] -> ds = dproj @ W.T = 6, dW = s^T dproj, db = dproj
    np.testing.assert_allclose(ds, [[[6.0], [0.0]]])
    np.testing.assert_allclose(dW, [[3.0, 0.0]])
    np.testing.assert_allclose(db, [3.0, 0.0])


@pytest.mark.exercise("cosine_loss")
def test_cosine_loss_is_zero_for_parallel_vectors():
    rng = np.random.default_rng(13)
    t = rng.standard_normal((2, 3, 4))
    s = t * np.array([0.5, 2.0, 10.0])[None, :, None]       # same directions, other lengths
    loss, ds = cosine_loss(s, t, np.ones((2, 3)))
    assert abs(loss) < 1e-15
    np.testing.assert_allclose(ds, 0.0, atol=1e-15)


@pytest.mark.exercise("cosine_loss")
def test_cosine_loss_closed_form_and_padding():
    # token 0: s = (1, 0), t = (1, 1): cos = 1/sqrt2, loss = 1 - 1/sqrt2,
    # grad = -(t/|t| - cos * s/|s|) / |s| = -((1, 1)/sqrt2 - (1, 0)/sqrt2) = (0, -1/sqrt2)
    # token 1 is padding: its (anti-parallel) vectors must not count.
    s = np.array([[[1.0, 0.0], [5.0, 5.0]]])
    t = np.array([[[1.0, 1.0], [-1.0, -1.0]]])
    loss, ds = cosine_loss(s, t, np.array([[1, 0]]))
    assert loss == pytest.approx(1 - 1 / np.sqrt(2), rel=1e-12)
    np.testing.assert_allclose(ds, [[[0.0, -1 / np.sqrt(2)], [0.0, 0.0]]], atol=1e-15)


# ----------------------------------------------------------------------------- dtypes

def _all_losses(dtype):
    """Run every loss once in `dtype`; yields (name, loss, list of grads)."""
    rng = np.random.default_rng(14)
    mask = _padded_mask()
    f = lambda *shape: rng.standard_normal(shape).astype(dtype)   # noqa: E731
    labels = np.array([0, 2, 1])
    yield "cross_entropy", *cross_entropy(f(3, 3), labels)
    yield "soft_kl", *soft_kl(f(3, 3), f(3, 3), 2.0)
    loss, d, parts = distillation_loss(f(3, 3), f(3, 3), labels, 0.5, 2.0)
    yield "distillation_loss", loss, d, parts["ce"], parts["kl"]
    loss, d, parts = distillation_loss(f(3, 3), f(3, 3), np.array([0, -1, 1]), 0.5, 2.0)
    yield "distillation_loss (an unlabelled row)", loss, d, parts["ce"], parts["kl"]
    yield "hidden_mse", *hidden_mse(f(3, 5, 4), f(3, 5, 6), mask, f(4, 6), f(6))
    yield "hidden_mse (no W)", *hidden_mse(f(3, 5, 4), f(3, 5, 4), mask)[:2]
    yield "attention_mse", *attention_mse(f(3, 2, 5, 5), f(3, 2, 5, 5), mask.astype(bool))
    yield "cosine_loss", *cosine_loss(f(3, 5, 4), f(3, 5, 4), mask.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_loss_keeps_the_input_dtype(dtype):
    for name, loss, *grads in _all_losses(dtype):
        for i, x in enumerate([loss, *grads]):
            assert np.asarray(x).dtype == dtype, f"{name} output {i}: {np.asarray(x).dtype} != {dtype}"


def test_float64_teacher_does_not_promote_a_float32_student():
    rng = np.random.default_rng(15)
    s = rng.standard_normal((3, 4)).astype(np.float32)
    loss, d = soft_kl(s, rng.standard_normal((3, 4)), 2.0)   # teacher float64
    assert np.asarray(loss).dtype == np.float32 and d.dtype == np.float32


# ----------------------------------------------------------------------------- bad input

def _logits():
    return np.zeros((3, 4), dtype=np.float32)


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 4, 1]), r"label 4 at index 1 is out of range for 4 classes"),
    (np.array([0, -1, 1]), r"label -1 at index 1 is out of range"),
    (np.array([0, 1]), r"labels: expected shape \(3,\)"),
    (np.array([[0, 1, 2]]), r"labels: expected shape \(3,\)"),
    (np.array([0.0, 1.0, 2.0]), r"labels: expected an integer array, got dtype float64"),
])
def test_cross_entropy_rejects_bad_labels(labels, match):
    with pytest.raises(ValueError, match=match):
        cross_entropy(_logits(), labels)


def test_cross_entropy_rejects_bad_logits():
    with pytest.raises(ValueError, match=r"logits: expected 2 axes, got shape \(4,\)"):
        cross_entropy(np.zeros(4), np.array([0]))
    bad = _logits()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"logits: contains 1 NaN/inf value\(s\) \(shape \(3, 4\)\), the first at index \(1, 2\) = nan"):
        cross_entropy(bad, np.array([0, 1, 2]))


def test_distillation_rejects_mismatched_or_nan_teacher_logits():
    labels = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"same shape, got \(3, 4\) and \(3, 5\)"):
        distillation_loss(_logits(), np.zeros((3, 5), np.float32), labels, 0.5, 2.0)
    teacher = _logits()
    teacher[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"teacher_logits: contains 1 NaN/inf value\(s\) \(shape \(3, 4\)\), the first at index \(0, 0\) = inf"):
        distillation_loss(_logits(), teacher, labels, 0.5, 2.0)


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan"), float("inf")])
def test_rejects_bad_temperature(T):
    with pytest.raises(ValueError, match=r"T \(temperature\): expected a finite number > 0"):
        distillation_loss(_logits(), _logits(), np.array([0, 1, 2]), 0.5, T)
    with pytest.raises(ValueError, match=r"T \(temperature\)"):
        soft_kl(_logits(), _logits(), T)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match=r"alpha: expected a number in \[0, 1\]"):
        distillation_loss(_logits(), _logits(), np.array([0, 1, 2]), alpha, 2.0)


def test_intermediate_losses_reject_bad_shapes_and_masks():
    h = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(ValueError, match=r"width 4 != teacher_h width 6: pass a projection W of shape \(4, 6\)"):
        hidden_mse(h, np.zeros((2, 3, 6), np.float32))
    with pytest.raises(ValueError, match=r"W: expected shape \(4, 6\)"):
        hidden_mse(h, np.zeros((2, 3, 6), np.float32), None, np.zeros((6, 4), np.float32))
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 3\)"):
        cosine_loss(h, h, np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"mask: has no real tokens"):
        cosine_loss(h, h, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"mask: expected only 0/1 values"):
        hidden_mse(h, h, np.full((2, 3), 2))
    with pytest.raises(ValueError, match=r"same shape, got \(2, 1, 3, 3\) and \(2, 2, 3, 3\)"):
        attention_mse(np.zeros((2, 1, 3, 3)), np.zeros((2, 2, 3, 3)), np.ones((2, 3)))
