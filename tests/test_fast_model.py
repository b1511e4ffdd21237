"""Tests for minibert/fast_model.py's inference path, which skips the padding: equal to the padded
reference at real tokens, exactly zero at padded positions, padded ids never read, a fully padded row
or batch stays finite. (Fast vs reference for every forward and gradient: tests/test_fast.py.)
"""

import numpy as np

from minibert import fast_model as F
from minibert import model as M
from test_model import padded_batch, tiny_config


def test_packed_inference_equals_the_padded_reference_at_real_tokens():
    config = tiny_config()
    ids, mask, types = padded_batch(config)
    kw = dict(output_hidden=True, output_attentions=True)
    # In eval mode fast_model's keep_cache=False skips the padding: equal at REAL tokens (hidden states) and
    # real query rows (attentions, scores), up to matmul rounding over a different row count:
    # allclose with rtol 1e-6 (float32; 1e-12 below for float64).
    for dtype, rtol in ((np.float32, 1e-6), (np.float64, 1e-12)):
        p = M.init_params(config, np.random.default_rng(0), dtype)
        a, _ = M.bert_forward(p, config, ids, mask, types, **kw)
        b, cb = F.bert_forward(p, config, ids, mask, types, keep_cache=False, **kw)
        assert cb is None and b.last.dtype == dtype
        real = mask.astype(bool)                                        # (B,T)
        rows = np.broadcast_to(real[:, None, :, None], a.attentions[0].shape)   # (B,nh,T,T) real queries
        for x, y in zip(a.hidden_states + [a.last], b.hidden_states + [b.last]):
            np.testing.assert_allclose(y[real], x[real], rtol=rtol, atol=rtol)
        for x, y in zip(a.attentions, b.attentions):
            np.testing.assert_allclose(y[rows], x[rows], rtol=rtol, atol=rtol)  # padded keys: both 0
        for x, y in zip(a.scores, b.scores):
            pairs = real[:, None, :, None] & real[:, None, None, :] & np.ones(x.shape, bool)
            np.testing.assert_allclose(y[pairs], x[pairs], rtol=rtol, atol=rtol)
            assert np.all(y[~pairs & rows] <= -1e8)                      # padded keys still masked (MASK_NEG)
        la, _, _ = M.classify_forward(p, config, ids, mask, types)
        lb, _, cb = F.classify_forward(p, config, ids, mask, types, keep_cache=False)
        assert cb is None
        np.testing.assert_allclose(lb, la, rtol=rtol, atol=rtol)


def test_inference_output_is_zero_at_padding_and_ignores_the_ids_there():
    config = tiny_config()
    params = M.init_params(config, np.random.default_rng(0))
    ids, mask, types = padded_batch(config)
    real = mask.astype(bool)
    a, _ = F.bert_forward(params, config, ids, mask, types, output_hidden=True, keep_cache=False)
    other = np.where(real, ids, np.random.default_rng(5).integers(1, config.vocab_size, ids.shape))
    other_types = np.where(real, types, 1)                              # junk token types too
    b, _ = F.bert_forward(params, config, other, mask, other_types, output_hidden=True, keep_cache=False)
    for x, y in zip(a.hidden_states + [a.last], b.hidden_states + [b.last]):
        assert np.all(x[~real] == 0) and np.all(y[~real] == 0)          # exactly zero at padding
        np.testing.assert_array_equal(x[real], y[real])                 # padded ids are never read
    assert np.any(a.last[real] != 0)


def test_inference_with_a_fully_padded_row_or_batch_stays_finite():
    config = tiny_config()
    params = M.init_params(config, np.random.default_rng(0))
    ids, mask, types = padded_batch(config)
    mask = mask.copy()
    mask[1] = 0                                                         # one row with no real token
    a, _ = M.bert_forward(params, config, ids, mask, types)             # padded reference
    b, _ = F.bert_forward(params, config, ids, mask, types, output_attentions=True, keep_cache=False)
    real = mask.astype(bool)
    np.testing.assert_allclose(b.last[real], a.last[real], rtol=1e-6, atol=1e-6)
    assert np.all(b.last[1] == 0) and np.all(b.attentions[0][1] == 0)
    c, _ = F.bert_forward(params, config, ids, np.zeros_like(mask), types, keep_cache=False)
    assert c.last.shape == ids.shape + (config.hidden_size,) and np.all(c.last == 0)
