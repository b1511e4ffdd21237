"""`minibert exercises test NAME --path DIR`: the library's own tests, run on a student's code.

Loaded with `pytest -p minibert.classroom.pytest_plugin --exercise NAME --workspace DIR`.
Tests that check one exercise's function carry `@pytest.mark.exercise("NAME")`; every other
test is deselected. After collection, every module that holds the library's function under
its name (the defining module, and each module that imported it, tests included) gets the
student's function instead, so the library's tests exercise the student's code exactly as
they exercise the library's. The classroom's own checker keeps the reference (it compares
against it).
"""

from __future__ import annotations

import sys

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("minibert exercises")
    group.addoption("--exercise", default=None, help="run only the tests marked for this exercise")
    group.addoption("--workspace", default=None, help="the student's workspace directory")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "exercise(name): a test of that exercise's library function")


def swap_in(reference, student) -> list[str]:
    """Replace `reference` by `student` in every loaded module but the classroom's own.
    Returns the names of the modules changed."""
    changed = []
    for mod_name, module in list(sys.modules.items()):
        if module is None or mod_name.startswith("minibert.classroom"):
            continue
        try:
            attrs = vars(module)
        except TypeError:
            continue
        for attr, value in list(attrs.items()):
            if value is reference:
                setattr(module, attr, student)
                changed.append(f"{mod_name}.{attr}")
    return changed


def pytest_collection_modifyitems(config, items) -> None:
    name = config.getoption("--exercise")
    if not name:
        return
    keep, drop = [], []
    for item in items:
        marks = [m for m in item.iter_markers("exercise") if name in m.args]
        (keep if marks else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
    from minibert.classroom.regions import library_function
    from minibert.classroom.registry import exercise_by_name
    from minibert.classroom.workspace import load_student_function
    ex = exercise_by_name(name)
    student = load_student_function(ex, config.getoption("--workspace"))
    changed = swap_in(library_function(ex), student)
    config._minibert_swapped = changed


def pytest_report_header(config) -> list[str] | None:
    name = config.getoption("--exercise")
    if name:
        return [f"minibert exercise {name}: the library's tests, run on "
                f"{config.getoption('--workspace')}/{name}.py"]
    return None
