"""Distillation: layer mapping, student initialisation, the full loss's gradients, the teacher
cache, the `minibert distill` command and its errors. Tiny models only: the file runs in seconds."""

from __future__ import annotations

import json
import shutil
from argparse import Namespace

import numpy as np
import pytest

from minibert import distill as D
from minibert import objective as O
from minibert import student as S
from minibert import teacher_cache as TC
from minibert.cli import main
from minibert.errors import MinibertError
from minibert.gradcheck import check_gradients
from minibert.model import init_params
from minibert.batches import make_batch
from tiny import count_teacher_forwards, make_tiny_model_dir, tiny_config, write_tiny_dataset


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """A 4-layer tiny teacher fine-tuned for a few seconds on a separable 2-class csv."""
    root = tmp_path_factory.mktemp("distill")
    data = write_tiny_dataset(root / "d.csv", n=160, num_classes=2)
    base = make_tiny_model_dir(root / "pre", num_layers=4)
    teacher = root / "teacher"
    assert main(["finetune", "--model", str(base), "--data", f"csv:{data}", "--out", str(teacher),
                 "--epochs", "4", "--lr", "3e-3", "--batch-size", "16"]) == 0
    return Namespace(root=root, data=data, teacher=teacher, pretrained=base)


def distill_argv(task, out, *extra):
    return ["distill", "--teacher", str(task.teacher), "--data", f"csv:{task.data}",
            "--out", str(out), "--epochs", "1", "--lr", "3e-3", "--batch-size", "16", *extra]


def random_split(rng, n, T, vocab, pad_last=True):
    """An EncodedSplit-like batch source with some padded rows (labels in 0..2)."""
    from minibert.batches import EncodedSplit
    lengths = rng.integers(3, T + 1, size=n)
    if pad_last:
        lengths[0] = T
    ids = rng.integers(5, vocab, size=(n, T))
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    return EncodedSplit(ids=ids, mask=mask, token_type_ids=np.zeros_like(ids),
                        labels=rng.integers(0, 3, size=n), lengths=mask.sum(axis=1))


# ----------------------------------------------------------------------------- layer mapping

@pytest.mark.exercise("uniform_layer_map")
def test_uniform_layer_map_is_tinybert_mapping():
    # 2 of 6: hidden states 0->0 (embeddings), 1->3, 2->6; attention blocks 1->3, 2->6 (1-based)
    assert S.uniform_layer_map(2, 6) == [0, 3, 6]
    assert S.default_init_layers(2, 6) == [2, 5]          # 0-based blocks g(j)-1
    assert S.uniform_layer_map(3, 6) == [0, 2, 4, 6]
    assert S.uniform_layer_map(6, 6) == list(range(7))
    text = S.describe_mapping([2, 5], 2, 6)
    assert "student 0 <- teacher 2" in text and "student 1 <- teacher 5" in text
    assert "0->0, 1->3, 2->6" in text and "0->2, 1->5" in text


@pytest.mark.parametrize("spec, message", [
    ("0,6", "do not exist"),            # the teacher has blocks 0..5
    ("-1,5", "do not exist"),
    ("1,2,3", "name 2 teacher layers"),  # wrong count
    ("3", "name 2 teacher layers"),
    ("a,b", "comma-separated"),
])
def test_init_from_bad_layers_are_refused(spec, message):
    with pytest.raises(MinibertError, match=message):
        S.parse_init_from(spec, 2, 6)


def test_student_deeper_than_teacher_is_refused():
    with pytest.raises(MinibertError, match="--layers"):
        S.uniform_layer_map(7, 6)
    with pytest.raises(MinibertError, match="--layers"):
        S.student_config(tiny_config(num_labels=2, num_layers=4), layers=5)


# ----------------------------------------------------------------------------- initialisation

@pytest.mark.exercise("init_student")
def test_init_student_copies_the_chosen_teacher_layers():
    tc = tiny_config(num_labels=2, num_layers=4)
    tp = init_params(tc, np.random.default_rng(0))
    sc = S.student_config(tc, 2)
    sp = S.init_student(tp, tc, sc, [3, 0], np.random.default_rng(1))
    assert set(sp) == set(init_params(sc, np.random.default_rng(0)))
    for name, value in sp.items():
        if name.startswith("encoder."):
            j, rest = name.split(".", 2)[1:]
            source = f"encoder.{[3, 0][int(j)]}.{rest}"
        else:
            source = name                                   # embeddings, pooler, classifier
        np.testing.assert_array_equal(value, tp[source], err_msg=name)
        assert not np.shares_memory(value, tp[source]), f"{name} aliases the teacher"


@pytest.mark.exercise("init_student")
def test_init_random_copies_nothing_and_depends_only_on_the_seed():
    tc = tiny_config(num_labels=2, num_layers=4)
    tp = init_params(tc, np.random.default_rng(0))
    sc = S.student_config(tc, 2)
    a = S.init_student(tp, tc, sc, None, S.student_init_rng(3))
    b = S.init_student(tp, tc, sc, None, S.student_init_rng(3))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        if not name.endswith((".b", ".gamma", ".beta")):
            assert not np.array_equal(a[name], tp[name]), name


def test_width_changing_init_is_refused():
    tc = tiny_config(num_labels=2, num_layers=4)
    tp = init_params(tc, np.random.default_rng(0))
    sc = S.student_config(tc, 2, hidden_size=16)
    assert (sc.hidden_size, sc.num_heads, sc.intermediate_size) == (16, 1, 32)  # head size, FFN ratio kept
    with pytest.raises(MinibertError, match="projection"):
        S.init_student(tp, tc, sc, [1, 3], np.random.default_rng(0))
    args = Namespace(init="teacher", init_from="1,3")
    with pytest.raises(MinibertError, match="--init-from 1,3 copies teacher layers of width 32"):
        D.resolve_init(args, tc, sc)
    assert D.resolve_init(Namespace(init="random", init_from=None), tc, sc) is None


# ----------------------------------------------------------------------------- the loss

def _gradcheck_full_step(hidden_size, weights, seed, unlabelled=False):
    """Finite differences of the full distillation step (student forward + all losses +
    backward, dropout on with a fixed mask) in float64, on a tiny model with padding."""
    rng = np.random.default_rng(seed)
    # initializer_range 0.2 (not 0.02) so gradients are large next to the finite difference's
    # roundoff (~1e-16 * |loss| / h ~ 1e-11). The rel_error floor is gradcheck's default,
    # 1e-3 * max|grad| per tensor: some entries are exactly 0 (the key bias, which softmax
    # ignores) and would otherwise be judged by roundoff alone.
    tc = tiny_config(num_labels=3, num_layers=4, initializer_range=0.2)
    tp = init_params(tc, rng, np.float64)
    sc = S.student_config(tc, 2, hidden_size=hidden_size)
    settings = O.DistillSettings(0.3, 2.0, *weights, layer_map=tuple(S.uniform_layer_map(2, 4)))
    split = random_split(rng, 6, 7, tc.vocab_size)
    if unlabelled:                                           # transfer-set rows: teacher only
        split = split._replace(labels=np.where(np.arange(6) % 2 == 1, -1, split.labels))
    teacher = TC.TeacherCache(tp, tc, split, settings, batch_size=4)
    batch = make_batch(split, np.array([0, 2, 3, 5]))
    assert batch.mask.min() == 0                             # padding is part of the check
    params = S.init_student(tp, tc, sc, None, S.student_init_rng(seed), dtype=np.float64)
    if settings.hidden_weight > 0:
        params.update(S.init_projections(sc, tc, rng, np.float64))
    step = D.make_distill_step(sc, teacher, settings)

    def forward(**p):
        loss, grads, parts = step(p, batch, np.random.default_rng(7))  # same dropout masks
        return np.asarray(loss), grads

    def backward(dout, grads):
        return {k: g * dout for k, g in grads.items()}

    loss, grads, parts = step(params, batch, np.random.default_rng(7))
    assert set(grads) == set(params)
    for name, w in zip(("hidden", "attention", "cosine"), weights):
        assert (parts[name] > 0) == (w > 0), (name, parts)
    errors = check_gradients(forward, backward, params, np.random.default_rng(1),
                             max_checks=6)
    return errors, parts


def test_distillation_step_gradients_all_losses():
    # CE + T^2*KL + hidden MSE (identity) + attention MSE (padding masked) + cosine.
    errors, _ = _gradcheck_full_step(32, (0.7, 0.5, 0.4), seed=0)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-5, (worst, errors[worst])    # measured ~2e-7 in float64


def test_distillation_step_gradients_narrow_student_with_projection():
    errors, _ = _gradcheck_full_step(16, (0.7, 0.0, 0.0), seed=1)
    assert any(k.startswith(S.PROJ_PREFIX) for k in errors)  # the projection is trained too
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-5, (worst, errors[worst])    # measured ~1e-7 in float64


def test_distillation_step_gradients_with_unlabelled_rows():
    # label -1 = no gold label: CE over the labelled rows only, KL over all of them
    errors, parts = _gradcheck_full_step(32, (0.0, 0.0, 0.0), seed=2, unlabelled=True)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-5, (worst, errors[worst])
    assert parts["ce"] > 0 and parts["kl"] > 0


def test_settings_that_cannot_work_are_refused():
    tc = tiny_config(num_labels=2, num_layers=4)
    narrow = S.student_config(tc, 2, hidden_size=16)
    lm = tuple(S.uniform_layer_map(2, 4))
    with pytest.raises(MinibertError, match="--cosine-weight"):
        O.check_settings(O.DistillSettings(cosine_weight=1.0, layer_map=lm), narrow, tc)
    with pytest.raises(MinibertError, match="--attention-weight"):
        O.check_settings(O.DistillSettings(attention_weight=1.0, layer_map=lm), narrow, tc)
    with pytest.raises(MinibertError, match="--alpha"):
        O.check_settings(O.DistillSettings(alpha=1.5, layer_map=lm), S.student_config(tc, 2), tc)


def test_float32_step_stays_float32():
    rng = np.random.default_rng(0)
    tc = tiny_config(num_labels=3, num_layers=4)
    tp = init_params(tc, rng)
    sc = S.student_config(tc, 2, hidden_size=16)
    settings = O.DistillSettings(0.5, 4.0, hidden_weight=1.0, layer_map=(0, 2, 4))
    split = random_split(rng, 5, 6, tc.vocab_size)
    params = S.init_student(tp, tc, sc, None, rng)
    params.update(S.init_projections(sc, tc, rng))
    step = D.make_distill_step(sc, TC.TeacherCache(tp, tc, split, settings), settings)
    _, grads, _ = step(params, make_batch(split, np.arange(5)), rng)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}


# ----------------------------------------------------------------------------- teacher cache

def test_intermediate_targets_recomputed_per_batch_when_too_big(monkeypatch):
    rng = np.random.default_rng(0)
    tc = tiny_config(num_labels=3, num_layers=4)
    tp = init_params(tc, rng)
    settings = O.DistillSettings(hidden_weight=1.0, attention_weight=1.0, cosine_weight=1.0,
                                 layer_map=(0, 2, 4))
    split = random_split(rng, 10, 8, tc.vocab_size)
    stored = TC.TeacherCache(tp, tc, split, settings, batch_size=4)
    small = TC.TeacherCache(tp, tc, split, settings, batch_size=4, max_mb=0)
    assert stored.stored and not small.stored and "recomputed per batch" in small.describe()
    calls = count_teacher_forwards(monkeypatch)
    batch = make_batch(split, np.array([1, 4, 7]))
    a, b = stored.batch(batch), small.batch(batch)
    assert len(calls) == 1                                   # only the uncached one ran the teacher
    m = batch.mask.astype(bool)
    np.testing.assert_allclose(a.logits, b.logits, rtol=1e-5, atol=1e-6)
    for ha, hb in zip(a.hidden, b.hidden):                   # real tokens agree, padding is masked
        np.testing.assert_allclose(ha[m], hb[m], rtol=1e-4, atol=1e-5)
    pair = m[:, None, :, None] & m[:, None, None, :]
    for sa, sb in zip(a.scores, b.scores):
        np.testing.assert_allclose(sa[np.broadcast_to(pair, sa.shape)],
                                   sb[np.broadcast_to(pair, sb.shape)], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- the command

def test_distill_end_to_end_prints_mapping_and_beats_chance(tiny_task, tmp_path, capsys):
    out = tmp_path / "student"
    assert main(distill_argv(tiny_task, out, "--epochs", "3", "--init-from", "3,1")) == 0
    text = capsys.readouterr().out
    assert "student 0 <- teacher 3, student 1 <- teacher 1" in text
    assert "hidden states (0 = embeddings): 0->0, 1->2, 2->4" in text
    report = json.loads((out / "evaluation.json").read_text())
    teacher, student = report["rows"]
    assert student["params"] < teacher["params"]
    assert student["accuracy"] >= 0.7, report               # separable data: far above chance
    head = json.loads((out / "head.json").read_text())
    assert head["finetuned"] is True                         # the student can teach in turn
    from minibert.weights import load_model
    from minibert.model import BertConfig
    params, config = load_model(out)
    assert config.num_layers == 2 and not any(k.startswith(S.PROJ_PREFIX) for k in params)
    assert isinstance(config, BertConfig)


def test_teacher_logits_are_computed_once(tiny_task, tmp_path, monkeypatch):
    calls = count_teacher_forwards(monkeypatch)
    counts = []
    for epochs in ("1", "3"):
        monkeypatch.setenv(TC.CACHE_ENV, str(tmp_path / f"cache{epochs}"))  # nothing shared
        calls.clear()
        assert main(distill_argv(tiny_task, tmp_path / epochs, "--epochs", epochs)) == 0
        counts.append((len(calls), sum(calls)))
    n_train = 128                                            # 80% of 160
    assert counts[0] == counts[1] == (n_train // 16, n_train)  # one pass, not one per epoch


def test_hard_only_run_never_runs_the_teacher(tiny_task, tmp_path, monkeypatch, capsys):
    calls = count_teacher_forwards(monkeypatch)
    assert main(distill_argv(tiny_task, tmp_path / "hard", "--alpha", "1")) == 0
    assert calls == []
    assert "the teacher's outputs are not used" in capsys.readouterr().out
    assert not (tmp_path / "hard" / TC.LOGITS_NAME).exists()
    calls.clear()                                            # an intermediate loss needs it
    assert main(distill_argv(tiny_task, tmp_path / "hid", "--alpha", "1",
                             "--hidden-weight", "1")) == 0
    assert sum(calls) >= 128


def test_hard_only_step_equals_alpha_one_with_teacher_logits():
    """Skipping the teacher changes nothing: loss and grads equal those of alpha = 1 against
    real teacher logits (their KL term is weighted by 0)."""
    rng = np.random.default_rng(3)
    config = tiny_config(num_labels=3)
    params = init_params(config, rng)
    split = random_split(rng, 6, 8, config.vocab_size)
    settings = O.DistillSettings(alpha=1.0, layer_map=(0, 1, 2))
    teacher_logits = rng.standard_normal((6, 3)).astype(np.float32)
    a = O.student_objective(params, config, split.ids, split.mask, split.token_type_ids,
                            split.labels, O.TeacherBatch(teacher_logits), settings)
    b = O.student_objective(params, config, split.ids, split.mask, split.token_type_ids,
                            split.labels, O.TeacherBatch(None), settings)
    assert a[0] == b[0] and a[2]["ce"] == b[2]["ce"]
    assert all(np.array_equal(a[1][k], b[1][k]) for k in a[1])
    assert settings.hard_only and not settings._replace(alpha=0.9).hard_only
    assert not settings._replace(cosine_weight=1.0).hard_only


def test_second_run_with_same_fingerprint_reuses_the_logits(tiny_task, tmp_path, monkeypatch,
                                                             capsys):
    calls = count_teacher_forwards(monkeypatch)
    assert main(distill_argv(tiny_task, tmp_path / "a")) == 0
    assert sum(calls) == 128                                 # computed once, saved
    first = np.load(tmp_path / "a" / TC.LOGITS_NAME)
    calls.clear()
    capsys.readouterr()
    assert main(distill_argv(tiny_task, tmp_path / "b", "--temperature", "4")) == 0
    assert calls == []                                       # another run, same fingerprint
    assert "teacher logits: reused from" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "b" / TC.LOGITS_NAME), first)
    assert main(distill_argv(tiny_task, tmp_path / "c", "--max-length", "12")) == 0
    assert sum(calls) == 128                                 # other max_length: recomputed


def test_fingerprint_changes_with_teacher_split_and_length(tiny_task, tmp_path):
    from minibert.batches import encode_examples
    from minibert.data import load_dataset
    from minibert.tokenizer import Tokenizer
    tok = Tokenizer.from_dir(tiny_task.teacher)
    train = load_dataset(f"csv:{tiny_task.data}").train
    split = encode_examples(tok, train, 32)
    fp = TC.teacher_fingerprint(tiny_task.teacher, split, 32)
    assert fp == TC.teacher_fingerprint(tiny_task.teacher, encode_examples(tok, train, 32), 32)
    assert fp != TC.teacher_fingerprint(tiny_task.teacher, split, 33)
    assert fp != TC.teacher_fingerprint(tiny_task.teacher, split, 32, what="hidden")
    assert fp != TC.teacher_fingerprint(tiny_task.teacher, encode_examples(tok, train[1:], 32), 32)
    other = tmp_path / "t"
    shutil.copytree(tiny_task.teacher, other)
    assert TC.teacher_fingerprint(other, split, 32) == fp     # the files' bytes, not their path
    (other / "config.json").write_text((other / "config.json").read_text() + " ")
    assert TC.teacher_fingerprint(other, split, 32) != fp


def test_cached_logits_never_replace_foreign_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    config = tiny_config(num_labels=3)
    params = init_params(config, rng)
    split = random_split(rng, 5, 6, config.vocab_size)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / TC.LOGITS_NAME).write_bytes(b"not ours")
    mine = tmp_path / "mine"
    logits, found = TC.cached_logits(params, config, split, "f" * 64, [foreign, mine])
    assert found is None and (foreign / TC.LOGITS_NAME).read_bytes() == b"not ours"
    assert "minibert did not write" in capsys.readouterr().out
    again, found = TC.cached_logits(params, config, split, "f" * 64, [foreign, mine])
    assert found == mine and np.array_equal(again, logits)
    _, found = TC.cached_logits(params, config, split, "e" * 64, [mine])
    assert found is None                                     # other fingerprint: recomputed


def test_narrow_student_with_projection_runs(tiny_task, tmp_path):
    out = tmp_path / "narrow"
    assert main(distill_argv(tiny_task, out, "--hidden-size", "16", "--init", "random",
                             "--hidden-weight", "1.0")) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["hidden_size"] == 16


def _error_of(argv, capsys):
    assert main(argv) == 2
    return capsys.readouterr().err


def test_refuses_a_pretrained_teacher(tiny_task, tmp_path, capsys):
    argv = distill_argv(tiny_task, tmp_path / "s")
    argv[argv.index("--teacher") + 1] = str(tiny_task.pretrained)
    assert "no classification head (num_labels 0)" in _error_of(argv, capsys)


def test_refuses_a_head_that_was_never_trained(tmp_path, tiny_task, capsys):
    untrained = make_tiny_model_dir(tmp_path / "random_head", num_labels=2, num_layers=4)
    argv = distill_argv(tiny_task, tmp_path / "s")
    argv[argv.index("--teacher") + 1] = str(untrained)
    assert "no head.json" in _error_of(argv, capsys)


def test_refuses_student_deeper_than_teacher(tiny_task, tmp_path, capsys):
    err = _error_of(distill_argv(tiny_task, tmp_path / "s", "--layers", "5"), capsys)
    assert "--layers" in err and "between 1 and 4" in err


def test_refuses_init_from_missing_layer_or_wrong_count(tiny_task, tmp_path, capsys):
    assert "do not exist" in _error_of(distill_argv(tiny_task, tmp_path / "a", "--init-from", "0,4"),
                                       capsys)
    assert "name 2 teacher layers" in _error_of(
        distill_argv(tiny_task, tmp_path / "b", "--init-from", "0,1,2"), capsys)


def test_refuses_width_changing_init_from(tiny_task, tmp_path, capsys):
    err = _error_of(distill_argv(tiny_task, tmp_path / "s", "--hidden-size", "16",
                                 "--init-from", "1,3"), capsys)
    assert "without a projection" in err and "--init random" in err


def test_refuses_teacher_data_label_mismatch(tiny_task, tmp_path, capsys):
    three = write_tiny_dataset(tmp_path / "three.csv", n=60, num_classes=3)
    argv = distill_argv(tiny_task, tmp_path / "s")
    argv[argv.index("--data") + 1] = f"csv:{three}"
    err = _error_of(argv, capsys)
    assert "label mismatch" in err and "neutral" in err
