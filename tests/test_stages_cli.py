"""The two TinyBERT stages on the command line, with tiny models: `minibert augment` ->
`distill --transfer`, `minibert distill-general` -> `distill --student-init`, and their bad input."""

from __future__ import annotations

import json
from argparse import Namespace

import numpy as np
import pytest

from minibert.cli import main
from minibert.transfer_set import load_augmented
from minibert.weights import load_model
from tiny import make_tiny_model_dir, write_tiny_dataset


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """A 4-layer tiny teacher fine-tuned on a separable 2-class csv, and a text file."""
    root = tmp_path_factory.mktemp("stages")
    data = write_tiny_dataset(root / "d.csv", n=160, num_classes=2)
    base = make_tiny_model_dir(root / "pre", num_layers=4)
    teacher = root / "teacher"
    assert main(["finetune", "--model", str(base), "--data", f"csv:{data}", "--out", str(teacher),
                 "--epochs", "3", "--lr", "3e-3", "--batch-size", "16"]) == 0
    text = root / "corpus.txt"
    text.write_text("\n".join(l.split(",")[0] for l in data.read_text().splitlines()[1:]) + "\n")
    return Namespace(root=root, data=f"csv:{data}", teacher=teacher, pretrained=base, text=text)


def _error_of(argv, capsys):
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def augment_argv(task, out, *extra):
    return ["augment", "--teacher", str(task.teacher), "--data", task.data, "--out", str(out),
            "--limit", "60", "--per-example", "4", *extra]


def distill_argv(task, out, *extra):
    return ["distill", "--teacher", str(task.teacher), "--data", task.data, "--out", str(out),
            "--epochs", "1", "--lr", "3e-3", "--batch-size", "16", "--limit", "60", *extra]


# ----------------------------------------------------------------------------- augment -> distill --transfer

def test_augment_writes_labelled_sentences_and_distill_trains_on_them(task, tmp_path, capsys):
    path = tmp_path / "aug.safetensors"
    assert main(augment_argv(task, path)) == 0
    printed = capsys.readouterr().out
    assert "->" in printed and "sentences/s" in printed
    aug = load_augmented(path)
    assert 60 < len(aug.lengths) <= 60 * 4 and aug.logits.shape == (len(aug.lengths), 2)
    assert aug.meta["samples"] and aug.meta["throughput"]["labelled_per_s"] > 0
    assert main(augment_argv(task, tmp_path / "again.safetensors")) == 0       # same seed, same file
    again = load_augmented(tmp_path / "again.safetensors")
    assert np.array_equal(again.ids, aug.ids) and np.array_equal(again.logits, aug.logits)
    out = tmp_path / "student"
    assert main(distill_argv(task, out, "--transfer", str(path))) == 0
    assert f"{len(aug.lengths)} augmented sentences" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    steps = metrics["history"][0]["steps"]
    assert steps == -(-(60 + len(aug.lengths)) // 16)       # 60 labelled (--limit) + augmented rows


def test_augment_refuses_per_example_zero(task, tmp_path, capsys):
    err = _error_of(augment_argv(task, tmp_path / "a.safetensors", "--per-example", "0"), capsys)
    assert "--per-example" in err and "got 0" in err
    assert not (tmp_path / "a.safetensors").exists()


def test_augment_refuses_a_pretrained_teacher_and_an_existing_file(task, tmp_path, capsys):
    argv = augment_argv(task, tmp_path / "a.safetensors")
    argv[argv.index("--teacher") + 1] = str(task.pretrained)
    assert "no classification head" in _error_of(argv, capsys)
    (tmp_path / "b.safetensors").write_text("someone else's file")
    assert "already exists" in _error_of(augment_argv(task, tmp_path / "b.safetensors"), capsys)
    assert (tmp_path / "b.safetensors").read_text() == "someone else's file"


def test_transfer_file_of_another_teacher_or_other_examples_is_refused(task, tmp_path, capsys):
    path = tmp_path / "aug.safetensors"
    assert main(augment_argv(task, path)) == 0
    other = make_tiny_model_dir(tmp_path / "other", num_labels=2, num_layers=4, finetuned=True, seed=3)
    argv = distill_argv(task, tmp_path / "s1", "--transfer", str(path))
    argv[argv.index("--teacher") + 1] = str(other)
    assert "made by another teacher" in _error_of(argv, capsys)
    argv = distill_argv(task, tmp_path / "s2", "--transfer", str(path))
    argv[argv.index("--limit") + 1] = "50"
    assert "augments other training examples" in _error_of(argv, capsys)
    argv = distill_argv(task, tmp_path / "s3", "--transfer", str(task.text))
    assert "not a readable augmentation file" in _error_of(argv, capsys)


# ----------------------------------------------------------------------------- distill-general -> --student-init

def general_argv(task, out, *extra):
    return ["distill-general", "--teacher", str(task.pretrained), "--out", str(out),
            "--epochs", "1", "--lr", "3e-3", "--batch-size", "16", "--layers", "2", *extra]


def test_general_distillation_then_task_distillation_from_it(task, tmp_path, capsys):
    general = tmp_path / "general"
    assert main(general_argv(task, general, "--text-file", str(task.text))) == 0
    printed = capsys.readouterr().out
    assert "hidden states (0 = embeddings): 0->0, 1->2, 2->4" in printed
    assert "embedding" in printed and "attention" in printed
    record = json.loads((general / "general.json").read_text())
    assert record["general_distilled"] and record["settings"]["soft_mlm_weight"] == 0.0
    params, config = load_model(general)
    assert config.num_layers == 2 and config.num_labels == 0 and not config.mlm_head
    history = json.loads((general / "metrics.json").read_text())["history"][0]
    assert history["parts"]["embedding"] > 0 and history["parts"]["attention"] > 0
    assert "already holds" in _error_of(general_argv(task, general, "--text-file", str(task.text)),
                                        capsys)
    out = tmp_path / "student"
    assert main(distill_argv(task, out, "--student-init", str(general))) == 0
    assert f"general-distilled student {general}" in capsys.readouterr().out
    student, _ = load_model(out)
    assert student["encoder.0.attn.qkv.W"].shape == params["encoder.0.attn.qkv.W"].shape
    assert "--layers 2" in _error_of(distill_argv(task, tmp_path / "s3", "--layers", "3",
                                                  "--student-init", str(general)), capsys)


def test_student_init_starts_from_the_general_student(task, tmp_path):
    from minibert.general_distill import load_student_init
    from minibert.student import student_config
    general = tmp_path / "general"
    assert main(general_argv(task, general, "--data", task.data, "--limit", "40")) == 0
    gparams, _ = load_model(general)
    tparams, tconfig = load_model(task.teacher)
    config = student_config(tconfig, 2)
    params = load_student_init(general, task.teacher, tparams, tconfig, config,
                               np.random.default_rng(0))
    for name in ("embeddings.word", "encoder.0.attn.qkv.W", "encoder.1.ffn.out.b"):
        assert np.array_equal(params[name], gparams[name]), name
    for name in ("pooler.W", "classifier.W"):                            # the teacher's head
        assert np.array_equal(params[name], tparams[name]), name


def test_general_distillation_with_a_masked_lm_teacher(task, tmp_path):
    mlm = make_tiny_model_dir(tmp_path / "mlm", num_layers=4, mlm_head=True)
    out = tmp_path / "g"
    argv = general_argv(task, out, "--text-file", str(task.text))
    argv[argv.index("--teacher") + 1] = str(mlm)
    assert main(argv) == 0
    _, config = load_model(out)
    assert config.mlm_head
    parts = json.loads((out / "metrics.json").read_text())["history"][0]["parts"]
    assert parts["soft_mlm"] > 0 and parts["mlm"] > 0 and parts["cosine"] > 0   # DistilBERT's defaults


def test_general_distillation_bad_input(task, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "no sentences" in _error_of(general_argv(task, tmp_path / "a", "--text-file", str(empty)),
                                       capsys)
    binary = tmp_path / "model.bin"
    binary.write_bytes(b"\x00\x01\x02binary")
    assert "not a text file" in _error_of(general_argv(task, tmp_path / "b", "--text-file",
                                                       str(binary)), capsys)
    err = _error_of(general_argv(task, tmp_path / "c", "--text-file", str(task.text),
                                 "--mlm-weight", "2"), capsys)
    assert "masked-LM head" in err
    err = _error_of(general_argv(task, tmp_path / "d", "--text-file", str(task.text),
                                 "--data", task.data), capsys)
    assert "either --text-file or --data" in err
    assert not any((tmp_path / d).exists() for d in "abcd")             # nothing left behind
