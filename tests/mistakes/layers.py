"""Wrong implementations of the lesson 1-3 exercises and the embedding backward."""

import math

import numpy as np

from minibert.gradcheck import _copy, _projected_difference


# rel_error(a, b, floor) -- only the region's part: a, b are float64 arrays of one shape
def rel_error_abs_of_sum(a, b, floor=1e-8):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(floor, np.abs(a + b))))     # |a+b|, not |a|+|b|


def rel_error_mean(a, b, floor=1e-8):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0:
        return 0.0
    return float(np.mean(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))))   # mean, not max


def rel_error_no_floor(a, b, floor=1e-8):
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.size == 0:
        return 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.max(np.abs(a - b) / (np.abs(a) + np.abs(b))))          # 0/0 = NaN


def rel_error_returns_array(a, b, floor=1e-8):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.max(np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b)), initial=0.0)


# numerical_vjp(f, x, dout, h, indices)
def _vjp(f, x, dout, h, indices, body):
    flat = x.reshape(-1)
    which = np.arange(flat.size) if indices is None else np.asarray(indices).reshape(-1)
    grad = np.zeros(which.size)
    for n, i in enumerate(which):
        grad[n] = body(f, x, flat, i, dout, h)
    return grad.reshape(x.shape) if indices is None else grad


def vjp_forward_difference(f, x, dout, h=1e-5, indices=None):
    def body(f, x, flat, i, dout, h):
        base = _copy(f(x))
        old = flat[i]
        flat[i] = old + h
        plus = _copy(f(x))
        flat[i] = old
        return _projected_difference(plus, base, dout) / h                     # one-sided: O(h)
    return _vjp(f, x, dout, h, indices, body)


def vjp_divides_by_h(f, x, dout, h=1e-5, indices=None):
    def body(f, x, flat, i, dout, h):
        old = flat[i]
        flat[i] = old + h
        plus = _copy(f(x))
        flat[i] = old - h
        minus = _copy(f(x))
        flat[i] = old
        return _projected_difference(plus, minus, dout) / h                    # not 2h
    return _vjp(f, x, dout, h, indices, body)


def vjp_no_copy(f, x, dout, h=1e-5, indices=None):
    def body(f, x, flat, i, dout, h):
        old = flat[i]
        flat[i] = old + h
        plus = f(x)                                                             # may be a view of x
        flat[i] = old - h
        minus = f(x)
        flat[i] = old
        return _projected_difference(plus, minus, dout) / (2 * h)
    return _vjp(f, x, dout, h, indices, body)


def vjp_not_restored(f, x, dout, h=1e-5, indices=None):
    def body(f, x, flat, i, dout, h):
        old = flat[i]
        flat[i] = old + h
        plus = _copy(f(x))
        flat[i] = old - h
        minus = _copy(f(x))                                                     # x left at old - h
        return _projected_difference(plus, minus, dout) / (2 * h)
    return _vjp(f, x, dout, h, indices, body)


def vjp_fixed_h(f, x, dout, h=1e-5, indices=None):
    def body(f, x, flat, i, dout, h):
        h = 1e-5                                                                # ignores the argument
        old = flat[i]
        flat[i] = old + h
        plus = _copy(f(x))
        flat[i] = old - h
        minus = _copy(f(x))
        flat[i] = old
        return _projected_difference(plus, minus, dout) / (2 * h)
    return _vjp(f, x, dout, h, indices, body)


# linear_backward(dy, cache)
def linear_db_mean(dy, cache):
    x, W = cache
    D, M = W.shape
    x2, dy2 = x.reshape(-1, D), dy.reshape(-1, M)
    return (dy2 @ W.T).reshape(x.shape), x2.T @ dy2, dy2.mean(axis=0)          # mean, not sum


def linear_dW_transposed(dy, cache):
    x, W = cache
    D, M = W.shape
    x2, dy2 = x.reshape(-1, D), dy.reshape(-1, M)
    return (dy2 @ W.T).reshape(x.shape), dy2.T @ x2, dy2.sum(axis=0)           # (M, D)


def linear_only_2d(dy, cache):
    x, W = cache
    return dy @ W.T, x.T @ dy, dy.sum(axis=0)                                   # breaks for 3-D x


def linear_dx_sign(dy, cache):
    x, W = cache
    D, M = W.shape
    x2, dy2 = x.reshape(-1, D), dy.reshape(-1, M)
    return -(dy2 @ W.T).reshape(x.shape), x2.T @ dy2, dy2.sum(axis=0)


# softmax_backward(dy, cache)
def softmax_no_centring(dy, cache):
    return dy * cache.y                                                         # forgot - sum(dy*y)


def softmax_wrong_axis(dy, cache):
    y = cache.y
    return y * (dy - np.sum(dy * y, axis=0, keepdims=True))                    # axis 0, not -1


def softmax_diagonal_only(dy, cache):
    y = cache.y
    return dy * y * (1 - y)                                                     # only the diagonal


def softmax_forgot_y(dy, cache):
    y = cache.y
    return dy - np.sum(dy * y, axis=-1, keepdims=True)


# layernorm_backward(dy, cache)
def _ln_parts(dy, cache):
    xhat, rstd, gamma = cache
    H = xhat.shape[-1]
    dbeta = dy.reshape(-1, H).sum(axis=0)
    dgamma = (dy * xhat).reshape(-1, H).sum(axis=0)
    return xhat, rstd, gamma, dbeta, dgamma, dy * gamma


def ln_missing_xhat_term(dy, cache):
    xhat, rstd, gamma, dbeta, dgamma, dxhat = _ln_parts(dy, cache)
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True))                  # no xhat term
    return dx, dgamma, dbeta


def ln_missing_mean_term(dy, cache):
    xhat, rstd, gamma, dbeta, dgamma, dxhat = _ln_parts(dy, cache)
    dx = rstd * (dxhat - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, dgamma, dbeta


def ln_forgot_gamma(dy, cache):
    xhat, rstd, gamma, dbeta, dgamma, _ = _ln_parts(dy, cache)
    dxhat = dy                                                                   # gamma forgotten
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, dgamma, dbeta


def ln_swapped_dgamma_dbeta(dy, cache):
    xhat, rstd, gamma, dbeta, dgamma, dxhat = _ln_parts(dy, cache)
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    return dx, dbeta, dgamma


def ln_forgot_rstd(dy, cache):
    xhat, rstd, gamma, dbeta, dgamma, dxhat = _ln_parts(dy, cache)
    dx = dxhat - dxhat.mean(-1, keepdims=True) - xhat * (dxhat * xhat).mean(-1, keepdims=True)
    return dx, dgamma, dbeta


# gelu_backward(dy, cache)
def gelu_only_cdf(dy, cache):
    return dy * cache.cdf                                                       # no x * phi(x)


def gelu_tanh_slope(dy, cache):
    x = cache.x
    k = np.sqrt(2 / np.pi)
    t = np.tanh(k * (x + 0.044715 * x ** 3))
    return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * k * (1 + 3 * 0.044715 * x ** 2))


def gelu_density_unnormalised(dy, cache):
    x = cache.x
    return dy * (cache.cdf + x * np.exp(-x * x / 2))                           # no 1/sqrt(2 pi)


def gelu_float64_constant(dy, cache):
    x = cache.x
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return (dy * (cache.cdf + x * pdf)).astype(np.float64)                      # float32 -> float64


# embedding_backward(dout, cache)
def embedding_fancy_index(dout, cache):
    ids, V = cache
    dtable = np.zeros((V, dout.shape[-1]), dtype=dout.dtype)
    dtable[ids] += dout                                                          # repeats write once
    return dtable


def embedding_rows_up_to_max_id(dout, cache):
    ids, V = cache
    H = dout.shape[-1]
    dtable = np.zeros((int(ids.max()) + 1, H), dtype=dout.dtype)                 # not V rows
    np.add.at(dtable, ids.reshape(-1), dout.reshape(-1, H))
    return dtable


def embedding_mean_of_repeats(dout, cache):
    ids, V = cache
    H = dout.shape[-1]
    dtable = np.zeros((V, H), dtype=dout.dtype)
    np.add.at(dtable, ids.reshape(-1), dout.reshape(-1, H))
    counts = np.bincount(ids.reshape(-1), minlength=V)
    return dtable / np.maximum(counts, 1)[:, None]


MISTAKES = {
    "rel_error": [(rel_error_abs_of_sum, "two random arrays"), (rel_error_mean, None),
                  (rel_error_no_floor, "NaN"), (rel_error_returns_array, "Python float")],
    "numerical_vjp": [(vjp_forward_difference, "closed form"), (vjp_divides_by_h, "factor of 2"),
                      (vjp_no_copy, "all zeros"), (vjp_not_restored, "restored"),
                      (vjp_fixed_h, "h=1e-2")],
    "linear_backward": [(linear_db_mean, "averaged over the 6 rows"), (linear_dW_transposed, "transposed?"),
                        (linear_only_2d, "x of shape (2, 3, 4)"), (linear_dx_sign, "opposite sign")],
    "softmax_backward": [(softmax_no_centring, "dx (x of shape (2, 3, 5))"), (softmax_wrong_axis, None),
                         (softmax_diagonal_only, None), (softmax_forgot_y, None)],
    "layernorm_backward": [(ln_missing_xhat_term, "dx (x of shape"), (ln_missing_mean_term, None),
                           (ln_forgot_gamma, None), (ln_swapped_dgamma_dbeta, "dgamma"),
                           (ln_forgot_rstd, None)],
    "gelu_backward": [(gelu_only_cdf, None), (gelu_tanh_slope, "worst entry"),
                      (gelu_density_unnormalised, None), (gelu_float64_constant, "float64")],
    "embedding_backward": [(embedding_fancy_index, "more than once"),
                           (embedding_rows_up_to_max_id, "has shape"),
                           (embedding_mean_of_repeats, "more than once")],
}
