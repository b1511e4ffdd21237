"""The classroom: exercises cut from the library, their checks, hints, and grading.

- registry.py: the exercises in course order; texts_*.py: tasks, questions, hints
- regions.py: the `# BEGIN/END EXERCISE` regions and the one-function files cut from them
- workspace.py: `exercises init` and loading a student's file
- report.py, diagnose.py: check results, and how a wrong value differs (never the answer)
- checks_*.py: the checks of each exercise; checks.py: the map name -> checks, verdicts
- grading.py: `check --all`, `grade` (a subprocess per student, time limits)
- pytest_plugin.py: `exercises test` (the library's tests on a student's function)
- cli.py: the `minibert exercises ...` handlers; bench_grade.py: the grading benchmark
"""
