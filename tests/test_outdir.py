"""minibert/outdir.py and files.py: an output folder belongs to one run, one run at a time; writes
are atomic, 0644 under umask 022 (the umask honoured), and leave no temporary file behind, also
when the disk is full or a killed save left one."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minibert import files, outdir
from minibert.errors import MinibertError

REPO = Path(__file__).resolve().parents[1]


def write_run(folder: Path, command: str, extra=("model.safetensors", "head.json")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run_config.json").write_text(json.dumps({"command": command}))
    for name in extra:
        (folder / name).write_text("old " + name)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the folder rule

def test_a_new_folder_is_created_recorded_and_unlocked_at_the_end(tmp_path):
    out = tmp_path / "a" / "b"
    with outdir.claim_dir(out, "finetune", record={"seed": 1}) as got:
        assert got == out and (out / outdir.LOCK_NAME).is_file()
        lock = json.loads((out / outdir.LOCK_NAME).read_text())
        assert lock["pid"] == os.getpid() and lock["host"] == socket.gethostname()
        (out / "model.safetensors").write_bytes(b"x")
    assert json.loads((out / "run_config.json").read_text()) == {"command": "finetune", "seed": 1}
    assert not (out / outdir.LOCK_NAME).exists()


def test_a_failure_before_any_output_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(RuntimeError, match="bad data"):
        with outdir.claim_dir(out, "finetune"):
            raise RuntimeError("bad data")
    assert not (tmp_path / "new").exists()          # both folders were made by the claim: removed
    existing = tmp_path / "empty"
    existing.mkdir()
    with pytest.raises(KeyboardInterrupt):
        with outdir.claim_dir(existing, "finetune"):
            raise KeyboardInterrupt
    assert existing.is_dir() and list(existing.iterdir()) == []   # not ours to remove; lock gone


def test_a_folder_of_other_files_is_refused_and_untouched(tmp_path):
    home = tmp_path / "home"
    (home / "teacher").mkdir(parents=True)
    (home / "teacher" / "thesis.tex").write_text("years of work")
    (home / "notes.txt").write_text("mine")
    before = snapshot(home)
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(MinibertError, match=r"--out .*home holds 2 entries minibert did not "
                                                r"write \(notes.txt, teacher\)"):
            with outdir.claim_dir(home, "demo", **flags):
                pytest.fail("claimed a folder of someone else's files")
    assert snapshot(home) == before and sorted(os.listdir(home)) == ["notes.txt", "teacher"]


def test_a_model_folder_and_another_commands_run_are_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"w")
    (model / "config.json").write_text(json.dumps({"num_layers": 2}))
    with pytest.raises(MinibertError, match="holds a minibert model"):
        with outdir.claim_dir(model, "export", overwrite=True):
            pass
    run = tmp_path / "distilled"
    write_run(run, "distill")
    with pytest.raises(MinibertError, match="holds a `distill` run .*not a `finetune` one"):
        with outdir.claim_dir(run, "finetune", overwrite=True):
            pass
    assert (run / "head.json").read_text() == "old head.json"


def test_the_same_commands_run_needs_resume_or_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    write_run(run, "finetune")
    (run / "my_notes.md").write_text("keep me")
    with pytest.raises(MinibertError, match="already holds a `finetune` run .*--resume.*--overwrite"):
        with outdir.claim_dir(run, "finetune"):
            pass
    with outdir.claim_dir(run, "finetune", resume=True):
        assert (run / "head.json").read_text() == "old head.json"      # resume touches nothing
    with outdir.claim_dir(run, "finetune", overwrite=True):
        assert sorted(os.listdir(run)) == [outdir.LOCK_NAME, "my_notes.md", "run_config.json"]
    text = capsys.readouterr().out
    assert "--overwrite: removed 3 file(s)" in text and "head.json" in text
    assert "kept what minibert did not write: my_notes.md" in text
    assert (run / "my_notes.md").read_text() == "keep me"
    with pytest.raises(MinibertError, match="exclude each other"):
        with outdir.claim_dir(run, "finetune", resume=True, overwrite=True):
            pass


def test_overwrite_clears_nested_runs_but_keeps_foreign_files_and_folders(tmp_path, capsys):
    out = tmp_path / "demo"
    write_run(out, "demo", extra=("results.json",))
    write_run(out / "teacher", "demo-teacher")
    (out / "teacher" / "mine.txt").write_text("user file in a folder the demo made")
    write_run(out / "student_KD", "demo-student KD")
    (out / "data").mkdir()
    (out / "data" / "config.json").write_text("a user folder: not a run, so not touched")
    with outdir.claim_dir(out, "demo", overwrite=True):
        pass
    assert not (out / "student_KD").exists()                    # only minibert's files: removed
    assert sorted(os.listdir(out / "teacher")) == ["mine.txt"]
    assert (out / "data" / "config.json").is_file()


def test_resume_into_a_new_folder_and_bad_paths_are_refused(tmp_path):
    with pytest.raises(MinibertError, match="--resume: .* holds no earlier `finetune` run"):
        with outdir.claim_dir(tmp_path / "nothing", "finetune", resume=True):
            pass
    assert not (tmp_path / "nothing").exists()
    a_file = tmp_path / "config.json"
    a_file.write_text("{}")
    with pytest.raises(MinibertError, match="config.json is a file, not a folder"):
        with outdir.claim_dir(a_file, "convert"):
            pass
    with pytest.raises(MinibertError, match=r"config.json is a file, not a folder"):
        with outdir.claim_dir(a_file / "sub", "convert"):
            pass
    model = tmp_path / "m"
    write_run(model, "export")
    with pytest.raises(MinibertError, match="is the input .* itself"):
        with outdir.claim_dir(model, "export", overwrite=True, inputs=[model]):
            pass


def test_claim_file_replaces_an_existing_file_only_with_overwrite(tmp_path):
    target = tmp_path / "emb.txt"
    target.write_text("someone's text")
    with pytest.raises(MinibertError, match="already exists; pass --overwrite"):
        with outdir.claim_file(target, "embed"):
            pass
    assert target.read_text() == "someone's text"
    with outdir.claim_file(target, "embed", overwrite=True) as p:
        files.atomic_write_bytes(p, b"new")
    assert target.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["emb.txt"]
    with pytest.raises(MinibertError, match="is a folder"):
        with outdir.claim_file(tmp_path, "embed", overwrite=True):
            pass


# ----------------------------------------------------------------------------- the lock

HOLDER = """
import sys, time
from minibert import outdir
with outdir.claim_dir(sys.argv[1], "finetune"):
    print("claimed", flush=True)
    time.sleep(60)
"""


def test_two_concurrent_runs_into_one_folder_the_second_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        with pytest.raises(MinibertError, match=rf"in use by `minibert finetune` \(process "
                                                rf"{holder.pid} on {socket.gethostname()}"):
            with outdir.claim_dir(out, "finetune", overwrite=True):
                pytest.fail("two runs in one folder")
    finally:
        holder.terminate()                  # SIGTERM without the CLI's handler: the lock stays
        holder.wait()
    with pytest.raises(MinibertError, match="no longer running"):
        with outdir.claim_dir(out, "finetune", overwrite=True):
            pass


def test_a_stale_lock_is_reported_with_how_to_clear_it_and_never_taken_over(tmp_path):
    out = tmp_path / "run"
    write_run(out, "finetune")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()                                            # exited and reaped: its PID is free
    lock = out / outdir.LOCK_NAME
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                "command": "finetune", "started": "2026-12-01T20:00:00+00:00"}))
    with pytest.raises(MinibertError) as info:
        with outdir.claim_dir(out, "finetune", resume=True):
            pass
    msg = str(info.value)
    assert f"process {dead.pid}" in msg and "no longer running" in msg
    assert f"delete {lock} and run again" in msg
    assert lock.is_file()                                  # reported, not silently removed
    lock.write_text("")                                    # killed between create and write
    with pytest.raises(MinibertError, match="unreadable"):
        with outdir.claim_dir(out, "finetune", resume=True):
            pass
    lock.unlink()                                          # what the message says to do
    with outdir.claim_dir(out, "finetune", resume=True):
        pass


def test_pid_alive_sees_a_killed_unreaped_child_as_dead():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert outdir.pid_alive(child.pid)
    child.kill()
    time.sleep(0.5)                                        # a zombie until wait(): still "exists"
    assert not outdir.pid_alive(child.pid)
    child.wait()
    assert not outdir.pid_alive(child.pid)


# ----------------------------------------------------------------------------- temporary files

def test_stale_tmp_files_from_a_killed_save_are_removed_at_the_next_start(tmp_path, capsys):
    out = tmp_path / "run"
    write_run(out, "finetune")
    stale = out / ".checkpoint.safetensors.k2j4_x9a.tmp"      # mkstemp's name pattern
    stale.write_bytes(b"half a checkpoint")
    (out / "sub").mkdir()
    nested = out / "sub" / ".model.safetensors.abcdefgh.tmp"
    nested.write_bytes(b"half")
    user = out / ".my.tmp"                                   # not minibert's pattern: kept
    user.write_text("mine")
    with outdir.claim_dir(out, "finetune", resume=True):
        pass
    assert not stale.exists() and not nested.exists() and user.read_text() == "mine"
    assert f"removed {stale}, left by an interrupted save" in capsys.readouterr().out


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_files_get_0666_minus_the_umask_also_through_safetensors(tmp_path, umask, mode):
    from safetensors.numpy import save_file
    old = os.umask(umask)
    try:
        files.atomic_write_json(tmp_path / "a.json", {"x": 1})
        files.atomic_write(tmp_path / "m.safetensors",     # safetensors re-creates the file
                           lambda tmp: save_file({"w": np.zeros(3, np.float32)}, str(tmp)))
    finally:
        os.umask(old)
    for name in ("a.json", "m.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


def test_a_write_error_without_errno_still_names_the_file(tmp_path):
    def fails(tmp):
        raise OSError("100 requested and 8 written")           # numpy's words, no errno
    with pytest.raises(OSError) as info:
        files.atomic_write(tmp_path / "x.npy", fails)
    assert info.value.filename == str(tmp_path / "x.npy") and "8 written" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def save_npy(path, array) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KB tmpfs (root can mount one; elsewhere the test is skipped, saying why)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                              capture_output=True, text=True)
    except OSError as err:
        pytest.skip(f"cannot run mount: {err}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {proc.stderr.strip()}")
    yield mnt
    if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(mnt)], check=False)    # busy: detach it anyway


def test_a_full_disk_keeps_the_old_file_removes_the_tmp_and_says_enospc(full_disk):
    from safetensors.numpy import save_file
    path = full_disk / "model.safetensors"
    files.atomic_write(path, lambda tmp: save_file({"w": np.ones(10, np.float32)}, str(tmp)))
    old = path.read_bytes()
    big = {"w": np.ones(200_000, np.float32)}                      # 800 KB > 256 KB
    with pytest.raises(OSError) as info:
        files.atomic_write(path, lambda tmp: save_file(big, str(tmp)))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    with pytest.raises(OSError) as info:                        # numpy's short write: no errno
        files.atomic_write(full_disk / "e.npy", lambda tmp: save_npy(tmp, big["w"]))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(full_disk / "e.npy")
    assert path.read_bytes() == old
    assert sorted(os.listdir(full_disk)) == ["model.safetensors"]   # no temporary file left


def test_prepare_subdir_clears_its_own_run_and_never_writes_over_a_foreign_file(tmp_path):
    sub = tmp_path / "teacher"
    write_run(sub, "demo-teacher")
    (sub / "mine.txt").write_text("keep")
    outdir.prepare_subdir(sub, "demo-teacher", "demo")
    assert sorted(os.listdir(sub)) == ["mine.txt"]
    outdir.prepare_subdir(sub, "demo-teacher", "demo")            # only foreign files: fine
    (sub / "config.json").write_text("the user's own config")     # a name the demo writes
    with pytest.raises(MinibertError, match="holds 2 entries minibert did not write"):
        outdir.prepare_subdir(sub, "demo-teacher", "demo")
    assert (sub / "config.json").read_text() == "the user's own config"
    write_run(tmp_path / "other", "distill")
    with pytest.raises(MinibertError, match="holds a `distill` run"):
        outdir.prepare_subdir(tmp_path / "other", "demo-teacher", "demo")
