"""Shared plumbing for the lesson scripts (kept tiny so each lesson reads on its own).

Every lesson: `python lessons/NN_topic.py [--tiny]`. It prints what it shows with real
numbers, saves its figures into lessons/out/ (--tiny: lessons/out/tiny/, so the two sizes never
overwrite each other), ends in assertions, then writes lessonNN.json (the numbers it printed
and asserted) and says what it showed and which exercise comes next. `--tiny` shrinks every
size so the lesson runs in seconds (CI runs each lesson that way).

The scripts are cut into `# %%` cells: Jupyter (with jupytext) and VS Code open them as
notebooks. In a notebook there is no command line: set MINIBERT_TINY=1 for the tiny sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:          # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")   # figures go to files; no display needed
if "--tiny" in sys.argv[1:] or os.environ.get("MINIBERT_TINY", "") not in ("", "0"):
    # Toy-sized matrices: BLAS threads cost more than they save, and on a shared machine they
    # spin against other jobs (lesson 6 --tiny: 10 s of CPU with threads, 2.3 s without).
    # Set before NumPy is first imported; an explicit setting in the environment wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from minibert.allocator import keep_freed_memory  # noqa: E402  (needs ROOT on sys.path first)

keep_freed_memory()                          # as the `minibert` command does: see minibert/allocator.py

OUT = Path(os.environ.get("MINIBERT_LESSON_OUT", ROOT / "lessons" / "out"))
_RUN = {}                                    # set by parse_args: the lesson number and its output dir


def lesson_out(tiny: bool) -> Path:
    """Where a lesson writes: lessons/out/ for the class size, lessons/out/tiny/ for --tiny."""
    return OUT / "tiny" if tiny else OUT


def parse_args(lesson: int, description: str | None = None) -> argparse.Namespace:
    """The lesson's command line (--tiny). In a notebook (no command line of its own) the
    arguments are ignored and MINIBERT_TINY=1 selects the tiny sizes."""
    p = argparse.ArgumentParser(description=(description or f"Lesson {lesson}").splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny sizes: runs in seconds (used by CI)")
    in_notebook = "ipykernel" in sys.modules
    args = p.parse_args([] if in_notebook else None)
    args.tiny = args.tiny or os.environ.get("MINIBERT_TINY", "") not in ("", "0")
    args.lesson, args.out = lesson, lesson_out(args.tiny)
    args.out.mkdir(parents=True, exist_ok=True)
    _RUN.update(lesson=lesson, out=args.out)
    args.t0 = time.perf_counter()
    return args


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def savefig(fig, name: str, tight: bool = True) -> Path:
    """Save into the lesson's output directory. tight=False for figures with a shared colorbar
    (tight_layout cannot place it): then only the saved bounding box is fitted, so no label is cut."""
    path = _RUN.get("out", OUT) / name
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches=None if tight else "tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    print(f"[figure] {path}")
    return path


def report_checks(checks, label: str = "") -> dict:
    """Print a short summary of an exercise's check results (minibert.exercise_checks): how many
    pass, the worst measured error per tolerance (against the reference, against finite
    differences) and every failing check in full. Returns the full list as a dict for the
    lesson's JSON, so the printed summary stays short and nothing is lost."""
    failed = [r for r in checks if not r.passed]
    print(f"  {label + ': ' if label else ''}{len(checks) - len(failed)} of {len(checks)} checks pass")
    by_tol = {}                                  # tolerance -> the check with the largest value / tol
    for r in checks:
        if r.value is not None and r.tolerance:
            best = by_tol.get(r.tolerance)
            if best is None or r.value > best.value:
                by_tol[r.tolerance] = r
    for tol, r in sorted(by_tol.items()):
        n = sum(1 for c in checks if c.tolerance == tol)
        print(f"    worst of {n} with tolerance {tol:.0e}: {r.measure} {r.value:.1e} ({r.name})")
    n_prop = sum(1 for r in checks if not r.tolerance)
    if n_prop:
        print(f"    {n_prop} property checks (inputs unchanged, names, dtypes, ...): "
              f"{sum(r.passed for r in checks if not r.tolerance)} ok")
    for r in failed:
        print(f"  FAIL  {r.name}: {r.describe()}")
    return {"passed": len(checks) - len(failed), "total": len(checks),
            "checks": [{"name": r.name, "passed": r.passed, "value": r.value,
                        "tolerance": r.tolerance, "measure": r.measure, "detail": r.detail}
                       for r in checks]}


def _plain(obj):
    """numpy scalars / arrays / tuples -> JSON types (floats rounded to 6 significant digits)."""
    import numpy as np
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(f"{float(obj):.6g}") if np.isfinite(obj) else None   # JSON has no NaN / inf
    return obj


def lesson_exercises(lesson: int) -> list[str]:
    """The exercises `minibert exercises list` attributes to this lesson, in course order."""
    from minibert.exercises import EXERCISES
    return [ex.name for ex in EXERCISES if Path(ex.lesson).name.startswith(f"{lesson:02d}_")]


def done(args, results: dict, showed: list[str]) -> Path:
    """End of a lesson (after its assertions): write lessonNN.json with `results` (the numbers
    it printed and asserted), print what it showed and the exercise(s) to do next."""
    secs = time.perf_counter() - args.t0
    names = lesson_exercises(args.lesson)
    record = {"lesson": args.lesson, "size": "tiny" if args.tiny else "class", "seconds": secs,
              "cpu_seconds": time.process_time(), "load_average": os.getloadavg()[0],
              "showed": showed, "exercises": names, "results": results}
    path = args.out / f"lesson{args.lesson:02d}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_plain(record), indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    section("What this lesson showed")
    for line in showed:
        print(line)
    if names:
        print("\nNext, the exercise" + ("s" if len(names) > 1 else "") + " of this lesson (once: "
              "`minibert exercises init workspace`):")
        for name in names:
            print(f"    minibert exercises check {name} --path workspace")
    print(f"\n[numbers] {path}")
    print(f"All assertions hold. ({secs:.1f} s{', --tiny' if args.tiny else ''})")
    return path


# ---------------------------------------------------------------------------------------------
# The task of lessons 6-9: a teacher, a labelled dataset, a fine-tuned teacher.
#
# Class size: all-MiniLM-L6-v2 (weights/minilm-l6, fetched on first use) on a small stratified
# subset of the default tweet-sentiment corpus (negative / neutral / positive), short max_length.
# --tiny: a 4-layer, 32-wide BERT with random weights on the colour-wheel task of
# lessons/_synthetic.py, built so that distillation has something to transfer in seconds:
# the students get only `n_labelled` of its sentences, and the teacher's soft labels carry
# what those few hard labels do not. Nothing is downloaded.

class Task:
    """Everything lessons 6-9 share. Attributes: name, base_dir (pre-trained teacher),
    data (minibert.data.Dataset), max_length, batch_size, teacher_dir (fine-tuned, lesson 6),
    finetune (a train.TrainConfig), student (a TrainConfig for distillation runs: epochs over
    the transfer set), n_labelled (how many training examples keep their gold label for the
    students of lessons 7-8; the rest of the training split is their transfer set, see
    few_labels), seeds (how
    many seeds each compared setting runs, to show the seed-to-seed spread) and compress (the
    TrainConfig of lesson 9's students, trained on the whole training split)."""

    def __init__(self, tiny: bool):
        from minibert.data import load_dataset
        from minibert.train import TrainConfig
        self.tiny = tiny
        shared = dict(warmup=0.1, weight_decay=0.01, clip=1.0, seed=0, progress=False)  # every run
        if tiny:
            from _synthetic import make_task
            root = lesson_out(True)
            self.base_dir, data_dir = make_task(root)
            self.data = load_dataset(f"csv:{data_dir}")
            self.name = ("tiny BERT (4 layers, H=32, random init) on the colour-wheel task "
                         "(lessons/_synthetic.py)")
            self.teacher_dir = root / "teacher"
            self.max_length, self.batch_size = 16, 16
            self.finetune = TrainConfig(epochs=5, lr=1e-2, batch_size=64, max_length=16, **shared)
            # the students: one epoch over the 960-sentence transfer set, 24 of them labelled
            self.student = TrainConfig(epochs=1, lr=5e-3, batch_size=16, max_length=16, **shared)
            self.n_labelled, self.seeds = 24, 3
            self.compress = TrainConfig(epochs=1, lr=5e-3, batch_size=16, max_length=16, **shared)
        else:
            from minibert.fetch import fetch_teacher
            self.base_dir = fetch_teacher(ROOT / "weights" / "minilm-l6")
            self.data = load_dataset("default", limit=600, seed=0)
            self.name = "all-MiniLM-L6-v2 on 600 tweets of the default sentiment corpus"
            self.teacher_dir = OUT / "teacher"
            self.max_length, self.batch_size = 32, 32
            self.finetune = TrainConfig(epochs=2, lr=1e-4, batch_size=32, max_length=32, **shared)
            self.student = TrainConfig(epochs=1, lr=5e-4, batch_size=32, max_length=32, **shared)
            # the students: one epoch over the 600-tweet transfer set, 64 of them labelled
            self.n_labelled, self.seeds = 64, 3
            self.compress = self.student           # lesson 9: train_student, one epoch

    def student_batches(self, split, seed: int = 0):
        """The fixed list of training batches every student of lessons 7-9 with this seed sees."""
        import numpy as np

        from minibert.batches import train_batches
        out = []
        for epoch in range(self.student.epochs):
            out += list(train_batches(split, self.student.batch_size,
                                      np.random.default_rng([seed, epoch])))
        return out

    def few_labels(self, split):
        """The students' data (lessons 7-8): the whole training split as the TRANSFER SET, where
        only the first n_labelled examples of a fixed shuffle keep their gold label (the rest get
        label -1: the teacher's soft label is all a student learns from them).
        Returns (transfer split, (n_labelled,) indices of the labelled rows in it). The same for
        every seed and setting."""
        import numpy as np
        n = len(split.labels)
        keep = np.sort(np.random.default_rng(7).permutation(n)[:self.n_labelled or n])
        labels = np.full(n, -1, dtype=split.labels.dtype)
        labels[keep] = split.labels[keep]
        return split._replace(labels=labels), keep

    def kd_batches(self, transfer, seed: int = 0):
        """A distilled student's batches: student.epochs shuffled epochs over the transfer set
        (gold-labelled and unlabelled rows mixed; distillation_loss takes the CE over the
        labelled rows only). Indices are rows of `transfer` (the teacher cache's split)."""
        import numpy as np

        from minibert.batches import Batches, bucket_batches
        out = []
        for epoch in range(self.student.epochs):
            out += list(Batches(transfer, bucket_batches(transfer.lengths, self.student.batch_size,
                                                         np.random.default_rng([seed, epoch]))))
        return out

    def hard_batches(self, transfer, labelled_idx, n_steps: int, seed: int = 0):
        """A hard-label student's batches: without a teacher the unlabelled rows teach nothing,
        so it trains on the labelled rows alone, epoch after shuffled epoch, for the SAME number
        of steps as a distilled student (n_steps). Indices are rows of `transfer`."""
        import numpy as np

        from minibert.batches import make_batch
        out, epoch = [], 0
        bs = self.student.batch_size
        while len(out) < n_steps:
            order = np.random.default_rng([seed, epoch, 2]).permutation(labelled_idx)
            out += [make_batch(transfer, order[i:i + bs]) for i in range(0, len(order), bs)]
            epoch += 1
        return out[:n_steps]

    def teacher_logits(self, tparams, tconfig, split, name: str):
        """The fine-tuned teacher's (N, C) logits on `split`, computed once and kept in
        teacher_dir/logits_<name>/ under a fingerprint of the teacher and the split (lesson 6
        writes them; a changed teacher or split computes them again)."""
        from minibert.teacher_cache import cached_logits, teacher_fingerprint
        folder = self.teacher_dir / f"logits_{name}"
        folder.mkdir(parents=True, exist_ok=True)
        fp = teacher_fingerprint(self.teacher_dir, split, self.max_length)
        logits, _ = cached_logits(tparams, tconfig, split, fp, [folder], batch_size=64)
        return logits

    def labelled_subset(self, split):
        """The first n_labelled examples of a fixed shuffle of `split` (all when None): the
        students' training set. Same subset for every seed and setting."""
        import numpy as np
        if self.n_labelled is None:
            return split
        keep = np.sort(np.random.default_rng(7).permutation(len(split.labels))[:self.n_labelled])
        return split._replace(**{f: v[keep] for f, v in split._asdict().items()
                                 if isinstance(v, np.ndarray) and len(v) == len(split.labels)})

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
    run_dir = lesson_out(task.tiny) / "finetune_run"
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


def teacher_and_splits(task: Task):
    """Lesson 6's teacher and the task's train/dev splits with labels in the teacher's order
    (lesson 7 writes these steps out). Returns: tparams, tconfig, tokenizer, train, dev."""
    from minibert.distill import label_map
    tparams, tconfig, tok = finetuned_teacher(task)
    train, dev = task.splits(tok)
    lmap = label_map(task.data.labels, tconfig)                # dataset label -> teacher label index
    train, dev = train._replace(labels=lmap[train.labels]), dev._replace(labels=lmap[dev.labels])
    return tparams, tconfig, tok, train, dev


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


def teacher_comparison(params, config, split, teacher_logits) -> dict:
    """How a model compares with the labels and with the teacher on `split`:
    acc (dev accuracy), f1 (macro-F1), agree (same argmax as the teacher), runner_up (same
    second choice as the teacher: the part of its distribution a hard label never shows) and
    kl (mean KL(teacher || model) at T = 1, in nats)."""
    import numpy as np

    from minibert.evaluate import classification_metrics, predict_logits, softmax
    logits = predict_logits(params, config, split)                       # (N, C)
    m = classification_metrics(split.labels, logits.argmax(1), config.num_labels)
    pt, ps = softmax(teacher_logits), softmax(logits)
    order_t, order_s = np.argsort(-teacher_logits, 1), np.argsort(-logits, 1)
    kl = (pt * (np.log(pt + 1e-12) - np.log(ps + 1e-12))).sum(1).mean()
    return dict(acc=float(m["accuracy"]), f1=float(m["macro_f1"]),
                agree=float((order_s[:, 0] == order_t[:, 0]).mean()),
                runner_up=float((order_s[:, 1] == order_t[:, 1]).mean()), kl=float(kl))


def separation(a, b, paired: bool = False) -> dict:
    """Is A larger than B by more than the seed-to-seed spread? The statistic the lessons
    assert (a, b: per-seed numbers; at least 2 seeds each).
    Unpaired (different batches, e.g. KD vs hard labels): worst = min(a) - max(b), the gap
    between the seed ranges, and std = the larger of the two groups' seed-to-seed std.
    Paired (seed k of a and of b share batches and dropout, e.g. two temperatures):
    worst = min over seeds of a_k - b_k, std = the std of those differences.
    Returns {diff (mean difference), worst, std, ok}: ok when worst > 0 and diff > 2 * std."""
    import numpy as np
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"separation: needs at least 2 seeds on each side, got {len(a)} and {len(b)}")
    if paired:
        d = a - b
        diff, worst, std = d.mean(), d.min(), d.std(ddof=1)
    else:
        diff, worst = a.mean() - b.mean(), a.min() - b.max()
        std = max(a.std(ddof=1), b.std(ddof=1))
    return {"diff": float(diff), "worst": float(worst), "std": float(std),
            "ok": bool(worst > 0 and diff > 2 * std)}


def describe_separation(sep: dict, what: str) -> str:
    """One printed line for a separation() result."""
    verdict = "separated" if sep["ok"] else "NOT separated"
    return (f"{what}: mean difference {sep['diff']:+.3f}, worst case {sep['worst']:+.3f}, "
            f"seed-to-seed std {sep['std']:.3f} -> {verdict} (needs worst > 0 and difference > 2 std)")


def spread(values) -> str:
    """'mean (min-max)' of a list of per-seed numbers, for the printed tables."""
    import numpy as np
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ({v.min():.3f}-{v.max():.3f})" if len(v) > 1 else f"{v[0]:.3f}"
