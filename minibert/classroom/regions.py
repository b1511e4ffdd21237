"""Marked regions of the library, and the one-function exercise files cut from them.

The library marks its teachable code with two comment lines inside a function:

    def linear_backward(dy, cache):
        \"\"\"... docstring ...\"\"\"
        x, W = cache
        # BEGIN EXERCISE linear_backward
        ...the code a student writes...
        # END EXERCISE linear_backward
        return dx, dW, db

`exercise_source(ex)` turns that into a short file of its own: a header saying how to check it,
the imports the function needs (every other name comes from the library, so one exercise never
depends on another), and the function, whose region holds the exercise's numbered questions and
a `raise NotImplementedError` (or, with solution=True, the library's own code). Because the file
is cut from the current library, the exercise and its reference can never drift apart.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

from minibert.classroom.registry import Exercise, texts
from minibert.errors import MinibertError

PACKAGE_DIR = Path(__file__).resolve().parents[1]          # minibert/

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN EXERCISE (?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")
END = re.compile(r"^[ \t]*# END EXERCISE (?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")


class Region(NamedTuple):
    name: str
    module: str
    function: str   # the function whose body holds the region
    begin: int      # 0-based index of the BEGIN line
    end: int        # 0-based index of the END line
    indent: str     # indentation of the BEGIN line (the raise goes there)


def find_regions(source: str, module: str) -> list[Region]:
    """Every `# BEGIN/END EXERCISE <name>` region in a module's source, in file order.

    Raises ValueError for an unclosed, mismatched or nested marker, or one outside a function.
    """
    lines = source.splitlines()
    funcs = [n for n in ast.walk(ast.parse(source))
             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    regions, open_ = [], None
    for i, line in enumerate(lines):
        b, e = BEGIN.match(line), END.match(line)
        if b:
            if open_ is not None:
                raise ValueError(f"{module}.py:{i + 1}: BEGIN EXERCISE {b['name']} inside "
                                 f"the open region {open_[0]!r}")
            open_ = (b["name"], i, b["indent"])
        elif e:
            if open_ is None or open_[0] != e["name"]:
                raise ValueError(f"{module}.py:{i + 1}: END EXERCISE {e['name']} without a "
                                 f"matching BEGIN")
            name, begin, indent = open_
            # the innermost function whose body holds the BEGIN line (ast lines are 1-based;
            # the END line may follow the last statement, where ast's end_lineno stops)
            inside = [f for f in funcs if f.lineno < begin + 1 <= f.end_lineno]
            if not inside:
                raise ValueError(f"{module}.py:{begin + 1}: exercise {name!r} is not inside a "
                                 f"function")
            func = max(inside, key=lambda f: f.lineno)
            regions.append(Region(name, module, func.name, begin, i, indent))
            open_ = None
    if open_ is not None:
        raise ValueError(f"{module}.py:{open_[1] + 1}: BEGIN EXERCISE {open_[0]} is never closed")
    return regions


def library_source(module: str) -> str:
    path = PACKAGE_DIR / f"{module}.py"
    if not path.exists():
        raise MinibertError(f"the library module minibert/{module}.py does not exist")
    return path.read_text(encoding="utf-8")


def exercise_location(ex: Exercise) -> Region:
    for reg in find_regions(library_source(ex.module), ex.module):
        if reg.name == ex.name:
            return reg
    raise MinibertError(f"exercise {ex.name!r}: no '# BEGIN EXERCISE {ex.name}' marker in "
                        f"minibert/{ex.module}.py")


def library_function(ex: Exercise):
    """The library's own (reference) function for an exercise."""
    import importlib
    module = importlib.import_module(f"minibert.{ex.module}")
    return getattr(module, exercise_location(ex).function)


# ---------------------------------------------------------------------------------------------
# The imports a function needs
# ---------------------------------------------------------------------------------------------

def _free_names(func: ast.AST) -> list[str]:
    """Names the function reads that it does not bind itself (arguments, assignments, loops,
    comprehensions, nested defs): they come from its module or from builtins."""
    bound, used = set(), []
    for node in ast.walk(func):
        if isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, (ast.Store, ast.Del)):
                bound.add(node.id)
            elif node.id not in used:
                used.append(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node is not func:
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return [n for n in used if n not in bound and not hasattr(builtins, n)]


def _module_bindings(tree: ast.Module, module: str) -> dict[str, str]:
    """Top-level name -> the import line that makes it available in a workspace file."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            for a in node.names:
                line = f"import {a.name}" + (f" as {a.asname}" if a.asname else "")
                out[(a.asname or a.name).split(".")[0]] = line
        elif isinstance(node, ast.ImportFrom):
            src = node.module or ""
            if node.level:                                  # from .layers import x
                src = "minibert" + (f".{src}" if src else "")
            for a in node.names:
                name = a.asname or a.name
                out[name] = f"from {src} import {a.name}" + (f" as {a.asname}" if a.asname else "")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out[node.name] = f"from minibert.{module} import {node.name}"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out[n.id] = f"from minibert.{module} import {n.id}"
    return out


def _import_block(lines: list[str]) -> list[str]:
    """Sorted plain imports first, then `from X import a, b` merged per module."""
    plain = sorted({ln for ln in lines if ln.startswith("import ")})
    froms: dict[str, list[str]] = {}
    for ln in lines:
        if ln.startswith("from "):
            src, name = ln[5:].split(" import ", 1)
            froms.setdefault(src, [])
            if name not in froms[src]:
                froms[src].append(name)
    merged = [f"from {src} import {', '.join(sorted(names))}" for src, names in sorted(froms.items())]
    return plain + ([""] if plain and merged else []) + merged


# ---------------------------------------------------------------------------------------------
# One exercise file
# ---------------------------------------------------------------------------------------------

def _raise_lines(indent: str, message: str, width: int = 92) -> list[str]:
    """`raise NotImplementedError(...)` with the message wrapped into short string literals."""
    chunks = textwrap.wrap(message, width=max(40, width - len(indent) - 8), break_on_hyphens=False,
                           break_long_words=False)
    parts = [repr(c + " ") for c in chunks[:-1]] + [repr(chunks[-1])]
    return ([f"{indent}raise NotImplementedError("]
            + [f"{indent}    {p}" for p in parts[:-1]] + [f"{indent}    {parts[-1]})"])


def stub_message(ex: Exercise, workspace: str) -> str:
    return (f"Exercise {ex.name}: {texts(ex.name).task} Then run: "
            f"minibert exercises check {ex.name} --path {workspace}")


def _docstring_lines(func: ast.FunctionDef, lines: list[str], override: str | None):
    """(first, last) 0-based lines of the docstring, and its replacement lines (or None)."""
    body0 = func.body[0] if func.body else None
    if not (isinstance(body0, ast.Expr) and isinstance(body0.value, ast.Constant)
            and isinstance(body0.value.value, str)):
        return None, None
    first, last = body0.lineno - 1, body0.end_lineno - 1
    if override is None:
        return (first, last), None
    indent = re.match(r"[ \t]*", lines[first])[0]
    # the first line follows the quotes, the rest is indented like the text module's source:
    # dedent those alone, then indent them like the function body
    head, _, rest = override.strip("\n").partition("\n")
    text = [head.strip()] + textwrap.dedent(rest).splitlines()
    new = [f'{indent}"""{text[0]}'] + [(indent + t) if t.strip() else "" for t in text[1:]]
    new += [f'{indent}"""'] if len(text) > 1 else []
    if len(text) == 1:
        new = [f'{indent}"""{text[0]}"""']
    return (first, last), new


def exercise_source(ex: Exercise, workspace: str = "DIR", solution: bool = False) -> str:
    """The text of the workspace file DIR/<name>.py for one exercise (see the module docstring)."""
    source = library_source(ex.module)
    lines = source.splitlines()
    tree = ast.parse(source)
    reg = exercise_location(ex)
    func = next(n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                and n.name == reg.function and n.lineno - 1 < reg.begin <= n.end_lineno)
    t = texts(ex.name)
    start = min([func.lineno] + [d.lineno for d in func.decorator_list]) - 1
    stop = max(func.end_lineno - 1, reg.end)                    # last line, 0-based
    doc_span, doc_new = _docstring_lines(func, lines, t.doc)
    body = []
    for i in range(start, stop + 1):
        if doc_span and doc_span[0] <= i <= doc_span[1]:
            if doc_new is not None:
                if i == doc_span[0]:
                    body.extend(doc_new)
                continue
        if reg.begin < i < reg.end and not solution:
            continue
        body.append(lines[i])
        if i == reg.begin and not solution:
            for k, step in enumerate(t.steps, 1):
                wrapped = textwrap.wrap(step, width=92 - len(reg.indent) - 5)
                body.append(f"{reg.indent}# {k}. {wrapped[0]}")
                body.extend(f"{reg.indent}#    {w}" for w in wrapped[1:])
            body.extend(_raise_lines(reg.indent, stub_message(ex, workspace)))
    bindings = _module_bindings(tree, ex.module)
    imports = [bindings[n] for n in _free_names(func) if n in bindings]
    header = [
        f'"""Exercise {ex.name}: {ex.title}.',
        "",
        f"Read first: {ex.lesson} (section {ex.section}).",
        f"Write the code of {reg.function}() between the BEGIN and END lines. Everything it",
        "imports is minibert's reference code, so this exercise does not depend on your others.",
        "",
        f"    minibert exercises check {ex.name} --path {workspace}",
        f"    minibert exercises hint {ex.name} --level 1 --path {workspace}",
        f"    minibert exercises test {ex.name} --path {workspace}",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    block = _import_block(imports)
    return "\n".join(header + block + (["", ""] if block else []) + body) + "\n"


def solution_region(ex: Exercise) -> str:
    """The library's code between the markers, dedented (what `exercises solution` prints)."""
    lines = library_source(ex.module).splitlines()
    reg = exercise_location(ex)
    return textwrap.dedent("\n".join(lines[reg.begin + 1:reg.end])) + "\n"
