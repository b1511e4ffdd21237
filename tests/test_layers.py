"""Tests for minibert/layers.py: gradients, erf accuracy, dtypes, determinism and bad input.

Gradient tolerance: rel_error <= 1e-7 for every input and parameter of every layer. The checks
run in float64 with centred differences (h = 1e-5): truncation error O(h^2) ~ 1e-10 and roundoff
O(1e-16 * |L| / h) ~ 1e-11, so a correct backward measures ~1e-9 or better, while a wrong factor or
a missing term shows up as 1e-3 .. 1. (Run with -s to see the measured errors.)
"""

import math

import numpy as np
import pytest

from minibert.gradcheck import check_gradients
from minibert.layers import (
    dropout_backward,
    dropout_forward,
    embedding_backward,
    embedding_forward,
    erf,
    gelu_backward,
    gelu_forward,
    layernorm_backward,
    layernorm_forward,
    linear_backward,
    linear_forward,
    softmax_backward,
    softmax_forward,
)

GRAD_TOL = 1e-7   # see the module docstring


def _assert_grads_ok(name, errors):
    print(f"gradcheck {name}: " + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()))
    assert errors, f"{name}: nothing was checked"
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_TOL, f"{name}: d{worst} rel error {errors[worst]:.2e} > {GRAD_TOL}"


# ----------------------------------------------------------------------------- gradient checks

@pytest.mark.exercise("linear_backward")
def test_linear_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    inputs = {"x": rng.standard_normal((2, 3, 4)), "W": rng.standard_normal((4, 5)),
              "b": rng.standard_normal(5)}
    _assert_grads_ok("linear", check_gradients(linear_forward, linear_backward, inputs, rng))


@pytest.mark.exercise("embedding_backward")
def test_embedding_gradient_matches_finite_differences_with_repeated_ids():
    rng = np.random.default_rng(1)
    ids = np.array([[3, 1, 3, 3], [0, 1, 5, 3]])          # 3 four times, 1 twice, 2 and 4 never
    inputs = {"ids": ids, "table": rng.standard_normal((6, 3))}
    errors = check_gradients(embedding_forward, lambda d, c: {"table": embedding_backward(d, c)},
                             inputs, rng)
    _assert_grads_ok("embedding", errors)


@pytest.mark.exercise("layernorm_backward")
@pytest.mark.parametrize("eps", [1e-12, 1e-1])
def test_layernorm_gradients_match_finite_differences(eps):
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((2, 3, 6)) * 3 + 1, "gamma": rng.standard_normal(6),
              "beta": rng.standard_normal(6), "eps": eps}
    _assert_grads_ok(f"layernorm eps={eps}",
                     check_gradients(layernorm_forward, layernorm_backward, inputs, rng))


@pytest.mark.exercise("gelu_backward")
def test_gelu_gradient_matches_finite_differences_over_its_whole_range():
    rng = np.random.default_rng(3)
    # the flat left tail, the dip near -0.75, the kink-free middle and the linear right side
    x = np.concatenate([np.linspace(-7, 7, 57), rng.standard_normal(40)])
    errors = check_gradients(lambda x: gelu_forward(x), gelu_backward, {"x": x}, rng)
    _assert_grads_ok("gelu", errors)


def test_dropout_gradient_matches_finite_differences_with_a_fixed_mask():
    rng = np.random.default_rng(4)
    # the mask is fixed by making a fresh Generator with the same seed on every forward call
    errors = check_gradients(lambda x: dropout_forward(x, 0.3, np.random.default_rng(7)),
                             dropout_backward, {"x": rng.standard_normal((4, 5))}, rng)
    _assert_grads_ok("dropout", errors)


@pytest.mark.exercise("softmax_backward")
def test_softmax_gradient_matches_finite_differences():
    rng = np.random.default_rng(5)
    errors = check_gradients(lambda x: softmax_forward(x), softmax_backward,
                             {"x": rng.standard_normal((2, 3, 5)) * 2}, rng)
    _assert_grads_ok("softmax", errors)


# ----------------------------------------------------------------------------- erf and GELU

def _dense_grid():
    lin = np.linspace(-12, 12, 240001)                       # step 1e-4 through the curved part
    tiny = np.geomspace(1e-30, 1e-3, 2000)
    big = np.geomspace(1, 1e30, 2000)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e300, -1e300, 5e-324, 3.4e38, 1e-45])
    return np.concatenate([lin, tiny, -tiny, big, -big, special])


@pytest.mark.parametrize("dtype, tol", [
    # float64: the polynomial fit is good to 4e-16; a few roundings on top
    (np.float64, 2e-15),
    # float32: values near 0.5..1 are spaced 6e-8; NumPy's float32 exp is ~2 ulp, so the result
    # is within ~2 float32 ulps of the true erf (measured 1.3e-7)
    (np.float32, 1.5e-7),
])
def test_erf_matches_math_erf_on_a_dense_grid(dtype, tol):
    with np.errstate(over="ignore"):
        x = _dense_grid().astype(dtype)                      # 1e300 -> inf in float32: fine
    y = erf(x)
    assert y.dtype == dtype and y.shape == x.shape
    ref = np.array([math.erf(float(v)) for v in x])          # reference at the dtype's own x
    err = np.abs(y.astype(np.float64) - ref)
    print(f"erf {np.dtype(dtype).name}: max abs error {err.max():.2e} at x = {x[err.argmax()]!r}")
    assert err.max() <= tol


def test_erf_float64_is_accurate_relative_to_its_value_down_to_tiny_x():
    # Near 0, erf(x) ~ 1.13 x: an absolute error bound says nothing there. 1 - exp(-z^2) is
    # computed as -expm1(-z^2), so the relative error stays small from 1e-300 to 6: measured
    # 2.1e-14, at tiny x, where erf = 2x/sqrt(pi) rests on the fit's constant term R(0), which
    # matches 1/(p sqrt(pi)) to 2e-14 (allowed 1e-13).
    x = np.concatenate([np.geomspace(1e-300, 6, 4000), np.linspace(1e-3, 6, 6001)])
    x = np.concatenate([x, -x])
    ref = np.array([math.erf(v) for v in x])
    rel = np.abs(erf(x) - ref) / np.abs(ref)
    print(f"erf float64: max relative error {rel.max():.1e} at x = {x[rel.argmax()]!r}")
    assert rel.max() <= 1e-13


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_special_values_and_symmetry(dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=dtype)
    y = erf(x)
    assert y[0] == 0.0 and not np.signbit(y[0]) and np.signbit(y[1])   # erf(+-0) = +-0 exactly
    assert y[2] == 1.0 and y[3] == -1.0 and np.isnan(y[4])
    z = np.linspace(0, 8, 1001, dtype=dtype)
    assert np.array_equal(erf(-z), -erf(z))                  # odd, bit for bit
    assert np.all(np.diff(erf(np.linspace(-3, 3, 101, dtype=dtype))) > 0)   # increasing


def test_erf_of_integers_and_scalars_is_float64():
    assert erf(np.array([0, 1, 2])).dtype == np.float64
    assert abs(float(erf(0.5)) - math.erf(0.5)) < 1e-15


def test_gelu_is_the_exact_erf_gelu():
    x = np.linspace(-10, 10, 2001)
    y, _ = gelu_forward(x)
    ref = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.max(np.abs(y - ref)) < 1e-14                   # float64: erf error 4e-16 times |x| <= 10
    # and it is not the tanh approximation, which differs by up to ~5e-4 around |x| ~ 2
    tanh_gelu = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert np.max(np.abs(y - tanh_gelu)) > 1e-4


# ----------------------------------------------------------------------------- other properties

@pytest.mark.exercise("embedding_backward")
def test_embedding_backward_sums_rows_of_repeated_ids():
    rng = np.random.default_rng(6)
    ids = np.array([[1, 1, 1], [2, 1, 0]])
    dout = rng.standard_normal((2, 3, 4))
    dtable = embedding_backward(dout, embedding_forward(ids, rng.standard_normal((5, 4)))[1])
    expected = np.zeros((5, 4))
    for (b, t), i in np.ndenumerate(ids):                    # the plain loop it must equal
        expected[i] += dout[b, t]
    np.testing.assert_allclose(dtable, expected, rtol=1e-14, atol=1e-15)
    assert np.all(dtable[3:] == 0)                           # ids never looked up get exactly 0


def test_layernorm_output_has_zero_mean_unit_variance_before_the_affine():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 16)) * 5 + 2
    y, cache = layernorm_forward(x, np.ones(16), np.zeros(16), 1e-12)
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-14)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-12)
    assert cache.rstd.shape == (3, 4, 1)


def test_dropout_mask_is_prescaled_and_drops_about_p():
    x = np.ones((200, 500), dtype=np.float32)
    y, cache = dropout_forward(x, 0.25, np.random.default_rng(0))
    assert set(np.unique(cache.mask)) == {np.float32(0), np.float32(1 / 0.75)}
    assert np.array_equal(y, x * cache.mask)
    dropped = np.mean(cache.mask == 0)
    assert abs(dropped - 0.25) < 0.01                        # 1e5 draws: std of the fraction 0.0014
    assert abs(y.mean() - 1) < 0.02                          # inverted dropout keeps the mean


@pytest.mark.parametrize("p, rng", [(0.0, np.random.default_rng(0)), (0.5, None)])
def test_dropout_inactive_is_identity_with_no_mask(p, rng):
    x = np.arange(6.0).reshape(2, 3)
    y, cache = dropout_forward(x, p, rng)
    assert cache.mask is None and np.array_equal(y, x) and y is not x
    assert dropout_forward(x, p, rng, copy=False)[0] is x            # for callers that only read it
    dy = np.ones_like(x)
    dx = dropout_backward(dy, cache)
    assert np.array_equal(dx, dy) and dx is not dy


def test_softmax_is_stable_and_sums_to_one():
    x = np.array([[1000.0, 1001.0, 999.0], [-1e9, 0.0, -1e9]])
    y, _ = softmax_forward(x)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(-1), 1, rtol=1e-15)
    assert y[1, 0] == 0.0 and y[1, 1] == 1.0                 # a -1e9 bias gives exactly zero
    np.testing.assert_allclose(softmax_forward(x[:1] - 1000)[0], y[:1], rtol=1e-14)


@pytest.mark.exercise("linear_backward")
def test_backward_returns_fresh_arrays_and_is_repeatable():
    rng = np.random.default_rng(8)
    x, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal(2)
    _, cache = linear_forward(x, W, b)
    dy = rng.standard_normal((3, 2))
    first = linear_backward(dy, cache)
    second = linear_backward(dy, cache)
    for a, c in zip(first, second):
        assert np.array_equal(a, c) and a is not c


# ----------------------------------------------------------------------------- dtype

def _all_layers(dtype, rng):
    """Run every layer forward and backward in `dtype`; yield (what, array)."""
    x = rng.standard_normal((2, 3, 4)).astype(dtype)
    W, b = rng.standard_normal((4, 5)).astype(dtype), rng.standard_normal(5).astype(dtype)
    y, c = linear_forward(x, W, b)
    yield "linear y", y
    yield from zip(["linear dx", "linear dW", "linear db"], linear_backward(y, c))
    table = rng.standard_normal((7, 4)).astype(dtype)
    y, c = embedding_forward(np.array([[1, 2], [6, 1]], dtype=np.int32), table)
    yield "embedding out", y
    yield "embedding dtable", embedding_backward(y, c)
    g, be = np.ones(4, dtype), np.zeros(4, dtype)
    y, c = layernorm_forward(x, g, be, 1e-12)
    yield "layernorm y", y
    yield "layernorm rstd", c.rstd
    yield from zip(["layernorm dx", "layernorm dgamma", "layernorm dbeta"], layernorm_backward(y, c))
    y, c = gelu_forward(x)
    yield "gelu y", y
    yield "gelu dx", gelu_backward(y, c)
    yield "erf", erf(x)
    y, c = dropout_forward(x, 0.1, np.random.default_rng(0))
    yield "dropout y", y
    yield "dropout mask", c.mask
    yield "dropout dx", dropout_backward(y, c)
    y, c = softmax_forward(x)
    yield "softmax y", y
    yield "softmax dx", softmax_backward(y, c)


@pytest.mark.exercise("linear_backward", "embedding_backward", "layernorm_backward", "gelu_backward", "softmax_backward")
def test_float32_in_gives_float32_activations_and_gradients():
    for what, a in _all_layers(np.float32, np.random.default_rng(9)):
        assert a.dtype == np.float32, f"{what} is {a.dtype}"


def test_float64_stays_float64():
    for what, a in _all_layers(np.float64, np.random.default_rng(9)):
        assert a.dtype == np.float64, f"{what} is {a.dtype}"


# ----------------------------------------------------------------------------- determinism

def test_same_seed_gives_bit_identical_results():
    def run():
        out = list(_all_layers(np.float32, np.random.default_rng(10)))
        y, c = dropout_forward(np.ones((50, 50)), 0.5, np.random.default_rng(11))
        return out + [("dropout big", y)]
    for (what, a), (_, b) in zip(run(), run()):
        assert np.array_equal(a, b), what
    y1, _ = dropout_forward(np.ones((50, 50)), 0.5, np.random.default_rng(11))
    y2, _ = dropout_forward(np.ones((50, 50)), 0.5, np.random.default_rng(12))
    assert not np.array_equal(y1, y2)                        # and a different seed differs


# ----------------------------------------------------------------------------- bad input

def test_linear_rejects_mismatched_shapes_dtypes_and_nan():
    x, W, b = np.zeros((2, 3, 4)), np.zeros((5, 6)), np.zeros(6)
    with pytest.raises(ValueError, match=r"W: .*\(5, 6\).*\(2, 3, 4\)"):
        linear_forward(x, W, b)
    with pytest.raises(ValueError, match=r"b: expected shape \(M,\) = \(6,\).*got \(5,\)"):
        linear_forward(np.zeros((2, 5)), W, np.zeros(5))
    with pytest.raises(ValueError, match=r"W: dtype float32 does not match x dtype float64"):
        linear_forward(np.zeros((2, 5)), W.astype(np.float32), b)
    bad = np.zeros((2, 5))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"x: contains 1 NaN/inf value\(s\) \(shape \(2, 5\)\)"):
        linear_forward(bad, W, b)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 6\)"):
        linear_backward(np.zeros((2, 5)), linear_forward(np.zeros((2, 5)), W, b)[1])


def test_finite_check_is_not_fooled_by_an_overflowing_sum():
    x = np.full((2, 5), 3e38, dtype=np.float32)               # sum overflows, values are finite
    linear_forward(x, np.zeros((5, 1), np.float32), np.zeros(1, np.float32))
    x[0, 0] = np.inf
    with pytest.raises(ValueError, match="x: contains 1 NaN/inf"):
        linear_forward(x, np.zeros((5, 1), np.float32), np.zeros(1, np.float32))


def test_embedding_rejects_float_ids_and_out_of_range_ids():
    table = np.zeros((10, 4))
    with pytest.raises(ValueError, match=r"ids: expected an integer array, got dtype float64"):
        embedding_forward(np.zeros((2, 3)), table)
    with pytest.raises(ValueError, match=r"ids: values must lie in \[0, 10\).*\(10, 4\).*max 10"):
        embedding_forward(np.array([[1, 10]]), table)
    with pytest.raises(ValueError, match=r"ids: .*min -1"):
        embedding_forward(np.array([[-1, 2]]), table)


def test_layernorm_rejects_bad_parameters_and_nan():
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"gamma: expected shape \(H,\) = \(4,\) .*\(2, 4\), got \(3,\)"):
        layernorm_forward(x, np.ones(3), np.zeros(4), 1e-12)
    with pytest.raises(ValueError, match=r"beta: expected shape"):
        layernorm_forward(x, np.ones(4), np.zeros((1, 4)), 1e-12)
    with pytest.raises(ValueError, match=r"eps: expected a positive number, got 0"):
        layernorm_forward(x, np.ones(4), np.zeros(4), 0)
    with pytest.raises(ValueError, match=r"x: contains 1 NaN"):
        layernorm_forward(np.array([[0.0, np.nan, 1, 2]]), np.ones(4), np.zeros(4), 1e-12)


def test_dropout_rejects_bad_probability_and_rng():
    with pytest.raises(ValueError, match=r"p: dropout probability must be in \[0, 1\), got 1.0"):
        dropout_forward(np.zeros(3), 1.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"rng: expected a numpy.random.Generator"):
        dropout_forward(np.zeros(3), 0.5, 42)


def test_integer_input_to_float_layers_is_rejected():
    with pytest.raises(ValueError, match=r"x: expected a float array, got dtype int64"):
        gelu_forward(np.arange(3))
    with pytest.raises(ValueError, match=r"x: expected a float array"):
        softmax_forward(np.arange(3))
