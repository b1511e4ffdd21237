"""bench --scaling on a tiny config and a tiny grid: the table's rows and columns, rows reported as
they finish, the time budget's round counts, the command's options (no timing is asserted)."""

from __future__ import annotations

import json

import pytest

from minibert import bench_scaling as BS
from minibert import bench_timing, cli
from minibert.bench_tasks import teacher_config, torch_available
from minibert.errors import MinibertError

TINY = dict(vocab_size=1200, hidden_size=16, num_heads=2, intermediate_size=32, max_position=32)


def body_lines(text):
    return [ln for ln in text.splitlines() if ln.startswith("| ") and ln[2].isdigit()]


@pytest.mark.parametrize("with_torch", [False, True])
def test_scaling_table_has_one_row_per_length_and_batch(with_torch):
    if with_torch and not torch_available():
        pytest.skip("torch/transformers not installed")
    res = BS.run_scaling(lengths=(4, 16), batch_sizes=(1, 3), repeats=1, layers=1,
                         config=teacher_config(**TINY), with_torch=with_torch)
    assert [(r["seq_len"], r["batch_size"]) for r in res["rows"]] == [(4, 1), (4, 3), (16, 1),
                                                                      (16, 3)]
    for r in res["rows"]:
        assert 0 < r["real_tokens"] <= r["seq_len"] * r["batch_size"]
        assert r["padding_fraction"] == pytest.approx(1 - r["real_tokens"] /
                                                       (r["seq_len"] * r["batch_size"]))
        assert r["minibert_forward_us_per_token"] > 0 and r["minibert_train_step_us_per_token"] > 0
        assert r["runs_forward"] == r["runs_train_step"] == 1
        assert ("torch_train_step_us_per_token" in r) == with_torch
        assert ("ratio_train_step_paired" in r) == with_torch
    assert res["rows"][0]["padding_fraction"] == 0            # B = 1: padded to its own length
    text = BS.format_scaling(res)
    lines = text.splitlines()
    assert lines[2].startswith("| T | B | real tokens | padding | runs fwd/step |")
    body = body_lines(text)
    assert len(body) == 4 and all(ln.count("|") == 12 for ln in body)
    assert [ln.split("|")[1:3] for ln in body][1] == [" 4 ", " 3 "]
    assert ("PyTorch not timed" in text) != with_torch
    if not with_torch:
        assert body[0].split("|")[7].strip() == "-"           # torch fwd column empty
        assert body[0].split("|")[11].strip() == "-"          # step ratio column empty


def test_without_torch_installed_the_minibert_columns_still_fill(monkeypatch):
    monkeypatch.setattr(BS, "torch_available", lambda: False)
    res = BS.run_scaling(lengths=(8,), batch_sizes=(2,), repeats=1, layers=1,
                         config=teacher_config(**TINY), with_torch=True)
    assert res["torch"] is False
    assert not any(k.startswith("torch_") or k.startswith("ratio_") for k in res["rows"][0])
    assert "PyTorch not timed" in BS.format_scaling(res)


def test_each_row_is_reported_as_soon_as_its_cell_finishes():
    seen = []
    res = BS.run_scaling(lengths=(4, 8), batch_sizes=(2,), repeats=1, layers=1,
                         config=teacher_config(**TINY), with_torch=False,
                         on_row=lambda so_far, row: seen.append((len(so_far["rows"]), row)))
    assert [n for n, _ in seen] == [1, 2]                     # before the next cell ran
    assert [row for _, row in seen] == res["rows"]
    assert "loadavg_after" in res


@pytest.mark.parametrize("budget_s, expected", [(None, 5), (0.0, 3), (1e9, 5)])
def test_the_budget_picks_the_number_of_rounds_between_the_minimum_and_repeats(budget_s, expected):
    calls = {"a": 0, "b": 0}

    def count(name):
        def fn():
            calls[name] += 1
        return fn

    engines = {"a": {"t": (count("a"), 1)}, "b": {"t": (count("b"), 0)}}
    timed = bench_timing.time_interleaved(engines, 5, lambda m: None, budget_s=budget_s,
                                          min_repeats=3)
    assert len(timed["a"]["t_runs"]) == len(timed["b"]["t_runs"]) == expected
    assert calls == {"a": expected + 1, "b": expected}        # + a's warm-up run


def test_fewer_repeats_than_the_minimum_are_honoured():
    engines = {"a": {"t": (lambda: None, 0)}}
    timed = bench_timing.time_interleaved(engines, 2, lambda m: None, budget_s=0.0, min_repeats=3)
    assert len(timed["a"]["t_runs"]) == 2


def test_the_command_prints_a_row_per_cell_and_takes_the_grid_options(capsys, monkeypatch):
    monkeypatch.setattr(BS, "teacher_config", lambda: teacher_config(**TINY))
    assert cli.main(["bench", "--scaling", "--lengths", "4,8", "--batch-sizes", "1,2",
                     "--layers", "1", "--repeats", "1", "--no-torch"]) == 0
    out = capsys.readouterr().out
    body = body_lines(out)
    assert [tuple(int(c) for c in ln.split("|")[1:3]) for ln in body] == [(4, 1), (4, 2), (8, 1),
                                                                         (8, 2)]
    assert "1-layer model" in out and "load after" in out and "PyTorch not timed" in out
    assert cli.main(["bench", "--scaling", "--lengths", "4", "--batch-sizes", "2", "--layers",
                     "1", "--repeats", "1", "--no-torch", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["layers"] == 1 and [(r["seq_len"], r["batch_size"]) for r in res["rows"]] == [(4, 2)]


def test_bad_grids_are_clear_errors(capsys):
    config = teacher_config(**TINY)
    with pytest.raises(MinibertError, match="lengths must be in"):
        BS.run_scaling(lengths=(64,), batch_sizes=(1,), repeats=1, layers=1, config=config,
                       with_torch=False)
    with pytest.raises(MinibertError, match="--layers"):
        BS.run_scaling(lengths=(4,), batch_sizes=(1,), repeats=1, layers=0, config=config,
                       with_torch=False)
    with pytest.raises(MinibertError, match="--repeats"):
        BS.run_scaling(lengths=(4,), batch_sizes=(1,), repeats=0, layers=1, config=config,
                       with_torch=False)
    assert cli.main(["bench", "--lengths", "16"]) == 2           # only with --scaling
    assert "--lengths goes with --scaling" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--scaling", "--lengths", "16,x"])
