"""Every command that writes files follows one rule (minibert/outdir.py), checked command by
command on the tiny model: a folder is new, or the same command's run with --resume/--overwrite;
nothing else is touched. Also: a diverging run stops naming the step and the last good
checkpoint; --max-length is checked before any work; a real kill -9 in the middle of a
checkpoint save loses nothing and --resume then finishes the run exactly."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny import make_tiny_model_dir, write_tiny_dataset, write_tiny_tokenizer

from minibert.cli import main

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("safe")
    return {"base": make_tiny_model_dir(root / "base"),
            "clf": make_tiny_model_dir(root / "clf", num_labels=2, finetuned=True),
            "data": write_tiny_dataset(root / "d.csv", n=60)}


def run_cli(argv, capsys):
    """(exit status, stdout, stderr) of `minibert ARGV` in this process."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return rc, out, err


def finetune_argv(tiny, out, *extra):
    return ["finetune", "--model", tiny["base"], "--data", f"csv:{tiny['data']}", "--out", out,
            "--epochs", "2", "--batch-size", "16", *extra]


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- case 2: one run per folder

def test_a_second_finetune_into_the_same_folder_is_refused_not_mixed(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli(finetune_argv(tiny, out, "--seed", "0"), capsys)[0] == 0
    before = snapshot(out)
    rc, _, err = run_cli(finetune_argv(tiny, out, "--seed", "1"), capsys)
    assert rc == 2 and "already holds a `finetune` run" in err and "--overwrite" in err
    rc, _, err = run_cli(finetune_argv(tiny, out, "--seed", "1", "--resume"), capsys)
    assert rc == 2 and "train.seed: 0 -> 1" in err
    assert snapshot(out) == before                                  # neither touched a file
    rc, text, _ = run_cli(finetune_argv(tiny, out, "--seed", "1", "--overwrite"), capsys)
    assert rc == 0 and "--overwrite: removed" in text
    from minibert.checkpoints import load_checkpoint
    assert json.loads((out / "run_config.json").read_text())["train"]["seed"] == 1
    assert load_checkpoint(out / "checkpoint.safetensors")[2]["run_config"]["train"]["seed"] == 1
    for p in out.iterdir():                                          # 0666 - umask 022
        assert p.stat().st_mode & 0o777 == 0o644, p.name


# ----------------------------------------------------------------------------- case 3: other folders

def test_finetune_distill_export_convert_refuse_a_model_folder(tiny, tmp_path, capsys):
    victim = tmp_path / "victim"
    shutil.copytree(tiny["base"], victim)
    before = snapshot(victim)
    for argv in (finetune_argv(tiny, victim),
                 ["distill", "--teacher", tiny["clf"], "--data", f"csv:{tiny['data']}",
                  "--out", victim, "--epochs", "1", "--layers", "1"],
                 ["export", tiny["clf"], victim], ["export", tiny["clf"], victim, "--overwrite"],
                 ["convert", FIXTURES / "tiny_cls", victim, "--overwrite"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2 and "holds a minibert model" in err, (argv, err)
    assert snapshot(victim) == before


def test_export_onto_itself_or_a_file_is_refused(tiny, tmp_path, capsys):
    rc, _, err = run_cli(["export", tiny["clf"], tiny["clf"], "--overwrite"], capsys)
    assert rc == 2 and "is the input" in err
    a_file = tmp_path / "model.bin"
    a_file.write_bytes(b"mine")
    for cmd in (["export", tiny["clf"], a_file], ["convert", FIXTURES / "tiny_cls", a_file]):
        rc, _, err = run_cli(cmd, capsys)
        assert rc == 2 and f"{a_file} is a file, not a folder" in err
    assert a_file.read_bytes() == b"mine"


def test_convert_never_lands_in_a_finetuned_folder_and_overwrite_leaves_no_stale_file(
        tiny, tmp_path, capsys):
    tuned = tmp_path / "tuned"
    assert run_cli(finetune_argv(tiny, tuned, "--epochs", "1"), capsys)[0] == 0
    rc, _, err = run_cli(["convert", FIXTURES / "tiny_cls", tuned, "--overwrite"], capsys)
    assert rc == 2 and "holds a `finetune` run" in err and (tuned / "head.json").is_file()
    with_tok = tmp_path / "hf_with_tokenizer"
    shutil.copytree(FIXTURES / "tiny_cls", with_tok)
    write_tiny_tokenizer(with_tok)
    out = tmp_path / "converted"
    assert run_cli(["convert", with_tok, out], capsys)[0] == 0
    assert (out / "tokenizer.json").is_file()
    rc, text, _ = run_cli(["convert", FIXTURES / "tiny_cls", out, "--overwrite"], capsys)
    assert rc == 0 and "tokenizer.json" in text                     # said what it removed
    assert not (out / "tokenizer.json").exists() and not (out / "vocab.txt").exists()


# ----------------------------------------------------------------------------- case 4: divergence

def test_finetune_with_a_huge_learning_rate_stops_naming_the_step(tiny, tmp_path, capsys):
    # (the real teacher already overflows at --lr 1e4; the tiny one is kept bounded by LayerNorm)
    out = tmp_path / "diverged"
    rc, _, err = run_cli(finetune_argv(tiny, out, "--lr", "1e30", "--warmup", "0"), capsys)
    assert rc == 2, err
    line = [ln for ln in err.splitlines() if "error:" in ln][0]
    assert "at epoch 1, step" in line and "last good checkpoint: none" in line


def test_nan_seen_first_by_a_layer_stops_with_the_last_good_checkpoint_kept(tiny, tmp_path):
    """inf in the word embeddings from epoch 2 on: the forward pass's own NaN/inf check sees it
    before any loss exists. fit still stops with TrainingDiverged naming the step and
    the epoch-1 checkpoint, which is left byte for byte as it was."""
    from minibert.batches import train_batches
    from minibert.data import load_dataset
    from minibert.errors import TrainingDiverged
    from minibert.train import (TrainConfig, encode_examples, fit, head_init_rng,
                                make_classify_step, make_eval_fn, with_fresh_head)
    from minibert.weights import load_model_and_tokenizer
    params, config, tok = load_model_and_tokenizer(tiny["base"])
    data = load_dataset(f"csv:{tiny['data']}")
    params, config = with_fresh_head(params, config, data.labels, head_init_rng(0))
    train, dev = encode_examples(tok, data.train, 16), encode_examples(tok, data.dev, 16)
    ckpt = tmp_path / "checkpoint.safetensors"
    saved = {}

    def batches(epoch, rng):
        if epoch == 1:
            saved["checkpoint"] = ckpt.read_bytes()
            params["embeddings.word"][:] = np.inf
        return train_batches(train, 16, rng)
    with pytest.raises(TrainingDiverged, match=r"NaN/inf inside the model \(.*\) at epoch 2, step 4 "
                                               r"\(of 6\); last good checkpoint: .*checkpoint.safetensors "
                                               r"\(after epoch 1\)"):
        fit(params, make_classify_step(config), batches, make_eval_fn(config, dev, 16), tmp_path,
            TrainConfig(epochs=2, batch_size=16, max_length=16, progress=False))
    assert ckpt.read_bytes() == saved["checkpoint"]


# ----------------------------------------------------------------------------- case 5: --max-length

def test_max_length_beyond_the_position_table_is_refused_before_any_work(tiny, tmp_path, capsys):
    out = tmp_path / "long"
    for argv in (finetune_argv(tiny, out, "--max-length", "100000"),
                 ["distill", "--teacher", tiny["clf"], "--data", f"csv:{tiny['data']}",
                  "--out", out, "--max-length", "65"],
                 ["evaluate", "--model", tiny["clf"], "--data", f"csv:{tiny['data']}",
                  "--max-length", "65"]):
        rc, _, err = run_cli(argv, capsys)
        assert rc == 2 and "position table (64 positions" in err, (argv, err)
    assert not out.exists()                                 # refused before writing anything


# ----------------------------------------------------------------------------- case 7: small lies

def test_embed_writes_exactly_the_name_given_and_never_replaces_silently(tiny, tmp_path, capsys):
    texts = tmp_path / "t.txt"
    texts.write_text("good movie\nbad film\n")
    out = tmp_path / "emb.txt"
    rc, text, _ = run_cli(["embed", "--model", tiny["base"], "--text-file", texts, "--out", out],
                          capsys)
    assert rc == 0 and f"to {out}" in text
    assert sorted(os.listdir(tmp_path)) == ["emb.txt", "t.txt"]
    assert np.load(out).shape == (2, 32)
    rc, _, err = run_cli(["embed", "--model", tiny["base"], "--text-file", texts, "--out", out],
                         capsys)
    assert rc == 2 and "already exists; pass --overwrite" in err


def test_a_model_path_that_is_a_file_is_called_a_file(tiny, capsys):
    cfg = tiny["clf"] / "config.json"
    rc, _, err = run_cli(["evaluate", "--model", cfg, "--data", f"csv:{tiny['data']}"], capsys)
    assert rc == 2 and f"{cfg} is a file" in err and "does not exist" not in err


# ----------------------------------------------------------------------------- kill -9, SIGTERM, two runs

def start_paused_finetune(tiny, out, marker, save=2, *extra):
    """`minibert finetune` in a subprocess that stops inside its `save`-th checkpoint save, after
    the temporary file is complete and before the rename (files.PAUSE_ENV); waits for that."""
    env = dict(os.environ, PYTHONPATH=str(REPO),
               MINIBERT_TEST_PAUSE_SAVE=f"checkpoint.safetensors@{save}:{marker}")
    argv = [sys.executable, "-m", "minibert.cli", *map(str, finetune_argv(tiny, out, *extra))]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"finetune did not reach the save: {proc.stderr.read()}")
        time.sleep(0.05)
    return proc


def test_kill_9_during_a_checkpoint_save_loses_nothing_and_resume_finishes_exactly(
        tiny, tmp_path, capsys):
    from minibert.checkpoints import load_checkpoint
    out, marker = tmp_path / "killed", tmp_path / "paused"
    proc = start_paused_finetune(tiny, out, marker, 2, "--epochs", "3")
    tmp = Path(marker.read_text().split()[1])
    assert tmp.is_file() and tmp.parent == out                  # the half-done save is on disk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(out / "checkpoint.safetensors")[2]["epochs_done"] == 1   # old one intact
    rc, _, err = run_cli(finetune_argv(tiny, out, "--epochs", "3", "--resume"), capsys)
    assert rc == 2 and f"process {proc.pid}" in err and "no longer running" in err
    assert tmp.is_file()                                        # nothing cleaned by a refused start
    (out / ".minibert.lock").unlink()                           # as the message says
    rc, text, _ = run_cli(finetune_argv(tiny, out, "--epochs", "3", "--resume"), capsys)
    assert rc == 0 and f"removed {tmp}, left by an interrupted save" in text and not tmp.exists()
    whole = tmp_path / "whole"
    assert run_cli(finetune_argv(tiny, whole, "--epochs", "3"), capsys)[0] == 0
    assert (out / "model.safetensors").read_bytes() == (whole / "model.safetensors").read_bytes()


def test_a_second_run_is_refused_while_one_runs_and_sigterm_cleans_up(tiny, tmp_path, capsys):
    out, marker = tmp_path / "busy", tmp_path / "paused"
    proc = start_paused_finetune(tiny, out, marker, 1)
    tmp = Path(marker.read_text().split()[1])
    try:
        rc, _, err = run_cli(finetune_argv(tiny, out, "--overwrite"), capsys)
        assert rc == 2 and f"in use by `minibert finetune` (process {proc.pid}" in err
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err
    assert not tmp.exists() and not (out / ".minibert.lock").exists()   # finally blocks ran


# ----------------------------------------------------------------------------- case 1: the demo

DEMO_SIZES = dict(teacher_train=60, student_train=80, dev=20, test=None, max_length=16,
                  teacher_epochs=1, student_epochs=1, batch_size=16, teacher_lr=5e-3,
                  student_lr=3e-3)


def test_the_demo_keeps_files_it_did_not_write_and_refuses_a_foreign_folder(tmp_path, capsys):
    from minibert import demo
    from minibert.data import load_dataset
    from minibert.errors import MinibertError
    dataset = load_dataset(f"csv:{write_tiny_dataset(tmp_path / 'd.csv', n=120)}")
    teacher = make_tiny_model_dir(tmp_path / "pretrained")
    sizes = demo.DemoSizes(**DEMO_SIZES)

    def run(out, **flags):
        return demo.run_demo(out, teacher_dir=teacher, dataset=dataset, sizes=sizes,
                             progress=False, **flags)
    home = tmp_path / "home"                                # `minibert demo --out ~`
    (home / "teacher").mkdir(parents=True)
    (home / "teacher" / "thesis.tex").write_text("years of work")
    (home / ".bashrc").write_text("mine")
    before = snapshot(home)
    with pytest.raises(MinibertError, match="holds 2 entries minibert did not write"):
        run(home)
    assert snapshot(home) == before
    out = tmp_path / "run"
    run(out)
    for sub in ("teacher", "student_KD", "student_hard-only"):
        (out / sub / "mine.txt").write_text("a user's file in a folder the demo made")
    (out / "notes.md").write_text("mine too")
    with pytest.raises(MinibertError, match="already holds a `demo` run"):
        run(out)
    capsys.readouterr()
    run(out, resume=True)                                   # reuses the teacher, retrains students
    run(out, overwrite=True)                                # removes all of minibert's files first
    text = capsys.readouterr().out
    assert "kept what minibert did not write" in text and "mine.txt" in text
    for sub in ("teacher", "student_KD", "student_hard-only"):
        assert (out / sub / "mine.txt").read_text().startswith("a user's file"), sub
        assert (out / sub / "model.safetensors").is_file()
    assert (out / "notes.md").read_text() == "mine too"
