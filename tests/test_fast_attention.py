"""Tests for minibert/fast_attention.py's packed attention core (inference without padding): it
equals the padded naive attention at the real tokens, and its shared-shift softmax equals the per-row
one (falling back when a row would underflow). The fast forward/backward pairs are in test_fast.py.
"""

import numpy as np
import pytest

from minibert.attention import attention_naive, mask_to_bias
from minibert.fast_attention import attention_packed

B, T, H, NH = 3, 5, 8, 2
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])   # 5, 3 and 1 real tokens


def _params(rng, dtype=np.float64, scale=0.5):
    return {"W_qkv": (rng.standard_normal((H, 3 * H)) * scale).astype(dtype),
            "b_qkv": (rng.standard_normal(3 * H) * scale).astype(dtype),
            "W_o": (rng.standard_normal((H, H)) * scale).astype(dtype),
            "b_o": rng.standard_normal(H).astype(dtype)}


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_packed_attention_equals_the_naive_loops_at_real_tokens(dtype, tol):
    """attention_packed on the real tokens only, sequence after sequence (one of them empty, one
    with a pad in the middle), gives the padded naive attention's outputs and probabilities."""
    rng = np.random.default_rng(7)
    mask = np.vstack([MASK, [0, 0, 0, 0, 0], [1, 0, 1, 1, 0]])      # lengths 5, 3, 1, 0, 3
    x, p = rng.standard_normal((len(mask), T, H)).astype(dtype), _params(rng, dtype)
    y_naive, probs_naive = attention_naive(x, **p, bias=mask_to_bias(mask, dtype), n_heads=NH)
    real = mask.astype(bool)
    qkv = x[real] @ p["W_qkv"] + p["b_qkv"]                          # (N,3H) packed, row-major order
    starts = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])      # (B+1,)
    ctx, scores, probs = attention_packed(qkv, starts, NH, keep_probs=True)
    y = ctx @ p["W_o"] + p["b_o"]                                    # (N,H)
    assert y.dtype == dtype and len(probs) == len(scores) == len(mask)
    np.testing.assert_allclose(y, y_naive[real], rtol=tol, atol=tol)
    for b in range(len(mask)):
        pos = np.flatnonzero(mask[b])
        assert probs[b].shape == scores[b].shape == (NH, len(pos), len(pos))
        np.testing.assert_allclose(probs[b], probs_naive[b][:, pos[:, None], pos], rtol=tol, atol=tol)
        np.testing.assert_allclose(probs[b].sum(-1), 1, rtol=tol)
    with pytest.raises(ValueError, match="starts"):
        attention_packed(qkv, starts[:-1], NH)                       # does not end at N
    with pytest.raises(ValueError, match="qkv"):
        attention_packed(qkv[:, :-1], starts, NH)                    # not (N, 3H)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shared_shift_softmax_equals_the_per_row_softmax_and_falls_back_when_rows_underflow(dtype):
    from minibert.fast_attention import _softmax_shared_shift
    from minibert.layers import softmax_forward
    rng = np.random.default_rng(8)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    x = (rng.standard_normal((3, 6, 6)) * 4).astype(dtype)
    np.testing.assert_allclose(_softmax_shared_shift(x), softmax_forward(x)[0], rtol=tol, atol=tol)
    # One row 200 below the shared max: exp would underflow to 0 in every entry (0/0 = NaN);
    # the row sum check sends the whole array to the per-row softmax instead.
    x[1, 2] -= 200
    probs = _softmax_shared_shift(x)
    assert np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs, softmax_forward(x)[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(probs.sum(-1), 1, rtol=tol)
    # Scores up to 1e4 apart across rows and large positive ones: no overflow either.
    x = (rng.standard_normal((2, 4, 4)) + rng.uniform(-1e4, 1e4, (2, 4, 1))).astype(dtype)
    np.testing.assert_allclose(_softmax_shared_shift(x), softmax_forward(x)[0], rtol=tol, atol=tol)
