"""`minibert demo` end to end on the tiny model and dataset (seconds, not minutes): the table,
the files it writes, the teacher's logits computed once and reused, the same init for both
students, and the temperature x alpha sweep."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from minibert import demo, distill, report
from minibert.data import load_dataset
from tiny import count_teacher_forwards, make_tiny_model_dir, write_tiny_dataset

TINY = demo.DemoSizes(teacher_train=200, student_train=240, dev=40, test=None, max_length=16,
                      teacher_epochs=4, student_epochs=2, batch_size=16, teacher_lr=5e-3,
                      student_lr=3e-3, augment_per_example=2, augment_epochs=3)


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    dataset = load_dataset(f"csv:{write_tiny_dataset(root / 'd.csv', n=300, num_classes=2)}")
    teacher = make_tiny_model_dir(root / "pretrained", num_layers=4)   # no head, like MiniLM
    return root, dataset, teacher


@pytest.fixture(scope="module")
def first_run(tiny_setup):
    """One demo run on tiny data (the other tests reuse its fine-tuned teacher and logits)."""
    import contextlib
    import io
    root, dataset, teacher = tiny_setup
    out = root / "run"
    mp = pytest.MonkeyPatch()
    calls = count_teacher_forwards(mp)
    real_init = distill.init_student

    def recording_init(*a):
        params = real_init(*a)
        STUDENT_INITS.append({k: v.copy() for k, v in params.items()})   # before training moves them
        return params
    mp.setattr(distill, "init_student", recording_init)
    real_train = distill.train_student

    def recording_train(*a, **kw):
        STUDENT_TRAININGS.append({"n": len(a[6].labels), "init": kw.get("init_params"),
                                  "out": a[8], "epochs": a[9].epochs})
        return real_train(*a, **kw)
    mp.setattr(distill, "train_student", recording_train)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            res = demo.run_demo(out, seed=0, teacher_dir=teacher, dataset=dataset, sizes=TINY,
                                progress=False)
    finally:
        mp.undo()
    return out, res, calls, buf.getvalue()


STUDENT_INITS = []   # first_run's student initialisations, in order (copies: training changes them)
STUDENT_TRAININGS = []   # first_run's train_student calls: rows, init_params, out_dir, epochs


def test_demo_end_to_end_on_tiny_data(tiny_setup, first_run):
    _, dataset, _ = tiny_setup
    out, res, calls, text = first_run
    names = [r["name"] for r in res["rows"]]
    assert names == ["teacher", "student KD", "student hard-only", "student TinyBERT",
                     "student TinyBERT+aug"]
    teacher_row, kd, hard, tiny, aug = res["rows"]
    assert teacher_row["n"] == len(dataset.test)                    # the whole test split
    assert kd["params"] == hard["params"] == tiny["params"] == aug["params"] < teacher_row["params"]
    assert teacher_row["speedup"] == 1.0
    assert teacher_row["accuracy"] >= 0.8                           # the tiny task is learnable
    assert "| student KD |" in text and "| student hard-only |" in text
    assert "teacher fine-tuned on 200 examples x 4 epochs" in text   # sizes are printed
    for name in ("results.json", "results.md", "training_curves.png", "accuracy_vs_speed.png",
                 "teacher_logits.npy", "teacher/model.safetensors", "teacher/head.json",
                 "student_KD/model.safetensors", "student_hard-only/model.safetensors",
                 "student_TinyBERT/model.safetensors",
                 "student_TinyBERT/intermediate/model.safetensors", "augmented.safetensors",
                 "student_TinyBERT+aug/model.safetensors", "student_KD/demo_student.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["data"]["used"]["student_train"] == TINY.student_train
    assert set(saved["verdict"]) >= {"kd_keeps_97_percent", "kd_beats_hard_only"}
    assert set(saved["verdict"]["recipes"]) == {"student KD", "student TinyBERT",
                                                "student TinyBERT+aug"}
    assert not (out / "student_TinyBERT+aug" / "intermediate").exists()   # stage 1 shared
    assert {"student_TinyBERT_stage1_train_s", "student_TinyBERT_stage2_train_s"} <= set(
        saved["timings_s"])
    assert not (out / "teacher" / "checkpoint.safetensors").exists()   # 3x the model, removed


def test_teacher_logits_computed_once_for_every_student(first_run):
    _, _, calls, _ = first_run
    # one pass over the transfer set in batches of 64, shared by every student; after it only
    # TinyBERT's intermediate stage runs the teacher: one more pass for its hidden states and
    # scores (they fit in memory here; at full size they are recomputed per training batch)
    # (the augmented sentences are labelled once too, by transfer_set.teacher_logits)
    n_logit_batches = -(-TINY.student_train // 64)
    assert sum(calls[:n_logit_batches]) == TINY.student_train
    assert sum(calls[n_logit_batches:]) == TINY.student_train


def test_both_students_start_from_the_same_init(first_run):
    # The KD student and the hard-label control of the demo run start from identical weights
    # (what the comparison needs); recorded as run_demo made them.
    # (TinyBERT's second stage starts from its first stage, so three inits in all)
    assert len(STUDENT_INITS) == 3
    kd, hard, tiny = STUDENT_INITS
    assert kd.keys() == hard.keys() == tiny.keys()
    for k in kd:
        np.testing.assert_array_equal(kd[k], hard[k], err_msg=k)
        np.testing.assert_array_equal(kd[k], tiny[k], err_msg=k)


def test_sweep_reuses_teacher_and_logits_and_writes_table(tiny_setup, first_run, monkeypatch,
                                                           capsys):
    _, dataset, teacher = tiny_setup
    out = first_run[0]                                               # reuses teacher + logits
    monkeypatch.setattr(demo, "SWEEP_TEMPERATURES", (1.0, 4.0))
    monkeypatch.setattr(demo, "SWEEP_ALPHAS", (0.1, 0.9))
    calls = count_teacher_forwards(monkeypatch)
    res = demo.run_demo(out, seed=0, sweep=True, teacher_dir=teacher, dataset=dataset,
                        sizes=TINY._replace(student_epochs=1), progress=False, resume=True)
    text = capsys.readouterr().out
    assert "reusing the fine-tuned teacher" in text and "reusing cached teacher logits" in text
    assert calls == []                                               # no teacher forward at all
    rows = res["sweep"]
    assert [(r["temperature"], r["alpha"]) for r in rows] == [(1.0, 0.1), (1.0, 0.9),
                                                             (4.0, 0.1), (4.0, 0.9)]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows)
    md = (out / "sweep" / "sweep.md").read_text()
    assert "| T=4 |" in md and (out / "sweep" / "sweep.png").is_file()
    assert json.loads((out / "sweep" / "sweep.json").read_text())["rows"] == rows


def test_summarize_seeds_reports_mean_and_spread(first_run, tmp_path):
    out = first_run[0]
    res = json.loads((out / "results.json").read_text())
    other = tmp_path / "seed1"
    other.mkdir()
    res2 = dict(res, seed=1, rows=[dict(r, accuracy=r["accuracy"] - 0.1) for r in res["rows"]])
    (other / "results.json").write_text(json.dumps(res2))
    text = report.summarize_seeds([out, other])
    acc = [res["rows"][1]["accuracy"], res["rows"][1]["accuracy"] - 0.1]
    expected = f"{np.mean(acc):.4f} ± {np.std(acc, ddof=1):.4f}"
    assert f"| student KD | {expected} |" in text
    assert "| 1 |" in text and "seeds [0, 1]" in text


def test_bench_demo_times_shows_every_stage_the_demo_recorded(first_run):
    from minibert.bench_demo import format_demo_times, load_demo_times, stage_rows
    out, res, _, _ = first_run
    runs = [load_demo_times(out)]
    assert runs[0]["timings"] == pytest.approx(res["timings_s"])
    keys = [k for k, _ in stage_rows(runs)]
    assert sorted(keys) == sorted(res["timings_s"]) and keys[-1] == "total_s"
    lines = format_demo_times(runs).splitlines()
    for key, label in stage_rows(runs):
        shown = f"**{label}**" if key == "total_s" else label
        assert f"| {shown} | {res['timings_s'][key]:.1f} |" in lines, key


def test_tinybert_aug_shares_stage_1_and_adds_the_augmented_sentences(first_run):
    """The TinyBERT+aug row starts stage 2 from the TinyBERT row's stage 1 (no second stage 1)
    and trains it on the transfer set plus the augmented sentences for sizes.augment_epochs
    (its own count, not student_epochs); every other student trains on the transfer set (or,
    the control, the labelled part of it)."""
    from minibert.transfer_set import load_augmented
    from minibert.weights import load_model
    out = first_run[0]
    m = len(load_augmented(out / "augmented.safetensors").lengths)
    assert TINY.student_train < m <= TINY.augment_per_example * TINY.student_train
    rows = [(t["out"].name, t["n"], t["epochs"]) for t in STUDENT_TRAININGS]
    e, e1 = TINY.student_epochs, demo.INTERMEDIATE_EPOCHS
    assert rows[:4] == [("intermediate", 240, e1), ("student_TinyBERT", 240, e),  # two-stage first
                        ("student_TinyBERT+aug", 240 + m, TINY.augment_epochs),
                        ("student_KD", 240, e)]
    data = SimpleNamespace(student_train=SimpleNamespace(labels=np.zeros(240)),  # only their
                           teacher_train=SimpleNamespace(labels=np.zeros(200)))  # lengths count
    assert rows[4] == ("student_hard-only", 200, demo.hard_only_epochs(data, TINY))
    shared, _ = load_model(out / "student_TinyBERT" / "intermediate")
    init = STUDENT_TRAININGS[2]["init"]
    assert init.keys() == shared.keys()
    for k in shared:
        np.testing.assert_array_equal(init[k], shared[k], err_msg=k)


def test_resume_reuses_finished_students_and_retrains_a_changed_one(tiny_setup, first_run,
                                                                   monkeypatch, capsys):
    _, dataset, teacher = tiny_setup
    out, res, _, _ = first_run
    trained = []
    real_train = distill.train_student
    monkeypatch.setattr(distill, "train_student",
                        lambda *a, **kw: trained.append((a[8].name, len(a[6].labels)))
                        or real_train(*a, **kw))
    again = demo.run_demo(out, seed=0, teacher_dir=teacher, dataset=dataset, sizes=TINY,
                          progress=False, resume=True, recipes=("kd", "tinybert"))
    assert trained == []                                             # nothing trained again
    assert "reusing the student trained with the same settings" in capsys.readouterr().out
    for a, b in zip(res["rows"], again["rows"]):
        assert (a["name"], a["accuracy"]) == (b["name"], b["accuracy"])
    demo.run_demo(out, seed=0, teacher_dir=teacher, dataset=dataset, progress=False,
                  sizes=TINY._replace(augment_per_example=1), resume=True,
                  recipes=("kd", "tinybert-aug"))
    # a new augmentation: that student only, with its own stage 1 on the transfer set alone
    # (no TinyBERT row ran to share it)
    assert [name for name, _ in trained] == ["intermediate", "student_TinyBERT+aug"]
    assert trained[0][1] == TINY.student_train < trained[1][1]
