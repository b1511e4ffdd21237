"""Lesson 7: soft and hard distillation.

A student with 2 encoder layers learns from the fine-tuned teacher of lesson 6 with
    L = alpha * CE(softmax(z_s), gold labels) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
(Hinton et al. 2015; the CE at T = 1, both terms averaged over the examples, the KL summed over
classes). The hard term sees one class per example; the soft term sees the
teacher's whole distribution, softened at temperature T: which wrong answers it finds
plausible, and how sure it is. The T^2 keeps the soft gradient from shrinking like 1/T^2 as T
grows (for large T it is then about the same size at every T; lesson 2 measures it).

Derive it yourself first (exercise distillation_loss): the gradient of the soft term with
respect to the student logits. Start from lesson 2's cross-entropy gradient: KL(p_t || p_s)
differs from the cross-entropy of p_s against the fixed target p_t by a constant, and the
logits are divided by T before the softmax. The exercise checks your answer against a closed
form and against finite differences.

Two choices matter as much as the loss:
- initialisation: copying teacher layers into the student (DistilBERT) vs random weights.
  Which teacher blocks to copy is exercise init_student (the uniform map g(j) = j * Lt / Ls).
- the teacher is frozen, so its logits are computed ONCE for the training set.

What to look for: the students see the same batches in the same order and differ only in the
compared setting; every setting runs with several seeds (batch order, dropout, random init),
and the figure shows each seed, so a difference counts only if it is larger than the spread.
Besides dev accuracy the lesson measures what distillation transfers: agreement with the
teacher's answer, agreement with its SECOND choice (the runner-up, which a hard label never
shows) and KL(teacher || student).
- --tiny: the colour-wheel task (lessons/_synthetic.py); students get 48 labelled sentences.
- class size: MiniLM on 600 tweets, one epoch (19 steps); 3 seeds for KD vs hard-only, 1 for the rest.

Run: python lessons/07_distillation.py [--tiny]
"""

# %%
from _common import (Task, distill_run, done, finetuned_teacher, parse_args, savefig, section,
                     spread, teacher_comparison)

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

args = parse_args(7, __doc__)
task = Task(args.tiny)

# %%
section("1. The exercises of this lesson, checked")
for name, fn in (("distillation_loss", distillation_loss), ("init_student", init_student)):
    res = exercise_checks.CHECKS[name](fn)
    print(f"{name}: {sum(r.passed for r in res)}/{len(res)} checks pass; e.g. {res[1].name}: {res[1].describe()}")
    assert all(r.passed for r in res), [r for r in res if not r.passed]

# %%
section("2. The teacher's soft targets")
tparams, tconfig, tok = finetuned_teacher(task)
train, dev = task.splits(tok)
lmap = label_map(task.data.labels, tconfig)               # dataset label -> teacher label index
train, dev = train._replace(labels=lmap[train.labels]), dev._replace(labels=lmap[dev.labels])
labelled = task.labelled_subset(train)                     # what the students train on
t_dev_logits = predict_logits(tparams, tconfig, dev)
teacher_pred = t_dev_logits.argmax(1)
t_acc = float((teacher_pred == dev.labels).mean())
print(f"teacher: {tconfig.num_layers} layers, {count_params(tparams):,} parameters, dev accuracy {t_acc:.3f}")
labels = tconfig.labels
print(f"classes {labels}")
for i in range(3):
    text = task.data.dev[i].text
    p1, p4 = softmax(t_dev_logits[i:i + 1])[0], softmax(t_dev_logits[i:i + 1] / 4.0)[0]
    print(f"  {text[:50]!r:54s} gold {labels[dev.labels[i]]:>8s}  T=1 {np.round(p1, 2)}  T=4 {np.round(p4, 2)}")

L_s = 2
sconfig = student_config(tconfig, L_s)
init_layers = default_init_layers(L_s, tconfig.num_layers)
g = tuple(uniform_layer_map(L_s, tconfig.num_layers))
n_student = sum(int(np.prod(shape)) for shape in param_shapes(sconfig).values())   # no need to build it
print(f"\nstudent: {L_s} layers (same width), {n_student:,} parameters")
print(describe_mapping(init_layers, L_s, tconfig.num_layers))
t0 = time.perf_counter()
teacher = TeacherCache(tparams, tconfig, labelled, DistillSettings(layer_map=g), batch_size=task.batch_size)
n_steps = len(task.student_batches(labelled))
print(f"{teacher.describe()} in {time.perf_counter() - t0:.1f} s; the students train on "
      f"{len(labelled.labels)} of the {len(train.labels)} training examples: {n_steps} steps of "
      f"{task.student.batch_size} at peak lr {task.student.lr:g}")

# %%
section("3. Init from teacher layers vs random; soft+hard vs hard only (several seeds)")
runs = {}                         # (init, alpha, T) -> list of per-seed result dicts
SEEDS = list(range(task.seeds))
# class size (2 minutes of CPU): the seeds go where the difference is small (KD vs hard, teacher
# init); random init (0.2 behind) and the sweeps run one seed each
FEW = SEEDS if args.tiny else SEEDS[:1]
RANDOM = FEW


def run(init, alpha, T, seeds):
    """Train one student per seed; print the spread over seeds."""
    t0 = time.perf_counter()
    for seed in seeds:
        params, losses, _ = distill_run(tparams, tconfig, sconfig, teacher,
                                        task.student_batches(labelled, seed),
                                        DistillSettings(alpha, T, layer_map=g),
                                        init_layers if init == "teacher" else None,
                                        task.student.lr, seed=seed)
        r = teacher_comparison(params, sconfig, dev, t_dev_logits)
        r.update(first=float(np.mean(losses[:3])), last=float(np.mean(losses[-3:])))
        runs.setdefault((init, alpha, T), []).append(r)
    rs = runs[init, alpha, T]
    tag = f"{init} init, " + ("hard labels only" if alpha == 1 else f"alpha={alpha:g}, T={T:g}")
    print(f"{tag:30s} dev acc {spread([r['acc'] for r in rs])}  agrees {spread([r['agree'] for r in rs])}  "
          f"runner-up {spread([r['runner_up'] for r in rs])}  KL {spread([r['kl'] for r in rs])}  "
          f"[{len(seeds)} seed{'s' * (len(seeds) > 1)}, {time.perf_counter() - t0:.1f} s]")


print("each cell: mean (min-max) over seeds; 'agrees': same answer as the teacher; 'runner-up': same "
      "second choice; KL(teacher || student) in nats")
run("teacher", 0.5, 2.0, SEEDS)
run("teacher", 1.0, 2.0, SEEDS)
run("random", 0.5, 2.0, RANDOM)
run("random", 1.0, 2.0, RANDOM)

# %%
section("4. How much soft, at which temperature (teacher init)")
run("teacher", 0.0, 2.0, FEW)
TEMPS = (1.0, 2.0, 4.0, 8.0) if args.tiny else (1.0, 2.0, 4.0)
for T in TEMPS:
    if T != 2.0:
        run("teacher", 0.0, T, FEW)
entropy = {}                      # how much of the teacher's distribution each T exposes
for T in TEMPS:
    q = softmax(teacher.logits / T)
    entropy[T] = float(-(q * np.log(q + 1e-12)).sum(1).mean() / np.log(q.shape[1]))
print("mean entropy of the teacher's soft targets on the students' training set, / ln C: "
      + ", ".join(f"T={T:g}: {e:.3f}" for T, e in entropy.items()))


def mean(key, *setting):
    return float(np.mean([r[key] for r in runs[setting]]))


def lo(key, *setting):
    return min(r[key] for r in runs[setting])


def hi(key, *setting):
    return max(r[key] for r in runs[setting])


# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(16, 5))
grid = [("teacher", 0.5), ("teacher", 1.0), ("random", 0.5), ("random", 1.0)]
names = [f"{i} init, " + ("hard only" if a == 1 else "KD (alpha=0.5)") for i, a in grid]
ax = axes[0]
for k, (i, a) in enumerate(grid):
    accs = [r["acc"] for r in runs[i, a, 2.0]]
    ax.barh(k, np.mean(accs), color=f"C{k}", alpha=0.5)
    ax.plot(accs, [k] * len(accs), "ko", ms=4, label="one seed" if k == 0 else None)
ax.axvline(t_acc, color="k", ls="--", label=f"teacher ({t_acc:.2f})")
ax.set_yticks(range(4), names, fontsize=8)
ax.set_xlim(0, 1)
ax.set_xlabel("dev accuracy (bar: mean over seeds)")
gap = lo("acc", "teacher", 0.5, 2.0) - hi("acc", "random", 0.5, 2.0)
ax.set_title(f"Teacher init beats random init\n(worst teacher-init seed {gap:+.2f} over the best random one)",
             fontsize=10)
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)

alphas = (0.0, 0.5, 1.0)
for ax, xs, settings, xlabel in (
        (axes[1], alphas, [("teacher", a, 2.0) for a in alphas], "alpha (weight of the hard labels), T = 2"),
        (axes[2], TEMPS, [("teacher", 0.0, T) for T in TEMPS], "temperature T (alpha = 0, soft only)")):
    allv = []
    for key, style, label in (("agree", "s-", "agrees with the teacher"),
                              ("runner_up", "o-", "same runner-up as the teacher"),
                              ("acc", "^-", "dev accuracy")):
        means = [mean(key, *s) for s in settings]
        ax.plot(xs, means, style, label=label)
        for x, s in zip(xs, settings):
            vals = [r[key] for r in runs[s]]
            ax.plot([x] * len(vals), vals, ".", color="0.4", ms=4)
            allv += vals
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of dev examples")
    pad = 0.03
    ax.set_ylim(max(0.0, min(allv) - pad), min(1.0, max(allv)) + pad)   # every point visible
handles, names_ = axes[1].get_legend_handles_labels()   # panels 2 and 3 draw the same three series
fig.legend(handles, names_ + [], fontsize=9, loc="lower center", ncol=3, bbox_to_anchor=(0.67, 0.0))
axes[2].set_xscale("log", base=2)
axes[2].set_xticks(TEMPS, [f"{T:g}" for T in TEMPS])
ru_soft, ru_hard = mean("runner_up", "teacher", 0.0, 2.0), mean("runner_up", "teacher", 1.0, 2.0)
axes[1].set_title(f"Soft labels teach the teacher's second choices\n(runner-up agreement "
                  f"{ru_soft:.2f} soft only vs {ru_hard:.2f} hard only; dots: seeds)", fontsize=10)
t_lo, t_hi = 1.0, 4.0
axes[2].set_title(f"Runner-up agreement {mean('runner_up', 'teacher', 0.0, t_lo):.2f} at T={t_lo:g}, "
                  f"{mean('runner_up', 'teacher', 0.0, t_hi):.2f} at T={t_hi:g}\n(soft-target "
                  f"entropy / ln C: {entropy[t_lo]:.2f} at T={t_lo:g}, {entropy[t_hi]:.2f} at T={t_hi:g})",
                  fontsize=10)
fig.tight_layout(rect=(0, 0.07, 1, 1))                  # room for the shared legend below
savefig(fig, "lesson07_distillation.png", tight=False)

# %%
ti, ri = runs["teacher", 0.5, 2.0], runs["random", 0.5, 2.0]
kd, hard = ("teacher", 0.5, 2.0), ("teacher", 1.0, 2.0)
print(f"\nteacher init starts with loss {np.mean([r['first'] for r in ti]):.3f} vs random init "
      f"{np.mean([r['first'] for r in ri]):.3f}")
# The lesson's claims, as assertions (each one separated by more than the seed-to-seed spread).
assert max(r["first"] for r in ti) < min(r["first"] for r in ri), (ti, ri)   # copied layers start closer
assert lo("acc", *kd) > hi("acc", "random", 0.5, 2.0), runs                   # teacher init >> random init
assert lo("acc", *hard) > hi("acc", "random", 1.0, 2.0), runs
assert all(r["last"] < r["first"] for r in runs["random", 0.5, 2.0]), runs    # the random students do learn
assert hi("kl", *kd) < lo("kl", *hard), runs                                  # KD: closer to the teacher's distribution
assert lo("agree", "teacher", 0.0, 2.0) > hi("agree", *hard), runs            # soft only: its answers too
assert all(entropy[a] < entropy[b] for a, b in zip(TEMPS, TEMPS[1:]))          # higher T, softer targets
if args.tiny:   # a confident teacher (entropy at T=1 well below 1): T decides what the student learns
    assert lo("runner_up", *kd) > hi("runner_up", *hard), runs                # ... and its second choices
    paired = [b["runner_up"] - a["runner_up"] for a, b in zip(runs["teacher", 0.0, 1.0], runs["teacher", 0.0, 4.0])]
    assert min(paired) > 0.03, paired          # same seed, same batches: T=4 beats T=1 on every seed
    assert mean("acc", *kd) > mean("acc", *hard), runs                         # few labels: KD is more accurate

results = {"teacher_acc": t_acc, "n_labelled": len(labelled.labels), "steps": n_steps,
           "entropy_by_T": entropy,
           "runs": [{"init": i, "alpha": a, "T": T, "seeds": rs} for (i, a, T), rs in runs.items()]}
showed = [
    f"Copying teacher layers is the biggest win: dev accuracy {mean('acc', *kd):.3f} vs "
    f"{mean('acc', 'random', 0.5, 2.0):.3f} from random init after {n_steps} steps.",
    f"The soft term transfers what a hard label cannot: KL to the teacher {mean('kl', *kd):.3f} vs "
    f"{mean('kl', *hard):.3f} hard-only; soft only, the student agrees with the teacher on "
    f"{mean('agree', 'teacher', 0.0, 2.0):.2f} of dev vs {mean('agree', *hard):.2f}, runner-up "
    f"{mean('runner_up', 'teacher', 0.0, 2.0):.2f} vs {mean('runner_up', *hard):.2f} (dev accuracy "
    f"{mean('acc', *kd):.3f} vs {mean('acc', *hard):.3f}"
    + (", within the seed spread)." if not args.tiny else ")."),
    (f"Temperature matters when the teacher is confident: runner-up agreement "
     f"{mean('runner_up', 'teacher', 0.0, 1.0):.2f} at T=1, {mean('runner_up', 'teacher', 0.0, 4.0):.2f} at T=4."
     if args.tiny else
     f"Temperature: this teacher is already unsure at T=1 (soft-target entropy {entropy[1.0]:.2f} of the "
     f"maximum), so T=1..4 change little (runner-up agreement {mean('runner_up', 'teacher', 0.0, 1.0):.2f} "
     f"vs {mean('runner_up', 'teacher', 0.0, 4.0):.2f}); --tiny shows a confident teacher, where T matters."),
]
done(args, results, showed)
