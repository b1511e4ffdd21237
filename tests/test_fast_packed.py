"""The packed training path (minibert/fast_packed.py) beyond tests/test_fast.py's equality cases:
it is what fast_model runs when, and only when, it can be; it draws exactly the reference's
dropout numbers; the objectives and a whole fit() give the reference's results; bad input errors.

Tolerances as tests/test_fast.py (normwise relative error per tensor): float64 1e-12, float32 5e-6
for one step; a whole fit is held to 1e-10 in float64 and 1e-5 in float32, except the key block
of attn.qkv.b, whose exact gradient is 0 (see the test). The same fit with another seed lands far
away, so the comparison cannot pass by accident.
"""

from __future__ import annotations

import numpy as np
import pytest

from minibert import fast_model as F
from minibert import fast_packed as FP
from minibert import model as M
from minibert.batches import EncodedSplit, train_batches
from minibert.model import BertCache
from minibert.objective import DistillSettings, TeacherBatch, student_objective
from minibert.train import TrainConfig, fit, make_classify_step
from test_fast import model_params, normwise, padded_batch, tiny_config


def test_the_packed_path_runs_exactly_when_it_can():
    config = tiny_config()
    params = model_params(config, np.float32)
    rng = np.random.default_rng(0)
    ids, mask, types = padded_batch(config, (5, 3, 1))
    assert isinstance(F.bert_forward(params, config, ids, mask, types, rng)[1], FP.PackedCache)
    assert isinstance(F.bert_forward(params, config, ids, mask, types)[1], FP.PackedCache)  # no dropout
    out, cache = F.bert_forward(params, config, ids, mask, types, rng, keep_cache=False)
    assert cache is None and np.all(out.last[~mask.astype(bool)] == 0)
    # no padding: the padded path is the same work; a row whose position 0 is padding (an empty
    # row, left padding) has no [CLS] the head could read: the padded path, as the reference
    full = np.ones_like(mask)
    assert isinstance(F.bert_forward(params, config, ids, full, types, rng)[1], BertCache)
    left = mask[:, ::-1].copy()
    assert isinstance(F.bert_forward(params, config, ids, left, types, rng)[1], BertCache)
    empty, _, _ = padded_batch(config, (5, 0, 2))
    assert isinstance(F.bert_forward(params, config, empty, (empty > 0).astype(int), types[:, :5],
                                     rng)[1], BertCache)


def test_the_packed_path_draws_exactly_the_references_random_numbers():
    """Same rng calls, same shapes and order: after a training forward both generators are in
    the same state, so every later draw (the head's dropout, the next batch) agrees too."""
    config = tiny_config(pruned_heads={"1": [0]})
    params = model_params(config, np.float32)
    ids, mask, types = padded_batch(config, (6, 2, 4))
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    _, _, cache = F.classify_forward(params, config, ids, mask, types, rng=a)
    M.classify_forward(params, config, ids, mask, types, rng=b)
    assert isinstance(cache.bert, FP.PackedCache)
    assert a.bit_generator.state == b.bit_generator.state
    assert a.random() == b.random()


def test_gathers_for_gaps_in_the_mask_equal_the_reference():
    """A mask with a hole (positions not one run): the dropout blocks and the extra gradients are
    gathered, not sliced; forward and gradients still equal the reference."""
    config = tiny_config()
    params = model_params(config, np.float64)
    ids, mask, types = padded_batch(config, (6, 6, 3))
    mask[0, 2] = 0
    mask[1, 4] = 0
    kw = dict(output_attentions=True)
    of, cf = F.bert_forward(params, config, ids, mask, types, np.random.default_rng(4), **kw)
    o_r, cr = M.bert_forward(params, config, ids, mask, types, np.random.default_rng(4), **kw)
    real = mask.astype(bool)
    pair = np.broadcast_to(real[:, None, :, None] & real[:, None, None, :], o_r.scores[0].shape)
    assert normwise(of.last[real], o_r.last[real]) <= 1e-12
    rng = np.random.default_rng(5)
    dlast = rng.standard_normal(o_r.last.shape) * real[..., None]
    dscores = [rng.standard_normal(s.shape) * pair for s in o_r.scores]
    gf = F.bert_backward(dlast, cf, dscores=dscores)
    gr = M.bert_backward(dlast, cr, dscores=dscores)
    worst = max(normwise(gf[k], gr[k]) for k in gr)
    assert worst <= 1e-12, worst


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 5e-6)])
def test_the_distillation_objective_equals_the_padded_path(dtype, tol, monkeypatch):
    """student_objective with every intermediate term (hidden MSE through a projection, cosine,
    attention MSE, MiniLM's relations, which read the values): packed vs padded, same seed."""
    config = tiny_config(hidden_dropout=0.1, attention_dropout=0.1)
    params = model_params(config, dtype, seed=7)
    ids, mask, types = padded_batch(config, (7, 1, 4, 7), seed=7)
    B, T = ids.shape
    rng = np.random.default_rng(8)
    H, Ht, nh = config.hidden_size, 24, config.num_heads
    params["distill.proj.1.W"] = rng.standard_normal((H, Ht)).astype(dtype)
    params["distill.proj.1.b"] = rng.standard_normal(Ht).astype(dtype)
    teacher = TeacherBatch(rng.standard_normal((B, 3)).astype(dtype),
                           [rng.standard_normal((B, T, H if j != 1 else Ht)).astype(dtype) for j in range(3)],
                           [rng.standard_normal((B, nh, T, T)).astype(dtype) for _ in range(2)],
                           (rng.standard_normal((B, nh, T, T)).astype(dtype),
                            rng.standard_normal((B, nh, T, 6)).astype(dtype)))
    settings = DistillSettings(alpha=0.5, temperature=2.0, hidden_weight=1.0, attention_weight=0.5,
                               cosine_weight=0.3, relation_weight=0.7, layer_map=(0, 1, 2))
    labels = np.array([0, 2, -1, 1])
    args = (params, config, ids, mask, types, labels, teacher, settings)
    lp, gp, pp = student_objective(*args, rng=np.random.default_rng(9))
    monkeypatch.setattr(F, "bert_forward", lambda *a, **k: M.bert_forward(*a, **k, fast=True))
    lr, gr, pr = student_objective(*args, rng=np.random.default_rng(9))
    assert all(pp[k] > 0 for k in ("hidden", "attention", "cosine", "relation"))
    assert abs(lp - lr) <= tol * abs(lr)
    worst = {k: normwise(gp[k], gr[k]) for k in gr}
    assert sorted(gp) == sorted(gr) and max(worst.values()) <= tol, worst


packed_forward = FP.bert_forward


def _split(n=24, T=9, seed=0, vocab=50):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=n)
    lengths[0] = T
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(5, vocab, size=(n, T)) * mask
    labels = rng.integers(0, 3, size=n)
    ids[np.arange(n), 0] = 1 + labels                              # the label is in [CLS]'s slot
    return EncodedSplit(ids=ids, mask=mask, token_type_ids=np.zeros_like(ids), labels=labels,
                        lengths=lengths)


def _reference_step(config):
    """make_classify_step with model.py's padded reference (what the packed path stands in for)."""
    from minibert.losses import cross_entropy

    def step(params, batch, rng):
        logits, _, cache = M.classify_forward(params, config, batch.ids, batch.mask,
                                              batch.token_type_ids, rng=rng)
        loss, dlogits = cross_entropy(logits, batch.labels)
        return loss, M.classify_backward(dlogits, cache), {}
    return step


def _fit(out, config, dtype, step, epochs=2, seed=0):
    params = model_params(config, dtype, seed=0)
    split = _split()
    tcfg = TrainConfig(epochs=epochs, lr=1e-3, batch_size=8, warmup=0.1, seed=seed, progress=False)
    res = fit(params, step, lambda epoch, rng: train_batches(split, 8, rng),
              lambda p: {"accuracy": 0.0}, out, tcfg, run_config={"model": "tiny"})
    return params, res


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-5)])
def test_a_whole_fit_gives_the_reference_params(tmp_path, dtype, tol, monkeypatch):
    config = tiny_config(mlm_head=False)
    calls = []
    monkeypatch.setattr(FP, "bert_forward", lambda *a, **k: calls.append(1) or packed_forward(*a, **k))
    packed, res_p = _fit(tmp_path / "packed", config, dtype, make_classify_step(config))
    assert len(calls) == len(res_p.step_losses)                    # every step ran packed
    ref, res_r = _fit(tmp_path / "ref", config, dtype, _reference_step(config))
    other, _ = _fit(tmp_path / "other", config, dtype, _reference_step(config), seed=1)
    assert max(normwise(other[k], ref[k]) for k in ref) > 100 * tol   # another seed: far away
    # The key block of attn.qkv.b has gradient exactly 0 (softmax ignores a constant added to a
    # query's scores; b_k adds q . b_k to all of them), so each path feeds AdamW its own rounding
    # noise there and AdamW makes steps of up to ~lr of it: held apart, to 2 lr per step.
    H = config.hidden_size
    keys = [k for k in ref if k.endswith("attn.qkv.b")]
    for k in keys:
        assert np.max(np.abs(packed[k][H:2 * H] - ref[k][H:2 * H])) <= 2 * 1e-3 * len(res_r.step_losses)
        packed[k], ref[k] = np.delete(packed[k], np.s_[H:2 * H]), np.delete(ref[k], np.s_[H:2 * H])
    worst = {k: normwise(packed[k], ref[k]) for k in ref}
    print(f"{np.dtype(dtype).name}: worst parameter after the fit", max(worst.values()))
    assert max(worst.values()) <= tol, sorted(worst.items(), key=lambda kv: -kv[1])[:3]
    np.testing.assert_allclose(res_p.step_losses, res_r.step_losses, rtol=tol * 10)


def test_resume_replays_the_packed_run_exactly(tmp_path):
    config = tiny_config(mlm_head=False)
    full, _ = _fit(tmp_path / "full", config, np.float32, make_classify_step(config))
    calls = {"n": 0}
    inner = make_classify_step(config)

    def interrupted(params, batch, rng):
        calls["n"] += 1
        if calls["n"] == 5:                                        # in epoch 2 (3 steps per epoch)
            raise KeyboardInterrupt
        return inner(params, batch, rng)

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", config, np.float32, interrupted)
    params = model_params(config, np.float32, seed=0)
    split = _split()
    tcfg = TrainConfig(epochs=2, lr=1e-3, batch_size=8, warmup=0.1, seed=0, progress=False)
    fit(params, inner, lambda epoch, rng: train_batches(split, 8, rng), lambda p: {"accuracy": 0.0},
        tmp_path / "cut", tcfg, resume=True, run_config={"model": "tiny"})
    for k in full:
        np.testing.assert_array_equal(params[k], full[k], err_msg=k)


def test_bad_caches_and_gradients_are_clear_errors():
    config = tiny_config()
    params = model_params(config, np.float32)
    ids, mask, types = padded_batch(config, (5, 3))
    out, packed = F.bert_forward(params, config, ids, mask, types, np.random.default_rng(0))
    _, padded = M.bert_forward(params, config, ids, mask, types, np.random.default_rng(0))
    with pytest.raises(ValueError, match="cache: expected the BertCache.*fast_model.bert_backward"):
        M.bert_backward(out.last, packed)
    with pytest.raises(ValueError, match="cache: expected the PackedCache"):
        FP.bert_backward(out.last, padded)
    with pytest.raises(ValueError, match="cache: expected the cache of fast_model.bert_forward.*keep_cache"):
        F.bert_backward(out.last, None)
    with pytest.raises(ValueError, match="cache: expected the ClassifyCache"):
        F.classify_backward(np.zeros((2, 3), np.float32), packed)
    with pytest.raises(ValueError, match=r"dlast: expected shape \(2, 5, 16\)"):
        F.bert_backward(out.last[:, :4], packed)
    B, T = ids.shape
    with pytest.raises(ValueError, match=r"dscores\[1\]: expected shape \(2, 2, 5, 5\)"):
        F.bert_backward(None, packed, dscores=[None, np.zeros((2, 2, 4, 4), np.float32)])
    with pytest.raises(ValueError, match=r"dvalues\[0\]: expected shape \(2, 2, 5, 8\)"):
        F.bert_backward(None, packed, dvalues=[np.zeros((2, 2, 5, 16), np.float32), None])
    with pytest.raises(ValueError, match="dhidden: expected a list of 3"):
        F.bert_backward(None, packed, dhidden=[None])
    with pytest.raises(ValueError, match="rng: expected a np.random.Generator"):
        F.bert_forward(params, config, ids, mask, types, rng=0)
