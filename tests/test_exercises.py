"""The exercises: the library passes exactly the checks students get, and the mechanism works.

1. Every exercise's checks (minibert/exercise_checks.py: float64 finite differences within
   FD_TOL = 1e-6, closed forms within 1e-9, float32-stays-float32) pass on the library's own
   function. This is the library's test of those functions, the same one a student sees.
2. Stubs generated from the current library raise NotImplementedError naming their exercise,
   and keep the docstring and the region's comments.
3. `minibert exercises check` passes on a workspace holding the reference code, and fails,
   naming the check, for a planted bug in each exercise.
"""

from __future__ import annotations

import ast
import inspect

import pytest

from minibert import exercise_checks, exercises
from minibert.cli import main
from minibert.exercises import EXERCISES, write_workspace

NAMES = [ex.name for ex in EXERCISES]

# One realistic slip per exercise: (text in the reference region, replacement, the check that
# must catch it). If the library's code changes, update the anchor text here.
PLANTED_BUGS = {
    "linear_backward": ("db = dy2.sum(axis=0)", "db = dy2.mean(axis=0)",
                        "db vs finite differences"),
    "softmax_backward": ("dx = dy - s", "dx = dy - 0 * s", "dx vs finite differences"),
    "softmax_cross_entropy": ("dlogits /= logits.dtype.type(n)", "pass",
                              "dlogits = (p - onehot) / N (closed form)"),
    "layernorm_backward": ("dx -= xhat * m2", "pass", "dx vs finite differences"),
    "gelu_backward": ("pdf *= x ", "pdf *= 1 ", "dx vs finite differences"),
    "attention_backward": ("dqkv_heads[0] *= scale", "pass",
                           "dx vs finite differences (with a padding mask)"),
    "encoder_layer_backward": ("dx += ds1", "pass", "dx vs finite differences"),
    "adamw_step": ("decay = weight_decay != 0 and not no_decay(name)", "decay = weight_decay != 0",
                   "ffn.in.b after first step"),
    "distillation_loss": ("w_soft = dt((1.0 - alpha) * T * T)", "w_soft = dt(1.0 - alpha)",
                          "loss at alpha=0.5, T=2"),
    "init_student": (".astype(dtype, copy=True)", ".astype(dtype, copy=False)",
                     "copies, not views of the teacher"),
}


def library_function(name):
    ex = exercises.exercise_by_name(name)
    module = __import__(f"minibert.{ex.module}", fromlist=["_"])
    return getattr(module, exercises.exercise_location(ex).function)


def run_cli(capsys, *argv):
    rc = main(["exercises", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_every_exercise_is_marked_in_the_library():
    assert [ex.name for ex in exercises.available_exercises()] == NAMES
    assert set(exercise_checks.CHECKS) == set(NAMES) == set(PLANTED_BUGS)


@pytest.mark.parametrize("name", NAMES)
def test_library_passes_its_exercise_checks(name):
    results = exercise_checks.CHECKS[name](library_function(name))
    for r in results:
        print(f"{name}: {'PASS' if r.passed else 'FAIL'} {r.name}: {r.describe()}")
    assert len(results) >= 3, "each exercise has several checks"
    failed = [f"{r.name}: {r.describe()}" for r in results if not r.passed]
    assert not failed, failed


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


@pytest.mark.parametrize("name", NAMES)
def test_stub_raises_not_implemented_naming_its_exercise(stub_dir, name):
    ex = exercises.exercise_by_name(name)
    stub = exercises.load_student_function(ex, stub_dir)
    results = exercise_checks.CHECKS[name](stub)
    assert results and not results[0].passed
    assert f"NotImplementedError: Exercise {name}:" in results[0].detail
    assert all(not r.passed for r in results)


@pytest.mark.parametrize("name", NAMES)
def test_stub_keeps_docstring_and_region_comments_and_drops_the_code(stub_dir, name):
    ex = exercises.exercise_by_name(name)
    reference = library_function(name)
    stub = exercises.load_student_function(ex, stub_dir)
    assert inspect.getdoc(stub) == inspect.getdoc(reference)
    lib_lines = inspect.getsource(reference).splitlines()
    region = exercises.exercise_location(ex)
    stub_text = (stub_dir / f"{ex.module}.py").read_text()
    start = lib_lines.index(next(ln for ln in lib_lines if f"BEGIN EXERCISE {name}" in ln))
    body = lib_lines[start + 1:start + (region.end - region.begin)]
    comments = [ln.strip() for ln in body if ln.strip().startswith("#")]
    code = [ln.strip() for ln in body if ln.strip() and not ln.strip().startswith("#")]
    assert comments or "#" in "".join(body), "the region should carry hints"
    for c in comments:
        assert c in stub_text, f"hint comment lost: {c}"
    stub_src = inspect.getsource(stub)
    stub_code = {ln.strip() for ln in stub_src.splitlines()}
    for line in code:
        if '"""' not in line:
            assert line not in stub_code, f"reference code leaked into the stub: {line}"
    ast.parse((stub_dir / f"{ex.module}.py").read_text())     # the workspace file is valid Python


def test_check_on_a_fresh_workspace_says_not_implemented(stub_dir, capsys):
    rc, out, _ = run_cli(capsys, "check", "linear_backward", "--path", str(stub_dir))
    print(out)
    assert rc == 1
    assert "Not implemented yet" in out and "FAIL" in out


@pytest.mark.parametrize("name", NAMES)
def test_check_passes_on_the_reference_code(reference_dir, capsys, name):
    rc, out, _ = run_cli(capsys, "check", name, "--path", str(reference_dir))
    print(out)
    assert rc == 0, out
    assert "FAIL" not in out and "checks pass" in out


@pytest.mark.parametrize("name", NAMES)
def test_check_fails_naming_the_check_for_a_planted_bug(tmp_path, capsys, name):
    write_workspace(tmp_path, solutions=True)
    ex = exercises.exercise_by_name(name)
    path = tmp_path / f"{ex.module}.py"
    old, new, expected = PLANTED_BUGS[name]
    lines = path.read_text().splitlines(keepends=True)
    region = next(r for r in exercises.find_regions(path.read_text(), ex.module) if r.name == name)
    inside = "".join(lines[region.begin:region.end + 1])
    assert inside.count(old) == 1, (f"planted bug anchor {old!r} not found once in region {name}; "
                                    f"update PLANTED_BUGS")
    lines[region.begin:region.end + 1] = [inside.replace(old, new)]
    path.write_text("".join(lines))
    rc, out, _ = run_cli(capsys, "check", name, "--path", str(tmp_path))
    print(out)
    assert rc == 1
    failed = [ln for ln in out.splitlines() if ln.strip().startswith("FAIL")]
    assert any(expected in ln for ln in failed), f"expected the check {expected!r} to fail:\n{out}"
    assert "checks failed; start with the first:" in out


def test_an_exercise_that_needs_an_earlier_stub_says_so(tmp_path, capsys):
    write_workspace(tmp_path, solutions=True)
    path = tmp_path / "losses.py"
    source = path.read_text()
    stubbed = exercises.make_stubs(source, "losses")            # both losses exercises stubbed ...
    ce = next(r for r in exercises.find_regions(stubbed, "losses") if r.name == "distillation_loss")
    ref = next(r for r in exercises.find_regions(source, "losses") if r.name == "distillation_loss")
    s_lines, r_lines = stubbed.splitlines(keepends=True), source.splitlines(keepends=True)
    s_lines[ce.begin:ce.end + 1] = r_lines[ref.begin:ref.end + 1]   # ... then distillation solved
    path.write_text("".join(s_lines))
    rc, out, _ = run_cli(capsys, "check", "distillation_loss", "--path", str(tmp_path))
    print(out)
    assert rc == 1 and "calls exercise softmax_cross_entropy" in out


def test_unknown_exercise_lists_the_valid_names(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "check", "linear_backwards", "--path", str(tmp_path))
    assert rc == 2
    assert "unknown exercise 'linear_backwards'" in err
    for name in NAMES:
        assert name in err


def test_missing_workspace_is_a_clear_error(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "check", "linear_backward", "--path", str(tmp_path / "nope"))
    assert rc == 2 and "minibert exercises init" in err


def test_list_shows_the_exercises_in_course_order(capsys):
    rc, out, _ = run_cli(capsys, "list")
    assert rc == 0
    positions = [out.index(f" {name} ") for name in NAMES]
    assert positions == sorted(positions)


def test_init_writes_stubs_and_a_readme_and_never_overwrites_work(tmp_path, capsys):
    rc, out, _ = run_cli(capsys, "init", str(tmp_path / "ws"))
    assert rc == 0
    ws = tmp_path / "ws"
    modules = {ex.module for ex in EXERCISES}
    assert {p.stem for p in ws.glob("*.py")} == modules
    assert "minibert exercises check" in (ws / "README.md").read_text()
    (ws / "layers.py").write_text("# my work\n")
    rc, out, _ = run_cli(capsys, "init", str(ws))
    assert rc == 0 and "kept" in out
    assert (ws / "layers.py").read_text() == "# my work\n"


def test_stub_generation_rejects_broken_markers():
    bad = "def f(x):\n    # BEGIN EXERCISE linear_backward\n    return x\n"
    with pytest.raises(ValueError, match="never closed"):
        exercises.find_regions(bad, "layers")
    outside = "# BEGIN EXERCISE linear_backward\nx = 1\n# END EXERCISE linear_backward\n"
    with pytest.raises(ValueError, match="not inside a function"):
        exercises.find_regions(outside, "layers")


def test_make_stubs_keeps_comments_and_docstring_and_replaces_the_code():
    source = '''def linear_backward(dy, cache):
    """Docstring stays."""
    x, W = cache
    # BEGIN EXERCISE linear_backward
    # 1) a numbered step stays
    dx = dy @ W.T            # (N, M) @ (M, D) -> (N, D)
    s = "# not a comment"
    # END EXERCISE linear_backward
    return dx
'''
    stub = exercises.make_stubs(source, "layers")
    lines = stub.splitlines()
    assert '    """Docstring stays."""' in lines and "    x, W = cache" in lines   # outside the region
    assert "    # 1) a numbered step stays" in lines
    assert "    # (N, M) @ (M, D) -> (N, D)" in lines          # a trailing shape comment, on its own line
    assert not any("dy @ W.T" in ln or "not a comment" in ln for ln in lines)
    assert "    raise NotImplementedError(" in lines and "    return dx" in lines
    namespace = {}
    exec(compile(stub, "stub", "exec"), namespace)
    with pytest.raises(NotImplementedError, match="Exercise linear_backward: "):
        namespace["linear_backward"](None, (None, None))


def test_a_check_that_ran_nothing_is_not_a_pass():
    text, passed = exercises.format_verdict(EXERCISES[0], [])
    assert not passed and text.endswith("no checks ran")
