"""Output folders that belong to one run: the one rule every command that writes files follows.

    with claim_dir(args.out, "finetune", resume=args.resume, overwrite=args.overwrite,
                   inputs=[args.model]) as out:
        ...                                   # write into `out` (a Path)

A command writes into a folder only when
- the folder is new or empty (it is created, with its parents, and removed again if the command
  fails before writing anything into it), or
- it holds the SAME command's earlier run, recognised by its run_config.json
  ({"command": ..., ...}), and the user said what to do with it: `--resume` continues it,
  `--overwrite` first deletes the files minibert writes (PROJECT_FILES, in the folder and in the
  nested run folders that hold their own run_config.json), says which, and keeps everything else.
Anything else (a file, a folder of other files, another command's run, a model) is refused with
a MinibertError that names what is there. Nothing is ever deleted that minibert did not write.

One run at a time: `.minibert.lock` is created with O_CREAT|O_EXCL (atomic, also on NFSv3+)
holding the PID, host and command, and removed when the `with` block ends, however it ends
(exception, Ctrl-C; SIGTERM too, since the CLI turns it into an exception). A lock whose process
is gone (kill -9, a crash of the machine) is reported with the command that clears it; it is
never taken over silently, since a PID can be reused and another host's PIDs cannot be checked.
Once the lock is held, temporary files a killed save left behind (files.remove_stale_tmp) are
deleted, with a note.

`claim_file` is the same rule for a command whose output is one file (`embed --out X.npy`):
an existing file is replaced only with --overwrite.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from minibert.errors import MinibertError
from minibert.files import TMP_RE, atomic_write_json, remove_stale_tmp

RUN_RECORD = "run_config.json"
LOCK_NAME = ".minibert.lock"

# Every file name a minibert command writes into its output folder. `--overwrite` deletes these
# (and only these) from the earlier run; a command that writes a new name adds it here.
PROJECT_FILES = frozenset({
    RUN_RECORD, "metrics.json", "training_curves.png", "checkpoint.safetensors",  # train.fit
    "model.safetensors", "config.json", "manifest.json",                         # a model folder
    "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
    "head.json", "evaluation.json", "general.json",                              # finetune, distill(-general)
    "results.json", "results.md", "accuracy_vs_speed.png", "demo_teacher.json",  # the demo
    "teacher_logits.npy", "teacher_logits.json", "sweep.json", "sweep.md", "sweep.png",
    "augmented.safetensors", "demo_student.json",
    "quantization.json", "prune.json",                                           # quantize, prune-heads
})


# ----------------------------------------------------------------------------- the lock

def _lock_owner(lock: Path) -> dict | None:
    """The JSON in a lock file, or None if it is empty/unreadable (killed while creating it)."""
    try:
        owner = json.loads(lock.read_text(encoding="utf-8"))
        return owner if isinstance(owner, dict) else None
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """True if process `pid` exists on this machine and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True                                    # exists, belongs to another user
    except (OverflowError, ValueError):
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True                                    # no /proc (macOS): kill(0) is the answer


def acquire_lock(lock: Path, command: str, what: str) -> dict:
    """Create `lock` atomically for this process. `what` names the folder in messages
    ("--out runs/x"). Returns the record written. MinibertError if another run holds it or a
    stale one is in the way."""
    me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
          "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise MinibertError(_locked_message(lock, what)) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(me) + "\n")
    return me


def _locked_message(lock: Path, what: str) -> str:
    owner = _lock_owner(lock)
    clear = f"if no minibert command is using it, delete {lock} and run again"
    if owner is None:
        return f"{what} is locked by {lock}, which is unreadable (a run killed as it started?); {clear}"
    who = (f"`minibert {owner.get('command', '?')}` (process {owner.get('pid', '?')} on "
           f"{owner.get('host', '?')}, started {owner.get('started', '?')})")
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int) \
            and not pid_alive(owner["pid"]):
        return (f"{what} is locked by {who}, which is no longer running (killed?); "
                f"a stale lock: {clear}")
    return f"{what} is in use by {who}; wait for it to finish or choose another folder ({clear})"


def release_lock(lock: Path, me: dict) -> None:
    """Remove `lock` if it is still ours (someone may have cleared it and started another run)."""
    owner = _lock_owner(lock)
    if owner is not None and owner.get("pid") == me["pid"] and owner.get("started") == me["started"]:
        lock.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- what a folder holds

def read_run_record(folder) -> dict | None:
    """The folder's run_config.json as a dict with a "command", or None."""
    try:
        record = json.loads((Path(folder) / RUN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("command"), str) else None


def _entries(folder: Path) -> list[str]:
    """Names in `folder` other than our lock and leftover temporary files."""
    return sorted(p.name for p in folder.iterdir()
                  if p.name != LOCK_NAME and not TMP_RE.match(p.name))


def _shown(names, n: int = 6) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def describe_foreign(folder: Path, names: list[str]) -> str:
    """What a folder without a run record holds, in words (a model? other files?)."""
    if "model.safetensors" in names and "config.json" in names:
        try:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
        kind = "a Hugging Face model" if "model_type" in cfg or "num_hidden_layers" in cfg \
            else "a minibert model"
        return f"{kind} ({_shown(names)})"
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} minibert did not write ({_shown(names)})"


def project_files_in(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files minibert wrote, other entries) in `folder` and, recursively, in its sub-folders that
    hold their own run record (the demo's teacher/ and student_*/). Other sub-folders count as
    other entries, whole."""
    ours, others = [], []
    for name in _entries(folder):
        p = folder / name
        if p.is_dir() and not p.is_symlink() and read_run_record(p) is not None:
            sub_ours, sub_others = project_files_in(p)
            ours += sub_ours
            others += sub_others
        elif name in PROJECT_FILES and p.is_file() and not p.is_symlink():
            ours.append(p)
        else:
            others.append(p)
    return ours, others


def clear_project_files(folder, why: str, verbose: bool = True) -> list[Path]:
    """Delete what project_files_in finds as minibert's (then the nested run folders left empty),
    print which files went and which other entries stay. Returns the deleted files."""
    folder = Path(folder)
    ours, others = project_files_in(folder)
    for p in ours:
        p.unlink(missing_ok=True)
    for d in sorted({p.parent for p in ours}, key=lambda d: -len(d.parts)):
        if d != folder and not any(d.iterdir()):
            d.rmdir()
    if not verbose:
        return ours
    if ours:
        print(f"{why}: removed {len(ours)} file(s) of the earlier run in {folder}: "
              f"{_shown(str(p.relative_to(folder)) for p in ours)}", flush=True)
    if others:
        print(f"{why}: kept what minibert did not write: "
              f"{_shown(str(p.relative_to(folder)) for p in others)}", flush=True)
    return ours


def prepare_subdir(path, command: str, why: str) -> Path:
    """A sub-folder of an output folder this process holds the lock of (the demo's teacher/,
    student_KD/, sweep/...), ready for a fresh `command` run: created if missing; if it holds an
    earlier `command` run (run_config.json), that run's files are removed (clear_project_files,
    printed with `why`) and anything else is kept; other files are kept too as long as none has
    a name minibert would write over. MinibertError otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise MinibertError(f"{path} is a file, not a folder; move it away")
    path.mkdir(parents=True, exist_ok=True)
    names = _entries(path)
    earlier = read_run_record(path) if names else None
    if earlier is None and not PROJECT_FILES.intersection(names):
        return path                                    # e.g. a user's notes: left beside the run
    if earlier is None or earlier["command"] != command:
        what = describe_foreign(path, names) if earlier is None else \
            f"a `{earlier['command']}` run ({RUN_RECORD})"
        raise MinibertError(f"{path} holds {what}, not an earlier `{command}` run; move it away")
    if names:
        clear_project_files(path, why)
    return path


# ----------------------------------------------------------------------------- claiming

def _make_dirs(path: Path, what: str) -> list[Path]:
    """mkdir -p, returning the folders it created (outermost first)."""
    missing = []
    p = path
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        p = p.parent
    if p.exists() and not p.is_dir():
        raise MinibertError(f"{what}: {p} is a file, not a folder")
    for d in reversed(missing):
        d.mkdir()
    return list(reversed(missing))


def _check_inputs(path: Path, inputs, what: str) -> None:
    for d in inputs:
        if d is not None and Path(d).exists() and path.exists() and \
                Path(d).resolve() == path.resolve():
            raise MinibertError(f"{what}: is the input {d} itself; write the result somewhere else")


@contextmanager
def claim_dir(path, command: str, *, resume: bool = False, overwrite: bool = False,
              inputs=(), option: str = "--out", record: dict | None = None):
    """Make `path` this run's output folder for the duration of the `with` block (see the module
    docstring for the rule). Inputs: command, the name recorded in run_config.json ("finetune");
    resume / overwrite, the user's flags; inputs, folders the command reads (refused as output);
    option, the flag named in messages; record, extra JSON written to run_config.json with the
    command when the run starts fresh (train.fit rewrites it with the full configuration).
    Yields the folder as a Path. Raises MinibertError when the folder cannot be this run's."""
    path = Path(path)
    what = f"{option} {path}"
    if resume and overwrite:
        raise MinibertError("--resume and --overwrite exclude each other: continue the earlier "
                            "run, or replace it")
    if path.exists() and not path.is_dir():
        raise MinibertError(f"{what} is a file, not a folder")
    _check_inputs(path, inputs, what)
    created = _make_dirs(path, what)
    lock = path / LOCK_NAME
    me = acquire_lock(lock, command, what)
    wrote_record = False
    try:
        names = _entries(path)
        earlier = read_run_record(path) if names else None
        if not names:
            if resume:
                raise MinibertError(f"--resume: {what} holds no earlier `{command}` run to continue")
        elif earlier is None:
            raise MinibertError(f"{what} holds {describe_foreign(path, names)}; "
                                f"choose a new or empty folder")
        elif earlier["command"] != command:
            raise MinibertError(f"{what} holds a `{earlier['command']}` run ({RUN_RECORD}), not a "
                                f"`{command}` one; choose another folder")
        elif not (resume or overwrite):
            raise MinibertError(f"{what} already holds a `{command}` run ({_shown(names, 4)}); pass "
                                f"--resume to continue it, --overwrite to replace its files, or "
                                f"choose another folder")
        for tmp in remove_stale_tmp(path):
            print(f"removed {tmp}, left by an interrupted save", flush=True)
        if names and overwrite:
            clear_project_files(path, "--overwrite")
        if not names or overwrite:
            atomic_write_json(path / RUN_RECORD, {"command": command, **(record or {})})
            wrote_record = True
        yield path
    except BaseException:
        if wrote_record and _entries(path) == [RUN_RECORD]:      # failed before writing anything
            (path / RUN_RECORD).unlink(missing_ok=True)
        raise
    finally:
        release_lock(lock, me)
        for d in reversed(created):                  # only folders this call made, if still empty
            try:
                d.rmdir()
            except OSError:
                break


@contextmanager
def claim_file(path, command: str, *, overwrite: bool = False, option: str = "--out"):
    """claim_dir's rule for a single output file: an existing file is replaced only with
    overwrite; a folder is refused; the parent folder is created if needed (and removed again on
    failure if it is left empty). The lock is `.NAME.minibert.lock` beside the file. Yields the
    path (write it with files.atomic_write: the exact name, never with a suffix added)."""
    path = Path(path)
    what = f"{option} {path}"
    if path.is_dir():
        raise MinibertError(f"{what} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise MinibertError(f"{what} already exists; pass --overwrite to replace it, or choose "
                            f"another name")
    created = _make_dirs(path.parent, what)
    lock = path.parent / f".{path.name}.minibert.lock"
    me = acquire_lock(lock, command, what)
    try:
        for tmp in remove_stale_tmp(path.parent, recursive=False, name=path.name):
            print(f"removed {tmp}, left by an interrupted save", flush=True)
        yield path
    finally:
        release_lock(lock, me)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                break
