"""Lesson 6: fine-tuning the teacher on a small labelled subset.

all-MiniLM-L6-v2 was pre-trained to embed sentences; it has no idea what our labels are. We add
a fresh classifier on the pooled [CLS] vector (W ~ N(0, 0.02), b = 0) and train everything with
AdamW on cross-entropy: a linear warm-up then linear decay of the learning rate, global
gradient-norm clipping, dropout on, weight decay on matrices but not on biases / LayerNorm.

Distillation needs this step: a teacher whose head was never trained would hand the student
noise as "soft labels" (`minibert distill` refuses such a teacher).

Sizes are classroom sizes (a few hundred tweets, 32 tokens, two epochs), so the accuracy is
modest; `minibert finetune` on the full corpus does better. The fine-tuned teacher is saved to
lessons/out/teacher/ for lessons 7-9.

--tiny: a random 4-layer, H=32 BERT learns lessons/_synthetic.py's colour-wheel task (six
colours whose neighbours on the wheel are similar), the teacher of lessons 7-9 at toy size.

Write the AdamW step yourself first (exercise adamw_step): the two moment estimates, their
bias correction, and where the weight decay enters (decoupled: not through the gradient).

Run: python lessons/06_finetune.py [--tiny]      Exercise: adamw_step
"""

# %%
from _common import Task, done, finetune_teacher, parse_args, report_checks, savefig, section

import time
from collections import Counter

import numpy as np

from minibert import exercise_checks
from minibert.evaluate import classification_metrics, confusion_matrix, predict_logits, softmax
from minibert.model import count_params
from minibert.optim import adamw_step, linear_schedule
from minibert.plots import running_mean
from minibert.tokenizer import Tokenizer
from minibert.train import head_init_rng, with_fresh_head
from minibert.weights import load_model

args = parse_args(6, __doc__)
task = Task(args.tiny)
labels = task.data.labels

# %%
section("1. The task and the untrained head")
print(f"{task.name}")
print(f"labels {labels}; {len(task.data.train)} train / {len(task.data.dev)} dev examples; "
      f"max_length {task.max_length}")
counts = Counter(e.label for e in task.data.dev)
majority = max(counts.values()) / len(task.data.dev)
print(f"dev label counts {dict(sorted(counts.items()))}: always guessing the majority class "
      f"scores {majority:.3f}")
params, config = load_model(task.base_dir)
tok = Tokenizer.from_dir(task.base_dir)
params, config = with_fresh_head(params, config, labels, head_init_rng(task.finetune.seed))
train_split, dev_split = task.splits(tok)
before = classification_metrics(dev_split.labels,
                                predict_logits(params, config, dev_split).argmax(1), len(labels))
print(f"{count_params(params):,} parameters; dev accuracy with the random head: "
      f"{before['accuracy']:.3f} (macro-F1 {before['macro_f1']:.3f})")

# %%
section("2. One AdamW step, checked (the exercise's checks)")
checks = exercise_checks.check_adamw_step(adamw_step)
checks_record = report_checks(checks, "adamw_step")     # every check: lesson06.json
tc = task.finetune
steps = tc.epochs * -(-len(task.data.train) // tc.batch_size)
warm = round(tc.warmup * steps)
lrs = [linear_schedule(s, steps, warm, tc.lr) for s in range(steps)]
print(f"schedule: {steps} steps, {warm} of warm-up to lr {tc.lr:g}, then linear decay to 0 "
      f"(step 0: {lrs[0]:.2e}, step {warm}: {lrs[warm]:.2e}, last: {lrs[-1]:.2e})")

# %%
section("3. Fine-tuning (train.fit: AdamW, warm-up/decay, clipping, dropout)")
t0 = time.perf_counter()
res, tparams, tconfig = finetune_teacher(task, task.teacher_dir)
secs = time.perf_counter() - t0
for rec in res.history:
    print(f"epoch {rec['epoch']}: train loss {rec['train_loss']:.4f}, dev accuracy "
          f"{rec['dev']['accuracy']:.3f}, macro-F1 {rec['dev']['macro_f1']:.3f}, "
          f"{rec['examples_per_s']:.1f} examples/s")
losses = np.asarray(res.step_losses)
k = max(2, len(losses) // 5)
first, last = losses[:k].mean(), losses[-k:].mean()
print(f"{len(losses)} steps in {secs:.1f} s; mean loss of the first {k} steps {first:.3f}, "
      f"of the last {k} {last:.3f}; best epoch {res.best_epoch} saved to {task.teacher_dir}")

# %%
section("4. What the fine-tuned teacher does")
# the teacher is frozen from here on: its logits on train and dev are computed once and kept in
# the teacher's folder (under a fingerprint of teacher and data) for lessons 7-9
t0 = time.perf_counter()
logits = task.teacher_logits(tparams, tconfig, dev_split, "dev")          # (N_dev, C)
task.teacher_logits(tparams, tconfig, train_split, "train")
print(f"teacher logits on train and dev computed once and cached for lessons 7-9 "
      f"({time.perf_counter() - t0:.1f} s)")
pred = logits.argmax(1)
after = classification_metrics(dev_split.labels, pred, len(labels))
cm = confusion_matrix(dev_split.labels, pred, len(labels))
print(f"dev accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, macro-F1 "
      f"{before['macro_f1']:.3f} -> {after['macro_f1']:.3f} (majority baseline {majority:.3f})")
print("confusion matrix (rows true, columns predicted):")
print(f"{'':>10} " + " ".join(f"{lab[:8]:>8}" for lab in labels))
for lab, row in zip(labels, cm):
    print(f"{lab[:10]:>10} " + " ".join(f"{v:8d}" for v in row))
p = softmax(logits)
conf, right = p.max(1), pred == dev_split.labels
wrong = f", when wrong {conf[~right].mean():.3f}" if (~right).any() else " (never wrong)"
print(f"mean confidence when right {conf[right].mean():.3f}{wrong}: the probabilities say more "
      f"than the argmax; lesson 7 teaches a student with them")

# %%
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.plot(losses, alpha=0.35, label="loss per step")
ax1.plot(running_mean(losses, max(2, len(losses) // 8)), label="running mean")
ax1.set_xlabel("training step")
ax1.set_ylabel("cross-entropy (nats)")
ax1.set_title(f"Fine-tuning the teacher: loss {first:.2f} -> {last:.2f}, dev accuracy "
              f"{before['accuracy']:.2f} -> {after['accuracy']:.2f}", fontsize=10)
ax1.legend()
ax2.plot(lrs)
ax2.set_xlabel("training step")
ax2.set_ylabel("learning rate")
ax2.set_title(f"Linear warm-up ({warm} steps) to {tc.lr:g}, then linear decay to 0", fontsize=10)
savefig(fig, "lesson06_loss_curve.png")

assert all(r.passed for r in checks)
assert last < first, (first, last)
assert after["accuracy"] > before["accuracy"] and after["accuracy"] > majority, (before, after, majority)
assert (task.teacher_dir / "head.json").exists()

results = {"task": task.name, "majority": majority, "before": before, "after": after,
           "steps": len(losses), "loss_first": first, "loss_last": last, "seconds_training": secs,
           "history": [{k: rec[k] for k in ("epoch", "train_loss", "examples_per_s")} | {
               "dev_accuracy": rec["dev"]["accuracy"]} for rec in res.history],
           "confusion": cm, "confidence_right": float(conf[right].mean()),
           "adamw_step_checks": checks_record}
showed = [
    f"A fresh head on a pre-trained encoder, AdamW with warm-up/decay and clipping: dev accuracy "
    f"{before['accuracy']:.3f} -> {after['accuracy']:.3f} in {len(losses)} steps (majority class {majority:.3f}).",
    "The teacher's probabilities say more than its answers (confidence when right vs wrong): "
    "lesson 7 hands them to a student.",
]
done(args, results, showed)
