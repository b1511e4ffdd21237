"""Benchmark: grade a class of N workspaces (default 30) x every exercise, as a teacher would.

    python -m minibert.classroom.bench_grade [--students 30] [--jobs 2] [--keep DIR]

The class: a third of the workspaces hold the reference code (every check runs to the end,
the slowest case), a third are fresh stubs, a third are the reference with one exercise
broken (a wrong sign); one of the broken ones also has an infinite loop in one exercise, so
the time includes one time-out. Prints the wall-clock time of `grade_roster` and the verdict
counts. The budget is 2 minutes for 30 students on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from minibert.classroom.grading import grade_roster
from minibert.classroom.registry import EXERCISES
from minibert.classroom.workspace import write_workspace


def make_class(root: Path, n: int) -> None:
    for i in range(n):
        d = root / f"student{i:02d}"
        kind = i % 3
        write_workspace(d, solutions=kind != 1)
        if kind == 2:                          # one exercise returns the wrong sign
            ex = EXERCISES[i % len(EXERCISES)]
            path = d / f"{ex.name}.py"
            text = path.read_text()
            lines = text.splitlines()
            end = next(k for k, ln in enumerate(lines) if f"# END EXERCISE {ex.name}" in ln)
            indent = lines[end][:len(lines[end]) - len(lines[end].lstrip())]
            if i == 2:                         # and one student loops forever
                lines.insert(end, f"{indent}while True:\n{indent}    pass")
            else:
                lines.insert(end, f"{indent}raise RuntimeError('a bug')")
            path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per exercise")
    ap.add_argument("--keep", default=None, help="write the class here instead of a temp dir")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        make_class(root, args.students)
        t0 = time.perf_counter()
        table = grade_roster(root, timeout=args.timeout, jobs=args.jobs)
        secs = time.perf_counter() - t0
    counts = Counter(r[ex.name] for r in table for ex in EXERCISES)
    print(f"graded {len(table)} workspaces x {len(EXERCISES)} exercises in {secs:.1f} s "
          f"({args.jobs} jobs, {args.timeout:g} s limit per exercise, one infinite loop "
          f"included): {dict(counts)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
