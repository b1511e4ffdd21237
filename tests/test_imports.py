"""Imports point down: cli -> workflows -> io and core, never back up and never in a circle.

The rules are read from the source with `ast` (every import statement counts, including the
lazy ones inside functions: a lazy import still ties two modules together), so breaking one
fails here with the offending file and line, before anyone notices it as a slow start-up or a
confusing ImportError.

1. A core module (the maths the lessons teach, and the fast implementations beside it)
   imports only other core modules and minibert.errors: no tokenizer, weights, data,
   training, CLI, ...
2. Nothing in minibert/ imports the lessons (they are scripts built on top of the library).
3. No import cycle among minibert modules.
4. `import minibert`, and importing every minibert module, pulls in neither torch nor
   transformers (only the PyTorch comparisons import them, inside the functions that need them).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minibert"

# The reference maths and its fast stand-ins (fast_*.py, matched by prefix). Everything else
# (io: tokenizer, weights, data, files, checkpoints, ...; workflows: train, distill, ...; the
# cli) sits above them.
CORE = {"layers", "attention", "config", "model", "heads", "losses", "optim", "gradcheck", "fast",
        "quantize", "prune"}   # quantize, prune: arithmetic on arrays too (the int8 format, head gates)
CORE_MAY_ALSO_IMPORT = {"errors"}


def is_core(name: str) -> bool:
    return name in CORE or name.startswith("fast_")


def modules() -> dict[str, Path]:
    """minibert module name (without the package) -> its file."""
    return {p.stem: p for p in sorted(PACKAGE.glob("*.py")) if p.stem != "__init__"}


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported top-level name, line) for every import in a file, with minibert's own
    modules as their bare names ("minibert.train" -> "train", "from . import x" -> "x")."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "minibert":
                    out.append((parts[1] if len(parts) > 1 else "minibert", node.lineno))
                else:
                    out.append((alias.name, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level > 0 or mod == "minibert" or mod.startswith("minibert."):
                rest = mod.split(".", 1)[1] if mod.startswith("minibert.") else (
                    "" if mod == "minibert" else mod)
                if rest:
                    out.append((rest.split(".")[0], node.lineno))
                else:                                   # from minibert import x / from . import x
                    out += [(alias.name, node.lineno) for alias in node.names]
            else:
                out.append((mod, node.lineno))
    return out


def internal_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: {m for m, _ in imports_of(path) if m in mods and m != name}
            for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (depth-first search with colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_reader_sees_every_form_of_import(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import minibert.train\nfrom minibert.data import x\nfrom minibert import cli\n"
                   "from .weights import y\nfrom . import demo\nimport numpy as np\n"
                   "def f():\n    from minibert.infer import z\n")
    assert [m for m, _ in imports_of(src)] == ["train", "data", "cli", "weights", "demo",
                                               "numpy", "infer"]


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_core_modules_import_only_core():
    mods = modules()
    core = [name for name in mods if is_core(name)]
    assert set(CORE) <= set(core), f"core modules missing from minibert/: {set(CORE) - set(core)}"
    bad = [f"minibert/{name}.py:{line} imports minibert.{m}"
           for name in core for m, line in imports_of(mods[name])
           if m in mods and not (is_core(m) or m in CORE_MAY_ALSO_IMPORT)]
    assert not bad, "core modules must not import io/workflow/cli modules:\n" + "\n".join(bad)


def test_the_library_never_imports_the_lessons():
    lesson_names = {"lessons", "_common"} | {p.stem for p in PACKAGE.parent.glob("lessons/*.py")}
    bad = [f"minibert/{name}.py:{line} imports {m}"
           for name, path in modules().items() for m, line in imports_of(path)
           if m.split(".")[0] in lesson_names]
    assert not bad, "\n".join(bad)


def test_no_import_cycle_among_minibert_modules():
    cycle = find_cycle(internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(f"minibert.{m}" for m in cycle)


def test_no_import_cycle_inside_the_classroom_package():
    # modules() sees minibert/classroom as one node; its own modules get the same rule
    pkg = PACKAGE / "classroom"
    names = {p.stem for p in pkg.glob("*.py")}
    graph = {}
    for path in sorted(pkg.glob("*.py")):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            mods = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            deps |= {m.split(".")[2] for m in mods if m.startswith("minibert.classroom.")}
        graph[path.stem] = deps & names
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(f"minibert.classroom.{m}" for m in cycle)


@pytest.mark.parametrize("what", ["import minibert", "every minibert module"])
def test_importing_minibert_does_not_import_torch_or_transformers(what):
    names = ["minibert"] if what == "import minibert" else [f"minibert.{m}" for m in modules()]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            "print(' '.join(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "", f"{what} imported {run.stdout.strip()}"
