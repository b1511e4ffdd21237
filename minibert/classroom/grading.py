"""Checking every exercise of a workspace, and grading a whole class.

`check_all(DIR)` runs every exercise's checks in this process (`minibert exercises check --all`).
`grade_roster(ROSTER)` grades each subfolder of ROSTER as one student's workspace, each student
in a subprocess of its own with a time limit per exercise: an infinite loop or a crash in one
student's code costs that exercise (marked "error") and never stops the grading; the child is
restarted for the remaining exercises.

Student code runs with the grader's rights. This is NOT a sandbox: a student's file can read
and write whatever the grading account can. Grade as an unprivileged user (or in a container)
if that matters. The subprocess and its limits (time; memory, where the OS allows) only keep
one student's mistakes from stopping the others' grading.
"""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from minibert.classroom.checks import Verdict, check_exercise
from minibert.classroom.registry import EXERCISES
from minibert.errors import MinibertError
from minibert.files import atomic_write_text

PACKAGE_PARENT = Path(__file__).resolve().parents[2]      # the directory holding minibert/
MEMORY_LIMIT = 4 << 30                                      # bytes of address space per child


def check_all(directory: str | Path, names: list[str] | None = None) -> list[Verdict]:
    names = names or [ex.name for ex in EXERCISES]
    return [check_exercise(n, directory) for n in names]


def verdict_row(v: Verdict) -> dict:
    return {"exercise": v.name, "status": v.status, "passed": v.passed, "total": v.total,
            "message": v.message}


def format_table(verdicts: list[Verdict], width: int = 70) -> str:
    lines = [f"{'#':>2}  {'exercise':<24s} {'status':<6s} {'checks':>7s}  first failing check"]
    for i, v in enumerate(verdicts, 1):
        msg = v.message if len(v.message) <= width else v.message[:width - 3] + "..."
        lines.append(f"{i:2d}  {v.name:<24s} {v.status:<6s} {v.passed:>3d}/{v.total:<3d}  {msg}")
    n = sum(v.status == "pass" for v in verdicts)
    lines.append(f"{n} of {len(verdicts)} exercises pass.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# One student, in a subprocess
# ---------------------------------------------------------------------------------------------

def _child_main(directory: str, names: list[str]) -> None:
    """Run in the child: one JSON line per exercise on the original stdout. Whatever the
    student's code prints goes to stderr instead, so it cannot corrupt the protocol."""
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for name in names:
        try:
            v = check_exercise(name, directory)
            row = verdict_row(v)
        except BaseException as err:  # noqa: BLE001 - SystemExit, KeyboardInterrupt from student code
            row = {"exercise": name, "status": "error", "passed": 0, "total": 0,
                   "message": f"the check stopped: {type(err).__name__}: {err}"}
        out.write(json.dumps(row) + "\n")


def _limit_memory() -> None:                                 # runs in the child before exec
    try:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    except (ImportError, ValueError, OSError):
        pass


def grade_student(directory: str | Path, timeout: float = 30.0,
                  names: list[str] | None = None) -> dict[str, dict]:
    """{exercise: row} for one workspace, `timeout` seconds allowed per exercise."""
    todo = list(names or [ex.name for ex in EXERCISES])
    rows: dict[str, dict] = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(PACKAGE_PARENT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    while todo:
        cmd = [sys.executable, "-m", "minibert.classroom.grading", "--child", str(directory), *todo]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, env=env, text=True,
                                preexec_fn=_limit_memory if os.name == "posix" else None)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout] + [lines.put(None)],
                         daemon=True).start()
        while todo:
            # the first exercise also pays for starting Python and importing numpy
            try:
                line = lines.get(timeout=timeout + (10.0 if not rows else 0.0))
            except queue.Empty:
                proc.kill()
                rows[todo[0]] = {"exercise": todo[0], "status": "error", "passed": 0, "total": 0,
                                 "message": f"timed out after {timeout:g} s (an infinite loop?)"}
                todo.pop(0)
                break
            if line is None:                                    # the child died
                rc = proc.wait()
                rows[todo[0]] = {"exercise": todo[0], "status": "error", "passed": 0, "total": 0,
                                 "message": f"the checking process died (exit code {rc})"}
                todo.pop(0)
                break
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("exercise") in todo:
                rows[row["exercise"]] = row
                todo.remove(row["exercise"])
        proc.kill()
        proc.wait()
    return rows


def grade_roster(roster: str | Path, timeout: float = 30.0, jobs: int = 2) -> list[dict]:
    """One row per student subfolder: {"student", <exercise>: status, ..., "passed",
    "first_failure", "messages": {exercise: message}}."""
    roster = Path(roster)
    if not roster.is_dir():
        raise MinibertError(f"no roster directory at {roster}: one subfolder per student's "
                            f"workspace (minibert exercises init ROSTER/NAME)")
    students = sorted(p for p in roster.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not students:
        raise MinibertError(f"{roster} has no student subfolders")
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        graded = list(pool.map(lambda d: grade_student(d, timeout), students))
    table = []
    for student, rows in zip(students, graded):
        row = {"student": student.name}
        first = ""
        for ex in EXERCISES:
            r = rows[ex.name]
            row[ex.name] = r["status"]
            if not first and r["status"] != "pass":
                first = f"{ex.name}: {r['message']}"
        row["passed"] = sum(rows[ex.name]["status"] == "pass" for ex in EXERCISES)
        row["first_failure"] = first
        row["messages"] = {ex.name: rows[ex.name]["message"] for ex in EXERCISES}
        table.append(row)
    return table


def grades_csv(table: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["student", *[ex.name for ex in EXERCISES], "passed", "first_failure"]
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    w.writerows(table)
    return buf.getvalue()


def grades_markdown(table: list[dict], width: int = 90) -> str:
    names = [ex.name for ex in EXERCISES]
    head = "| student | " + " | ".join(f"{i}" for i in range(1, len(names) + 1)) + " | passed | first failing check |"
    sep = "|---|" + "---|" * len(names) + "---|---|"
    rows = []
    for r in table:
        msg = r["first_failure"].replace("|", "\\|")
        msg = msg if len(msg) <= width else msg[:width - 3] + "..."
        rows.append(f"| {r['student']} | " + " | ".join(r[n] for n in names)
                    + f" | {r['passed']}/{len(names)} | {msg} |")
    legend = ", ".join(f"{i} `{n}`" for i, n in enumerate(names, 1))
    return "\n".join(["# Grades", "", f"Exercises: {legend}.", "", head, sep, *rows, ""])


def write_grades(table: list[dict], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    md = out.with_suffix(".md")
    atomic_write_text(out, grades_csv(table))
    atomic_write_text(md, grades_markdown(table))
    return out, md


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--child":
        _child_main(sys.argv[2], sys.argv[3:])
    else:
        print("internal: python -m minibert.classroom.grading --child DIR NAME...", file=sys.stderr)
        sys.exit(2)
