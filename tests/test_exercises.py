"""The exercises: the library passes exactly the checks students get, the stubs hand out
questions and not answers, and the workspace, check, hint, solution, test and grade commands
work as the README says.

The checks compare a student's function with the library's on several cases, and also check
it against float64 finite differences and closed forms; running them on the library's own
functions is therefore also a test of the library against something nobody wrote by hand.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap

import pytest

from minibert.classroom import regions
from minibert.classroom.checks import CHECKS, check_exercise
from minibert.classroom.registry import EXERCISES, exercise_by_name, texts
from minibert.classroom.workspace import load_student_function, write_workspace
from minibert.cli import main

NAMES = [ex.name for ex in EXERCISES]
BY_EXERCISE = [pytest.param(n, marks=pytest.mark.exercise(n), id=n) for n in NAMES]


def normalise(text: str) -> str:
    return "".join(text.split()).lower()


def run_cli(capsys, *argv):
    rc = main(["exercises", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def stub_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("stubs")
    write_workspace(d)
    return d


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("reference")
    write_workspace(d, solutions=True)
    return d


def test_one_exercise_per_lesson_and_every_one_marked_in_the_library():
    assert len(NAMES) >= 16 and len(set(NAMES)) == len(NAMES)
    assert list(CHECKS) == NAMES
    lessons = {ex.lesson for ex in EXERCISES}
    from minibert.classroom.regions import PACKAGE_DIR
    scripts = {f"lessons/{p.name}" for p in (PACKAGE_DIR.parent / "lessons").glob("[0-9][0-9]_*.py")}
    assert scripts <= lessons, f"lessons without an exercise: {sorted(scripts - lessons)}"
    for ex in EXERCISES:
        regions.exercise_location(ex)                      # raises when the marker is missing


@pytest.mark.parametrize("name", BY_EXERCISE)
def test_library_passes_its_exercise_checks(name):
    ex = exercise_by_name(name)
    results = CHECKS[name](regions.library_function(ex))
    for r in results:
        print(f"{name}: {'PASS' if r.passed else 'FAIL'} {r.name}: {r.describe()}")
    assert len(results) >= 5, "each exercise has several checks"
    failed = [f"{r.name}: {r.describe()}" for r in results if not r.passed]
    assert not failed, failed


@pytest.mark.parametrize("name", NAMES)
def test_a_stub_file_is_short_keeps_the_signature_and_raises_naming_its_exercise(stub_dir, name):
    ex = exercise_by_name(name)
    path = stub_dir / f"{name}.py"
    text = path.read_text()
    assert len(text.splitlines()) < 80, f"{name}.py has {len(text.splitlines())} lines"
    ast.parse(text)
    assert f"# BEGIN EXERCISE {name}" in text and f"# END EXERCISE {name}" in text
    stub = load_student_function(ex, stub_dir)
    reference = regions.library_function(ex)
    assert inspect.signature(stub) == inspect.signature(reference)
    assert inspect.getdoc(stub) and "Returns" in inspect.getdoc(stub)
    steps = texts(name).steps
    assert len(steps) >= 3 and all("?" in step for step in steps), "the steps are questions"
    for k in range(1, len(steps) + 1):
        assert f"# {k}. " in text
    results = CHECKS[name](stub)
    assert results and not results[0].passed
    assert f"NotImplementedError: Exercise {name}:" in results[0].detail
    assert f"minibert exercises check {name} --path {stub_dir}" in normalise_spaces(results[0].detail)


def test_a_stub_docstring_is_indented_like_the_function_body(stub_dir):
    """An exercise's own docstring (texts_*.py `doc`) replaces the library's: its lines sit one
    level in, as in the library, not at the text module's indentation on top of it."""
    text = (stub_dir / "soft_kl.py").read_text()
    assert "\n    - T: temperature > 0\n" in text, text
    assert "\n    Returns a tuple of:\n" in (stub_dir / "relation_kl.py").read_text()


def normalise_spaces(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", NAMES)
def test_no_answer_in_stubs_tasks_steps_first_hints_or_the_list(stub_dir, name, capsys):
    t = texts(name)
    _, listing, _ = run_cli(capsys, "list")
    student_texts = {"stub": (stub_dir / f"{name}.py").read_text(), "task": t.task,
                     "steps": " ".join(t.steps), "hint 1": t.hints[0], "hint 2": t.hints[1],
                     "list": listing}
    assert t.answers, f"{name}: list the answer's fragments in its Text"
    for where, text in student_texts.items():
        for answer in t.answers:
            assert normalise(answer) not in normalise(text), f"{name}: {where} gives away {answer!r}"
    # and no line of the reference code survives into the stub
    ex = exercise_by_name(name)
    code = [ln.split("#")[0].strip() for ln in regions.solution_region(ex).splitlines()]
    stub = student_texts["stub"].splitlines()
    begin = next(i for i, ln in enumerate(stub) if f"BEGIN EXERCISE {name}" in ln)
    end = next(i for i, ln in enumerate(stub) if f"END EXERCISE {name}" in ln)
    stub_lines = {ln.strip() for ln in stub[begin:end]}
    leaked = [ln for ln in code if len(ln) > 12 and ln in stub_lines]
    assert not leaked, f"reference code in the stub: {leaked}"


def test_the_list_names_no_solution_location(capsys):
    rc, out, _ = run_cli(capsys, "list")
    assert rc == 0 and "solution" not in out
    positions = [out.index(f" {name} ") for name in NAMES]
    assert positions == sorted(positions)


def test_check_all_passes_on_the_reference_and_reports_stubs(reference_dir, stub_dir, capsys):
    rc, out, _ = run_cli(capsys, "check", "--all", "--path", str(reference_dir), "--json")
    rows = json.loads(out)
    assert rc == 0 and [r["exercise"] for r in rows] == NAMES
    assert all(r["status"] == "pass" for r in rows), [r for r in rows if r["status"] != "pass"]
    rc, out, _ = run_cli(capsys, "check", "--all", "--path", str(stub_dir))
    assert rc == 1 and out.count(" stub ") == len(NAMES) and "0 of" in out


def test_a_failing_check_names_the_case_points_to_the_lesson_and_gives_whole_commands(tmp_path, capsys):
    write_workspace(tmp_path, solutions=True)
    path = tmp_path / "attention_backward.py"
    text = path.read_text()
    anchor = "dp = dp * drop.mask"          # the reference's dropout line; update if it changes
    assert text.count(anchor) == 1
    path.write_text(text.replace(anchor, "pass"))                    # dropout ignored
    rc, out, _ = run_cli(capsys, "check", "attention_backward", "--path", str(tmp_path))
    print(out)
    assert rc == 1
    assert "with attention dropout p=0.3" in out and "by block: q" in out
    assert "Read: lessons/04_attention.py" in out
    assert f"minibert exercises hint attention_backward --level 1 --path {tmp_path}" in out


def test_a_file_that_does_not_import_is_an_error_with_its_line(tmp_path, capsys):
    write_workspace(tmp_path)
    (tmp_path / "rel_error.py").write_text("def rel_error(a, b, floor=1e-8):\n    return (\n")
    rc, _, err = run_cli(capsys, "check", "rel_error", "--path", str(tmp_path))
    assert rc == 2 and "rel_error.py:2" in err and "syntax error" in err
    assert check_exercise("rel_error", tmp_path).status == "error"


def test_unknown_exercise_and_missing_workspace_are_clear_errors(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "check", "linear_backwards", "--path", str(tmp_path))
    assert rc == 2 and "unknown exercise 'linear_backwards'" in err and "rel_error" in err
    rc, _, err = run_cli(capsys, "check", "linear_backward", "--path", str(tmp_path / "nope"))
    assert rc == 2 and f"minibert exercises init {tmp_path / 'nope'}" in err


def test_init_writes_one_file_per_exercise_and_never_overwrites_work(tmp_path, capsys):
    ws = tmp_path / "ws"
    rc, out, _ = run_cli(capsys, "init", str(ws))
    assert rc == 0 and f"minibert exercises check rel_error --path {ws}" in out
    assert {p.stem for p in ws.glob("*.py")} == set(NAMES)
    readme = (ws / "README.md").read_text()
    assert readme.index("rel_error.py") < readme.index("param_count.py")
    assert f"minibert exercises check NAME --path {ws}" in readme
    (ws / "linear_backward.py").write_text("# my work\n")
    rc, out, _ = run_cli(capsys, "init", str(ws))
    assert rc == 0 and "kept" in out
    assert (ws / "linear_backward.py").read_text() == "# my work\n"


def test_hints_reveal_more_at_each_level(capsys):
    outs = []
    for level in (1, 2, 3):
        rc, out, _ = run_cli(capsys, "hint", "layernorm_backward", "--level", str(level),
                             "--path", "ws")
        assert rc == 0 and f"Hint {level} of 3" in out
        outs.append(out)
    assert "--level 2 --path ws" in outs[0] and "--level 3 --path ws" in outs[1]
    assert "xhat * mean(dxhat * xhat)" in outs[2] and "xhat * mean(dxhat * xhat)" not in outs[1]


def test_solution_shows_the_reference_unless_the_workspace_forbids_it(tmp_path, capsys):
    open_ws, closed_ws = tmp_path / "open", tmp_path / "closed"
    run_cli(capsys, "init", str(open_ws))
    run_cli(capsys, "init", str(closed_ws), "--no-solutions")
    rc, out, _ = run_cli(capsys, "solution", "softmax_backward", "--path", str(open_ws))
    assert rc == 0 and "minibert/layers.py" in out and "np.einsum" in out
    rc, out, err = run_cli(capsys, "solution", "softmax_backward", "--path", str(closed_ws))
    assert rc == 2 and "--no-solutions" in err and "np.einsum" not in out


def test_stub_generation_rejects_broken_markers():
    bad = "def f(x):\n    # BEGIN EXERCISE linear_backward\n    return x\n"
    with pytest.raises(ValueError, match="never closed"):
        regions.find_regions(bad, "layers")
    outside = "# BEGIN EXERCISE linear_backward\nx = 1\n# END EXERCISE linear_backward\n"
    with pytest.raises(ValueError, match="not inside a function"):
        regions.find_regions(outside, "layers")


def test_the_imports_of_an_exercise_file_are_the_names_its_function_reads():
    source = textwrap.dedent('''
        import numpy as np
        from .layers import linear_backward, softmax_backward
        SCALE = 2.0
        def helper(): pass
        def f(dy, cache):
            a = np.zeros(3) * SCALE
            b = [i for i in range(2)]
            return linear_backward(dy, cache), helper(), a, b
    ''')
    tree = ast.parse(source)
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "f")
    bindings = regions._module_bindings(tree, "losses")
    lines = [bindings[n] for n in regions._free_names(func) if n in bindings]
    assert regions._import_block(lines) == [
        "import numpy as np", "", "from minibert.layers import linear_backward",
        "from minibert.losses import SCALE, helper"]


def test_exercises_test_runs_the_librarys_own_tests_on_the_students_function(tmp_path, capfd):
    write_workspace(tmp_path, solutions=True)
    rc = main(["exercises", "test", "rel_error", "--path", str(tmp_path)])
    assert rc == 0
    path = tmp_path / "rel_error.py"
    text = path.read_text()
    anchor = "np.maximum(floor, np.abs(a) + np.abs(b))"
    assert text.count(anchor) == 1
    path.write_text(text.replace(anchor, "np.maximum(floor, np.abs(a + b))"))
    rc = main(["exercises", "test", "rel_error", "--path", str(tmp_path)])
    out = capfd.readouterr().out
    assert rc == 1 and "FAILED" in out and "[rel_error]" in out and " deselected" in out
