"""Shared plumbing for the lesson scripts (kept tiny so each lesson reads on its own).

Every lesson: `python lessons/NN_topic.py [--tiny]`. It prints what it shows with real
numbers, saves its figures into lessons/out/, and ends in assertions. `--tiny` shrinks every
size so the lesson runs in seconds (CI runs each lesson that way).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:          # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")   # figures go to files; no display needed

from minibert.allocator import keep_freed_memory  # noqa: E402  (needs ROOT on sys.path first)

keep_freed_memory()                          # as the `minibert` command does: see minibert/allocator.py

OUT = Path(os.environ.get("MINIBERT_LESSON_OUT", ROOT / "lessons" / "out"))


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true", help="tiny sizes: runs in seconds (used by CI)")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    args.t0 = time.perf_counter()
    return args


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def savefig(fig, name: str) -> Path:
    path = OUT / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    print(f"[figure] {path}")
    return path


def done(args) -> None:
    print(f"\nAll assertions hold. ({time.perf_counter() - args.t0:.1f} s"
          f"{', --tiny' if args.tiny else ''})")


# ---------------------------------------------------------------------------------------------
# The task of lessons 6-9: a teacher, a labelled dataset, a fine-tuned teacher.
#
# Full: all-MiniLM-L6-v2 (weights/minilm-l6, fetched on first use) on a small stratified subset
# of the default tweet-sentiment corpus (negative / neutral / positive), short max_length.
# --tiny: a 4-layer, 32-wide BERT with random weights and a tiny separable sentiment CSV (the
# same helpers the tests use, tests/tiny.py), so the lessons run in seconds without downloads.

class Task:
    """Everything lessons 6-9 share. Attributes: name, base_dir (pre-trained teacher),
    data (minibert.data.Dataset), max_length, batch_size, teacher_dir (fine-tuned, lesson 6),
    finetune (a train.TrainConfig) and student (a TrainConfig for distillation runs)."""

    def __init__(self, tiny: bool):
        from minibert.data import load_dataset
        from minibert.train import TrainConfig
        self.tiny = tiny
        shared = dict(warmup=0.1, weight_decay=0.01, clip=1.0, seed=0, progress=False)  # every run
        if tiny:
            sys.path.insert(0, str(ROOT / "tests"))
            from tiny import make_tiny_model_dir, write_tiny_dataset
            root = OUT / "tiny"
            self.base_dir = root / "pretrained"
            if not (self.base_dir / "model.safetensors").exists():
                make_tiny_model_dir(self.base_dir, num_layers=4, hidden_size=32, num_heads=2,
                                    intermediate_size=64, seed=0)
            csv = write_tiny_dataset(root / "sentiment.csv", n=400, num_classes=2, seed=0)
            self.data = load_dataset(f"csv:{csv}")
            self.name = "tiny BERT (4 layers, H=32, random init) on a tiny separable sentiment CSV"
            self.teacher_dir = root / "teacher"
            self.max_length, self.batch_size = 16, 16
            self.finetune = TrainConfig(epochs=3, lr=5e-3, batch_size=16, max_length=16, **shared)
            self.student = TrainConfig(epochs=2, lr=3e-3, batch_size=16, max_length=16, **shared)
        else:
            from minibert.weights import fetch_teacher
            self.base_dir = fetch_teacher(ROOT / "weights" / "minilm-l6")
            self.data = load_dataset("default", limit=600, seed=0)
            self.name = "all-MiniLM-L6-v2 on 600 tweets of the default sentiment corpus"
            self.teacher_dir = OUT / "teacher"
            self.max_length, self.batch_size = 32, 32
            self.finetune = TrainConfig(epochs=2, lr=1e-4, batch_size=32, max_length=32, **shared)
            self.student = TrainConfig(epochs=1, lr=5e-4, batch_size=32, max_length=32, **shared)

    def student_batches(self, split):
        """The fixed list of training batches every student of lessons 7-9 sees (seeded)."""
        import numpy as np

        from minibert.batches import train_batches
        out = []
        for epoch in range(self.student.epochs):
            out += list(train_batches(split, self.student.batch_size, np.random.default_rng([0, epoch])))
        return out

    def splits(self, tokenizer):
        """Encoded train / dev splits (labels as the dataset's indices). Long texts are cut to
        max_length for classroom speed; says how many (once), instead of a warning per call."""
        import warnings

        from minibert.tokenizer import TruncationWarning
        from minibert.batches import encode_examples
        out = []
        for name, examples in (("train", self.data.train), ("dev", self.data.dev)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", TruncationWarning)
                out.append(encode_examples(tokenizer, examples, self.max_length))
            cut = int(getattr(tokenizer, "last_truncated", 0))
            if cut and not getattr(self, "_told", False):
                print(f"({name}: {cut} of {len(examples)} texts are cut to max_length="
                      f"{self.max_length} tokens, for speed)")
        self._told = True
        return tuple(out)


def finetune_teacher(task: Task, out_dir: Path):
    """Fine-tune task.base_dir on task.data with train.fit; save the best epoch (with head.json)
    into out_dir. Returns (train.FitResult, params, config)."""
    import shutil

    from minibert.tokenizer import Tokenizer
    from minibert.train import finetune_classifier
    from minibert.weights import load_model

    params, config = load_model(task.base_dir)
    train, dev = task.splits(Tokenizer.from_dir(task.base_dir))
    run_dir = OUT / ("tiny/finetune_run" if task.tiny else "finetune_run")
    shutil.rmtree(run_dir, ignore_errors=True)           # a lesson always starts fresh
    res, _ = finetune_classifier(params, config, task.data.labels, train, dev, task.finetune,
                                 out_dir, tokenizer_dir=task.base_dir, data_spec="lesson",
                                 run_dir=run_dir)
    drop_checkpoints(run_dir)
    params, config = load_model(out_dir)                 # the best epoch
    return res, params, config


def drop_checkpoints(directory: Path) -> None:
    """Delete fit's resumable checkpoints (params + Adam moments: 3x the model) under a run
    directory: a lesson never resumes, and a MiniLM checkpoint is 260 MB."""
    from minibert.checkpoints import CHECKPOINT_NAME
    for path in Path(directory).rglob(CHECKPOINT_NAME):
        path.unlink()


def finetuned_teacher(task: Task):
    """The fine-tuned teacher of lesson 6: (params, config, tokenizer). If lesson 6 has not
    been run yet, fine-tune now (the same recipe) and say so."""
    from minibert.tokenizer import Tokenizer
    from minibert.weights import load_model
    if not (task.teacher_dir / "head.json").exists():
        print(f"(no fine-tuned teacher in {task.teacher_dir}: running lesson 6's fine-tuning first)")
        finetune_teacher(task, task.teacher_dir)
    params, config = load_model(task.teacher_dir)
    return params, config, Tokenizer.from_dir(task.teacher_dir)


def distill_run(tparams, tconfig, sconfig, teacher, batches, settings, init_layers, lr, seed=0,
                extra_params=None, weight_decay=0.01, clip=1.0):
    """Train one student on fixed batches: a loop of train.train_step, fit's own step.

    A shorter loop than fit: no epochs, dev evaluation or checkpoints, the per-step loss parts are kept
    (lesson 8 plots them), and the warm-up is max(1, steps // 10) steps (fit rounds warmup *
    steps: 2 of 19 here, this gives 1), so these students are not step-for-step lesson 9's.
    Inputs: the teacher (params, config), the student's config, a teacher_cache.TeacherCache, a list
    of LabeledBatch (the same for every run, so runs differ only in what is compared),
    DistillSettings, init_layers (None = random init), the peak lr, a seed; extra_params
    (e.g. the learned projections of lesson 8) train along with the student (copies: the
    caller's arrays are left as they were).
    Returns (student params without projections, per-step losses, per-step parts dicts).
    """
    import numpy as np

    from minibert.objective import make_distill_step
    from minibert.optim import adamw_init
    from minibert.student import init_student, strip_projections, student_init_rng
    from minibert.train import train_step

    params = init_student(tparams, tconfig, sconfig, init_layers, student_init_rng(seed))
    params.update({k: v.copy() for k, v in (extra_params or {}).items()})
    state = adamw_init(params)
    dropout = np.random.default_rng([seed, 1])
    steps, warm = len(batches), max(1, len(batches) // 10)
    losses, parts = [], []
    step_fn = make_distill_step(sconfig, teacher, settings)  # student_objective on one batch
    for b in batches:                                      # fit's step: objective, clip, AdamW
        res = train_step(params, state, step_fn, b, dropout, peak_lr=lr, total_steps=steps,
                         warmup_steps=warm, clip=clip, weight_decay=weight_decay)
        losses.append(res.loss)
        parts.append(res.parts)
    return strip_projections(params), losses, parts


def accuracy_and_agreement(params, config, split, teacher_pred):
    """Dev accuracy, macro-F1 and the fraction of examples where the model agrees with the teacher."""
    from minibert.evaluate import predict_and_score
    pred, m = predict_and_score(params, config, split)
    return m["accuracy"], m["macro_f1"], float((pred == teacher_pred).mean())
