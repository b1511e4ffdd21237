"""Tests for minibert/model.py: the whole BERT, its heads, and their hand-written backward passes.

Gradient checks run in float64 with centred differences (h = 1e-5): the truncation error is
O(h^2) ~ 1e-10 and the round-off O(eps/h) ~ 1e-11, so a correct backward agrees to ~1e-8 or
better; a wrong term (a missing residual, a transposed weight) shows up as errors of 1e-2..1.
Every parameter tensor is checked; big tensors at a random sample of entries (and always at
entries where the analytic gradient is non-zero, so an embedding table is not checked only on
rows the batch never uses).
"""

import dataclasses

import numpy as np
import pytest

from minibert import model as M
from minibert.attention import mask_to_bias
from minibert.gradcheck import numerical_vjp, rel_error, sample_indices

SEED = 1234
LENGTHS = [7, 4, 2]          # a padded batch: B = 3 sequences of different lengths, T = 7
MAX_CHECKS = 12              # sampled entries per tensor (small tensors: every entry)


def tiny_config(**kw):
    base = dict(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                max_position=16, type_vocab_size=2, num_labels=3, pooler=True,
                hidden_dropout=0.1, attention_dropout=0.1)
    base.update(kw)
    return M.BertConfig(**base)


def padded_batch(config, lengths=LENGTHS, seed=0):
    """ids (B,T) with pad_token_id under padding, mask (B,T), token types (a second segment)."""
    rng = np.random.default_rng(seed)
    B, T = len(lengths), max(lengths)
    mask = (np.arange(T)[None, :] < np.array(lengths)[:, None]).astype(np.int64)   # (B,T)
    ids = rng.integers(1, config.vocab_size, size=(B, T)) * mask                   # pads -> 0
    types = (np.arange(T)[None, :] >= np.array(lengths)[:, None] // 2) * mask      # (B,T) 0 then 1
    return ids, mask, types.astype(np.int64)


def params64(config, seed=1):
    # Weights ~N(0, 0.3) rather than BERT's 0.02: with tiny weights the attention is almost
    # uniform and the gradients deep in the network are ~1e-8, below the finite-difference
    # noise, so the check would be both weaker and flaky.
    p = M.init_params(dataclasses.replace(config, initializer_range=0.3),
                      np.random.default_rng(seed), dtype=np.float64)
    # Non-trivial LayerNorm/bias values, so their gradients are checked away from 1 and 0.
    rng = np.random.default_rng(seed + 100)
    for k in p:
        if k.endswith((".gamma", ".beta", ".b", ".bias")):
            p[k] = p[k] + 0.1 * rng.standard_normal(p[k].shape)
    return p


def check_tensor(f, x, analytic, rng, max_checks=MAX_CHECKS):
    """Relative error between `analytic` (the backward's gradient of the scalar f w.r.t. x) and
    centred differences of f, at sampled entries of x. f reads x in place (numerical_vjp perturbs it)."""
    idx = np.arange(x.size) if x.size <= max_checks else sample_indices(analytic, max_checks, rng)
    num = np.asarray(numerical_vjp(f, x, np.float64(1.0), h=1e-5, indices=idx)).ravel()
    ana = np.asarray(analytic).ravel()[idx]
    # Some gradients are exactly zero in exact arithmetic (the key bias: softmax cancels a
    # constant added to every score of a row), and the centred difference of a zero gradient is
    # round-off, ~eps*|f|/h. A relative error of round-off against round-off means nothing, so
    # entries where both sides are below 10x that level must agree in absolute terms instead.
    floor = 10 * np.finfo(np.float64).eps * (1.0 + abs(float(f(x)))) / 1e-5
    tiny = (np.abs(num) < floor) & (np.abs(ana) < floor)
    assert np.all(np.abs(num[tiny] - ana[tiny]) < floor)
    assert (~tiny).any(), "every sampled entry was ~0: this tensor's check would mean nothing"
    return rel_error(num[~tiny], ana[~tiny])


def check_all_params(loss, params, grads, rng):
    """Check grads[name] for EVERY parameter; returns {name: rel_error}."""
    assert set(grads) == set(params), set(grads) ^ set(params)
    return {name: check_tensor(loss, params[name], grads[name], rng) for name in params}


def record(test, errors, tol):
    name, worst = max(errors.items(), key=lambda kv: kv[1])
    print(f"worst rel error {test}: {worst:.2e} ({name})")   # shown by pytest -s
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"gradient errors above {tol}: {bad}"


def dropout_rng():
    # The same Generator state in every call, so every forward draws the same dropout masks.
    return np.random.default_rng(SEED)


# ----------------------------------------------------------------------------------------------
# Gradient checks (float64)


def test_full_model_gradients_match_finite_differences():
    # Whole network: embeddings, 2 layers with dropout on, pooler + classifier, padded batch.
    # Tolerance 1e-5 (full-network errors compound over ~40 ops; correct code gives ~1e-8).
    config = tiny_config()
    params = params64(config)
    ids, mask, types = padded_batch(config)
    R = np.random.default_rng(5).standard_normal((len(LENGTHS), config.num_labels))  # fixed projection

    def loss(_=None):
        logits, _, _ = M.classify_forward(params, config, ids, mask, types, rng=dropout_rng())
        return np.sum(logits * R)

    logits, _, cache = M.classify_forward(params, config, ids, mask, types, rng=dropout_rng())
    grads = M.classify_backward(R, cache)
    errors = check_all_params(loss, params, grads, np.random.default_rng(0))
    record("full model", errors, 1e-5)


def test_full_model_gradients_with_extra_grads_on_hidden_states_scores_and_probs():
    # What distillation uses: extra upstream gradients on every hidden state (index 0 = the
    # embedding output), on the attention scores and on the probs. Score gradients are zero at
    # padded keys, as attention_mse gives them (those scores are ~-1e9, whose differences in
    # float64 are round-off). Tolerance 1e-5 as above.
    config = tiny_config()
    params = params64(config)
    ids, mask, types = padded_batch(config)
    B, T, H, nh, L = len(LENGTHS), max(LENGTHS), config.hidden_size, config.num_heads, config.num_layers
    r = np.random.default_rng(6)
    R = r.standard_normal((B, config.num_labels))
    Dh = [r.standard_normal((B, T, H)) for _ in range(L + 1)]
    key_real = mask[:, None, None, :].astype(np.float64)                        # (B,1,1,T)
    Ds = [r.standard_normal((B, nh, T, T)) * key_real for _ in range(L)]
    Dp = [r.standard_normal((B, nh, T, T)) for _ in range(L)]

    def loss(_=None):
        logits, out, _ = M.classify_forward(params, config, ids, mask, types, rng=dropout_rng(),
                                            output_hidden=True, output_attentions=True)
        total = np.sum(logits * R)
        total += sum(np.sum(h * d) for h, d in zip(out.hidden_states, Dh))
        total += sum(np.sum(s * d) for s, d in zip(out.scores, Ds))
        total += sum(np.sum(p * d) for p, d in zip(out.attentions, Dp))
        return total

    _, _, cache = M.classify_forward(params, config, ids, mask, types, rng=dropout_rng())
    grads = M.classify_backward(R, cache, dhidden=Dh, dscores=Ds, dprobs=Dp)
    errors = check_all_params(loss, params, grads, np.random.default_rng(1))
    record("full model + extra grads", errors, 1e-5)


@pytest.mark.exercise("encoder_layer_backward")
def test_encoder_layer_gradients_input_and_every_parameter():
    # One layer, dropout on, padding bias, extra dscores/dprobs. Tolerance 1e-7: a single
    # layer's error should be at the finite-difference floor (~1e-9).
    config = tiny_config()
    params = params64(config)
    _, mask, _ = padded_batch(config)
    B, T, H, nh = len(LENGTHS), max(LENGTHS), config.hidden_size, config.num_heads
    r = np.random.default_rng(7)
    x = r.standard_normal((B, T, H))
    bias = mask_to_bias(mask, np.float64)
    dy = r.standard_normal((B, T, H))
    ds = r.standard_normal((B, nh, T, T)) * mask[:, None, None, :]
    dp = r.standard_normal((B, nh, T, T))
    layer = {k: v for k, v in params.items() if k.startswith("encoder.1.")}

    def loss(_=None):
        y, c = M.encoder_layer_forward(params, config, 1, x, bias, dropout_rng())
        return np.sum(y * dy) + np.sum(c.attn.scores * ds) + np.sum(c.attn.probs * dp)

    y, cache = M.encoder_layer_forward(params, config, 1, x, bias, dropout_rng())
    dx, grads = M.encoder_layer_backward(dy, cache, ds, dp)
    errors = check_all_params(loss, layer, grads, np.random.default_rng(2))
    errors["x"] = check_tensor(loss, x, dx, np.random.default_rng(3), max_checks=40)
    record("encoder layer", errors, 1e-7)


def test_embeddings_gradients_every_parameter():
    # Word + position + token type, LayerNorm, dropout. Tolerance 1e-7 (one block).
    config = tiny_config()
    params = params64(config)
    ids, _, types = padded_batch(config)
    dh = np.random.default_rng(8).standard_normal((len(LENGTHS), max(LENGTHS), config.hidden_size))
    emb = {k: v for k, v in params.items() if k.startswith("embeddings.")}

    def loss(_=None):
        return np.sum(M.embeddings_forward(params, config, ids, types, dropout_rng())[0] * dh)

    _, cache = M.embeddings_forward(params, config, ids, types, dropout_rng())
    grads = M.embeddings_backward(dh, cache)
    # Position rows >= T are unused: their gradient must be exactly zero.
    assert not grads["embeddings.position"][max(LENGTHS):].any()
    errors = check_all_params(loss, emb, grads, np.random.default_rng(4))
    record("embeddings", errors, 1e-7)


@pytest.mark.parametrize("pooler", [True, False])
def test_classifier_head_gradients(pooler):
    # [CLS] -> (pooler tanh) -> dropout -> linear. Tolerance 1e-7 (one block).
    config = tiny_config(pooler=pooler)
    params = params64(config)
    r = np.random.default_rng(9)
    last = r.standard_normal((3, 5, config.hidden_size))
    dlogits = r.standard_normal((3, config.num_labels))
    head = {k: v for k, v in params.items() if k.startswith(("pooler.", "classifier."))}

    def loss(_=None):
        return np.sum(M.classifier_forward(params, config, last, dropout_rng())[0] * dlogits)

    _, cache = M.classifier_forward(params, config, last, dropout_rng())
    dlast, grads = M.classifier_backward(dlogits, cache)
    assert not dlast[:, 1:].any()          # only [CLS] feeds the head
    errors = check_all_params(loss, head, grads, np.random.default_rng(10))
    errors["last"] = check_tensor(loss, last, dlast, np.random.default_rng(11), max_checks=40)
    record(f"classifier head (pooler={pooler})", errors, 1e-7)


def test_mlm_model_gradients_including_the_tied_word_embeddings():
    # Encoder + MLM head; embeddings.word is used twice (input embedding and tied decoder), so
    # its gradient is the SUM of the two paths. Tolerance 1e-5 (whole network).
    config = tiny_config(num_labels=0, pooler=False, mlm_head=True)
    params = params64(config)
    ids, mask, types = padded_batch(config)
    R = np.random.default_rng(12).standard_normal((len(LENGTHS), max(LENGTHS), config.vocab_size))

    def loss(_=None):
        out, _ = M.bert_forward(params, config, ids, mask, types, rng=dropout_rng())
        return np.sum(M.mlm_forward(params, config, out.last)[0] * R)

    out, cache = M.bert_forward(params, config, ids, mask, types, rng=dropout_rng())
    logits, mlm_cache = M.mlm_forward(params, config, out.last)
    assert logits.shape == (len(LENGTHS), max(LENGTHS), config.vocab_size)
    dlast, mlm_grads = M.mlm_backward(R, mlm_cache)
    encoder_grads = M.bert_backward(dlast, cache)
    word_from_decoder = mlm_grads["embeddings.word"].copy()
    word_from_encoder = encoder_grads["embeddings.word"].copy()
    grads = M.add_grads(encoder_grads, mlm_grads)
    np.testing.assert_array_equal(grads["embeddings.word"], word_from_encoder + word_from_decoder)
    errors = check_all_params(loss, params, grads, np.random.default_rng(13))
    record("MLM model (tied word embeddings)", errors, 1e-5)
    # Both paths matter: either gradient alone is wrong on the rows the batch uses.
    used = np.unique(ids)
    full = numerical_vjp(loss, params["embeddings.word"], np.float64(1.0), h=1e-5,
                         indices=np.ravel_multi_index((used, np.zeros_like(used)),
                                                      params["embeddings.word"].shape))
    assert rel_error(full, grads["embeddings.word"][used, 0]) <= 1e-5
    assert rel_error(full, word_from_decoder[used, 0]) > 1e-3
    assert rel_error(full, word_from_encoder[used, 0]) > 1e-3


# ----------------------------------------------------------------------------------------------
# dtype, determinism, padding, caches


def test_float32_in_float32_out_everywhere():
    config = tiny_config(mlm_head=True)
    params = M.init_params(config, np.random.default_rng(0), dtype=np.float32)
    ids, mask, types = padded_batch(config)
    logits, out, cache = M.classify_forward(params, config, ids, mask.astype(bool), types,
                                            rng=np.random.default_rng(0),
                                            output_hidden=True, output_attentions=True)
    tensors = {"logits": logits, "last": out.last}
    tensors.update({f"hidden[{i}]": h for i, h in enumerate(out.hidden_states)})
    tensors.update({f"attentions[{i}]": a for i, a in enumerate(out.attentions)})
    tensors.update({f"scores[{i}]": s for i, s in enumerate(out.scores)})
    mlm_logits, mlm_cache = M.mlm_forward(params, config, out.last)
    tensors["mlm_logits"] = mlm_logits
    grads = M.classify_backward(np.ones_like(logits), cache,
                                dhidden=[np.ones_like(h) for h in out.hidden_states],
                                dscores=[np.ones_like(s) for s in out.scores],
                                dprobs=[np.ones_like(a) for a in out.attentions])
    dlast, mlm_grads = M.mlm_backward(np.ones_like(mlm_logits), mlm_cache)
    grads = M.add_grads(grads, mlm_grads)
    tensors["mlm dlast"] = dlast
    tensors.update({f"grad {k}": g for k, g in grads.items()})
    tensors["mean_pool"] = M.mean_pool(out.last, mask)
    tensors["l2_normalize"] = M.l2_normalize(tensors["mean_pool"])
    assert set(grads) == set(params)
    wrong = {k: v.dtype for k, v in tensors.items() if v.dtype != np.float32}
    assert not wrong, f"not float32: {wrong}"


def test_same_seed_is_bit_identical_and_another_seed_differs():
    config = tiny_config()
    params = M.init_params(config, np.random.default_rng(0))
    ids, mask, types = padded_batch(config)

    def run(seed):
        logits, out, cache = M.classify_forward(params, config, ids, mask, types,
                                                rng=np.random.default_rng(seed), output_hidden=True)
        return logits, out.hidden_states, M.classify_backward(np.ones_like(logits), cache)

    a, b, c = run(3), run(3), run(4)
    np.testing.assert_array_equal(a[0], b[0])
    for ha, hb in zip(a[1], b[1]):
        np.testing.assert_array_equal(ha, hb)
    for k in a[2]:
        np.testing.assert_array_equal(a[2][k], b[2][k], err_msg=k)
    assert not np.array_equal(a[0], c[0])                           # other dropout masks
    assert not np.array_equal(a[2]["encoder.0.ffn.in.W"], c[2]["encoder.0.ffn.in.W"])
    # init_params: same seed, same weights; another seed, other weights.
    same = M.init_params(config, np.random.default_rng(0))
    other = M.init_params(config, np.random.default_rng(1))
    assert all(np.array_equal(params[k], same[k]) for k in params)
    assert not np.array_equal(params["embeddings.word"], other["embeddings.word"])


def test_ids_under_padding_do_not_change_real_outputs_or_logits():
    # Padded keys get a -1e9 bias, so exp() of their scores is exactly 0: the real positions
    # must not see them. float32, eval mode; tolerance 1e-6 only for BLAS summation order.
    config = tiny_config()
    params = M.init_params(config, np.random.default_rng(0))
    ids, mask, types = padded_batch(config)
    other = ids.copy()
    pad = mask == 0
    other[pad] = np.random.default_rng(1).integers(1, config.vocab_size, size=pad.sum())
    other_types = types.copy()
    other_types[pad] = 1
    a_logits, a, _ = M.classify_forward(params, config, ids, mask, types, output_hidden=True)
    b_logits, b, _ = M.classify_forward(params, config, other, mask, other_types, output_hidden=True)
    assert not np.allclose(a.last[pad], b.last[pad])                # the padded inputs did change
    real = mask == 1
    for ha, hb in zip(a.hidden_states, b.hidden_states):
        np.testing.assert_allclose(ha[real], hb[real], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a_logits, b_logits, rtol=1e-6, atol=1e-6)
    # Trailing padding is also invisible: a sequence alone (T = its length) gives the same output.
    alone, _ = M.bert_forward(params, config, ids[1:2, :LENGTHS[1]], None, types[1:2, :LENGTHS[1]])
    np.testing.assert_allclose(alone.last[0], a.last[1, :LENGTHS[1]], rtol=1e-5, atol=1e-5)


def test_keep_cache_false_gives_the_same_outputs_and_no_cache():
    config = tiny_config()
    kw = dict(output_hidden=True, output_attentions=True)
    ids, mask, types = padded_batch(config)
    # keep_cache=False runs the same padded code, with dropout and in eval mode: bit-identical.
    # (fast_model.bert_forward skips the padding in eval mode instead: tests/test_fast_model.py.)
    for dtype, rng_seed in ((np.float32, 2), (np.float64, None)):
        params = M.init_params(config, np.random.default_rng(0), dtype)
        rngs = [None if rng_seed is None else np.random.default_rng(rng_seed) for _ in range(2)]
        a, cache_a = M.bert_forward(params, config, ids, mask, types, rng=rngs[0], **kw)
        b, cache_b = M.bert_forward(params, config, ids, mask, types, rng=rngs[1], keep_cache=False, **kw)
        assert cache_a is not None and cache_b is None
        for field in ("hidden_states", "attentions", "scores"):
            for x, y in zip(getattr(a, field), getattr(b, field)):
                np.testing.assert_array_equal(x, y, err_msg=field)
        np.testing.assert_array_equal(a.last, b.last)
        la, _, _ = M.classify_forward(params, config, ids, mask, types)
        lb, _, cb = M.classify_forward(params, config, ids, mask, types, keep_cache=False)
        assert cb is None
        np.testing.assert_array_equal(lb, la)
    with pytest.raises(ValueError, match="keep_cache"):
        M.bert_backward(np.ones_like(b.last), cb)
    # Outputs not asked for are None.
    c, _ = M.bert_forward(params, config, ids, mask, types, keep_cache=False)
    assert c.hidden_states is None and c.attentions is None and c.scores is None


# ----------------------------------------------------------------------------------------------
# Config, parameters, pooling


def test_config_round_trips_and_rejects_unknown_or_inconsistent_values():
    config = tiny_config(labels=["neg", "neu", "pos"])
    assert M.BertConfig.from_dict(config.to_dict()) == config
    assert config.head_size == 8
    with pytest.raises(ValueError, match="unknown key.*hiden_size"):
        M.BertConfig.from_dict({**config.to_dict(), "hiden_size": 16})
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_heads=4"):
        M.BertConfig.from_dict({**config.to_dict(), "hidden_size": 30, "num_heads": 4})
    with pytest.raises(ValueError, match="labels has 2 names but num_labels=3"):
        M.BertConfig.from_dict({**config.to_dict(), "labels": ["a", "b"]})
    with pytest.raises(ValueError, match="num_layers"):
        M.BertConfig.from_dict({**config.to_dict(), "num_layers": 2.5})
    with pytest.raises(ValueError, match="hidden_dropout"):
        M.BertConfig.from_dict({**config.to_dict(), "hidden_dropout": 1.5})


def test_param_shapes_init_params_and_count_params():
    config = tiny_config(mlm_head=True)
    shapes = M.param_shapes(config)
    V, H, I, P, C, L = 50, 16, 32, 16, 3, 2
    per_layer = H * 3 * H + 3 * H + H * H + H + 2 * H + H * I + I + I * H + H + 2 * H
    expected = (V * H + P * H + 2 * H + 2 * H + L * per_layer + H * H + H + H * C + C
                + H * H + H + 2 * H + V)
    params = M.init_params(config, np.random.default_rng(0), dtype=np.float64)
    assert list(params) == list(shapes)
    assert {k: v.shape for k, v in params.items()} == shapes
    assert M.count_params(params) == expected
    assert all(v.dtype == np.float64 for v in params.values())
    assert np.all(params["encoder.0.attn.ln.gamma"] == 1) and not params["encoder.0.attn.ln.beta"].any()
    assert not params["encoder.1.ffn.in.b"].any() and not params["mlm.bias"].any()
    std = params["encoder.0.ffn.in.W"].std()
    assert 0.017 < std < 0.023                                   # N(0, 0.02), 512 samples
    assert "pooler.W" not in M.param_shapes(tiny_config(pooler=False))
    assert "classifier.W" not in M.param_shapes(tiny_config(num_labels=0))


def test_mean_pool_averages_real_tokens_and_l2_normalize_gives_unit_rows():
    last = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    pooled = M.mean_pool(last, mask)
    np.testing.assert_allclose(pooled, [last[0, :2].mean(0), last[1, 0]])
    unit = M.l2_normalize(pooled)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-6)
    assert pooled.dtype == unit.dtype == np.float32


# ----------------------------------------------------------------------------------------------
# Bad input: each raises a ValueError naming the argument and the shapes/values


@pytest.fixture
def tiny_model():
    config = tiny_config()
    params = M.init_params(config, np.random.default_rng(0))
    ids, mask, types = padded_batch(config)
    return config, params, ids, mask, types


def test_bad_ids_are_rejected_with_a_clear_message(tiny_model):
    config, params, ids, mask, types = tiny_model
    bad = ids.copy()
    bad[0, 1] = 50
    with pytest.raises(ValueError, match=r"ids: token id 50 out of range \[0, 50\)"):
        M.bert_forward(params, config, bad, mask)
    bad[0, 1] = -1
    with pytest.raises(ValueError, match=r"ids: token id -1 out of range"):
        M.bert_forward(params, config, bad, mask)
    with pytest.raises(ValueError, match="ids: expected an integer array, got dtype float64"):
        M.bert_forward(params, config, ids.astype(np.float64), mask)
    with pytest.raises(ValueError, match=r"ids: expected a non-empty shape \(B, T\), got \(7,\)"):
        M.bert_forward(params, config, ids[0], mask)
    long_ids = np.ones((1, 17), dtype=np.int64)
    with pytest.raises(ValueError, match="T=17 exceeds the position table size max_position=16"):
        M.bert_forward(params, config, long_ids)


def test_bad_mask_and_token_types_are_rejected(tiny_model):
    config, params, ids, mask, types = tiny_model
    with pytest.raises(ValueError, match=r"mask: expected shape \(3, 7\) like ids, got \(3, 6\)"):
        M.bert_forward(params, config, ids, mask[:, :6])
    with pytest.raises(ValueError, match="mask: expected only 0"):
        M.bert_forward(params, config, ids, mask * 2)
    with pytest.raises(ValueError, match=r"token_type_ids: expected shape \(3, 7\).*got \(3, 5\)"):
        M.bert_forward(params, config, ids, mask, types[:, :5])
    with pytest.raises(ValueError, match=r"token_type_ids: value 2 out of range \[0, 2\)"):
        M.bert_forward(params, config, ids, mask, types + 1)


def test_bad_params_are_rejected_naming_the_key_and_shapes(tiny_model):
    config, params, ids, mask, types = tiny_model
    missing = dict(params)
    del missing["encoder.1.ffn.in.W"]
    with pytest.raises(ValueError, match=r"params: missing key\(s\) \['encoder.1.ffn.in.W'\]"):
        M.bert_forward(missing, config, ids, mask)
    extra = {**params, "encoder.2.ffn.in.W": params["encoder.1.ffn.in.W"]}
    with pytest.raises(ValueError, match="unexpected key.*encoder.2.ffn.in.W"):
        M.bert_forward(extra, config, ids, mask)
    wrong = {**params, "encoder.0.attn.qkv.W": np.zeros((16, 16), np.float32)}
    with pytest.raises(ValueError, match=r"params\['encoder.0.attn.qkv.W'\]: expected shape "
                                         r"\(16, 48\), got \(16, 16\)"):
        M.bert_forward(wrong, config, ids, mask)
    mixed = {**params, "pooler.b": params["pooler.b"].astype(np.float64)}
    with pytest.raises(ValueError, match=r"params\['pooler.b'\]: dtype float64 differs"):
        M.bert_forward(mixed, config, ids, mask)


def test_bad_extra_gradients_are_rejected(tiny_model):
    config, params, ids, mask, types = tiny_model
    out, cache = M.bert_forward(params, config, ids, mask, output_hidden=True)
    with pytest.raises(ValueError, match="dhidden: expected a list of 3"):
        M.bert_backward(out.last, cache, dhidden=out.hidden_states[:2])
    with pytest.raises(ValueError, match=r"dscores\[1\]: expected shape \(3, 2, 7, 7\)"):
        M.bert_backward(out.last, cache, dscores=[None, np.zeros((3, 2, 7, 6))])
    with pytest.raises(ValueError, match=r"dlast: expected shape \(3, 7, 16\)"):
        M.bert_backward(out.last[:, :3], cache)

