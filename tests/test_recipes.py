"""Recipes (kd, tinybert) and MiniLM relation distillation inside the student objective: the
full step's gradients, the two TinyBERT stages on the command line, demo --seeds, bad input."""

from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest

from minibert import demo
from minibert import objective as O
from minibert import recipes as R
from minibert import student as S
from minibert.batches import EncodedSplit, make_batch
from minibert.cli import main
from minibert.errors import MinibertError
from minibert.gradcheck import check_gradients
from minibert.model import init_params
from minibert.teacher_cache import TeacherCache
from tiny import make_tiny_model_dir, tiny_config, write_tiny_dataset


def _split(rng, n, T, vocab):
    lengths = rng.integers(3, T + 1, size=n)
    lengths[0] = T
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(5, vocab, size=(n, T)) * mask
    return EncodedSplit(ids=ids, mask=mask, token_type_ids=np.zeros_like(ids),
                        labels=rng.integers(0, 3, size=n), lengths=lengths.astype(np.int64))


@pytest.mark.parametrize("hidden_size", [32, 16], ids=["same-width", "narrow"])
def test_full_step_gradients_with_the_relation_term(hidden_size):
    """KD + MiniLM relation KL through the whole student (dropout on, fixed masks), float64
    finite differences; the narrow student (16 vs 32 wide, same 2 heads) needs no projection.
    initializer_range 0.2 keeps gradients large next to the differences' round-off (~1e-11);
    tolerance 1e-5 as for the other full-step checks (measured ~1e-7)."""
    rng = np.random.default_rng(0)
    tc = tiny_config(num_labels=3, num_layers=4, initializer_range=0.2)
    tp = init_params(tc, rng, np.float64)
    sc = S.student_config(tc, 2, hidden_size=hidden_size, heads=2)
    settings = O.DistillSettings(0.3, 2.0, layer_map=tuple(S.uniform_layer_map(2, 4)),
                                 relation_weight=0.8)
    split = _split(rng, 6, 7, tc.vocab_size)
    teacher = TeacherCache(tp, tc, split, settings, batch_size=4)
    batch = make_batch(split, np.array([0, 2, 3, 5]))
    assert batch.mask.min() == 0
    params = S.init_student(tp, tc, sc, None, S.student_init_rng(0), dtype=np.float64)
    step = O.make_distill_step(sc, teacher, settings)

    def forward(**p):
        loss, grads, _ = step(p, batch, np.random.default_rng(7))
        return np.asarray(loss), grads

    def backward(dout, grads):
        return {k: g * dout for k, g in grads.items()}

    _, _, parts = step(params, batch, np.random.default_rng(7))
    assert parts["relation"] > 0
    errors = check_gradients(forward, backward, params, np.random.default_rng(1), max_checks=6)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-5, (worst, errors[worst])


def test_prediction_weight_zero_leaves_only_the_intermediate_terms():
    rng = np.random.default_rng(2)
    tc = tiny_config(num_labels=3, num_layers=4)
    tp = init_params(tc, rng)
    sc = S.student_config(tc, 2)
    g = tuple(S.uniform_layer_map(2, 4))
    (_, s1), (_, s2) = R.stage_settings("tinybert", O.DistillSettings(layer_map=g))
    assert (s1.prediction_weight, s1.hidden_weight, s1.attention_weight) == (0.0, 1.0, 1.0)
    assert (s2.prediction_weight, s2.hidden_weight, s2.attention_weight) == (1.0, 0.0, 0.0)
    split = _split(rng, 4, 6, tc.vocab_size)
    batch = make_batch(split, np.arange(4))
    params = S.init_student(tp, tc, sc, [1, 3], rng)
    loss, grads, parts = O.make_distill_step(sc, TeacherCache(tp, tc, split, s1), s1)(
        params, batch, None)
    assert loss == pytest.approx(parts["hidden"] + parts["attention"], rel=1e-6)
    assert not grads["classifier.W"].any()            # the head is not trained in stage 1


def test_relation_needs_the_same_head_count():
    tc = tiny_config(num_labels=2, num_layers=4)
    sc = S.student_config(tc, 2, heads=1)
    settings = O.DistillSettings(layer_map=(0, 2, 4), relation_weight=1.0)
    with pytest.raises(MinibertError, match="--relation-weight .* needs the teacher's 2 heads"):
        O.check_settings(settings, sc, tc)
    with pytest.raises(MinibertError, match="relation-weight must be >= 0"):
        O.check_settings(settings._replace(relation_weight=-1.0), S.student_config(tc, 2), tc)


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipes")
    data = write_tiny_dataset(root / "d.csv", n=160, num_classes=2)
    base = make_tiny_model_dir(root / "pre", num_layers=4)
    teacher = root / "teacher"
    assert main(["finetune", "--model", str(base), "--data", f"csv:{data}", "--out", str(teacher),
                 "--epochs", "4", "--lr", "3e-3", "--batch-size", "16"]) == 0
    return Namespace(root=root, data=data, teacher=teacher)


def _argv(task, out, *extra):
    return ["distill", "--teacher", str(task.teacher), "--data", f"csv:{task.data}",
            "--out", str(out), "--epochs", "1", "--lr", "3e-3", "--batch-size", "16", *extra]


def test_tinybert_recipe_runs_both_stages(tiny_task, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_argv(tiny_task, out, "--recipe", "tinybert", "--intermediate-epochs", "2",
                      "--relation-weight", "0.5")) == 0
    text = capsys.readouterr().out
    assert "stage intermediate: 1*hidden MSE (0 = embeddings) + 1*attention MSE, 2 epochs" in text
    assert "stage prediction: 0.5*CE + 0.5*T^2*KL at T=2 + 0.5*MiniLM relation KL" in text
    first = json.loads((out / "intermediate" / "metrics.json").read_text())
    assert len(first["history"]) == 2
    parts = first["history"][0]["parts"]
    assert parts["hidden"] > 0 and parts["attention"] > 0 and parts["relation"] == 0
    second = json.loads((out / "metrics.json").read_text())
    assert second["history"][0]["parts"]["relation"] > 0
    assert (out / "model.safetensors").is_file() and (out / "evaluation.json").is_file()


def test_tinybert_aug_recipe_keeps_the_augmented_sentences_out_of_stage_1(tiny_task, tmp_path,
                                                                          monkeypatch):
    from minibert import distill
    aug = tmp_path / "aug.safetensors"
    assert main(["augment", "--teacher", str(tiny_task.teacher), "--data", f"csv:{tiny_task.data}",
                 "--out", str(aug), "--per-example", "2"]) == 0
    trained = []
    real = distill.train_student
    monkeypatch.setattr(distill, "train_student", lambda *a, **kw: trained.append(
        (a[8].name, len(a[6].labels), a[4].prediction_weight)) or real(*a, **kw))
    out = tmp_path / "s"
    assert main(_argv(tiny_task, out, "--recipe", "tinybert-aug", "--transfer", str(aug))) == 0
    (stage1, n1, w1), (stage2, n2, w2) = trained
    assert (stage1, w1) == ("intermediate", 0.0) and (stage2, w2) == ("s", 1.0)
    assert n2 > n1                                  # stage 2 adds the augmented sentences
    trained.clear()
    assert main(_argv(tiny_task, tmp_path / "t", "--recipe", "tinybert", "--transfer", str(aug))) == 0
    assert [n for _, n, _ in trained] == [n2, n2]   # tinybert: both stages on everything
    assert n1 < n2


def test_kd_recipe_with_relation_runs(tiny_task, tmp_path, capsys):
    assert main(_argv(tiny_task, tmp_path / "k", "--relation-weight", "1")) == 0
    assert "1*MiniLM relation KL (last layers)" in capsys.readouterr().out


def _exit_code(argv) -> int:
    """main's return code, or argparse's exit code for a flag it refuses itself."""
    try:
        return main(argv)
    except SystemExit as err:
        return err.code


@pytest.mark.parametrize("extra, message", [
    (["--recipe", "tinybert", "--intermediate-epochs", "0"], "positive integer"),
    (["--recipe", "distilbert"], "invalid choice"),
    (["--recipe", "tinybert-aug"], "give --transfer FILE"),
    (["--relation-weight", "1", "--heads", "1", "--init", "random"],
     "needs the teacher's 2 heads"),
])
def test_bad_recipe_input_is_a_clear_error(tiny_task, tmp_path, capsys, extra, message):
    assert _exit_code(_argv(tiny_task, tmp_path / "bad", *extra)) == 2
    assert message in capsys.readouterr().err


def test_demo_seeds_runs_each_seed_and_writes_the_interval_table(tmp_path, monkeypatch, capsys):
    """--seeds 0,1,2: one run_demo per seed into OUT/seed-N, then the report (OUT/seeds.md)."""
    calls = []

    def fake_run_demo(out, quick=False, seed=0, recipes=demo.RECIPES, **kw):
        calls.append((str(out), seed, tuple(recipes)))
        out.mkdir(parents=True)
        rows = [{"name": "teacher", "accuracy": 0.8}, {"name": "student KD", "accuracy": 0.79},
                {"name": "student hard-only", "accuracy": 0.77 - 0.01 * seed}]
        (out / "results.json").write_text(json.dumps({"seed": seed, "rows": rows}))
    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    assert main(["demo", "--out", str(tmp_path), "--seeds", "0,1,2", "--recipes", "kd"]) == 0
    assert [c[1] for c in calls] == [0, 1, 2] and calls[0][2] == ("kd",)
    assert calls[2][0] == str(tmp_path / "seed-2")
    text = (tmp_path / "seeds.md").read_text()
    assert "+2.00, +3.00, +4.00" in text and "+3.00 ± 2.48" in text      # 4.303 * 1 / sqrt 3
    calls.clear()
    assert main(["demo", "--out", str(tmp_path / "q"), "--seeds", "0", "--quick"]) == 0
    assert calls[0][2] == demo.QUICK_RECIPES == ("kd",)     # --quick stays ~100 s: KD + control
    calls.clear()
    assert main(["demo", "--out", str(tmp_path / "f"), "--seeds", "0"]) == 0
    assert calls[0][2] == demo.RECIPES == ("kd", "tinybert", "tinybert-aug")
    assert _exit_code(["demo", "--seeds", "1,1"]) == 2
    assert "distinct seeds" in capsys.readouterr().err
