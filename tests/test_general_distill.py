"""Tests for minibert/general_distill.py: the general-distillation objective's hand-written gradients
against float64 finite differences, the masking, the corpus reader's bad input, the settings' errors.

Gradient tolerance: rel_error <= 1e-6 over the checked entries, each entry's error relative to
max(|num| + |analytic|, 1e-3 * max|analytic|) (gradcheck's floor: an entry a thousand times smaller
than the largest carries the finite difference's own truncation error, ~1e-10 absolute, which is
not a wrong gradient). Everything runs in float64 with centred differences (h = 1e-5), so a correct
gradient measures ~1e-8 or better; a missing term or a wrong factor gives ~1e-1.
"""

import dataclasses

import numpy as np
import pytest

from minibert.errors import DataError, MinibertError
from minibert.general_distill import read_text_file
from minibert.general_objective import (GeneralSettings, check_general_settings, general_loss,
                                        general_student, mask_tokens, mlm_distill_loss,
                                        teacher_targets)
from minibert.student import PROJ_PREFIX
from minibert.gradcheck import numerical_vjp, rel_error
from minibert.model import init_params

import tiny

GRAD_TOL = 1e-6


def _models(student_hidden=16, teacher_mlm=True, dtype=np.float64):
    """A 4-layer teacher (hidden 32, 2 heads, MLM head) and a 2-layer student config."""
    tconfig = tiny.tiny_config(num_layers=4, hidden_size=32, num_heads=2, intermediate_size=48,
                               mlm_head=teacher_mlm, pooler=False)
    tparams = init_params(tconfig, np.random.default_rng(0), dtype=dtype)
    for k in tparams:                         # larger weights: non-trivial attention and MLM logits
        if k.endswith(".W") or k == "embeddings.word":
            tparams[k] *= dtype(8.0)
    config = dataclasses.replace(tconfig, num_layers=2, hidden_size=student_hidden,
                                 intermediate_size=2 * student_hidden)
    return tparams, tconfig, config


def _batch():
    V = len(tiny.VOCAB)
    rng = np.random.default_rng(1)
    ids = rng.integers(5, V, size=(3, 7))
    ids[:, 0] = 2
    mask = np.array([[1] * 7, [1] * 5 + [0] * 2, [1] * 4 + [0] * 3])
    ids[1, 4] = ids[2, 3] = 3                                             # [SEP]
    ids[mask == 0] = 0
    positions = np.array([[0, 2], [0, 5], [1, 1], [2, 2]])
    targets = ids[positions[:, 0], positions[:, 1]].copy()
    ids[positions[:, 0], positions[:, 1]] = 4                             # [MASK]
    return ids, mask, np.zeros_like(ids), positions, targets


def _check(name, f, x, analytic, n=25, seed=0):
    """Finite differences of the scalar f() w.r.t. n random entries of x (nudged in place)."""
    idx = np.random.default_rng(seed).choice(x.size, size=min(n, x.size), replace=False)
    num = numerical_vjp(lambda _: np.asarray(f(), dtype=np.float64), x, np.array(1.0), indices=idx)
    floor = max(1e-8, 1e-3 * float(np.abs(analytic).max()))
    err = rel_error(num, analytic.reshape(-1)[idx], floor=floor)
    print(f"gradcheck {name}: rel error {err:.1e}")
    assert err <= GRAD_TOL, f"{name}: rel error {err:.2e} > {GRAD_TOL}"


def test_mlm_distill_loss_gradients_match_finite_differences():
    tparams, tconfig, _ = _models()
    ids, mask, tt, pos, tgt = _batch()
    rng = np.random.default_rng(2)
    last = rng.standard_normal((3, 7, 32))
    t_logits = 3 * rng.standard_normal((len(pos), tconfig.vocab_size))
    params = {k: v.copy() for k, v in tparams.items()}

    def loss():
        return mlm_distill_loss(params, tconfig, last, pos, tgt, t_logits, 2.0, 5.0, 2.0)[0]

    _, dlast, grads, parts = mlm_distill_loss(params, tconfig, last, pos, tgt, t_logits, 2.0, 5.0, 2.0)
    assert parts["soft_mlm"] > 0 and parts["mlm"] > 0
    assert not dlast[1, 0].any() and not dlast[2, 5].any()          # only masked positions get gradient
    _check("dlast", loss, last, dlast, n=40)
    for name in ("mlm.transform.W", "mlm.ln.gamma", "mlm.bias", "embeddings.word"):
        _check(name, loss, params[name], grads[name], n=20)


@pytest.mark.parametrize("student_hidden,cosine", [(16, 0.0), (32, 1.0)])
def test_general_loss_gradients_match_finite_differences(student_hidden, cosine):
    # every term on: embedding + hidden (through projections when narrower) + attention
    # + soft and hard MLM (+ cosine when the widths match), with padding
    tparams, tconfig, config = _models(student_hidden)
    ids, mask, tt, pos, tgt = _batch()
    settings = GeneralSettings(1.0, 1.0, 0.5, soft_mlm_weight=5.0, mlm_weight=2.0,
                               cosine_weight=cosine, temperature=2.0, layer_map=(0, 2, 4))
    check_general_settings(settings, config, tconfig)
    params = general_student(tparams, tconfig, config, None, settings, np.random.default_rng(3))
    params = {k: v.astype(np.float64) for k, v in params.items()}
    for k in params:
        if k.endswith(".W") or k == "embeddings.word":
            params[k] *= 8.0
    assert (f"{PROJ_PREFIX}0.W" in params) == (student_hidden != 32)
    teacher = teacher_targets(tparams, tconfig, ids, mask, tt, settings, pos)

    def loss():
        return general_loss(params, config, ids, mask, tt, teacher, settings, pos, tgt)[0]

    value, grads, parts = general_loss(params, config, ids, mask, tt, teacher, settings, pos, tgt)
    assert set(grads) == set(params)
    assert all(parts[k] > 0 for k in ("embedding", "hidden", "attention", "soft_mlm", "mlm"))
    names = ["encoder.0.attn.qkv.W", "encoder.1.ffn.in.W", "embeddings.word",
             "embeddings.position", "embeddings.ln.gamma", "mlm.transform.W", "mlm.bias"]
    if student_hidden != 32:
        names += [f"{PROJ_PREFIX}0.W", f"{PROJ_PREFIX}2.b"]
    for name in names:
        _check(name, loss, params[name], grads[name])


def test_general_loss_stays_float32():
    tparams, tconfig, config = _models(dtype=np.float32)
    ids, mask, tt, pos, tgt = _batch()
    settings = GeneralSettings(soft_mlm_weight=5.0, mlm_weight=2.0, layer_map=(0, 2, 4))
    params = general_student(tparams, tconfig, config, None, settings, np.random.default_rng(3))
    teacher = teacher_targets(tparams, tconfig, ids, mask, tt, settings, pos)
    loss, grads, _ = general_loss(params, config, ids, mask, tt, teacher, settings, pos, tgt)
    assert np.isfinite(loss)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}


def test_mask_tokens_chooses_only_real_words_and_keeps_the_input():
    ids, mask, _, _, _ = _batch()
    special = np.zeros(len(tiny.VOCAB), bool)
    special[:5] = True
    before = ids.copy()
    m = mask_tokens(ids, mask, special, 4, 0.5, np.random.default_rng(0))
    assert np.array_equal(ids, before)                                   # not modified
    rows, cols = m.positions[:, 0], m.positions[:, 1]
    assert len(m.positions) >= 1
    assert (mask[rows, cols] == 1).all() and not special[before[rows, cols]].any()
    assert np.array_equal(m.targets, before[rows, cols])
    changed = m.ids != before
    assert not changed[mask == 0].any() and not changed[:, 0].any()      # padding, [CLS] untouched
    again = mask_tokens(ids, mask, special, 4, 0.5, np.random.default_rng(0))
    assert np.array_equal(again.ids, m.ids)                              # same seed, same corruption


def test_mask_tokens_follows_bert_80_10_10():
    rng = np.random.default_rng(5)
    ids = rng.integers(5, 60, size=(200, 50))
    special = np.zeros(60, bool)
    special[:5] = True
    m = mask_tokens(ids, np.ones_like(ids), special, 4, 0.15, rng)
    new = m.ids[m.positions[:, 0], m.positions[:, 1]]
    share = len(m.positions) / ids.size
    masked = np.mean(new == 4)
    kept = np.mean(new == m.targets)
    print(f"chosen {share:.3f}, [MASK] {masked:.3f}, kept {kept:.3f}")
    assert abs(share - 0.15) < 0.012                    # 10000 tokens: sd ~0.0036
    assert abs(masked - 0.8) < 0.03 and 0.08 < kept < 0.13   # kept: 10% (+ 10%/55 random hits)


def test_teacher_without_mlm_head_refuses_mlm_losses():
    tparams, tconfig, config = _models(teacher_mlm=False)
    s = GeneralSettings(mlm_weight=2.0, layer_map=(0, 2, 4))
    with pytest.raises(MinibertError, match="masked-LM head"):
        check_general_settings(s, config, tconfig)
    check_general_settings(s._replace(mlm_weight=0.0), config, tconfig)   # TinyBERT terms alone are fine


def test_settings_errors_name_the_flag():
    _, tconfig, config = _models()
    base = GeneralSettings(layer_map=(0, 2, 4))
    with pytest.raises(MinibertError, match="--cosine-weight"):
        check_general_settings(base._replace(cosine_weight=1.0), config, tconfig)   # 16 vs 32 wide
    with pytest.raises(MinibertError, match="learn nothing"):
        check_general_settings(base._replace(embedding_weight=0.0, hidden_weight=0.0,
                                             attention_weight=0.0), config, tconfig)
    with pytest.raises(MinibertError, match="--hidden-weight"):
        check_general_settings(base._replace(hidden_weight=-1.0), config, tconfig)


@pytest.mark.parametrize("content,match", [
    (b"", "no sentences"), (b"\n  \n\t\n", "no sentences"),
    (b"PK\x03\x04\x00\x00binary", "not a text file"),
    (b"good line\n\xff\xfe bad line\n", "line 2 is not valid UTF-8"),
])
def test_text_file_bad_input(tmp_path, content, match):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        read_text_file(path)


def test_text_file_reads_one_sentence_a_line(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\ufeffthe movie was good\n\n  a bad film  \r\nlast line", encoding="utf-8")
    assert read_text_file(path) == ["the movie was good", "a bad film", "last line"]
    with pytest.raises(DataError, match="no such file"):
        read_text_file(tmp_path / "missing.txt")
