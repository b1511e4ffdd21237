"""Every lesson runs with --tiny (seconds each), prints its numbers, writes its figures and ends
in assertions that hold, then writes lessonNN.json (the numbers) and names its exercises.
The lessons run in course order in one output directory, so lessons 7-9 reuse the teacher
that lesson 6 fine-tunes (each would fine-tune one itself otherwise). --tiny writes under
OUT/tiny/, so a tiny run never overwrites the class-size figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LESSONS = {   # script -> figures it must write
    "01_gradients.py": ["lesson01_fd_error.png"],
    "02_softmax_temperature.py": ["lesson02_temperature.png", "lesson02_t_squared.png"],
    "03_layernorm_gelu.py": ["lesson03_gelu.png", "lesson03_layernorm.png"],
    "04_attention.py": ["lesson04_attention_heads.png", "lesson04_scaling.png"],
    "05_bert.py": ["lesson05_attention_layers.png", "lesson05_hidden_norms.png"],
    "06_finetune.py": ["lesson06_loss_curve.png"],
    "07_distillation.py": ["lesson07_distillation.png"],
    "08_intermediate.py": ["lesson08_intermediate.png"],
    "09_compression.py": ["lesson09_compression.png"],
    "10_stages.py": ["lesson10_stages.png"],
    "11_shrink.py": ["lesson11_quant_error.png", "lesson11_heads.png"],
}
SLOW = {"06_finetune.py", "07_distillation.py", "08_intermediate.py", "09_compression.py", "05_bert.py",
        "10_stages.py"}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lessons_out")


def test_every_lesson_script_is_tested():
    assert sorted(p.name for p in (REPO / "lessons").glob("[0-9][0-9]_*.py")) == sorted(LESSONS)


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s
                                    for s in LESSONS])
def test_lesson_runs_tiny_and_its_assertions_hold(script, out_dir):
    env = dict(os.environ, MINIBERT_LESSON_OUT=str(out_dir), MPLBACKEND="Agg")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "lessons" / script), "--tiny"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    secs = time.perf_counter() - t0
    print(proc.stdout[-3000:])
    print(f"{script} --tiny: {secs:.1f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "All assertions hold" in proc.stdout
    tiny = out_dir / "tiny"
    for fig in LESSONS[script]:
        assert (tiny / fig).is_file() and (tiny / fig).stat().st_size > 1000, fig
        assert not (out_dir / fig).exists(), f"--tiny wrote {fig} outside tiny/"
    record = json.loads((tiny / f"lesson{script[:2]}.json").read_text())
    assert record["lesson"] == int(script[:2]) and record["size"] == "tiny"
    assert record["results"] and record["showed"], record
    for name in record["exercises"]:          # the lesson prints the exact command for each
        assert f"minibert exercises check {name} --path workspace" in proc.stdout, name


def test_lesson_scripts_are_cut_into_notebook_cells():
    for script in LESSONS:
        text = (REPO / "lessons" / script).read_text(encoding="utf-8")
        assert text.count("\n# %%") >= 3, f"{script}: expected # %% cell markers (jupytext percent format)"


def test_a_lesson_runs_cell_by_cell_as_in_a_notebook(tmp_path):
    """What Jupyter/VS Code do with the # %% cells: run them one after another in one namespace,
    inside a kernel (whose argv is not the lesson's), with MINIBERT_TINY=1 instead of --tiny."""
    code = (
        "import sys, types\n"
        "sys.modules['ipykernel'] = types.ModuleType('ipykernel')\n"
        "sys.argv = ['ipykernel_launcher.py', '-f', 'kernel.json']\n"
        "g = {'__name__': '__main__', '__doc__': None}\n"
        "for cell in open('01_gradients.py').read().split('\\n# %%'):\n"
        "    exec(compile(cell, '01_gradients.py', 'exec'), g)\n")
    env = dict(os.environ, MINIBERT_LESSON_OUT=str(tmp_path), MINIBERT_TINY="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO / "lessons", env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "All assertions hold" in proc.stdout
    assert (tmp_path / "tiny" / "lesson01.json").is_file()
