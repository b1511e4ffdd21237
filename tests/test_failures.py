"""Every failure a one-line message, never a traceback: bad counts, a full disk, a read-only
folder, a path that is a file; truncation notices as one plain line; label spellings that
would silently split one class in two."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from tiny import make_tiny_model_dir, write_tiny_dataset

from minibert.cli import main
from minibert.data import load_dataset
from minibert.errors import DataError, TokenizerError

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    return {"model": make_tiny_model_dir(root / "m", num_labels=2),
            "base": make_tiny_model_dir(root / "base"),
            "data": write_tiny_dataset(root / "d.csv", n=60)}


def run_cli(argv, capsys):
    """(exit status, stdout, stderr) of `minibert ARGV` run in this process."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:                       # argparse's own errors
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("argv, flag", [
    (["evaluate", "--model", "M", "--batch-size", "0"], "--batch-size"),
    (["evaluate", "--model", "M", "--max-length", "0"], "--max-length"),
    (["evaluate", "--model", "M", "--max-length", "2"], "--max-length"),
    (["fill-mask", "--model", "M", "--top-k", "0", "a [MASK]"], "--top-k"),
    (["embed", "--text-file", "t", "--out", "o.npy", "--batch-size", "-3"], "--batch-size"),
    (["finetune", "--out", "o", "--epochs", "0"], "--epochs"),
    (["finetune", "--out", "o", "--seed", "-1"], "--seed"),
    (["bench", "--repeats", "zero"], "--repeats"),
])
def test_counts_below_one_are_refused_by_the_parser(argv, flag, capsys):
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2
    assert_one_line_error(err, f"argument {flag}: expected")


def test_convert_onto_a_path_that_is_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "model.bin"
    target.write_bytes(b"a user's file")
    rc, _, err = run_cli(["convert", FIXTURES / "tiny_cls", target / "out"], capsys)
    assert rc == 2
    assert_one_line_error(err, str(target))
    assert target.read_bytes() == b"a user's file"


@pytest.fixture
def mounted(tmp_path):
    """mount(size, ro=False) -> a fresh tmpfs (root only; skipped, saying why, elsewhere)."""
    mounts = []

    def mount(size="256k", ro=False):
        mnt = tmp_path / f"mnt{len(mounts)}"
        mnt.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        try:
            proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
                                  capture_output=True, text=True)
        except OSError as err:
            pytest.skip(f"cannot run mount: {err}")
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
        mounts.append(mnt)
        return mnt
    yield mount
    for mnt in mounts:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=False)    # busy: detach it anyway


def test_a_read_only_output_folder_is_one_line(mounted, capsys):
    ro = mounted(ro=True)
    rc, _, err = run_cli(["convert", FIXTURES / "tiny_cls", ro / "out"], capsys)
    assert rc == 2
    assert_one_line_error(err, str(ro / "out"), "Read-only file system")


def test_a_full_disk_during_finetune_is_one_line_naming_the_file(tiny, mounted, capsys):
    small = mounted(size="256k")                       # the tiny model fits, its checkpoint not
    out = small / "run"
    rc, _, err = run_cli(["finetune", "--model", tiny["base"], "--data", f"csv:{tiny['data']}",
                          "--out", out, "--epochs", "1", "--batch-size", "16"], capsys)
    assert rc == 2
    assert_one_line_error(err, "No space left on device", "free some space")
    leftovers = [p.name for p in small.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []                             # the temporary file went with the error


def test_truncation_notices_are_one_plain_line(tiny, capsys):
    long_text = " ".join(["good movie"] * 40)
    rc, _, err = run_cli(["evaluate", "--model", tiny["model"], "--data", f"csv:{tiny['data']}",
                          "--max-length", "8"], capsys)
    assert rc == 0
    notes = [ln for ln in err.splitlines() if "truncated" in ln]
    assert notes and all(ln.startswith("note: ") for ln in notes), err
    assert "TruncationWarning" not in err and ".py:" not in err and "warnings.warn" not in err
    rc, out, err = run_cli(["predict", "--model", tiny["model"], long_text], capsys)
    assert rc == 0 and "Traceback" not in err


def test_max_length_beyond_the_position_table_is_refused_before_any_work(tiny):
    from minibert.tokenizer import check_length_fits
    from minibert.weights import load_model
    _, config = load_model(tiny["model"])
    check_length_fits(config.max_position, config)
    with pytest.raises(TokenizerError, match=r"--max-length 100000 is longer than the model's "
                                             r"position table \(64 positions"):
        check_length_fits(100000, config)


# ----------------------------------------------------------------------------- label spellings

def write_csv(path: Path, rows) -> Path:
    path.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("a, b", [("positive", "positive "), ("positive", "Positive"),
                                  ("1", "1.0"), ("1", " 1"), ("NEG", "neg")])
def test_near_duplicate_labels_are_an_error_naming_both_and_their_lines(tmp_path, a, b):
    rows = [(f"text {i}", a if i % 2 else "other") for i in range(20)] + [("odd one", b)]
    path = write_csv(tmp_path / "d.csv", rows)
    with pytest.raises(DataError) as info:
        load_dataset(f"csv:{path}")
    msg = str(info.value)
    assert repr(a) in msg and repr(b) in msg
    assert f"{path} line 3" in msg and f"{path} line 22" in msg   # first rows of each spelling


def test_a_dev_file_spelling_a_train_label_differently_is_named(tmp_path):
    d = tmp_path / "task"
    d.mkdir()
    write_csv(d / "train.csv", [("a", "pos"), ("b", "neg")] * 5)
    write_csv(d / "dev.csv", [("a", "Pos"), ("b", "neg")])
    with pytest.raises(DataError, match=r"'pos' \(.*train.csv line 2\) and 'Pos' \(.*dev.csv line 2\)"):
        load_dataset(f"csv:{d}")


def test_the_same_label_as_an_int_and_as_a_string_is_one_class(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": 1 if i % 3 else "1"}) + "\n"
                            for i in range(12))
                    + "".join(json.dumps({"text": f"u{i}", "label": 0}) + "\n" for i in range(12)))
    assert load_dataset(f"csv:{path}").labels == ["0", "1"]
