"""minibert report: t quantiles, mean and 95% interval over seeds, reading demo results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from minibert import report as R
from minibert.cli import main
from minibert.errors import MinibertError


def test_t_quantiles_match_the_table_and_the_normal_limit():
    assert R.t_quantile_975(1) == pytest.approx(12.706, abs=1e-3)
    assert R.t_quantile_975(2) == pytest.approx(4.303, abs=1e-3)
    assert R.t_quantile_975(30) == pytest.approx(2.042, abs=1e-3)
    assert R.t_quantile_975(60) == pytest.approx(2.000, abs=1e-3)      # standard table value
    assert R.t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)
    assert R.t_quantile_975(10 ** 6) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        R.t_quantile_975(0)


def test_t_quantiles_match_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 10, 29, 30, 31, 45, 100, 1000):
        assert R.t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)


def test_mean_interval_is_t_times_standard_error():
    v = [1.0, 2.0, 4.0]
    mean, half = R.mean_interval(v)
    s = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(4.303 * s / math.sqrt(3), rel=1e-4)
    m1, h1 = R.mean_interval([0.5])
    assert m1 == 0.5 and math.isnan(h1)


def _write_run(path, seed, teacher, kd, hard, extra=None):
    rows = [{"name": "teacher", "accuracy": teacher}, {"name": "student KD", "accuracy": kd},
            {"name": "student hard-only", "accuracy": hard}]
    for name, acc in (extra or {}).items():
        rows.append({"name": name, "accuracy": acc})
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"seed": seed, "rows": rows}))


def test_report_over_seed_dirs_gives_per_recipe_margins(tmp_path, capsys):
    _write_run(tmp_path / "seeds" / "seed-0", 0, 0.80, 0.79, 0.77, {"student tinybert": 0.795})
    _write_run(tmp_path / "seeds" / "seed-1", 1, 0.78, 0.77, 0.76, {"student tinybert": 0.78})
    _write_run(tmp_path / "seeds" / "seed-2", 2, 0.79, 0.775, 0.765, {"student tinybert": 0.79})
    rep = R.seed_report(R.load_runs([tmp_path / "seeds"]))
    assert rep["seeds"] == [0, 1, 2] and set(rep["recipes"]) == {"student KD", "student tinybert"}
    kd = rep["recipes"]["student KD"]
    assert kd["margin_points"] == pytest.approx([2.0, 1.0, 1.0])
    mean, half = kd["margin"]
    assert mean == pytest.approx(4 / 3)
    assert half == pytest.approx(4.303 * np.std([2, 1, 1], ddof=1) / math.sqrt(3), rel=1e-4)
    assert kd["share_percent"][0] == pytest.approx(100 * 0.79 / 0.80)
    assert main(["report", str(tmp_path / "seeds"), "--out", str(tmp_path / "r.md")]) == 0
    text = capsys.readouterr().out
    assert "| student tinybert |" in text and "+2.00, +1.00, +1.00" in text
    assert (tmp_path / "r.md").read_text().strip() == text.strip()


def test_a_recipe_missing_from_one_seed_is_left_out(tmp_path):
    _write_run(tmp_path / "a", 0, 0.8, 0.79, 0.77, {"student minilm": 0.78})
    _write_run(tmp_path / "b", 1, 0.8, 0.79, 0.77)
    rep = R.seed_report(R.load_runs([tmp_path / "a", tmp_path / "b"]))
    assert list(rep["recipes"]) == ["student KD"]


def test_bad_report_inputs_are_clear_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no results.json" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text('{"rows": [{"name": "teacher", "accuracy": 1}]}')
    with pytest.raises(MinibertError, match="student hard-only"):
        R.load_runs([tmp_path / "bad"])
