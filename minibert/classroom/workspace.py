"""A student's workspace: one short file per exercise, a README, and loading the student's code.

`minibert exercises init DIR` writes DIR/<name>.py for every exercise (see regions.py), a
README.md with the course order and the commands, and DIR/.minibert-exercises.json recording
how it was made (`--no-solutions`: `minibert exercises solution` then refuses). Existing
files are never overwritten: a student's work is never clobbered.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from itertools import count
from pathlib import Path
from typing import Callable

from minibert.classroom.regions import exercise_location, exercise_source
from minibert.classroom.registry import EXERCISES, Exercise
from minibert.errors import MinibertError
from minibert.files import atomic_write_json, atomic_write_text

CONFIG = ".minibert-exercises.json"
README = "README.md"


def write_workspace(directory: str | Path, *, solutions: bool = False, allow_solutions: bool = True,
                    overwrite: bool = False) -> tuple[list[Path], list[Path]]:
    """Write the exercise files (stubs; the reference code when `solutions`), the README and
    the config into `directory`. Returns (written, kept): files that already existed are kept
    unless `overwrite`."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise MinibertError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    shown = str(directory)
    written, kept = [], []
    for ex in EXERCISES:
        path = directory / f"{ex.name}.py"
        if path.exists() and not overwrite:
            kept.append(path)
            continue
        atomic_write_text(path, exercise_source(ex, shown, solution=solutions))
        written.append(path)
    readme = directory / README
    if overwrite or not readme.exists():
        atomic_write_text(readme, workspace_readme(shown))
        written.append(readme)
    config = directory / CONFIG
    if overwrite or not config.exists():
        atomic_write_json(config, {"solutions": bool(allow_solutions),
                                   "exercises": [ex.name for ex in EXERCISES]})
        written.append(config)
    return written, kept


def solutions_allowed(directory: str | Path) -> bool:
    """False only when the workspace was made with `init --no-solutions`."""
    path = Path(directory) / CONFIG
    if not path.exists():
        return True
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get("solutions", True))
    except (OSError, ValueError):
        return False                          # a damaged config does not unlock the answers


def workspace_readme(directory: str) -> str:
    rows = "\n".join(f"| {i} | `{ex.name}.py` | {ex.title} | `{ex.lesson}`, section {ex.section} |"
                     for i, ex in enumerate(EXERCISES, 1))
    d = directory
    return f"""# Your minibert exercise workspace

One file per exercise. Each holds one function of the minibert library with its code cut out
between `# BEGIN EXERCISE <name>` and `# END EXERCISE <name>`: the signature, the docstring
with the shapes, and numbered questions that lead you to the answer. Everything the function
imports is the library's reference code, so every exercise stands on its own: a mistake in one
never breaks another.

Work through them in this order:

| # | file | what you write | read first |
|---|---|---|---|
{rows}

The loop, for each exercise (NAME is the file name without `.py`):

1. Read the lesson section, then answer the numbered questions in the file, on paper first.
2. Replace the `raise NotImplementedError(...)` with your code.
3. Check it: `minibert exercises check NAME --path {d}`
   A failure says which case failed (e.g. "with attention dropout p=0.3") and how your result
   differs (wrong sign, transposed, a constant factor, the worst entry, per q/k/v block), never
   what the answer is.
4. Stuck? `minibert exercises hint NAME --level 1 --path {d}` (then `--level 2`, `--level 3`).
5. Work like the library's authors: `minibert exercises test NAME --path {d}` runs the
   library's own unit tests for that function against your code.

Everything at once: `minibert exercises check --all --path {d}`.
"""


_load_counter = count()


def load_student_function(ex: Exercise, directory: str | Path) -> Callable:
    """Import DIR/<name>.py by path (a fresh module each call, so edits are picked up) and
    return the function that holds the exercise's region."""
    directory = Path(directory)
    path = directory / f"{ex.name}.py"
    if not directory.is_dir():
        raise MinibertError(f"no workspace at {directory}: create one with "
                            f"`minibert exercises init {directory}`")
    if not path.exists():
        raise MinibertError(f"{path} is missing: `minibert exercises init {directory}` writes "
                            f"it again (existing files are kept)")
    func_name = exercise_location(ex).function
    mod_name = f"minibert_workspace_{ex.name}_{next(_load_counter)}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module   # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise MinibertError(f"{path}:{err.lineno}: syntax error: {err.msg}") from None
    except (Exception, SystemExit) as err:  # any import-time failure is the student's to see
        raise MinibertError(f"importing {path} failed: {type(err).__name__}: {err}") from None
    finally:
        sys.modules.pop(mod_name, None)
    func = getattr(module, func_name, None)
    if not callable(func):
        raise MinibertError(f"{path} has no function {func_name}() (exercise {ex.name})")
    return func
