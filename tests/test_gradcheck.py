"""Tests for minibert/gradcheck.py: the checker must pass correct backwards, fail wrong ones, and
work for the shapes of problem the model uses (dict params with dotted names, several outputs,
sampled entries of big tensors)."""

import numpy as np
import pytest

from minibert.gradcheck import check_gradients, numerical_vjp, rel_error, uniform_indices
from minibert.layers import (
    gelu_backward,
    gelu_forward,
    linear_backward,
    linear_forward,
    softmax_backward,
    softmax_forward,
)

GRAD_TOL = 1e-7   # float64 centred differences: correct backwards measure ~1e-9


@pytest.mark.exercise("rel_error")
def test_rel_error_is_the_cs231n_measure():
    assert rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    assert rel_error(np.array([1.0]), np.array([3.0])) == pytest.approx(0.5)     # |1-3| / (1+3)
    assert rel_error(np.array([0.0]), np.array([1e-20])) == pytest.approx(1e-12)  # floor 1e-8
    assert rel_error(np.array([0.0]), np.array([1e-3]), floor=1.0) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match=r"shapes differ, a \(2,\) vs b \(3,\)"):
        rel_error(np.zeros(2), np.zeros(3))


@pytest.mark.exercise("numerical_vjp")
def test_numerical_vjp_of_a_known_function_and_x_is_restored():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    x_before = x.copy()
    dout = rng.standard_normal((3, 4))
    num = numerical_vjp(lambda z: z ** 3, x, dout)
    assert rel_error(num, 3 * x ** 2 * dout) < 1e-8        # (x^3)' = 3x^2, error O(h^2) = 1e-10
    assert np.array_equal(x, x_before)                      # every nudge was undone
    idx = np.array([0, 5, 11])
    np.testing.assert_array_equal(numerical_vjp(lambda z: z ** 3, x, dout, indices=idx),
                                  num.reshape(-1)[idx])
    with pytest.raises(ValueError, match=r"x: numerical gradients need float64 .* got float32"):
        numerical_vjp(lambda z: z, x.astype(np.float32), dout)


@pytest.mark.exercise("numerical_vjp")
def test_numerical_vjp_handles_forwards_that_return_views_of_x():
    x = np.arange(6.0).reshape(2, 3)
    dout = np.arange(6.0)
    num = numerical_vjp(lambda z: z.reshape(-1), x, dout)
    np.testing.assert_allclose(num, dout.reshape(2, 3), rtol=1e-9, atol=1e-9)   # not 0.5 * dout


def test_check_gradients_passes_a_correct_backward():
    rng = np.random.default_rng(1)
    inputs = {"x": rng.standard_normal((4, 3)), "W": rng.standard_normal((3, 2)),
              "b": rng.standard_normal(2)}
    errors = check_gradients(linear_forward, linear_backward, inputs, rng)
    assert set(errors) == {"x", "W", "b"} and max(errors.values()) <= GRAD_TOL


@pytest.mark.parametrize("bug", ["dW not transposed back", "db off by 1%", "softmax no centring",
                                 "gelu tanh slope"])
def test_check_gradients_reports_a_large_error_for_a_wrong_backward(bug):
    rng = np.random.default_rng(2)
    if bug in ("dW not transposed back", "db off by 1%"):
        inputs = {"x": rng.standard_normal((4, 3)), "W": rng.standard_normal((3, 3)),
                  "b": rng.standard_normal(3)}

        def backward(dy, cache):
            dx, dW, db = linear_backward(dy, cache)
            return (dx, dW.T, db) if bug == "dW not transposed back" else (dx, dW, db * 1.01)
        errors = check_gradients(linear_forward, backward, inputs, rng)
        wrong = "W" if bug == "dW not transposed back" else "b"
    elif bug == "softmax no centring":
        inputs = {"x": rng.standard_normal((3, 5))}
        errors = check_gradients(lambda x: softmax_forward(x),
                                 lambda dy, c: dy * c.y, inputs, rng)       # forgot - sum(dy*y)
        wrong = "x"
    else:
        inputs = {"x": rng.standard_normal(30)}

        def backward(dy, cache):                                           # slope of tanh-GELU
            x = cache.x
            t = np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))
            slope = 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x ** 2)
            return dy * slope
        errors = check_gradients(lambda x: gelu_forward(x), backward, inputs, rng)
        wrong = "x"
    print(f"{bug}: {errors}")
    assert errors[wrong] > 1e-4                              # a thousand times the tolerance


def test_check_gradients_on_a_composite_with_dotted_dict_params_and_two_outputs():
    """A two-layer block whose parameters are a flat dict with dotted names (like model.py's)
    and whose forward returns two outputs, the second being an intermediate."""
    rng = np.random.default_rng(3)
    params = {"block.in.W": rng.standard_normal((4, 6)), "block.in.b": rng.standard_normal(6),
              "block.out.W": rng.standard_normal((6, 4)), "block.out.b": rng.standard_normal(4)}

    def forward(x, **p):
        a, c1 = linear_forward(x, p["block.in.W"], p["block.in.b"])
        g, c2 = gelu_forward(a)
        y, c3 = linear_forward(g, p["block.out.W"], p["block.out.b"])
        return (y, g), (c1, c2, c3)

    def backward(douts, caches):
        dy, dg_extra = douts
        c1, c2, c3 = caches
        dg, dW2, db2 = linear_backward(dy, c3)
        da = gelu_backward(dg + dg_extra, c2)
        dx, dW1, db1 = linear_backward(da, c1)
        return {"x": dx, "block.in.W": dW1, "block.in.b": db1, "block.out.W": dW2, "block.out.b": db2}

    errors = check_gradients(forward, backward, {"x": rng.standard_normal((2, 3, 4)), **params}, rng)
    print(errors)
    assert set(errors) == {"x", *params} and max(errors.values()) <= GRAD_TOL


def test_check_gradients_samples_big_tensors_and_leaves_inputs_alone():
    rng = np.random.default_rng(4)
    calls = []

    def forward(x):
        calls.append(1)
        return gelu_forward(x)

    x = rng.standard_normal((80, 60)).astype(np.float32)     # float32 is checked in float64 copies
    x_before = x.copy()
    errors = check_gradients(forward, gelu_backward, {"x": x}, rng, max_checks=25)
    # 4800 entries > full_size: one analytic pass, 2 per sampled entry, 2 along a direction
    assert len(calls) == 1 + 2 * 25 + 2
    assert errors["x"] <= GRAD_TOL
    assert np.array_equal(x, x_before) and x.dtype == np.float32


def test_check_gradients_refuses_to_skip_a_missing_gradient():
    rng = np.random.default_rng(5)
    inputs = {"x": rng.standard_normal((2, 3)), "W": rng.standard_normal((3, 2)), "b": np.zeros(2)}
    with pytest.raises(ValueError, match=r"no gradient for \['b'\]"):
        check_gradients(linear_forward, lambda dy, c: {"x": linear_backward(dy, c)[0],
                                                       "W": linear_backward(dy, c)[1]}, inputs, rng)


def test_a_shorter_gradient_tuple_is_an_error_not_a_constant():
    # A backward that forgets db must not pass because b is silently treated as a constant.
    rng = np.random.default_rng(6)
    inputs = {"x": rng.standard_normal((2, 3)), "W": rng.standard_normal((3, 2)), "b": np.zeros(2)}
    with pytest.raises(ValueError, match=r"backward returned 2 gradients for the 3 inputs"):
        check_gradients(linear_forward, lambda dy, c: linear_backward(dy, c)[:2], inputs, rng)
    # naming the inputs to check is the way to leave one out on purpose
    errors = check_gradients(linear_forward, lambda dy, c: linear_backward(dy, c)[:2], inputs, rng,
                             wrt=["x", "W"])
    assert set(errors) == {"x", "W"} and max(errors.values()) <= GRAD_TOL


def test_tensors_of_a_few_thousand_entries_are_checked_in_full():
    # One wrong entry out of 3000: a sampled check would miss it most of the time.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((60, 50))

    def backward(dy, cache):
        dx = gelu_backward(dy, cache)
        dx[37, 11] += 1.0
        return dx
    errors = check_gradients(lambda x: gelu_forward(x), backward, {"x": x}, rng)
    assert errors["x"] > 1e-2


def test_a_sparse_gradient_set_to_zero_fails_although_entries_are_sampled():
    # An embedding table of 20000 entries (sampled): only the looked-up rows have a gradient.
    # A backward returning all zeros would pass if the sampled entries all fell on unused rows
    # (as they mostly do); the directional check over the whole table catches it.
    from minibert.layers import embedding_forward
    rng = np.random.default_rng(8)
    ids = np.array([[3, 7, 7]])
    table = rng.standard_normal((2000, 10))
    errors = check_gradients(lambda table: embedding_forward(ids, table),
                             lambda d, c: np.zeros((2000, 10)), {"table": table}, rng, max_checks=20)
    assert errors["table"] > 0.5


def test_sampled_entries_do_not_depend_on_the_gradient_under_test():
    # check_gradients draws its entries with uniform_indices(size, k, rng): only the tensor's
    # size and the rng decide, so the same rng state gives the same entries whatever the gradient.
    import inspect
    from minibert import gradcheck
    assert list(inspect.signature(uniform_indices).parameters) == ["size", "k", "rng"]
    assert "uniform_indices(x.size" in inspect.getsource(gradcheck.check_gradients)
    a = uniform_indices(5000, 30, np.random.default_rng(9))
    assert len(set(a.tolist())) == 30 and a.min() >= 0 and a.max() < 5000
