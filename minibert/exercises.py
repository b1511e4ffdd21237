"""Classroom exercises, generated from marked regions of the library itself.

The library marks its teachable code with two comment lines:

    def linear_backward(dy, cache):
        \"\"\"... docstring ...\"\"\"
        # BEGIN EXERCISE linear_backward
        x, W = cache.x, cache.W
        dx = dy @ W.T                  # (B,T,M) @ (M,D) -> (B,T,D)
        ...
        # END EXERCISE linear_backward

A student's workspace (`minibert exercises init DIR`) is a copy of each marked module where the
code between the markers is replaced by `raise NotImplementedError("Exercise <name>: ...")`.
Comment lines survive (shape comments, numbered steps: they are the hints) and so does the
docstring, so a stub says exactly what to compute. Because the stubs are cut out of the current
library, the exercise and the solution can never drift apart.

`minibert exercises check NAME --path DIR` imports the student's file by path, takes that one
function and runs `minibert.exercise_checks` on it: the same checks the library's own tests
run on the reference code (`tests/test_exercises.py`).
"""

from __future__ import annotations

import ast
import importlib.util
import io
import re
import sys
import textwrap
import tokenize
from itertools import count
from pathlib import Path
from typing import Callable, NamedTuple

from minibert.errors import MinibertError

PACKAGE_DIR = Path(__file__).resolve().parent

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN EXERCISE (?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")
END = re.compile(r"^[ \t]*# END EXERCISE (?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$")


class Exercise(NamedTuple):
    name: str      # the marker name: `# BEGIN EXERCISE <name>`
    module: str    # library module holding the region: minibert/<module>.py, DIR/<module>.py
    lesson: str    # the lesson that teaches it
    title: str     # one line for `minibert exercises list`
    task: str      # what the stub asks for (goes into its NotImplementedError)


# Course order: each exercise builds on the ones before it.
EXERCISES: list[Exercise] = [
    Exercise("linear_backward", "layers", "lessons/01_gradients.py",
             "backward of y = x @ W + b",
             "return dx, dW, db for y = x @ W + b (dW and db sum over every leading axis)"),
    Exercise("softmax_backward", "layers", "lessons/02_softmax_temperature.py",
             "backward of the softmax (a Jacobian-vector product, no Jacobian)",
             "return dx = y * (dy - sum(dy * y, last axis)) without building the (D, D) Jacobian"),
    Exercise("softmax_cross_entropy", "losses", "lessons/02_softmax_temperature.py",
             "mean cross-entropy of softmax(logits) and its gradient (p - onehot) / N",
             "return the mean cross-entropy of softmax(logits) and dlogits = (p - onehot) / N, "
             "stably (subtract the row max)"),
    Exercise("layernorm_backward", "layers", "lessons/03_layernorm_gelu.py",
             "backward of LayerNorm from the cached xhat and rstd",
             "return dx, dgamma, dbeta from the cached xhat and rstd"),
    Exercise("gelu_backward", "layers", "lessons/03_layernorm_gelu.py",
             "backward of the exact (erf) GELU",
             "return dx = dy * (Phi(x) + x * phi(x)) for the exact erf GELU"),
    Exercise("attention_backward", "attention", "lessons/04_attention.py",
             "backward of multi-head self-attention with a padding mask",
             "backpropagate through the output projection, probs @ v, the softmax, the scaled "
             "q k^T and the fused QKV projection (masked keys get no gradient)"),
    Exercise("encoder_layer_backward", "model", "lessons/05_bert.py",
             "backward of one post-LayerNorm encoder layer, by composing the layer backwards",
             "compose the backward passes: FFN LayerNorm, FFN out, GELU, FFN in, attention "
             "LayerNorm, attention; do not forget the two residual branches"),
    Exercise("adamw_step", "optim", "lessons/06_finetune.py",
             "one AdamW step: bias-corrected moments, decoupled weight decay",
             "update params, state.m, state.v and state.step in place: bias-corrected Adam plus "
             "decoupled weight decay p -= lr * wd * p (not on biases / LayerNorm)"),
    Exercise("distillation_loss", "losses", "lessons/07_distillation.py",
             "alpha * CE + (1 - alpha) * T^2 * KL, forward and backward",
             "return alpha * CE + (1 - alpha) * T^2 * KL(p_t || p_s) at temperature T and its "
             "gradient; the soft part's gradient is (1 - alpha) * (T / N) * (p_s - p_t)"),
    Exercise("init_student", "student", "lessons/07_distillation.py",
             "initialise a shallow student from chosen teacher layers",
             "copy the embeddings, the mapped teacher encoder layers and the head into fresh "
             "student arrays (copies, never views of the teacher)"),
]

WORKSPACE_README = "README.md"


# ---------------------------------------------------------------------------------------------
# Finding the marked regions
# ---------------------------------------------------------------------------------------------

class Region(NamedTuple):
    name: str
    module: str
    function: str   # the function whose body holds the region
    begin: int      # 0-based index of the BEGIN line
    end: int        # 0-based index of the END line
    indent: str     # indentation of the BEGIN line (the raise goes there)
    docstring: tuple[int, int] | None   # 0-based [first, last] lines of the function docstring


def exercise_by_name(name: str) -> Exercise:
    for ex in EXERCISES:
        if ex.name == name:
            return ex
    valid = ", ".join(ex.name for ex in EXERCISES)
    raise MinibertError(f"unknown exercise {name!r}; the exercises are: {valid}")


def find_regions(source: str, module: str) -> list[Region]:
    """Every `# BEGIN/END EXERCISE <name>` region in a module's source, in file order.

    Raises ValueError for an unclosed, mismatched or nested marker, or one outside a function.
    """
    lines = source.splitlines()
    tree = ast.parse(source)
    funcs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
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
            doc = None
            if (func.body and isinstance(func.body[0], ast.Expr)
                    and isinstance(func.body[0].value, ast.Constant)
                    and isinstance(func.body[0].value.value, str)):
                doc = (func.body[0].lineno - 1, func.body[0].end_lineno - 1)
            regions.append(Region(name, module, func.name, begin, i, indent, doc))
            open_ = None
    if open_ is not None:
        raise ValueError(f"{module}.py:{open_[1] + 1}: BEGIN EXERCISE {open_[0]} is never closed")
    return regions


def _comments_by_line(source: str) -> dict[int, str]:
    """0-based line index -> the comment text on that line (tokenize knows '#' inside strings)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out.setdefault(tok.start[0] - 1, tok.string)
    return out


def stub_message(ex: Exercise) -> str:
    return f"Exercise {ex.name}: {ex.task}. Then run: minibert exercises check {ex.name}"


def _raise_lines(indent: str, message: str, width: int = 92) -> list[str]:
    """`raise NotImplementedError(...)` with the message wrapped into short string literals."""
    chunks = textwrap.wrap(message, width=max(40, width - len(indent) - 8))
    parts = [repr(c + " ") for c in chunks[:-1]] + [repr(chunks[-1])]
    return ([f"{indent}raise NotImplementedError("]
            + [f"{indent}    {p}" for p in parts[:-1]] + [f"{indent}    {parts[-1]})"])


def make_stubs(source: str, module: str) -> str:
    """The module's source with each marked region's code replaced by a NotImplementedError.

    Kept: the markers, every comment (full-line comments as they are; a trailing comment such
    as a shape comment moves onto its own line, in order) and the docstring.
    Dropped: the code. The raise goes at the end of the region, at the BEGIN marker's indent.
    """
    lines = source.splitlines()
    comments = _comments_by_line(source)
    out, pos = [], 0
    for reg in find_regions(source, module):
        ex = exercise_by_name(reg.name)
        out.extend(lines[pos:reg.begin + 1])
        for i in range(reg.begin + 1, reg.end):
            line = lines[i]
            if reg.docstring and reg.docstring[0] <= i <= reg.docstring[1]:
                out.append(line)
            elif line.strip().startswith("#"):
                out.append(line)
            elif i in comments:                  # a trailing shape comment: keep it alone
                out.append(reg.indent + comments[i])
        out.extend(_raise_lines(reg.indent, stub_message(ex)))
        out.append(lines[reg.end])
        pos = reg.end + 1
    out.extend(lines[pos:])
    return "\n".join(out) + "\n"


_RELATIVE_IMPORT = re.compile(r"^(?P<indent>[ \t]*)from \.(?P<rest>[A-Za-z_][\w.]*)? import ",
                              re.MULTILINE)


def absolute_imports(source: str) -> str:
    """`from .layers import x` -> `from minibert.layers import x`: workspace files live outside
    the package, so they import the (reference) library by its absolute name."""
    def fix(m: re.Match) -> str:
        rest = m["rest"]
        target = f"minibert.{rest}" if rest else "minibert"
        return f"{m['indent']}from {target} import "
    return _RELATIVE_IMPORT.sub(fix, source)


def library_source(module: str) -> str:
    path = PACKAGE_DIR / f"{module}.py"
    if not path.exists():
        raise MinibertError(f"the library module minibert/{module}.py does not exist yet")
    return path.read_text(encoding="utf-8")


def available_exercises() -> list[Exercise]:
    """Exercises whose marked region is present in the current library, in course order."""
    found = set()
    for module in dict.fromkeys(ex.module for ex in EXERCISES):
        path = PACKAGE_DIR / f"{module}.py"
        if path.exists():
            found.update(r.name for r in find_regions(path.read_text(encoding="utf-8"), module))
    return [ex for ex in EXERCISES if ex.name in found]


def exercise_location(ex: Exercise) -> Region:
    for reg in find_regions(library_source(ex.module), ex.module):
        if reg.name == ex.name:
            return reg
    raise MinibertError(f"exercise {ex.name!r}: no '# BEGIN EXERCISE {ex.name}' marker in "
                        f"minibert/{ex.module}.py")


# ---------------------------------------------------------------------------------------------
# The workspace
# ---------------------------------------------------------------------------------------------

def write_workspace(directory: str | Path, *, solutions: bool = False,
                    overwrite: bool = False) -> list[Path]:
    """Write each marked module into `directory` (stubs, or the reference code when
    `solutions`) plus a README. Existing files are kept unless `overwrite`: a student's work is
    never clobbered. Returns the paths written."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise MinibertError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    exercises = available_exercises()
    if not exercises:
        raise MinibertError("the library has no marked exercise regions yet")
    written = []
    for module in dict.fromkeys(ex.module for ex in exercises):
        source = library_source(module)
        text = absolute_imports(source if solutions else make_stubs(source, module))
        path = directory / f"{module}.py"
        if path.exists() and not overwrite:
            continue
        path.write_text(text, encoding="utf-8")
        written.append(path)
    readme = directory / WORKSPACE_README
    if overwrite or not readme.exists():
        readme.write_text(workspace_readme(exercises), encoding="utf-8")
        written.append(readme)
    return written


def workspace_readme(exercises: list[Exercise]) -> str:
    rows = "\n".join(
        f"| {i} | `{ex.name}` | `{ex.module}.py` | {ex.title} | `{ex.lesson}` |"
        for i, ex in enumerate(exercises, 1))
    return f"""# Your minibert exercise workspace

Each file here is a copy of a minibert library module in which the code of one or more
functions was cut out and replaced by `raise NotImplementedError("Exercise <name>: ...")`.
The docstring, the shape comments and the numbered steps were kept: they are your hints.
Everything else in the file is the real library, and the rest of minibert (the forward
passes, the other layers) stays the reference implementation, so each exercise is checked
on its own.

Work through them in this order (each builds on the one before):

| # | exercise | file | what you write | lesson |
|---|---|---|---|---|
{rows}

The loop, for each exercise:

1. Run `minibert exercises check NAME --path THIS_DIR`: it fails ("not implemented yet").
2. Read the lesson, then replace the `raise NotImplementedError(...)` with your code.
3. Run the check again. It tells you which check failed and by how much (for example
   `dW vs finite differences: rel error 3.3e-01, tolerance 1e-06`). Fix and repeat until
   every check passes.

The checks are exactly the ones that test the library's own code (`tests/test_exercises.py`):
finite-difference gradient checks in float64, closed forms, and dtype checks (float32 in,
float32 out). Some exercises call earlier ones in the same file (`distillation_loss` may use
your `softmax_cross_entropy`): do them in order.

Stuck? `minibert exercises list` shows where each solution lives in the library.
"""


# ---------------------------------------------------------------------------------------------
# Checking a student's code
# ---------------------------------------------------------------------------------------------

_load_counter = count()


def load_student_function(ex: Exercise, directory: str | Path) -> Callable:
    """Import DIR/<module>.py by path (a fresh module each call, so edits are picked up) and
    return the function that holds the exercise's region."""
    directory = Path(directory)
    path = directory / f"{ex.module}.py"
    if not directory.is_dir():
        raise MinibertError(f"no workspace at {directory}: create one with "
                            f"`minibert exercises init {directory}`")
    if not path.exists():
        raise MinibertError(f"{path} is missing: `minibert exercises init {directory}` writes it")
    func_name = exercise_location(ex).function
    mod_name = f"minibert_workspace_{ex.module}_{next(_load_counter)}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module   # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise MinibertError(f"{path}:{err.lineno}: syntax error: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 - any import-time failure is the student's to see
        raise MinibertError(f"importing {path} failed: {type(err).__name__}: {err}") from None
    finally:
        sys.modules.pop(mod_name, None)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise MinibertError(f"{path} has no function {func_name}() (exercise {ex.name})")
    return func


def run_exercise_checks(ex: Exercise, func: Callable) -> list:
    from minibert import exercise_checks
    return exercise_checks.CHECKS[ex.name](func)


def format_verdict(ex: Exercise, results: list, path: Path | None = None) -> tuple[str, bool]:
    """A friendly report: one line per check, then the verdict. Returns (text, all passed)."""
    where = f" ({path})" if path else ""
    lines = [f"Exercise {ex.name}: {ex.title}{where}"]
    for r in results:
        lines.append(f"  {'PASS' if r.passed else 'FAIL'}  {r.name}: {r.describe()}")
    if not results:
        return "\n".join(lines + ["  no checks ran"]), False
    failed = [r for r in results if not r.passed]
    if not failed:
        lines.append(f"All {len(results)} checks pass. Well done: on to the next exercise "
                     f"(`minibert exercises list`).")
        return "\n".join(lines), True
    first = failed[0]
    stub = "NotImplementedError" in first.detail
    if stub and f"Exercise {ex.name}:" in first.detail:
        lines.append(f"Not implemented yet: replace the `raise NotImplementedError` in "
                     f"{ex.module}.py ({exercise_location(ex).function}) with your code.")
    elif stub:
        other = re.search(r"Exercise (\w+):", first.detail)
        lines.append(f"Your code calls exercise {other[1] if other else '?'}, which is still a "
                     f"stub: do that one first.")
    else:
        lines.append(f"{len(failed)} of {len(results)} checks failed; start with the first: "
                     f"{first.name} ({first.describe()}).")
    return "\n".join(lines), False


def check(name: str, directory: str | Path = "workspace") -> tuple[str, bool]:
    ex = exercise_by_name(name)
    func = load_student_function(ex, directory)
    results = run_exercise_checks(ex, func)
    return format_verdict(ex, results, Path(directory) / f"{ex.module}.py")


# ---------------------------------------------------------------------------------------------
# CLI handlers (flags in minibert/cli.py)
# ---------------------------------------------------------------------------------------------

def cli_list(args) -> int:
    available = {ex.name for ex in available_exercises()}
    print("minibert exercises, in course order "
          "(minibert exercises init DIR; minibert exercises check NAME --path DIR):")
    for i, ex in enumerate(EXERCISES, 1):
        if ex.name in available:
            where = f"minibert/{ex.module}.py:{exercise_location(ex).function}"
        else:
            where = f"minibert/{ex.module}.py (region not marked yet)"
        print(f"{i:2d}. {ex.name:<24s} {ex.title}")
        print(f"    {'':<24s} solution: {where}; lesson: {ex.lesson}")
    return 0


def cli_init(args) -> int:
    directory = Path(args.dir)
    existing = [p for p in directory.glob("*.py")] if directory.is_dir() else []
    written = write_workspace(directory)
    names = ", ".join(ex.name for ex in available_exercises())
    for p in written:
        print(f"wrote {p}")
    for p in existing:
        print(f"kept {p} (your work is never overwritten; delete it to get a fresh stub)")
    print(f"Exercises: {names}")
    print(f"Start with: minibert exercises check {EXERCISES[0].name} --path {directory}")
    return 0


def cli_check(args) -> int:
    text, ok = check(args.name, args.path)
    print(text)
    return 0 if ok else 1
