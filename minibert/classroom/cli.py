"""`minibert exercises list / init / check / hint / solution / test / grade` (flags in
minibert/cli.py). Every command a message suggests is given whole, with --path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from minibert.classroom.registry import EXERCISES, exercise_by_name, texts
from minibert.errors import MinibertError


def cli_list(args) -> int:
    d = getattr(args, "path", None) or "workspace"
    print(f"minibert exercises, in course order (start: minibert exercises init {d}; "
          f"check one: minibert exercises check NAME --path {d}):")
    for i, ex in enumerate(EXERCISES, 1):
        print(f"{i:2d}. {ex.name:<24s} {ex.title}")
        print(f"    {'':<24s} read: {ex.lesson}, section {ex.section}")
    return 0


def cli_init(args) -> int:
    from minibert.classroom.workspace import write_workspace
    written, kept = write_workspace(args.dir, allow_solutions=not args.no_solutions)
    for p in written:
        print(f"wrote {p}")
    for p in kept:
        print(f"kept {p} (your work is never overwritten; delete it to get a fresh stub)")
    if args.no_solutions:
        print("`minibert exercises solution` is disabled for this workspace (--no-solutions).")
    print(f"{len(EXERCISES)} exercises; the order is in {Path(args.dir) / 'README.md'}.")
    print(f"Start with: minibert exercises check {EXERCISES[0].name} --path {args.dir}")
    return 0


def cli_check(args) -> int:
    from minibert.classroom.checks import check_exercise, format_verdict
    from minibert.classroom.grading import check_all, format_table, verdict_row
    if args.all == bool(args.name):
        raise MinibertError("give one exercise NAME, or --all (e.g. minibert exercises check "
                            f"{EXERCISES[0].name} --path {args.path})")
    if not Path(args.path).is_dir():
        raise MinibertError(f"no workspace at {args.path}: create one with "
                            f"`minibert exercises init {args.path}`")
    if args.all:
        verdicts = check_all(args.path)
        if args.json:
            print(json.dumps([verdict_row(v) for v in verdicts], indent=1))
        else:
            print(format_table(verdicts))
        return 0 if all(v.status == "pass" for v in verdicts) else 1
    v = check_exercise(args.name, args.path)
    if v.status == "error" and not v.results:
        raise MinibertError(v.message)
    if args.json:
        print(json.dumps(verdict_row(v), indent=1))
    else:
        print(format_verdict(v, args.path, show_passes=args.verbose))
    return 0 if v.status == "pass" else 1


def cli_hint(args) -> int:
    ex = exercise_by_name(args.name)
    hints = texts(ex.name).hints
    level = args.level
    print(f"Hint {level} of 3 for {ex.name} (read: {ex.lesson}, section {ex.section}):")
    print(textwrap.fill(hints[level - 1], width=92, initial_indent="  ", subsequent_indent="  "))
    if level < 3:
        print(f"More: minibert exercises hint {ex.name} --level {level + 1} --path {args.path}")
    print(f"Then: minibert exercises check {ex.name} --path {args.path}")
    return 0


def cli_solution(args) -> int:
    from minibert.classroom.regions import exercise_location, solution_region
    from minibert.classroom.workspace import solutions_allowed
    ex = exercise_by_name(args.name)
    if not solutions_allowed(args.path):
        raise MinibertError(f"solutions are disabled for the workspace {args.path} (it was "
                            f"created with `minibert exercises init --no-solutions`); try "
                            f"`minibert exercises hint {ex.name} --level 3 --path {args.path}`")
    reg = exercise_location(ex)
    print(f"# The reference: minibert/{ex.module}.py, {reg.function}(), between the markers")
    print(solution_region(ex), end="")
    return 0


def cli_test(args) -> int:
    from minibert.classroom.regions import PACKAGE_DIR
    from minibert.classroom.workspace import load_student_function
    ex = exercise_by_name(args.name)
    load_student_function(ex, args.path)                  # a clear error before pytest starts
    tests = PACKAGE_DIR.parent / "tests"
    if not tests.is_dir():
        raise MinibertError("the library's tests are not here (they live in the tests/ folder "
                            "of a source checkout: git clone, then pip install -e '.[test]')")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "minibert.classroom.pytest_plugin", "--exercise", ex.name,
           "--workspace", str(Path(args.path).resolve()), str(tests)]
    print("running:", " ".join(cmd[2:]), flush=True)
    rc = subprocess.call(cmd, cwd=str(PACKAGE_DIR.parent))
    if rc == 5:
        raise MinibertError(f"no library test is marked for {ex.name} yet")
    return 0 if rc == 0 else 1


def cli_grade(args) -> int:
    from minibert.classroom.grading import grade_roster, write_grades
    out = Path(args.out)
    md = out.with_suffix(".md")
    for p in (out, md):
        if p.exists() and not args.overwrite:
            raise MinibertError(f"{p} exists: pass --overwrite to replace it, or choose --out")
    print("Grading: student code runs with your rights, in a subprocess per student with a "
          f"{args.timeout:g} s limit per exercise. This is not a sandbox.", flush=True)
    table = grade_roster(args.roster, timeout=args.timeout, jobs=args.jobs)
    csv_path, md_path = write_grades(table, out)
    for r in table:
        print(f"{r['student']:<20s} {r['passed']:2d}/{len(EXERCISES)}  {r['first_failure'][:80]}")
    print(f"wrote {csv_path} and {md_path}")
    return 0
