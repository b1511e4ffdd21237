"""Every fast function equals the reference it stands in for: the table in minibert/fast.py, walked.

For each entry of STANDS_IN_FOR, a case below runs the fast function and its reference on the same
inputs (padded batches, dropout with the same seeds, extra distillation gradients) and compares the
forward outputs AND every gradient, tensor by tensor, by name.

Error measure: normwise relative error max|fast - ref| / max|ref| per tensor (an elementwise
relative error means nothing where a tensor crosses 0, e.g. GELU near x = 0 or at x << 0, where
Phi(x) = 0.5 (1 + erf) cancels). Tolerances, and why:
- float64: 1e-12. The two sides differ only in rounding (operation order, erf's argument scaled
  before or inside the polynomial); measured <= 1e-15 for the kernels, <= 1e-14 for whole models.
- float32: 5e-7 for erf/GELU (4 float32 ulps of 1.2e-7; measured <= 1.2e-7), 5e-6 for attention,
  whole models and AdamW (rounding summed over H through matmuls and LayerNorm in a 2-layer model;
  measured <= 6.1e-7). Run with -s to see every tensor's error.
"""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest

from minibert import attention, fast_attention, fast_layers, fast_model, fast_optim, fast_packed, heads, layers
from minibert import model as M
from minibert import optim
from minibert.attention import mask_to_bias
from minibert.fast import STANDS_IN_FOR

TOL = {np.float64: 1e-12, np.float32: 5e-6}
ELEMENTWISE_TOL = {np.float64: 1e-12, np.float32: 5e-7}
DTYPES = [np.float64, np.float32]


def resolve(qualified: str):
    module, name = qualified.split(".")
    return getattr(importlib.import_module(f"minibert.{module}"), name)


def normwise(fast, ref) -> float:
    fast, ref = np.asarray(fast, np.float64), np.asarray(ref, np.float64)
    assert fast.shape == ref.shape
    return float(np.max(np.abs(fast - ref)) / max(np.max(np.abs(ref)), 1e-300)) if ref.size else 0.0


def assert_pairs(pairs, dtype, tol):
    """pairs: list of (name, fast array, reference array)."""
    worst = {}
    for name, f, r in pairs:
        assert np.asarray(f).dtype == np.asarray(r).dtype == dtype, name
        worst[name] = normwise(f, r)
    print(" ".join(f"{k}={v:.1e}" for k, v in worst.items()))
    bad = {k: v for k, v in worst.items() if not v <= tol}
    assert not bad, f"fast != reference beyond {tol:g}: {bad}"
    return max(worst.values())


# ----------------------------------------------------------------------------------------------
# inputs


def tiny_config(**kw):
    base = dict(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                max_position=16, type_vocab_size=2, num_labels=3, pooler=True, mlm_head=True,
                hidden_dropout=0.1, attention_dropout=0.1)
    base.update(kw)
    return M.BertConfig(**base)


def padded_batch(config, lengths=(7, 4, 0, 2), seed=0):
    """ids, mask (B,T) with a fully padded row, token types (a second segment)."""
    rng = np.random.default_rng(seed)
    B, T = len(lengths), max(lengths)
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)
    ids = rng.integers(1, config.vocab_size, size=(B, T)) * mask
    types = ((np.arange(T)[None, :] >= np.array(lengths)[:, None] // 2) * mask).astype(np.int64)
    return ids, mask, types


def model_params(config, dtype, seed=0):
    """init_params with O(1)-ish weights, so every term is visible in the comparison."""
    rng = np.random.default_rng(seed)
    params = M.init_params(config, rng, dtype)
    return {k: (v + 0.2 * rng.standard_normal(v.shape)).astype(dtype) for k, v in params.items()}


def erf_grid(dtype):
    x = np.concatenate([np.linspace(-7, 7, 14001), np.geomspace(1e-20, 1, 400),
                        np.random.default_rng(3).standard_normal(1000) * 3, [0.0, np.inf, -np.inf]])
    return np.concatenate([x, -x]).astype(dtype)


def attention_inputs(dtype, B=3, T=5, H=8, nh=2, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, H)).astype(dtype)
    W_qkv, b_qkv = (0.5 * rng.standard_normal((H, 3 * H))).astype(dtype), rng.standard_normal(3 * H).astype(dtype)
    W_o, b_o = (0.5 * rng.standard_normal((H, H))).astype(dtype), rng.standard_normal(H).astype(dtype)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])[:B]
    return x, W_qkv, b_qkv, W_o, b_o, mask_to_bias(mask, dtype), nh, mask


# ----------------------------------------------------------------------------------------------
# one case per table entry: returns (pairs, tolerance)


def case_erf(dtype):
    x = erf_grid(dtype)
    return [("erf", fast_layers.erf(x), layers.erf(x))], ELEMENTWISE_TOL[dtype]


def case_gelu_forward(dtype):
    x = (np.random.default_rng(4).standard_normal((3, 5, 7000)) * 3).astype(dtype)   # > 1 erf block
    yf, cf = fast_layers.gelu_forward(x)
    yr, cr = layers.gelu_forward(x)
    dy = np.random.default_rng(5).standard_normal(x.shape).astype(dtype)
    return [("y", yf, yr), ("cache.cdf", cf.cdf, cr.cdf),
            ("dx (each side's backward)", fast_layers.gelu_backward(dy, cf), layers.gelu_backward(dy, cr))
            ], ELEMENTWISE_TOL[dtype]


def case_gelu(dtype):
    x = (np.random.default_rng(6).standard_normal((7, 28_573)) * 3).astype(dtype)   # ragged last block
    return [("y", fast_layers.gelu(x), layers.gelu(x))], ELEMENTWISE_TOL[dtype]


def case_gelu_backward(dtype):
    x = (np.random.default_rng(7).standard_normal((4, 9000)) * 3).astype(dtype)
    _, cache = layers.gelu_forward(x)
    dy = np.random.default_rng(8).standard_normal(x.shape).astype(dtype)
    return [("dx (same cache)", fast_layers.gelu_backward(dy, cache), layers.gelu_backward(dy, cache))
            ], ELEMENTWISE_TOL[dtype]


def _attention_grads(backward, dy, cache, dscores, dprobs):
    names = ("dx", "dW_qkv", "db_qkv", "dW_o", "db_o")
    return dict(zip(names, backward(dy, cache, dscores, dprobs)))


def _extra_grads(cache, mask, seed):
    rng = np.random.default_rng(seed)
    keys = mask.astype(bool)[:, None, None, :]
    dt = cache.probs.dtype
    return ((rng.standard_normal(cache.scores.shape) * keys).astype(dt),
            (rng.standard_normal(cache.probs.shape) * keys).astype(dt))


def case_attention_forward(dtype):
    x, W_qkv, b_qkv, W_o, b_o, bias, nh, mask = attention_inputs(dtype)
    args = (x, W_qkv, b_qkv, W_o, b_o, bias, nh, 0.2)
    yf, cf = fast_attention.attention_forward(*args, rng=np.random.default_rng(9))
    yr, cr = attention.attention_forward(*args, rng=np.random.default_rng(9))   # same dropout masks
    pairs = [("y", yf, yr), ("scores", cf.scores, cr.scores), ("probs", cf.probs, cr.probs)]
    dy = np.random.default_rng(10).standard_normal(yr.shape).astype(dtype)
    dscores, dprobs = _extra_grads(cr, mask, 11)
    gf = _attention_grads(fast_attention.attention_backward, dy, cf, dscores, dprobs)
    gr = _attention_grads(attention.attention_backward, dy, cr, dscores, dprobs)
    return pairs + [(k + " (each side's backward)", gf[k], gr[k]) for k in gr], TOL[dtype]


def case_attention_backward(dtype):
    x, W_qkv, b_qkv, W_o, b_o, bias, nh, mask = attention_inputs(dtype, seed=2)
    y, cache = attention.attention_forward(x, W_qkv, b_qkv, W_o, b_o, bias, nh, 0.2,
                                           rng=np.random.default_rng(12))
    dy = np.random.default_rng(13).standard_normal(y.shape).astype(dtype)
    dscores, dprobs = _extra_grads(cache, mask, 14)
    gf = _attention_grads(fast_attention.attention_backward, dy, cache, dscores, dprobs)
    gr = _attention_grads(attention.attention_backward, dy, cache, dscores, dprobs)
    return [(k + " (same cache)", gf[k], gr[k]) for k in gr], TOL[dtype]


def case_attention_packed(dtype):
    """The packed core on the real tokens only vs the padded forward (eval mode) at real tokens."""
    x, W_qkv, b_qkv, W_o, b_o, bias, nh, mask = attention_inputs(dtype, seed=3)
    yr, cr = attention.attention_forward(x, W_qkv, b_qkv, W_o, b_o, bias, nh)
    real = mask.astype(bool)
    qkv = x[real] @ W_qkv + b_qkv                                   # (N,3H), sequence after sequence
    starts = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    ctx, scores, probs = fast_attention.attention_packed(qkv, starts, nh, keep_probs=True)
    pairs = [("y at real tokens", ctx @ W_o + b_o, yr[real])]
    for b in range(len(mask)):
        pos = np.flatnonzero(mask[b])
        pairs.append((f"probs[{b}]", probs[b], cr.probs[b][:, pos[:, None], pos]))
        pairs.append((f"scores[{b}]", scores[b], cr.scores[b][:, pos[:, None], pos]))
    return pairs, TOL[dtype]


def case_attention_packed_backward(dtype):
    """The packed core's backward (dropout on, the reference's masks at real pairs, extra
    gradients at real entries), through the same linear layers, vs the padded backward."""
    x, W_qkv, b_qkv, W_o, b_o, bias, nh, mask = attention_inputs(dtype, seed=4)
    yr, cr = attention.attention_forward(x, W_qkv, b_qkv, W_o, b_o, bias, nh, 0.2,
                                         rng=np.random.default_rng(15))
    real = mask.astype(bool)
    pos = [np.flatnonzero(m) for m in mask]
    drop = [cr.drop.mask[b][:, p[:, None], p] for b, p in enumerate(pos)]      # (nh,n_b,n_b)
    qkv = x[real] @ W_qkv + b_qkv                                   # (N,3H)
    starts = np.concatenate([[0], np.cumsum(mask.sum(axis=1))])
    ctx, _, probs = fast_attention.attention_packed(qkv, starts, nh, keep_probs=True, drop=drop)
    rng = np.random.default_rng(16)
    dy = (rng.standard_normal(yr.shape) * real[..., None]).astype(dtype)   # 0 at padded tokens
    dscores, dprobs = _extra_grads(cr, mask, 17)
    pair = (real[:, None, :, None] & real[:, None, None, :])
    dscores, dprobs = (dscores * pair).astype(dtype), (dprobs * pair).astype(dtype)
    dvalues = (rng.standard_normal(cr.v.shape) * real[:, None, :, None]).astype(dtype)
    gr = _attention_grads(lambda *a: attention.attention_backward(*a, dvalues), dy, cr, dscores, dprobs)
    blocks = [[g[b][:, p[:, None], p] for b, p in enumerate(pos)] for g in (dscores, dprobs)]
    dqkv = fast_attention.attention_packed_backward(dy[real] @ W_o.T, qkv, starts, nh, probs, drop,
                                                    blocks[0], blocks[1],
                                                    [dvalues[b][:, p] for b, p in enumerate(pos)])
    pairs = [("y at real tokens (dropout on)", ctx @ W_o + b_o, yr[real]),
             ("dx at real tokens", dqkv @ W_qkv.T, gr["dx"][real]),
             ("dW_qkv", x[real].T @ dqkv, gr["dW_qkv"]), ("db_qkv", dqkv.sum(axis=0), gr["db_qkv"])]
    return pairs, TOL[dtype]


def packed_case(dtype, config=None, lengths=(7, 4, 1, 2, 7), seed=0, forward=fast_packed.bert_forward,
                backward=fast_packed.bert_backward):
    """Training on a padded batch (a length-1 row, full-length rows), dropout on, same seed: the
    packed path vs model.py's padded reference. Forward at real tokens / real pairs, then every
    parameter gradient with dlast, dhidden, dscores, dprobs, dvalues nonzero only at real entries
    (as the losses give them). Returns pairs."""
    config = config or tiny_config()
    params = model_params(config, dtype, seed)
    ids, mask, types = padded_batch(config, lengths, seed)
    kw = dict(output_hidden=True, output_attentions=True)
    of, cf = forward(params, config, ids, mask, types, np.random.default_rng(seed + 1), **kw)
    o_r, cr = M.bert_forward(params, config, ids, mask, types, np.random.default_rng(seed + 1), **kw)
    assert isinstance(cf, fast_packed.PackedCache)
    real = mask.astype(bool)                                        # (B,T)
    pair = real[:, None, :, None] & real[:, None, None, :]          # (B,1,T,T) real (query, key)
    pairs = [("last at real tokens", of.last[real], o_r.last[real])]
    pairs += [(f"hidden[{i}] at real tokens", a[real], b[real])
              for i, (a, b) in enumerate(zip(of.hidden_states, o_r.hidden_states))]
    for i, (pf, pr, sf, sr) in enumerate(zip(of.attentions, o_r.attentions, of.scores, o_r.scores)):
        sel = np.broadcast_to(pair, pr.shape)
        pairs += [(f"probs[{i}] at real pairs", pf[sel], pr[sel]), (f"scores[{i}] at real pairs", sf[sel], sr[sel])]
        assert np.all(pf[~sel] == 0) and np.all(sf[~sel] == attention.MASK_NEG)
    rng = np.random.default_rng(seed + 2)
    tok = real[..., None]
    dlast = (rng.standard_normal(o_r.last.shape) * tok).astype(dtype)
    dhidden = [(rng.standard_normal(o_r.last.shape) * tok).astype(dtype) for _ in o_r.hidden_states]
    dscores = [(rng.standard_normal(s.shape) * pair).astype(dtype) for s in o_r.scores]
    dprobs = [(rng.standard_normal(s.shape) * pair).astype(dtype) for s in o_r.scores]
    dvalues = [(rng.standard_normal(c.attn.v.shape) * real[:, None, :, None]).astype(dtype) for c in cr.layers]
    extra = (dhidden, dscores, dprobs, dvalues)
    gf, gr = backward(dlast, cf, *extra), M.bert_backward(dlast, cr, *extra)
    assert list(gf) == list(gr)                                     # same keys, same order
    return pairs + _model_grad_pairs(gf, gr)


def case_fast_packed_bert_forward(dtype):
    return packed_case(dtype), TOL[dtype]


def case_fast_packed_bert_backward(dtype):
    """A pruned-head config (layers of different widths), dropout on both grids."""
    config = tiny_config(num_heads=4, hidden_size=16, pruned_heads={"0": [1, 3], "1": [0]})
    return packed_case(dtype, config, lengths=(5, 1, 5, 3), seed=3), TOL[dtype]


def case_fast_model_bert_backward(dtype):
    """fast_model.bert_forward takes the packed path on this batch; its bert_backward dispatches."""
    return packed_case(dtype, seed=5, forward=fast_model.bert_forward,
                       backward=fast_model.bert_backward), TOL[dtype]


def case_fast_model_classify_backward(dtype):
    """Fine-tuning's step: packed encoder, the head's own dropout after it, cross-entropy-like dlogits."""
    config = tiny_config()
    params = model_params(config, dtype, seed=6)
    ids, mask, types = padded_batch(config, (6, 1, 3, 6), seed=6)
    lf, _, cf = fast_model.classify_forward(params, config, ids, mask, types, rng=np.random.default_rng(7))
    lr, _, cr = M.classify_forward(params, config, ids, mask, types, rng=np.random.default_rng(7))
    assert isinstance(cf.bert, fast_packed.PackedCache)
    dlogits = np.random.default_rng(8).standard_normal(lr.shape).astype(dtype)
    gf, gr = fast_model.classify_backward(dlogits, cf), M.classify_backward(dlogits, cr)
    return [("logits", lf, lr)] + _model_grad_pairs(gf, gr), TOL[dtype]


def _model_grad_pairs(gf, gr):
    assert sorted(gf) == sorted(gr)
    return [(f"d[{k}]", gf[k], gr[k]) for k in sorted(gr)]


def case_bert_forward(dtype):
    """Training mode (dropout, caches, backward with extra gradients) and inference on a padded
    batch with a fully padded row (the packed path: equal at real tokens, zero at padding)."""
    config = tiny_config()
    params = model_params(config, dtype)
    ids, mask, types = padded_batch(config)
    kw = dict(output_hidden=True, output_attentions=True)
    of, cf = fast_model.bert_forward(params, config, ids, mask, types, np.random.default_rng(1), **kw)
    o_r, cr = M.bert_forward(params, config, ids, mask, types, np.random.default_rng(1), **kw)
    pairs = [("last", of.last, o_r.last)]
    pairs += [(f"hidden[{i}]", a, b) for i, (a, b) in enumerate(zip(of.hidden_states, o_r.hidden_states))]
    pairs += [(f"probs[{i}]", a, b) for i, (a, b) in enumerate(zip(of.attentions, o_r.attentions))]
    rng = np.random.default_rng(2)
    dlast = rng.standard_normal(o_r.last.shape).astype(dtype)
    dhidden = [rng.standard_normal(o_r.last.shape).astype(dtype) for _ in o_r.hidden_states]
    dscores = [_extra_grads(c.attn, mask, 3 + i)[0] for i, c in enumerate(cr.layers)]
    gf = M.bert_backward(dlast, cf, dhidden=dhidden, dscores=dscores)
    gr = M.bert_backward(dlast, cr, dhidden=dhidden, dscores=dscores)
    pairs += _model_grad_pairs(gf, gr)
    # inference: the packed path (fast) vs the padded reference, at real tokens / real pairs
    pf, _ = fast_model.bert_forward(params, config, ids, mask, types, keep_cache=False, **kw)
    pr, _ = M.bert_forward(params, config, ids, mask, types, keep_cache=False, **kw)
    real = mask.astype(bool)
    assert np.all(pf.last[~real] == 0) and np.all(pf.last[2] == 0)      # row 2 is all padding
    pairs += [("inference last at real tokens", pf.last[real], pr.last[real])]
    pairs += [(f"inference hidden[{i}] at real tokens", a[real], b[real])
              for i, (a, b) in enumerate(zip(pf.hidden_states, pr.hidden_states))]
    pairs_mask = real[:, None, :, None] & real[:, None, None, :]          # (B,1,T,T) real (query, key)
    for i, (a, b) in enumerate(zip(pf.attentions, pr.attentions)):
        sel = np.broadcast_to(pairs_mask, a.shape)
        pairs.append((f"inference probs[{i}] at real pairs", a[sel], b[sel]))
    return pairs, TOL[dtype]


def case_classify_forward(dtype):
    config = tiny_config()
    params = model_params(config, dtype, seed=1)
    ids, mask, types = padded_batch(config, seed=1)
    lf, _, cf = fast_model.classify_forward(params, config, ids, mask, types, rng=np.random.default_rng(4))
    lr, _, cr = M.classify_forward(params, config, ids, mask, types, rng=np.random.default_rng(4))
    dlogits = np.random.default_rng(5).standard_normal(lr.shape).astype(dtype)
    pairs = [("logits", lf, lr)] + _model_grad_pairs(fast_model.classify_backward(dlogits, cf),
                                                     M.classify_backward(dlogits, cr))
    real_rows = mask.any(axis=1)                                        # the fully padded row: no [CLS]
    pf, _, _ = fast_model.classify_forward(params, config, ids, mask, types, keep_cache=False)
    pr, _, _ = M.classify_forward(params, config, ids, mask, types, keep_cache=False)
    return pairs + [("inference logits (rows with tokens)", pf[real_rows], pr[real_rows])], TOL[dtype]


def case_mlm_forward(dtype):
    config = tiny_config()
    params = model_params(config, dtype, seed=2)
    last = np.random.default_rng(6).standard_normal((2, 5, config.hidden_size)).astype(dtype)
    lf, cf = fast_model.mlm_forward(params, config, last)
    lr, cr = heads.mlm_forward(params, config, last)
    dlogits = np.random.default_rng(7).standard_normal(lr.shape).astype(dtype)
    (dlf, gf), (dlr, gr) = heads.mlm_backward(dlogits, cf), heads.mlm_backward(dlogits, cr)
    return [("logits", lf, lr), ("dlast", dlf, dlr)] + _model_grad_pairs(gf, gr), TOL[dtype]


def case_adamw_step(dtype):
    """Several steps with weight decay, decayed and no-decay names, a non-contiguous parameter."""
    rng = np.random.default_rng(8)
    shapes = {"embeddings.word": (300, 1000), "encoder.0.attn.qkv.W": (6, 18), "encoder.0.attn.qkv.b": (18,),
              "embeddings.ln.gamma": (6,), "mlm.bias": (7,)}
    start = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    start["classifier.W"] = np.asfortranarray(rng.standard_normal((6, 3)).astype(dtype))   # no flat view
    pf, pr = {k: v.copy(order="K") for k, v in start.items()}, {k: v.copy(order="K") for k, v in start.items()}
    sf, sr = optim.adamw_init(pf), optim.adamw_init(pr)
    for step in range(5):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in start.items()}
        lr = 1e-2 * (step + 1)
        fast_optim.adamw_step(pf, grads, sf, lr, weight_decay=0.1)
        optim.adamw_step(pr, grads, sr, lr, weight_decay=0.1)
    assert sf.step == sr.step == 5
    pairs = [(f"param {k}", pf[k], pr[k]) for k in start]
    pairs += [(f"m {k}", sf.m[k], sr.m[k]) for k in start] + [(f"v {k}", sf.v[k], sr.v[k]) for k in start]
    return pairs, TOL[dtype]


CASES = {
    "fast_layers.erf": case_erf,
    "fast_layers.gelu_forward": case_gelu_forward,
    "fast_layers.gelu": case_gelu,
    "fast_layers.gelu_backward": case_gelu_backward,
    "fast_attention.attention_forward": case_attention_forward,
    "fast_attention.attention_backward": case_attention_backward,
    "fast_attention.attention_packed": case_attention_packed,
    "fast_attention.attention_packed_backward": case_attention_packed_backward,
    "fast_packed.bert_forward": case_fast_packed_bert_forward,
    "fast_packed.bert_backward": case_fast_packed_bert_backward,
    "fast_model.bert_forward": case_bert_forward,
    "fast_model.bert_backward": case_fast_model_bert_backward,
    "fast_model.classify_forward": case_classify_forward,
    "fast_model.classify_backward": case_fast_model_classify_backward,
    "fast_model.mlm_forward": case_mlm_forward,
    "fast_optim.adamw_step": case_adamw_step,
}


def test_the_table_names_real_functions_and_every_public_fast_function():
    for fast, ref in STANDS_IN_FOR.items():
        assert callable(resolve(fast)) and callable(resolve(ref)), (fast, ref)
    assert set(CASES) == set(STANDS_IN_FOR)
    helpers = {"fast_layers.erf_scaled", "fast_model.attention_values"}   # no reference to stand in for
    for mod in (fast_layers, fast_attention, fast_model, fast_optim, fast_packed):
        for name, obj in vars(mod).items():
            if (inspect.isfunction(obj) and not name.startswith("_") and obj.__module__ == mod.__name__):
                key = f"{mod.__name__.split('.')[-1]}.{name}"
                assert key in STANDS_IN_FOR or key in helpers, \
                    f"{key} is public but not in fast.STANDS_IN_FOR"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("fast_name", list(STANDS_IN_FOR))
def test_fast_equals_its_reference(fast_name, dtype):
    pairs, tol = CASES[fast_name](dtype)
    print(f"{fast_name} vs {STANDS_IN_FOR[fast_name]} ({np.dtype(dtype).name}): ", end="")
    assert_pairs(pairs, dtype, tol)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_fast_inference_gelu_is_bit_identical_to_fast_gelu_forward(dtype):
    # 200,003 elements: three full erf blocks and a ragged last one
    x = (np.random.default_rng(9).standard_normal((7, 28_573)) * 3).astype(dtype)
    y = fast_layers.gelu(x)
    assert y.dtype == dtype and y.shape == x.shape
    np.testing.assert_array_equal(y, fast_layers.gelu_forward(x)[0])


def test_fast_erf_meets_the_reference_accuracy_bounds():
    """The fast erf is accurate on its own too (vs math.erf): 4.4e-16 absolute in float64."""
    import math
    x = erf_grid(np.float64)
    err = np.abs(fast_layers.erf(x) - np.array([math.erf(v) for v in x]))
    assert err.max() <= 2e-15
