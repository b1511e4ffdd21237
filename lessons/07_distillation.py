"""Lesson 7: soft and hard distillation.

A student with 2 encoder layers learns from the fine-tuned 6-layer teacher of lesson 6 with
    L = alpha * CE(student, gold labels) + (1 - alpha) * T^2 * KL(p_teacher^T || p_student^T)
(Hinton et al. 2015). The soft term hands the student the teacher's whole distribution, softened
at temperature T; the T^2 keeps its gradient the same size at every T (lesson 2).

Two choices matter as much as the loss:
- initialisation: copying teacher layers into the student (DistilBERT) vs random weights. The
  uniform mapping copies teacher blocks g(j) - 1 with g(j) = j * Lt / Ls: for 2 of 6, blocks 2, 5.
- the teacher's logits are computed ONCE for the training set (the teacher is frozen).

Every student here sees the same batches in the same order; only the compared setting differs.
The runs are short (classroom sizes), so the numbers show directions, not final accuracies.

Run: python lessons/07_distillation.py [--tiny]      Exercises: distillation_loss, init_student
"""

from _common import (Task, accuracy_and_agreement, distill_run, done, finetuned_teacher, parse_args,
                     savefig, section)

import time

import numpy as np

from minibert import exercise_checks
from minibert.distill import label_map
from minibert.objective import DistillSettings
from minibert.student import (default_init_layers, describe_mapping, init_student, student_config,
                              uniform_layer_map)
from minibert.teacher_cache import TeacherCache
from minibert.evaluate import predict_logits, softmax
from minibert.losses import distillation_loss
from minibert.model import count_params, param_shapes

args = parse_args(__doc__.splitlines()[0])
task = Task(args.tiny)

section("1. The exercises of this lesson, checked")
for name, fn in (("distillation_loss", distillation_loss), ("init_student", init_student)):
    res = exercise_checks.CHECKS[name](fn)
    print(f"{name}: {sum(r.passed for r in res)}/{len(res)} checks pass; e.g. {res[1].name}: {res[1].describe()}")
    assert all(r.passed for r in res), [r for r in res if not r.passed]

section("2. The teacher's soft targets")
tparams, tconfig, tok = finetuned_teacher(task)
train, dev = task.splits(tok)
lmap = label_map(task.data.labels, tconfig)               # dataset label -> teacher label index
train, dev = train._replace(labels=lmap[train.labels]), dev._replace(labels=lmap[dev.labels])
t_dev_logits = predict_logits(tparams, tconfig, dev)
teacher_pred = t_dev_logits.argmax(1)
t_acc = float((teacher_pred == dev.labels).mean())
print(f"teacher: {tconfig.num_layers} layers, {count_params(tparams):,} parameters, dev accuracy {t_acc:.3f}")
labels = tconfig.labels
for i in range(3):
    text = task.data.dev[i].text
    p1, p2 = softmax(t_dev_logits[i:i + 1])[0], softmax(t_dev_logits[i:i + 1] / 2.0)[0]
    print(f"  {text[:60]!r:64s} gold {labels[dev.labels[i]]:>8s}  T=1 {np.round(p1, 2)}  T=2 {np.round(p2, 2)}")

L_s = 2
sconfig = student_config(tconfig, L_s)
init_layers = default_init_layers(L_s, tconfig.num_layers)
g = tuple(uniform_layer_map(L_s, tconfig.num_layers))
n_student = sum(int(np.prod(shape)) for shape in param_shapes(sconfig).values())   # no need to build it
print(f"\nstudent: {L_s} layers (same width), {n_student:,} parameters")
print(describe_mapping(init_layers, L_s, tconfig.num_layers))
t0 = time.perf_counter()
teacher = TeacherCache(tparams, tconfig, train, DistillSettings(layer_map=g), batch_size=task.batch_size)
batches = task.student_batches(train)
print(f"{teacher.describe()} in {time.perf_counter() - t0:.1f} s; each student trains "
      f"{len(batches)} steps of {task.student.batch_size} at peak lr {task.student.lr:g}")

section("3. Init from teacher layers vs random; soft+hard vs hard only")
runs = {}


def run(tag, init, alpha, T):
    t0 = time.perf_counter()
    params, losses, parts = distill_run(tparams, tconfig, sconfig, teacher, batches,
                                        DistillSettings(alpha, T, layer_map=g), init, task.student.lr)
    acc, f1, agree = accuracy_and_agreement(params, sconfig, dev, teacher_pred)
    runs[tag] = dict(acc=acc, f1=f1, agree=agree, first=float(np.mean(losses[:3])),
                     last=float(np.mean(losses[-3:])), secs=time.perf_counter() - t0)
    r = runs[tag]
    print(f"{tag:34s} dev acc {acc:.3f}  macro-F1 {f1:.3f}  agrees with teacher {agree:.3f}  "
          f"loss {r['first']:.3f} -> {r['last']:.3f}  ({r['secs']:.1f} s)")


run("teacher init, KD (alpha=0.5, T=2)", init_layers, 0.5, 2.0)
run("teacher init, hard labels only", init_layers, 1.0, 2.0)
run("random init, KD (alpha=0.5, T=2)", None, 0.5, 2.0)
run("random init, hard labels only", None, 1.0, 2.0)

section("4. How much soft, at which temperature (teacher init)")
run("teacher init, soft only (alpha=0, T=2)", init_layers, 0.0, 2.0)
run("teacher init, soft only (alpha=0, T=1)", init_layers, 0.0, 1.0)
run("teacher init, soft only (alpha=0, T=5)", init_layers, 0.0, 5.0)
alpha_curve = [(0.0, runs["teacher init, soft only (alpha=0, T=2)"]),
               (0.5, runs["teacher init, KD (alpha=0.5, T=2)"]),
               (1.0, runs["teacher init, hard labels only"])]
t_curve = [(T, runs[f"teacher init, soft only (alpha=0, T={T})"]) for T in (1, 2, 5)]
entropy = {}                      # how much of the teacher's distribution each T exposes
for T, _ in t_curve:
    q = softmax(teacher.logits / T)
    entropy[T] = float(-(q * np.log(q + 1e-12)).sum(1).mean() / np.log(q.shape[1]))
print("mean entropy of the teacher's soft targets on the training set, / ln C: "
      + ", ".join(f"T={T}: {e:.3f}" for T, e in entropy.items()))

import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(14, 4))
main = list(runs)[:4]
axes[0].barh(range(4), [runs[k]["acc"] for k in main], color=["C0", "C1", "C2", "C3"])
axes[0].axvline(t_acc, color="k", ls="--", label=f"teacher ({t_acc:.2f})")
axes[0].set_yticks(range(4), main, fontsize=8)
axes[0].set_xlabel("dev accuracy")
axes[0].set_title(f"{L_s}-layer students after {len(batches)} steps")
axes[0].legend(fontsize=8)
for ax, curve, xlabel, title in ((axes[1], alpha_curve, "alpha (weight of the hard labels)", "T = 2"),
                                 (axes[2], t_curve, "temperature T", "alpha = 0 (soft only)")):
    xs = [c[0] for c in curve]
    ax.plot(xs, [c[1]["acc"] for c in curve], "o-", label="dev accuracy")
    ax.plot(xs, [c[1]["agree"] for c in curve], "s--", label="agreement with teacher")
    if ax is axes[2]:
        ax.plot(xs, [entropy[x] for x in xs], "^:", label="soft-target entropy / ln C")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
savefig(fig, "lesson07_distillation.png")

ti, ri = runs["teacher init, KD (alpha=0.5, T=2)"], runs["random init, KD (alpha=0.5, T=2)"]
print(f"\nteacher init starts with loss {ti['first']:.3f} vs random init {ri['first']:.3f}; after "
      f"{len(batches)} steps: dev accuracy {ti['acc']:.3f} vs {ri['acc']:.3f}")
assert ti["first"] < ri["first"], (ti, ri)                 # copied layers start closer to the teacher
assert ti["acc"] >= ri["acc"] and ti["agree"] >= ri["agree"], (ti, ri)
assert ri["last"] < ri["first"], ri                        # the random student does learn
assert entropy[1] < entropy[2] < entropy[5]                 # higher T, softer targets
done(args)
