"""Tests for minibert/attention.py: gradients (incl. the distillation inputs dscores/dprobs, dropout
and padding), agreement with the loop-based twin, padding semantics, dtypes, determinism, bad input.

Gradient tolerance: rel_error <= 1e-7 in float64 (centred differences, h = 1e-5; a correct backward
measures ~1e-9, a wrong one 1e-3 or worse). Run with -s to see the measured errors.
"""

import numpy as np
import pytest

from minibert.attention import (
    MASK_NEG,
    attention_backward,
    attention_forward,
    attention_naive,
    mask_to_bias,
)
from minibert.gradcheck import check_gradients

GRAD_TOL = 1e-7   # see the module docstring
B, T, H, NH = 3, 5, 8, 2
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])   # 5, 3 and 1 real tokens


def _params(rng, dtype=np.float64, scale=0.5):
    return {"W_qkv": (rng.standard_normal((H, 3 * H)) * scale).astype(dtype),
            "b_qkv": (rng.standard_normal(3 * H) * scale).astype(dtype),
            "W_o": (rng.standard_normal((H, H)) * scale).astype(dtype),
            "b_o": rng.standard_normal(H).astype(dtype)}


def _assert_grads_ok(name, errors):
    print(f"gradcheck {name}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert set(errors) == {"x", "W_qkv", "b_qkv", "W_o", "b_o"}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_TOL, f"{name}: d{worst} rel error {errors[worst]:.2e} > {GRAD_TOL}"


# ----------------------------------------------------------------------------- gradient checks

@pytest.mark.exercise("attention_backward")
def test_attention_gradients_match_finite_differences_without_mask():
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((B, T, H)), **_params(rng), "bias": None, "n_heads": NH}
    _assert_grads_ok("attention", check_gradients(attention_forward, attention_backward, inputs, rng))


@pytest.mark.exercise("attention_backward")
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_attention_gradients_with_padding_dropout_and_distillation_grads(dropout_p):
    """Outputs y, scores and probs each get a random upstream gradient; the mask is padded to
    different lengths; dropout's mask is held fixed by a fresh Generator with one seed per call."""
    rng = np.random.default_rng(1)
    bias = mask_to_bias(MASK, np.float64)
    keys = MASK[:, None, None, :].astype(np.float64)        # (B,1,1,T) 1 = real key
    # scores at padded keys are s - 1e9: in float64 they carry only ~1e-7 absolute precision, so,
    # like the attention-distillation loss, we read the scores of real keys only.

    def forward(**kw):
        y, cache = attention_forward(**kw, bias=bias, n_heads=NH, dropout_p=dropout_p,
                                     rng=np.random.default_rng(123))
        return (y, cache.scores * keys, cache.probs), cache

    def backward(douts, cache):
        dy, dscores, dprobs = douts
        return attention_backward(dy, cache, dscores=dscores * keys, dprobs=dprobs)

    inputs = {"x": rng.standard_normal((B, T, H)), **_params(rng)}
    _assert_grads_ok(f"attention padded, dropout {dropout_p}, dscores+dprobs",
                     check_gradients(forward, backward, inputs, rng))


@pytest.mark.exercise("attention_backward")
def test_dscores_and_dprobs_each_reach_the_inputs():
    """The extra gradients are not silently ignored: each alone changes dx."""
    rng = np.random.default_rng(2)
    x, p = rng.standard_normal((B, T, H)), _params(rng)
    y, cache = attention_forward(x, **p, bias=None, n_heads=NH)
    dy = np.zeros_like(y)
    extra = rng.standard_normal(cache.probs.shape)
    assert np.all(attention_backward(dy, cache)[0] == 0)
    assert np.abs(attention_backward(dy, cache, dscores=extra)[0]).max() > 1e-3
    assert np.abs(attention_backward(dy, cache, dprobs=extra)[0]).max() > 1e-3


# ----------------------------------------------------------------------------- fast == naive

@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_fast_attention_equals_the_naive_loops(dtype, tol):
    rng = np.random.default_rng(3)
    x, p = rng.standard_normal((B, T, H)).astype(dtype), _params(rng, dtype)
    for bias in (None, mask_to_bias(MASK, dtype)):
        y, cache = attention_forward(x, **p, bias=bias, n_heads=NH)
        y_naive, probs_naive = attention_naive(x, **p, bias=bias, n_heads=NH)
        assert y.dtype == y_naive.dtype == dtype
        np.testing.assert_allclose(y, y_naive, rtol=tol, atol=tol)
        np.testing.assert_allclose(cache.probs, probs_naive, rtol=tol, atol=tol)


def test_fast_equals_naive_for_a_fully_padded_sequence():
    """An all-zero mask row: every score gets the same -1e9, the result must stay finite and agree
    (float64: both keep the real score differences on top of -1e9)."""
    rng = np.random.default_rng(4)
    mask = MASK.copy()
    mask[1] = 0
    x, p = rng.standard_normal((B, T, H)), _params(rng)
    bias = mask_to_bias(mask, np.float64)
    y, cache = attention_forward(x, **p, bias=bias, n_heads=NH)
    y_naive, probs_naive = attention_naive(x, **p, bias=bias, n_heads=NH)
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(cache.probs))
    np.testing.assert_allclose(y, y_naive, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(cache.probs, probs_naive, rtol=1e-10, atol=1e-10)
    y32, c32 = attention_forward(x.astype(np.float32), **{k: v.astype(np.float32) for k, v in p.items()},
                                 bias=bias.astype(np.float32), n_heads=NH)
    assert np.all(np.isfinite(y32)) and np.all(np.isfinite(c32.probs))


# ----------------------------------------------------------------------------- padding

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_keys_get_exactly_zero_probability(dtype):
    rng = np.random.default_rng(5)
    x, p = rng.standard_normal((B, T, H)).astype(dtype), _params(rng, dtype)
    _, cache = attention_forward(x, **p, bias=mask_to_bias(MASK, dtype), n_heads=NH)
    padded_keys = np.broadcast_to(MASK[:, None, None, :] == 0, cache.probs.shape)
    assert np.all(cache.probs[padded_keys] == 0.0)
    assert np.all(cache.probs[~padded_keys] > 0)
    np.testing.assert_allclose(cache.probs.sum(-1), 1, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_padded_tokens_do_not_change_outputs_at_real_positions(dtype):
    rng = np.random.default_rng(6)
    x, p = rng.standard_normal((B, T, H)).astype(dtype), _params(rng, dtype)
    bias = mask_to_bias(MASK, dtype)
    y, _ = attention_forward(x, **p, bias=bias, n_heads=NH)
    x2 = x.copy()
    x2[MASK == 0] = rng.standard_normal((int((MASK == 0).sum()), H)) * 100   # new padded vectors
    y2, _ = attention_forward(x2, **p, bias=bias, n_heads=NH)
    real = MASK == 1
    assert np.array_equal(y[real], y2[real])        # bit for bit: their probabilities are exactly 0
    assert not np.allclose(y[~real], y2[~real])     # (padded queries do change: nobody reads them)


def test_mask_to_bias_values_shape_and_dtype():
    for mask in (MASK, MASK.astype(bool), MASK.astype(np.float32)):
        for dtype in (np.float32, np.float64):
            bias = mask_to_bias(mask, dtype)
            assert bias.shape == (B, 1, 1, T) and bias.dtype == dtype
            assert np.all(bias[:, 0, 0][MASK == 1] == 0)
            assert np.all(bias[:, 0, 0][MASK == 0] == dtype(MASK_NEG))
    assert np.isfinite(MASK_NEG) and MASK_NEG == -1e9


# ----------------------------------------------------------------------------- dtype, determinism

def test_float32_in_gives_float32_everywhere():
    rng = np.random.default_rng(7)
    x, p = rng.standard_normal((B, T, H)).astype(np.float32), _params(rng, np.float32)
    y, cache = attention_forward(x, **p, bias=mask_to_bias(MASK, np.float32), n_heads=NH,
                                 dropout_p=0.1, rng=np.random.default_rng(0))
    extra = np.ones(cache.probs.shape, np.float32)
    grads = attention_backward(y, cache, dscores=extra, dprobs=extra)
    named = {"y": y, "scores": cache.scores, "probs": cache.probs, "q": cache.q,
             "dropout mask": cache.drop.mask, "scale": cache.scale}
    named.update(zip(["dx", "dW_qkv", "db_qkv", "dW_o", "db_o"], grads))
    for name, a in named.items():
        assert a.dtype == np.float32, f"{name} is {a.dtype}"


def test_same_seed_gives_bit_identical_attention_with_dropout():
    def run(seed):
        rng = np.random.default_rng(8)
        x, p = rng.standard_normal((B, T, H)).astype(np.float32), _params(rng, np.float32)
        y, cache = attention_forward(x, **p, bias=mask_to_bias(MASK, np.float32), n_heads=NH,
                                     dropout_p=0.5, rng=np.random.default_rng(seed))
        return (y, cache.probs) + attention_backward(y, cache)
    for a, b in zip(run(1), run(1)):
        assert np.array_equal(a, b)
    assert not np.array_equal(run(1)[0], run(2)[0])   # the seed does drive the dropout mask


def test_dropout_applies_to_probs_but_cache_probs_are_before_dropout():
    rng = np.random.default_rng(9)
    x, p = rng.standard_normal((B, T, H)), _params(rng)
    y_eval, c_eval = attention_forward(x, **p, bias=None, n_heads=NH)
    y_drop, c_drop = attention_forward(x, **p, bias=None, n_heads=NH, dropout_p=0.5,
                                       rng=np.random.default_rng(0))
    assert not np.allclose(y_eval, y_drop)
    assert np.array_equal(c_eval.probs, c_drop.probs)            # same scores, same probs
    assert c_drop.drop.mask.shape == c_drop.probs.shape


# ----------------------------------------------------------------------------- bad input

def test_bad_input_raises_value_errors_naming_argument_and_shapes():
    rng = np.random.default_rng(10)
    x, p = rng.standard_normal((B, T, H)), _params(rng)
    bias = mask_to_bias(MASK, np.float64)
    with pytest.raises(ValueError, match=r"W_qkv: expected shape \(8, 24\) for x of shape \(3, 5, 8\), got \(8, 8\)"):
        attention_forward(x, **{**p, "W_qkv": np.zeros((H, H))}, bias=bias, n_heads=NH)
    with pytest.raises(ValueError, match=r"b_o: expected shape \(8,\) .* got \(24,\)"):
        attention_forward(x, **{**p, "b_o": np.zeros(3 * H)}, bias=bias, n_heads=NH)
    with pytest.raises(ValueError, match=r"bias: expected shape \(B, 1, 1, T\) = \(3, 1, 1, 5\) .* got \(3, 5\)"):
        attention_forward(x, **p, bias=bias[:, 0, 0], n_heads=NH)
    wrong_length_mask = np.ones((B, T + 1), dtype=np.int64)          # mask for 6 tokens, x has 5
    with pytest.raises(ValueError, match=r"bias: expected shape \(B, 1, 1, T\) = \(3, 1, 1, 5\) .* got \(3, 1, 1, 6\)"):
        attention_forward(x, **p, bias=mask_to_bias(wrong_length_mask, np.float64), n_heads=NH)
    with pytest.raises(ValueError, match=r"n_heads: expected a positive divisor of H = 8"):
        attention_forward(x, **p, bias=bias, n_heads=3)
    with pytest.raises(ValueError, match=r"x: expected 3 axes, got shape \(5, 8\)"):
        attention_forward(x[0], **p, bias=bias, n_heads=NH)
    bad = x.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x: contains 1 NaN/inf value\(s\) \(shape \(3, 5, 8\)\)"):
        attention_forward(bad, **p, bias=bias, n_heads=NH)
    with pytest.raises(ValueError, match=r"bias: dtype float32 does not match x dtype float64"):
        attention_forward(x, **p, bias=bias.astype(np.float32), n_heads=NH)
    with pytest.raises(ValueError, match=r"dropout_p: expected a probability in \[0, 1\), got 1.5"):
        attention_forward(x, **p, bias=bias, n_heads=NH, dropout_p=1.5)
    _, cache = attention_forward(x, **p, bias=bias, n_heads=NH)
    with pytest.raises(ValueError, match=r"dscores: expected shape \(3, 2, 5, 5\)"):
        attention_backward(np.zeros((B, T, H)), cache, dscores=np.zeros((B, T, T)))


def test_mask_to_bias_rejects_bad_masks():
    with pytest.raises(ValueError, match=r"mask: expected a 0/1 array of shape \(B, T\), got int64 \(5,\)"):
        mask_to_bias(np.ones(5, dtype=np.int64), np.float32)
    with pytest.raises(ValueError, match=r"mask: values must be 0 or 1"):
        mask_to_bias(np.array([[1, 2, 0]]), np.float32)
    with pytest.raises(ValueError, match=r"dtype: expected a float dtype, got int64"):
        mask_to_bias(MASK, np.int64)
