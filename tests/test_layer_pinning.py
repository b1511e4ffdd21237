"""Which teacher layer feeds which student layer, pinned for every intermediate loss.

The gradient checks of the distillation step cannot see a wrong layer: an off-by-one in the
teacher targets (scores of block g[j] instead of g[j]-1, hidden state g[j]-1 instead of g[j])
gives a different but equally differentiable loss, and every gradient check still passes.
So here the teacher's layers are made distinguishable and each target is traced back to the
one teacher layer it came from.

The teacher: a tiny 6-layer BERT whose block i ends in a LayerNorm with gamma = 1 and
beta = SIGNATURE * (i + 1), so hidden state t (0 = embeddings, beta 0) has feature mean exactly
SIGNATURE * t at every real token; the input of block i then carries that offset into its
queries, keys and values too, so every layer's scores and values differ from every other's by
far more than rounding. `source_layer` compares a target with each layer of an independent
reference forward (the padded, cache-keeping path, not the teacher's cache-free one) and
returns the unique layer it equals.

The student side: feeding the student its OWN hidden states / scores as targets must give a
loss of exactly 0 for that term and the gradient of the plain KD loss; if the objective
paired student state j with target j +- 1, the term would be large.
"""

from __future__ import annotations

import numpy as np
import pytest

from minibert import fast_model
from minibert import objective as O
from minibert import student as S
from minibert.teacher_cache import TeacherCache
from minibert.model import bert_forward, init_params
from minibert.batches import make_batch
from tiny import tiny_config

SIGNATURE = 10.0      # hidden state t has feature mean SIGNATURE * t
MATCH_TOL = 1e-4      # float32 teacher outputs vs the float32 reference: rounding only (~1e-6)
DISTINCT = 1.0        # every two layers differ somewhere by more than this (checked)


def signature_teacher(num_layers=6, seed=0):
    """Tiny teacher params/config with layer-specific LayerNorm betas (see the module docstring)."""
    config = tiny_config(num_labels=3, num_layers=num_layers)
    params = init_params(config, np.random.default_rng(seed))
    for i in range(num_layers):
        params[f"encoder.{i}.ffn.ln.gamma"][:] = 1.0
        params[f"encoder.{i}.ffn.ln.beta"][:] = SIGNATURE * (i + 1)
    return params, config


def padded_split(rng, n, T, vocab):
    from minibert.batches import EncodedSplit
    lengths = rng.integers(3, T + 1, size=n)
    lengths[0] = T
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(5, vocab, size=(n, T)) * mask
    return EncodedSplit(ids=ids, mask=mask, token_type_ids=np.zeros_like(ids),
                        labels=rng.integers(0, 3, size=n), lengths=lengths.astype(np.int64))


def reference_outputs(params, config, batch):
    """Every layer of the teacher on one batch, from the padded forward that keeps its caches:
    hidden (L+1) (B,T,H), scores (L) (B,nh,T,T)."""
    out, _ = bert_forward(params, config, batch.ids, batch.mask, batch.token_type_ids,
                          output_hidden=True, output_attentions=True)
    return out.hidden_states, out.scores


def _real(mask, ndim):
    """Boolean selector of real entries: (B,T,1) tokens for hidden states, (B,1,T,T) pairs."""
    m = mask.astype(bool)
    return m[:, :, None] if ndim == 3 else m[:, None, :, None] & m[:, None, None, :]


def source_layer(target, candidates, mask) -> int:
    """The index of the ONE candidate layer that `target` equals on real entries (padding is
    compared nowhere: the cache-free teacher forward zeroes it). Fails naming the distances."""
    sel = np.broadcast_to(_real(mask, target.ndim), target.shape)
    dist = [float(np.abs(target[sel] - c[sel]).max()) for c in candidates]
    hits = [k for k, d in enumerate(dist) if d <= MATCH_TOL]
    assert len(hits) == 1, f"target matches layers {hits}; max distances {dist}"
    return hits[0]


def test_signature_layers_are_distinguishable():
    """The test's own power: no two teacher layers agree, and hidden state t has mean 10 t."""
    params, config = signature_teacher()
    split = padded_split(np.random.default_rng(0), 8, 9, config.vocab_size)
    batch = make_batch(split, np.arange(8))
    hidden, scores = reference_outputs(params, config, batch)
    real = batch.mask.astype(bool)
    for t, h in enumerate(hidden):
        assert np.allclose(h[real].mean(axis=-1), SIGNATURE * t, atol=1e-4)
    for layers in (hidden, scores):
        sel = np.broadcast_to(_real(batch.mask, layers[0].ndim), layers[0].shape)
        for a in range(len(layers)):
            for b in range(a):
                assert np.abs(layers[a][sel] - layers[b][sel]).max() > DISTINCT, (a, b)


@pytest.mark.parametrize("n_student", [1, 2, 3, 6])
@pytest.mark.parametrize("stored", [True, False], ids=["cached", "recomputed"])
def test_teacher_targets_come_from_the_mapped_teacher_layers(n_student, stored):
    """TeacherBatch.hidden[j] is teacher hidden state g[j]; TeacherBatch.scores[j] is teacher
    block g[j+1]-1 (0-based): for 2 of 6 layers hidden 0->0, 1->3, 2->6 and blocks 0->2, 1->5.
    Both ways the cache can serve them: stored for the split, and recomputed per batch."""
    params, config = signature_teacher()
    g = S.uniform_layer_map(n_student, config.num_layers)
    settings = O.DistillSettings(hidden_weight=1.0, attention_weight=1.0, cosine_weight=1.0,
                                 layer_map=tuple(g))
    split = padded_split(np.random.default_rng(1), 10, 9, config.vocab_size)
    cache = TeacherCache(params, config, split, settings, batch_size=4,
                           max_mb=1e3 if stored else 0.0)
    assert cache.stored == stored
    batch = make_batch(split, np.array([7, 1, 4, 0]))          # unsorted rows: index lookup too
    tb = cache.batch(batch)
    hidden, scores = reference_outputs(params, config, batch)
    got_hidden = [source_layer(h, hidden, batch.mask) for h in tb.hidden]
    got_blocks = [source_layer(s, scores, batch.mask) for s in tb.scores]
    assert got_hidden == g, f"hidden targets come from teacher states {got_hidden}, map says {g}"
    assert got_blocks == [t - 1 for t in g[1:]], f"score targets from teacher blocks {got_blocks}"
    if n_student == 2:                                          # the mapping the CLI prints
        text = S.describe_mapping(None, 2, 6)
        assert "0->0, 1->3, 2->6" in text and "0->2, 1->5" in text
        assert got_hidden == [0, 3, 6] and got_blocks == [2, 5]


def _student_setup(n_student=2, seed=3):
    params, config = signature_teacher()
    sc = S.student_config(config, n_student)
    init = S.default_init_layers(n_student, config.num_layers)
    student = S.init_student(params, config, sc, init, np.random.default_rng(seed))
    split = padded_split(np.random.default_rng(seed), 6, 9, config.vocab_size)
    batch = make_batch(split, np.arange(6))
    return params, config, sc, student, batch


def _own_targets(student, sc, batch, logits):
    """A TeacherBatch holding the student's own hidden states and scores (eval mode), from the
    forward student_objective runs (fast_model's, with caches), so they are bit-identical."""
    out, _ = fast_model.bert_forward(student, sc, batch.ids, batch.mask, batch.token_type_ids,
                                     output_hidden=True, output_attentions=True)
    return O.TeacherBatch(logits, [h.copy() for h in out.hidden_states],
                          [s.copy() for s in out.scores])


def _objective(student, sc, batch, tb, settings):
    """student_objective on one batch, eval mode: (loss, grads, parts)."""
    return O.student_objective(student, sc, batch.ids, batch.mask, batch.token_type_ids,
                               batch.labels, tb, settings)


@pytest.mark.parametrize("term", ["hidden_weight", "attention_weight", "cosine_weight"])
def test_each_student_layer_is_compared_with_its_own_target(term):
    """Targets = the student's own states: the term is 0 and the gradient is the plain KD one.
    A student state j compared with target j+1 or j-1 would give a large term: the student's
    layers carry the teacher's signatures too (blocks 2 and 5 copied, means 0, 30, 60)."""
    _, _, sc, student, batch = _student_setup()
    teacher_logits = np.random.default_rng(4).standard_normal((6, 3)).astype(np.float32)
    tb = _own_targets(student, sc, batch, teacher_logits)
    g = tuple(S.uniform_layer_map(2, 6))
    plain = O.DistillSettings(0.5, 2.0, layer_map=g)
    with_term = plain._replace(**{term: 1.0})
    loss0, grads0, _ = _objective(student, sc, batch, tb, plain)
    loss1, grads1, parts = _objective(student, sc, batch, tb, with_term)
    name = term.removesuffix("_weight")
    assert abs(parts[name]) <= 1e-6, (name, parts)
    assert abs(loss1 - loss0) <= 1e-5
    for k in grads0:
        assert np.allclose(grads1[k], grads0[k], atol=1e-5), k
    # the same targets shifted by one layer: the term sees the difference (the test has power)
    shifted = tb._replace(hidden=tb.hidden[1:] + tb.hidden[:1],
                          scores=tb.scores[1:] + tb.scores[:1])
    _, _, parts_shifted = _objective(student, sc, batch, shifted, with_term)
    assert parts_shifted[name] > 1e-2, (name, parts_shifted)


def test_student_loss_equals_the_mapped_pairs_end_to_end():
    """Teacher cache -> objective: the hidden and attention terms equal the losses of
    (student state j, teacher state g[j]) and (student block j, teacher block g[j+1]-1),
    computed here from independent forwards of both models."""
    from minibert.losses import attention_mse, hidden_mse
    params, config, sc, student, batch = _student_setup()
    g = S.uniform_layer_map(2, 6)
    settings = O.DistillSettings(0.5, 2.0, hidden_weight=1.0, attention_weight=1.0,
                                 layer_map=tuple(g))
    split = padded_split(np.random.default_rng(3), 6, 9, config.vocab_size)
    cache = TeacherCache(params, config, split, settings, batch_size=4)
    _, _, parts = _objective(student, sc, batch, cache.batch(batch), settings)
    t_hidden, t_scores = reference_outputs(params, config, batch)
    s_hidden, s_scores = reference_outputs(student, sc, batch)
    want_h = sum(float(hidden_mse(s_hidden[j], t_hidden[g[j]], batch.mask)[0]) for j in range(3))
    want_a = sum(float(attention_mse(s_scores[j], t_scores[g[j + 1] - 1], batch.mask)[0])
                 for j in range(2))
    assert parts["hidden"] == pytest.approx(want_h, rel=1e-5)
    assert parts["attention"] == pytest.approx(want_a, rel=1e-5)
    # an off-by-one map gives clearly different values
    off_h = sum(float(hidden_mse(s_hidden[j], t_hidden[max(0, g[j] - 1)], batch.mask)[0])
                for j in range(3))
    assert abs(off_h - want_h) > 0.1 * want_h


# ----------------------------------------------------------------------------- MiniLM relations

def reference_values(params, config, batch):
    """Every teacher block's value vectors (B,nh,T,hs), from the padded forward's caches."""
    _, cache = bert_forward(params, config, batch.ids, batch.mask, batch.token_type_ids)
    return [layer.attn.v for layer in cache.layers]


@pytest.mark.parametrize("stored", [True, False], ids=["cached", "recomputed"])
def test_relation_targets_come_from_the_teachers_last_block(stored):
    """MiniLM needs no layer map: the relation targets are the scores and the values of the
    teacher's LAST block (5 of 0..5), whatever the student's depth."""
    params, config = signature_teacher()
    settings = O.DistillSettings(relation_weight=1.0, layer_map=tuple(S.uniform_layer_map(2, 6)))
    split = padded_split(np.random.default_rng(5), 10, 9, config.vocab_size)
    cache = TeacherCache(params, config, split, settings, batch_size=4,
                         max_mb=1e3 if stored else 0.0)
    assert cache.stored == stored
    batch = make_batch(split, np.array([3, 9, 0, 6]))
    scores_t, values_t = cache.batch(batch).relation
    _, scores = reference_outputs(params, config, batch)
    values = reference_values(params, config, batch)
    tokens = batch.mask.astype(bool)[:, None, :, None]                 # (B,1,T,1) real tokens
    assert source_layer(scores_t, scores, batch.mask) == 5
    dist = [float(np.abs(np.where(tokens, values_t - v, 0)).max()) for v in values]
    assert [k for k, d in enumerate(dist) if d <= MATCH_TOL] == [5], dist


def test_relation_term_compares_the_students_last_block():
    """Own last-block scores and values as targets: the relation term is 0 and the gradient
    is the plain KD one; block 0's targets instead give a clearly positive term."""
    _, _, sc, student, batch = _student_setup()
    teacher_logits = np.random.default_rng(6).standard_normal((6, 3)).astype(np.float32)
    out, cache = fast_model.bert_forward(student, sc, batch.ids, batch.mask, batch.token_type_ids,
                                         output_attentions=True)             # as student_objective
    own = [(out.scores[i].copy(), fast_model.attention_values(cache, i).copy()) for i in range(2)]
    plain = O.DistillSettings(0.5, 2.0, layer_map=tuple(S.uniform_layer_map(2, 6)))
    with_rel = plain._replace(relation_weight=1.0)
    loss0, grads0, _ = _objective(student, sc, batch, O.TeacherBatch(teacher_logits), plain)
    loss1, grads1, parts = _objective(student, sc, batch,
                                      O.TeacherBatch(teacher_logits, relation=own[1]), with_rel)
    assert abs(parts["relation"]) <= 1e-6 and abs(loss1 - loss0) <= 1e-5
    for k in grads0:
        assert np.allclose(grads1[k], grads0[k], atol=1e-5), k
    _, _, wrong = _objective(student, sc, batch, O.TeacherBatch(teacher_logits, relation=own[0]),
                             with_rel)
    assert wrong["relation"] > 1e-2
