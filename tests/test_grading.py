"""Grading a class: one subprocess per student, a time limit per exercise; an infinite loop or
a crash costs that exercise only, and the grades come out as CSV and Markdown."""

from __future__ import annotations

import csv

from minibert.classroom.grading import grade_roster
from minibert.classroom.registry import EXERCISES
from minibert.classroom.workspace import write_workspace
from minibert.cli import main

NAMES = [ex.name for ex in EXERCISES]


def break_exercise(workspace, name, line):
    """Insert `line` as the first statement of the exercise's region."""
    path = workspace / f"{name}.py"
    lines = path.read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if f"# BEGIN EXERCISE {name}" in ln)
    indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
    lines.insert(i + 1, indent + line)
    path.write_text("\n".join(lines) + "\n")


def test_a_class_with_a_loop_and_a_crash_is_graded_completely(tmp_path, capsys):
    roster = tmp_path / "class"
    write_workspace(roster / "ada", solutions=True)
    write_workspace(roster / "bob")                                   # fresh stubs
    write_workspace(roster / "cy", solutions=True)
    break_exercise(roster / "cy", "softmax_backward", "while True: pass")
    break_exercise(roster / "cy", "gelu_backward", "import os; os._exit(3)")
    break_exercise(roster / "cy", "rel_error", "return 0.0")
    table = {r["student"]: r for r in grade_roster(roster, timeout=3.0)}
    assert set(table) == {"ada", "bob", "cy"}
    assert all(table["ada"][n] == "pass" for n in NAMES) and table["ada"]["passed"] == len(NAMES)
    assert all(table["bob"][n] == "stub" for n in NAMES)
    cy = table["cy"]
    assert cy["rel_error"] == "fail" and cy["first_failure"].startswith("rel_error: ")
    assert cy["softmax_backward"] == "error" and "timed out after 3 s" in cy["messages"]["softmax_backward"]
    assert cy["gelu_backward"] == "error" and "exit code 3" in cy["messages"]["gelu_backward"]
    # everything after the loop and the crash was still graded
    assert all(cy[n] == "pass" for n in NAMES if n not in ("rel_error", "softmax_backward",
                                                           "gelu_backward"))

    out = tmp_path / "grades.csv"
    rc = main(["exercises", "grade", str(roster), "--out", str(out), "--timeout", "3"])
    printed = capsys.readouterr().out
    assert rc == 0 and "not a sandbox" in printed
    rows = list(csv.DictReader(out.open()))
    assert [r["student"] for r in rows] == ["ada", "bob", "cy"]
    assert rows[2]["softmax_backward"] == "error" and rows[2]["first_failure"].startswith("rel_error")
    md = (tmp_path / "grades.md").read_text()
    assert "| ada |" in md and "| cy |" in md
    rc = main(["exercises", "grade", str(roster), "--out", str(out)])   # never overwrite
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
