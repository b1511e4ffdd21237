"""Tests for minibert/relation_losses.py (MiniLM attention-distribution and value-relation KL).

Gradient tolerance: rel_error <= 1e-7, float64, centred differences. The losses are means over
nh * n_real rows, so their gradients are small (1e-2 down to 1e-4 here) while the float64
round-off of the loss itself is ~5e-16. With respect to the LOGITS (relation_kl) the step is
h = 1e-4: at h = 1e-5 that round-off over 2h (~3e-11) is already 3e-7 of the smallest compared
entries, at 1e-4 it is ~3e-12 and the truncation O(h^2 * f''') stays ~1e-10 (measured: 4e-8).
With respect to the VALUES the step is h = 1e-5: the logits v v^T / sqrt(hs) are quadratic in
v, so the third derivatives are larger and truncation at 1e-4 reaches ~2e-6 (measured), while at
1e-5 the error is ~4e-8. A wrong factor or a missing transpose gives ~1e-1 either way.
Closed forms (identical inputs, a uniform teacher, two-key rows) are checked to
1e-12; the PyTorch comparison (skipped without torch) to 1e-10 in float64.
"""

import math

import numpy as np
import pytest

from minibert.attention import mask_to_bias
from minibert.gradcheck import check_gradients, numerical_vjp, rel_error, sample_indices
from minibert.relation_losses import (attention_relation_loss, relation_kl, value_relation_backward,
                                      value_relation_forward, value_relation_loss)

GRAD_TOL = 1e-7     # see the module docstring
CLOSED_TOL = 1e-12


def _mask():
    # (B=3, T=5): 5, 3 and 2 real tokens
    return np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=np.int64)


def _scores(rng, mask, nh=2, scale=2.0):
    """Attention-like logits (B,nh,T,T) that carry the padding bias at padded keys, as the
    model's cache.scores do."""
    B, T = mask.shape
    return scale * rng.standard_normal((B, nh, T, T)) + mask_to_bias(mask, np.float64)


H_LOGITS = 1e-4    # finite-difference steps: see the module docstring
H_VALUES = 1e-5


def _fd_check(name, loss_of_x, x, analytic, rng, h, k=200):
    """Centred-difference gradient of a scalar loss at (at most k sampled) entries of x."""
    idx = None if x.size <= k else sample_indices(analytic, k, rng)
    num = numerical_vjp(lambda z: np.asarray(loss_of_x(z), dtype=np.float64), x, np.array(1.0),
                        h=h, indices=idx)
    ana = analytic.reshape(-1) if idx is None else analytic.reshape(-1)[idx]
    err = rel_error(ana, num.reshape(-1), floor=max(1e-8, 1e-3 * np.abs(analytic).max()))
    print(f"gradcheck {name}: rel error {err:.1e}")
    assert err <= GRAD_TOL, f"{name}: rel error {err:.2e} > {GRAD_TOL}"


def _reference_kl(s, t, mask):
    """The loss written out with Python loops over examples, heads and real queries."""
    B, nh, T, _ = s.shape
    total, rows = 0.0, 0
    for b in range(B):
        n = int(mask[b].sum())
        keys = np.flatnonzero(mask[b])
        for h in range(nh):
            for i in keys:
                ps = np.exp(s[b, h, i, keys] - s[b, h, i, keys].max())
                ps /= ps.sum()
                pt = np.exp(t[b, h, i, keys] - t[b, h, i, keys].max())
                pt /= pt.sum()
                total += float(np.sum(pt * (np.log(pt) - np.log(ps))))
                rows += 1
        assert len(keys) == n
    return total / rows


# ----------------------------------------------------------------------------- gradient checks

@pytest.mark.exercise("relation_kl")
def test_relation_kl_gradient_matches_finite_differences_with_padding():
    rng = np.random.default_rng(0)
    mask = _mask()
    s, t = _scores(rng, mask), _scores(rng, mask)
    _, ds = relation_kl(s, t, mask)
    _fd_check("relation_kl dstudent", lambda z: relation_kl(z, t, mask)[0], s, ds, rng,
              H_LOGITS)


@pytest.mark.exercise("relation_kl")
def test_attention_relation_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    mask = _mask()
    s, t = _scores(rng, mask, nh=3), _scores(rng, mask, nh=3, scale=4.0)
    _, ds = attention_relation_loss(s, t, mask)
    _fd_check("attention_relation_loss dscores", lambda z: attention_relation_loss(z, t, mask)[0],
              s, ds, rng, H_LOGITS)


@pytest.mark.exercise("value_relation_backward")
def test_value_relation_layer_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((2, 3, 4, 5))                       # (B,nh,T,hs)
    errors = check_gradients(lambda v: value_relation_forward(v),
                             lambda dr, cache: (value_relation_backward(dr, cache),),
                             {"v": v}, rng, h=H_VALUES)
    print(errors)
    assert errors["v"] <= GRAD_TOL


@pytest.mark.exercise("relation_kl", "value_relation_backward")
@pytest.mark.parametrize("hs_s, hs_t", [(4, 4), (3, 8)])
def test_value_relation_loss_gradient_matches_finite_differences(hs_s, hs_t):
    """Also with a student narrower than its teacher (head size 3 vs 8): no projection needed."""
    rng = np.random.default_rng(3)
    mask = _mask()
    sv = rng.standard_normal((3, 2, 5, hs_s))                   # (B,nh,T,hs_s)
    tv = 1.5 * rng.standard_normal((3, 2, 5, hs_t))             # (B,nh,T,hs_t)
    _, dv = value_relation_loss(sv, tv, mask)
    assert dv.shape == sv.shape
    _fd_check(f"value_relation_loss dv (hs {hs_s} vs {hs_t})",
              lambda z: value_relation_loss(z, tv, mask)[0], sv, dv, rng, H_VALUES)


# ----------------------------------------------------------------------------- closed forms

@pytest.mark.exercise("relation_kl", "value_relation_backward")
def test_identical_distributions_give_zero_loss_and_zero_gradient():
    rng = np.random.default_rng(4)
    mask = _mask()
    s = _scores(rng, mask)
    loss, ds = relation_kl(s, s.copy(), mask)
    assert loss == 0.0 and not ds.any()
    v = rng.standard_normal((3, 2, 5, 4))
    loss, dv = value_relation_loss(v, v.copy(), mask)
    assert loss == 0.0 and not dv.any()


@pytest.mark.exercise("relation_kl")
def test_a_per_row_shift_of_the_logits_changes_nothing():
    """softmax(z + c) = softmax(z): a constant added to each student row keeps loss and grad."""
    rng = np.random.default_rng(5)
    mask = _mask()
    s, t = _scores(rng, mask), _scores(rng, mask)
    shift = 30 * rng.standard_normal(s.shape[:-1] + (1,))       # (B,nh,T,1)
    l0, d0 = relation_kl(s, t, mask)
    l1, d1 = relation_kl(s + shift, t, mask)
    assert abs(l0 - l1) <= CLOSED_TOL and np.abs(d0 - d1).max() <= CLOSED_TOL


@pytest.mark.exercise("relation_kl")
def test_uniform_teacher_gives_minus_log_n_minus_mean_log_p():
    """KL(u || p) = sum_j (1/n) (log(1/n) - log p_j) = -log n - mean_j log p_j, per row."""
    rng = np.random.default_rng(6)
    mask = np.array([[1, 1, 1, 1, 0, 0]])                       # one example, 4 real tokens
    s = rng.standard_normal((1, 2, 6, 6))
    t = np.zeros_like(s)                                        # uniform over the real keys
    loss, _ = relation_kl(s, t, mask)
    z = s[:, :, :4, :4]                                         # real queries x real keys
    logp = z - z.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = np.mean(-math.log(4) - logp.mean(-1))
    assert abs(loss - expected) <= CLOSED_TOL


@pytest.mark.exercise("relation_kl")
def test_two_key_rows_match_the_bernoulli_kl():
    """With two real keys a row is a Bernoulli: KL = a log(a/b) + (1-a) log((1-a)/(1-b)),
    a = sigmoid(t0 - t1), b = sigmoid(s0 - s1); and d/ds0 = b - a."""
    s = np.array([[[[0.3, -1.2], [2.0, 0.5]]]])                 # (1,1,2,2)
    t = np.array([[[[1.0, 0.0], [-0.5, 0.7]]]])
    loss, ds = relation_kl(s, t, None)
    sig = lambda x: 1.0 / (1.0 + math.exp(-x))                  # noqa: E731
    kls, grads = [], []
    for i in range(2):
        a, b = sig(t[0, 0, i, 0] - t[0, 0, i, 1]), sig(s[0, 0, i, 0] - s[0, 0, i, 1])
        kls.append(a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b)))
        grads.append((b - a) / 2)                               # mean over the 2 rows
    assert abs(loss - np.mean(kls)) <= CLOSED_TOL
    assert np.abs(ds[0, 0, :, 0] - grads).max() <= CLOSED_TOL
    assert np.abs(ds[0, 0, :, 1] + np.array(grads)).max() <= CLOSED_TOL


@pytest.mark.exercise("relation_kl")
def test_matches_a_loop_over_examples_heads_and_real_queries():
    rng = np.random.default_rng(7)
    mask = _mask()
    s, t = _scores(rng, mask, nh=3), _scores(rng, mask, nh=3)
    loss, _ = relation_kl(s, t, mask)
    assert abs(loss - _reference_kl(s, t, mask)) <= CLOSED_TOL


# ----------------------------------------------------------------------------- padding

@pytest.mark.exercise("relation_kl")
def test_padded_entries_are_never_read_and_get_zero_gradient():
    """Whatever sits at a padded query row or padded key column (here: garbage, huge values),
    the loss is unchanged and the gradient there is exactly 0."""
    rng = np.random.default_rng(8)
    mask = _mask()
    s, t = _scores(rng, mask), _scores(rng, mask)
    loss, ds = relation_kl(s, t, mask)
    pad = ~(mask.astype(bool)[:, None, :, None] & mask.astype(bool)[:, None, None, :])
    pad = np.broadcast_to(pad, s.shape)
    s2, t2 = s.copy(), t.copy()
    s2[pad] = 1e4 * rng.standard_normal(np.count_nonzero(pad))
    t2[pad] = -1e4 * rng.standard_normal(np.count_nonzero(pad))
    loss2, ds2 = relation_kl(s2, t2, mask)
    assert loss2 == loss and np.array_equal(ds2, ds)
    assert not ds[pad].any()


@pytest.mark.exercise("relation_kl", "value_relation_backward")
def test_value_relation_ignores_values_at_padded_tokens():
    rng = np.random.default_rng(9)
    mask = _mask()
    sv, tv = rng.standard_normal((3, 2, 5, 4)), rng.standard_normal((3, 2, 5, 6))
    loss, dv = value_relation_loss(sv, tv, mask)
    padded = ~mask.astype(bool)                                 # (B,T)
    assert not dv.transpose(0, 2, 1, 3)[padded].any()           # (B,T,nh,hs) at padded tokens
    sv2, tv2 = sv.copy(), tv.copy()
    sv2.transpose(0, 2, 1, 3)[padded] = 50.0
    tv2.transpose(0, 2, 1, 3)[padded] = -50.0
    assert value_relation_loss(sv2, tv2, mask)[0] == pytest.approx(loss, abs=CLOSED_TOL)


@pytest.mark.exercise("relation_kl")
def test_mean_is_over_heads_and_real_queries():
    """Duplicating an example (and its padding) leaves the mean unchanged."""
    rng = np.random.default_rng(10)
    mask = _mask()[1:2]                                         # 3 real of 5
    s, t = _scores(rng, mask), _scores(rng, mask)
    l1, _ = relation_kl(s, t, mask)
    l2, _ = relation_kl(np.concatenate([s, s]), np.concatenate([t, t]),
                        np.concatenate([mask, mask]))
    assert abs(l1 - l2) <= CLOSED_TOL


# ----------------------------------------------------------------------------- dtypes, bad input

@pytest.mark.exercise("relation_kl", "value_relation_backward")
def test_float32_in_float32_out():
    rng = np.random.default_rng(11)
    mask = _mask()
    s = _scores(rng, mask).astype(np.float32)
    t = _scores(rng, mask)                                      # float64 teacher: cast down
    loss, ds = relation_kl(s, t, mask)
    assert loss.dtype == np.float32 and ds.dtype == np.float32
    sv = rng.standard_normal((3, 2, 5, 4)).astype(np.float32)
    loss, dv = value_relation_loss(sv, rng.standard_normal((3, 2, 5, 8)), mask)
    assert loss.dtype == np.float32 and dv.dtype == np.float32
    assert np.isfinite(loss) and np.isfinite(dv).all()


def test_different_head_counts_are_refused_clearly():
    rng = np.random.default_rng(12)
    mask = _mask()
    with pytest.raises(ValueError, match="same number of heads"):
        relation_kl(_scores(rng, mask, nh=2), _scores(rng, mask, nh=4), mask)
    with pytest.raises(ValueError, match="same number of heads"):
        value_relation_loss(rng.standard_normal((3, 2, 5, 4)), rng.standard_normal((3, 4, 5, 4)),
                            mask)


@pytest.mark.parametrize("mask, message", [
    (np.zeros((3, 5)), "no real tokens"),
    (np.full((3, 5), 2), "0/1"),
    (np.ones((3, 4)), "expected shape"),
])
def test_bad_masks_are_refused(mask, message):
    rng = np.random.default_rng(13)
    s = rng.standard_normal((3, 2, 5, 5))
    with pytest.raises(ValueError, match=message):
        relation_kl(s, s, mask)


def test_nan_and_non_square_inputs_are_refused():
    s = np.zeros((1, 1, 3, 3))
    bad = s.copy()
    bad[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="teacher_logits"):
        relation_kl(s, bad, None)
    with pytest.raises(ValueError, match="square"):
        relation_kl(np.zeros((1, 1, 3, 4)), np.zeros((1, 1, 3, 4)), None)


# ----------------------------------------------------------------------------- PyTorch reference

@pytest.mark.exercise("relation_kl", "value_relation_backward")
def test_matches_pytorch_kl_div_and_autograd():
    """torch.nn.functional.kl_div on log-softmaxed rows and torch's autograd for v v^T."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(14)
    mask = _mask()
    sv, tv = rng.standard_normal((3, 2, 5, 4)), rng.standard_normal((3, 2, 5, 6))
    loss, dv = value_relation_loss(sv, tv, mask)

    real = torch.tensor(mask.astype(bool))
    key_bias = torch.where(real, 0.0, -1e9).double()[:, None, None, :]     # (B,1,1,T)
    v_s = torch.tensor(sv, requires_grad=True)
    v_t = torch.tensor(tv)
    log_s = torch.log_softmax(v_s @ v_s.transpose(-1, -2) / 2.0 + key_bias, dim=-1)   # hs_s = 4
    log_t = torch.log_softmax(v_t @ v_t.transpose(-1, -2) / math.sqrt(6) + key_bias, dim=-1)
    rows = real[:, None, :].expand(3, 2, 5)                                  # real queries
    per_row = torch.nn.functional.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    ref = per_row[rows].mean()
    ref.backward()
    assert abs(ref.item() - float(loss)) <= 1e-10
    assert rel_error(v_s.grad.numpy(), dv, floor=1e-10) <= 1e-9


# ----------------------------------------------------------------------------- the model's values

@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_attention_backward_takes_a_gradient_on_the_values(fast):
    """dvalues (B,nh,T,hs) on cache.v enters attention_backward like dscores does: checked by
    finite differences of sum(y * dy) + sum(v * dvalues) in float64 (tolerance 1e-7)."""
    from minibert import attention, fast_attention
    mod = fast_attention if fast else attention
    rng = np.random.default_rng(20)
    B, T, H, nh = 2, 5, 8, 2
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    bias = mask_to_bias(mask, np.float64)
    inputs = {"x": rng.standard_normal((B, T, H)), "W_qkv": 0.5 * rng.standard_normal((H, 3 * H)),
              "b_qkv": 0.1 * rng.standard_normal(3 * H), "W_o": 0.5 * rng.standard_normal((H, H)),
              "b_o": 0.1 * rng.standard_normal(H)}

    def forward(x, W_qkv, b_qkv, W_o, b_o):
        y, cache = mod.attention_forward(x, W_qkv, b_qkv, W_o, b_o, bias, nh)
        return (y, cache.v.copy()), cache

    def backward(dout, cache):
        dy, dv = dout
        return mod.attention_backward(dy, cache, dvalues=dv)

    errors = check_gradients(forward, backward, inputs, rng)
    print(errors)
    assert max(errors.values()) <= GRAD_TOL


def test_bert_backward_routes_dvalues_to_the_right_layer():
    """A value gradient on layer 1 only: the whole model's gradient matches finite differences
    of sum(v_1 * dv), and layer 1's values do not depend on layer 1's FFN (its grad is 0)."""
    from minibert.model import bert_backward, bert_forward, init_params
    from tiny import tiny_config
    rng = np.random.default_rng(21)
    config = tiny_config(num_layers=2, hidden_size=8, num_heads=2, intermediate_size=16,
                         initializer_range=0.3, pooler=False)
    params = init_params(config, rng, np.float64)
    ids = rng.integers(5, config.vocab_size, size=(2, 5))
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    dv = rng.standard_normal((2, 2, 5, 4))

    def forward(**p):
        out, cache = bert_forward(p, config, ids, mask)
        return cache.layers[1].attn.v.copy(), cache

    def backward(d, cache):
        return bert_backward(None, cache, dvalues=[None, d])

    _, cache = forward(**params)
    grads = backward(dv, cache)
    assert not grads["encoder.1.ffn.in.W"].any()
    errors = check_gradients(forward, backward, params, rng, max_checks=20)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-6, (worst, errors[worst])
