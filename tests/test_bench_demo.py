"""bench --demo-times: the stage times finished demo runs recorded, as one table (and last /
first). The runs are results.json files this test writes, with the stage keys `minibert demo`
records (tests/test_demo.py checks the table against a real tiny demo run)."""

from __future__ import annotations

import json

import pytest

from minibert import cli
from minibert.bench_demo import format_demo_times, load_demo_times, stage_rows
from minibert.errors import MinibertError

BEFORE = {"fetch_and_data_s": 4.0, "teacher_finetune_s": 200.0, "teacher_logits_s": 30.0,
          "student_KD_s": 150.0, "student_KD_stage1_train_s": 140.0,
          "student_hard-only_s": 80.0, "student_hard-only_stage1_train_s": 75.0,
          "student_TinyBERT_s": 160.0, "student_TinyBERT_stage1_train_s": 60.0,
          "student_TinyBERT_stage2_train_s": 90.0, "evaluation_s": 20.0, "total_s": 644.0}


def write_run(path, timings, seed=0, quick=False):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(
        {"seed": seed, "quick": quick, "rows": [], "timings_s": timings}))
    return path


def table_rows(text):
    return {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
            for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| stage")}


def test_one_run_gives_a_row_per_stage_in_the_order_they_ran_total_last(tmp_path):
    run = load_demo_times(write_run(tmp_path / "a", BEFORE))
    keys = [k for k, _ in stage_rows([run])]
    assert keys == list(BEFORE)
    rows = table_rows(format_demo_times([run]))
    assert rows["teacher finetune"] == ["200.0"]
    assert rows["student KD: stage1 train"] == ["140.0"]
    assert rows["student TinyBERT: stage2 train"] == ["90.0"]
    assert rows["student hard-only"] == ["80.0"]
    assert rows["**total**"] == ["644.0"]
    assert len(rows) == len(BEFORE)


def test_two_runs_give_after_over_before_and_a_dash_where_a_stage_is_missing(tmp_path):
    after = {k: v / 2 for k, v in BEFORE.items() if not k.startswith("student_TinyBERT")}
    after = {"sweep_s": 10.0, **after}                     # a stage only the second run has
    a = write_run(tmp_path / "before", BEFORE)
    b = write_run(tmp_path / "after", after, seed=1, quick=True)
    text = format_demo_times([load_demo_times(a), load_demo_times(b / "results.json")])
    assert "| stage | run 1 s | run 2 s | run 2 / run 1 |" in text
    assert f"run 1: {a} (seed 0, full)" in text and "(seed 1, quick)" in text
    rows = table_rows(text)
    assert rows["teacher finetune"] == ["200.0", "100.0", "0.50"]
    assert rows["**total**"] == ["644.0", "322.0", "0.50"]
    assert rows["student TinyBERT"] == ["160.0", "-", "-"]
    assert rows["sweep"] == ["-", "10.0", "-"]
    assert list(rows)[-1] == "**total**"


def test_the_command_prints_the_table_and_json(tmp_path, capsys):
    a, b = write_run(tmp_path / "a", BEFORE), write_run(tmp_path / "b", BEFORE)
    assert cli.main(["bench", "--demo-times", str(a), str(b)]) == 0
    assert table_rows(capsys.readouterr().out)["evaluation"] == ["20.0", "20.0", "1.00"]
    assert cli.main(["bench", "--demo-times", str(a), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["timings"] == BEFORE


def test_unusable_runs_are_clear_errors(tmp_path, capsys):
    with pytest.raises(MinibertError, match="not found"):
        load_demo_times(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text(json.dumps({"rows": []}))
    with pytest.raises(MinibertError, match="timings_s"):
        load_demo_times(tmp_path / "bad")
    (tmp_path / "bad" / "results.json").write_text("{not json")
    with pytest.raises(MinibertError, match="not a demo results.json"):
        load_demo_times(tmp_path / "bad")
    with pytest.raises(MinibertError, match="no stage times"):
        load_demo_times(write_run(tmp_path / "empty", {}))
    assert cli.main(["bench", "--demo-times", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert cli.main(["bench", "--demo-times", str(tmp_path / "x"), "--scaling"]) == 2
    assert "separate benchmarks" in capsys.readouterr().err
