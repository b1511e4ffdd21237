"""Lesson 7: soft and hard distillation.

A student with 2 encoder layers learns from the fine-tuned teacher of lesson 6 with
    L = alpha * CE(softmax(z_s), gold labels) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
(Hinton et al. 2015; the CE at T = 1 over the rows that have a gold label, the KL over every
row, both averaged over examples, the KL summed over classes). The hard term sees one class
per example; the soft term sees the teacher's whole distribution, softened at temperature T:
which wrong answers it finds plausible, and how sure it is. The T^2 keeps the soft gradient
from shrinking like 1/T^2 as T grows (for large T it is then about the same size at every T;
lesson 2 measures it; at T <= 1 the soft term pulls less).

Derive it yourself first (exercise distillation_loss): the gradient of the soft term with
respect to the student logits. Start from lesson 2's cross-entropy gradient: KL(p_t || p_s)
differs from the cross-entropy of p_s against the fixed target p_t by a constant, and the
logits are divided by T before the softmax. The exercise checks your answer against a closed
form and against finite differences.

Where distillation wins: FEW LABELS and many unlabelled examples. The students get the gold
label of only a few training examples (--tiny 24 of 960 sentences, class size 64 of 600
tweets); the rest of the training split is a TRANSFER SET that only the teacher labels (its
logits, computed once by lesson 6 and cached: the teacher is frozen). A hard-label student can
use only the labelled examples (it trains on them for as many steps as the distilled one); a
distilled student learns from the teacher's soft labels on all of them.

Two choices matter as much as the loss:
- initialisation: copying teacher layers into the student (DistilBERT) vs random weights.
  Which teacher blocks to copy is exercise init_student (the uniform map g(j) = j * Lt / Ls).
- alpha and T: how much weight the few gold labels get, and how soft the teacher's targets are.

Every setting runs with several seeds (batch order, dropout, random init) and the figure draws
each seed. A claim is asserted only when it is larger than the seed-to-seed spread: the worst
seed of one side beats the best of the other (or, paired on the same batches, every seed's
difference has the same sign) AND the mean difference is more than twice the seed-to-seed std
(_common.separation). Besides dev accuracy the lesson measures what distillation transfers:
agreement with the teacher's answer, with its SECOND choice (the runner-up, which a hard label
never shows) and KL(teacher || student).

Run: python lessons/07_distillation.py [--tiny]
"""

# %%
from _common import (Task, describe_separation, distill_run, done, finetuned_teacher, parse_args,
                     savefig, section, separation, spread, teacher_comparison)

import time

import numpy as np

from minibert import exercise_checks
from minibert.distill import label_map
from minibert.objective import DistillSettings
from minibert.student import (default_init_layers, describe_mapping, init_student, student_config,
                              uniform_layer_map)
from minibert.teacher_cache import TeacherCache
from minibert.evaluate import softmax
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
section("2. Few labels, a transfer set, and the teacher's soft targets")
tparams, tconfig, tok = finetuned_teacher(task)
train, dev = task.splits(tok)
lmap = label_map(task.data.labels, tconfig)               # dataset label -> teacher label index
train, dev = train._replace(labels=lmap[train.labels]), dev._replace(labels=lmap[dev.labels])
transfer, labelled = task.few_labels(train)               # labels -1 except the few gold ones
t0 = time.perf_counter()
t_train_logits = task.teacher_logits(tparams, tconfig, train, "train")   # lesson 6 cached them
t_dev_logits = task.teacher_logits(tparams, tconfig, dev, "dev")
t_acc = float((t_dev_logits.argmax(1) == dev.labels).mean())
print(f"teacher: {tconfig.num_layers} layers, {count_params(tparams):,} parameters, dev accuracy {t_acc:.3f} "
      f"(its logits on train and dev: {time.perf_counter() - t0:.1f} s, from lesson 6's cache)")
labels = tconfig.labels
print(f"classes {labels}")
for i in range(3):
    text = task.data.dev[i].text
    p1, p4 = softmax(t_dev_logits[i:i + 1])[0], softmax(t_dev_logits[i:i + 1] / 4.0)[0]
    print(f"  {text[:50]!r:54s} gold {labels[dev.labels[i]]:>8s}  T=1 {np.round(p1, 2)}  T=4 {np.round(p4, 2)}")
print(f"the students: gold labels for {len(labelled)} of the {len(train.labels)} training examples; "
      f"the other {len(train.labels) - len(labelled)} are the transfer set (the teacher's labels only)")

L_s = 2
sconfig = student_config(tconfig, L_s)
init_layers = default_init_layers(L_s, tconfig.num_layers)
g = tuple(uniform_layer_map(L_s, tconfig.num_layers))
n_student = sum(int(np.prod(shape)) for shape in param_shapes(sconfig).values())   # no need to build it
print(f"\nstudent: {L_s} layers (same width), {n_student:,} parameters")
print(describe_mapping(init_layers, L_s, tconfig.num_layers))
teacher = TeacherCache(tparams, tconfig, transfer, DistillSettings(layer_map=g), logits=t_train_logits)
n_steps = len(task.kd_batches(transfer))
print(f"{teacher.describe()}; every student trains {n_steps} steps of {task.student.batch_size} at peak "
      f"lr {task.student.lr:g}")

# %%
section("3. Init from teacher layers vs random; distilled vs hard labels (several seeds)")
runs = {}                         # (init, alpha, T) -> list of per-seed result dicts
SEEDS = list(range(task.seeds))
KD = ("teacher", 0.0, 2.0)        # the distilled student: soft labels only, T = 2
HARD = ("teacher", 1.0, 2.0)      # the hard-label student (alpha = 1: T plays no part)
RANDOM = ("random", 0.0, 2.0)
# class size (2 minutes on 2 cores): 3 seeds where the comparison is asserted, 2 for random init
# (far behind) and alpha = 0.5, 1 for the temperatures that are only drawn
FEW = SEEDS if args.tiny else SEEDS[:2]
ONE = SEEDS if args.tiny else SEEDS[:1]


def run(init, alpha, T, seeds):
    """Train one student per seed (distilled: the transfer set; alpha = 1: the labelled rows
    for as many steps); print the spread over seeds."""
    t0 = time.perf_counter()
    for seed in seeds:
        batches = (task.hard_batches(transfer, labelled, n_steps, seed) if alpha == 1.0
                   else task.kd_batches(transfer, seed))
        params, losses, _ = distill_run(tparams, tconfig, sconfig, teacher, batches,
                                        DistillSettings(alpha, T, layer_map=g),
                                        init_layers if init == "teacher" else None,
                                        task.student.lr, seed=seed)
        r = teacher_comparison(params, sconfig, dev, t_dev_logits)
        r.update(first=float(np.mean(losses[:3])), last=float(np.mean(losses[-3:])))
        runs.setdefault((init, alpha, T), []).append(r)
    rs = runs[init, alpha, T]
    print(f"{tag(init, alpha, T):32s} dev acc {spread([r['acc'] for r in rs])}  agrees "
          f"{spread([r['agree'] for r in rs])}  runner-up {spread([r['runner_up'] for r in rs])}  "
          f"KL {spread([r['kl'] for r in rs])}  [{len(seeds)} seed{'s' * (len(seeds) > 1)}, "
          f"{time.perf_counter() - t0:.1f} s]")


def tag(init, alpha, T):
    return f"{init} init, " + ("hard labels only" if alpha == 1 else f"alpha={alpha:g}, T={T:g}")


def vals(key, setting):
    return [r[key] for r in runs[setting]]


def mean(key, setting):
    return float(np.mean(vals(key, setting)))


print("each cell: mean (min-max) over seeds; 'agrees': same answer as the teacher; 'runner-up': same "
      "second choice; KL(teacher || student) in nats")
run(*KD, SEEDS)
run(*HARD, SEEDS)
run(*RANDOM, FEW)
sep = {"kd_vs_hard_acc": separation(vals("acc", KD), vals("acc", HARD)),
       "kd_vs_hard_kl": separation(vals("kl", HARD), vals("kl", KD)),          # lower KL is better
       "teacher_vs_random_init_acc": separation(vals("acc", KD), vals("acc", RANDOM)),
       "teacher_vs_random_init_kl": separation(vals("kl", RANDOM), vals("kl", KD))}
print(describe_separation(sep["kd_vs_hard_acc"], "dev accuracy, distilled - hard labels"))
print(describe_separation(sep["kd_vs_hard_kl"], "KL to the teacher, hard labels - distilled"))
print(describe_separation(sep["teacher_vs_random_init_acc"], "dev accuracy, teacher init - random init"))
print(describe_separation(sep["teacher_vs_random_init_kl"], "KL to the teacher, random init - teacher init"))

# %%
section("4. How much weight for the gold labels (alpha), at which temperature (T)")
ALPHA_MID = ("teacher", 0.5, 2.0)          # the standard mix: half the weight on the gold labels
run(*ALPHA_MID, FEW)
# at alpha = 0.5: how hard the soft term pulls (class size: no T = 1, for time)
TEMPS = (0.25, 1.0, 2.0, 4.0) if args.tiny else (0.25, 2.0, 4.0)
T_PAIR = (0.25, 2.0)                         # compared seed by seed, on the same batches
for T in TEMPS:
    if T != 2.0:
        run("teacher", 0.5, T, FEW if T in T_PAIR else ONE)
entropy = {}                      # how much of the teacher's distribution each T exposes
for T in TEMPS:
    q = softmax(teacher.logits / T)
    entropy[T] = float(-(q * np.log(q + 1e-12)).sum(1).mean() / np.log(q.shape[1]))
print("mean entropy of the teacher's soft targets on the transfer set, / ln C: "
      + ", ".join(f"T={T:g}: {e:.3f}" for T, e in entropy.items()))
lo_T, hi_T = ("teacher", 0.5, T_PAIR[0]), ("teacher", 0.5, T_PAIR[1])
sep["temperature"] = separation(vals("kl", lo_T), vals("kl", hi_T), paired=True)    # lower KL is better
print(describe_separation(sep["temperature"], f"KL to the teacher, T={T_PAIR[0]:g} - T={T_PAIR[1]:g} "
                                              f"(alpha 0.5, paired)"))

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 3, figsize=(16, 5))
grid = [KD, HARD, RANDOM]
names = ["teacher init, distilled", "teacher init, hard labels", "random init, distilled"]
ax = axes[0]
for k, s in enumerate(grid):
    accs = vals("acc", s)
    ax.barh(k, np.mean(accs), color=f"C{k}", alpha=0.5)
    ax.plot(accs, [k] * len(accs), "ko", ms=4, label="one seed" if k == 0 else None)
ax.axvline(t_acc, color="k", ls="--", label=f"teacher ({t_acc:.2f})")
ax.set_yticks(range(len(grid)), names, fontsize=8)
ax.invert_yaxis()
all_acc = [a for s in grid for a in vals("acc", s)] + [t_acc]
ax.set_xlim(max(0.0, min(all_acc) - 0.1), min(1.0, max(all_acc) + 0.05))
ax.set_xlabel("dev accuracy (bar: mean over seeds, dots: seeds)")
d_kd, d_init = sep["kd_vs_hard_acc"], sep["teacher_vs_random_init_acc"]
ax.set_title(f"Distilled vs hard labels: {d_kd['diff']:+.3f} (worst seed {d_kd['worst']:+.3f}, "
             f"std {d_kd['std']:.3f})\nteacher vs random init: {d_init['diff']:+.2f} "
             f"({len(labelled)} gold labels, {len(train.labels)} examples)", fontsize=10)
ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)

alphas = (0.0, 0.5, 1.0)
T_SETTINGS = [("teacher", 0.5, T) for T in TEMPS]
for ax, xs, settings, xlabel in (
        (axes[1], alphas, [KD, ALPHA_MID, HARD], "alpha (weight of the gold labels), T = 2"),
        (axes[2], TEMPS, T_SETTINGS, "temperature T (alpha = 0.5), log scale")):
    allv = []
    for key, style, label in (("agree", "s-", "agrees with the teacher"),
                              ("runner_up", "o-", "same runner-up as the teacher"),
                              ("acc", "^-", "dev accuracy")):
        ax.plot(xs, [mean(key, s) for s in settings], style, label=label)
        for x, s in zip(xs, settings):
            ax.plot([x] * len(runs[s]), vals(key, s), ".", color="0.4", ms=4)
            allv += vals(key, s)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of dev examples")
    ax.set_ylim(max(0.0, min(allv) - 0.03), min(1.0, max(allv)) + 0.03)   # every point visible
    kl_ax = ax.twinx()                       # KL in nats: its own axis, on the right
    kl_ax.plot(xs, [mean("kl", s) for s in settings], "x--", color="C3", label="KL(teacher || student), right axis")
    for x, s in zip(xs, settings):
        kl_ax.plot([x] * len(runs[s]), vals("kl", s), "x", color="C3", ms=4, alpha=0.5)
    kl_ax.set_ylim(0, 1.1 * max(max(vals("kl", s)) for s in settings))
    kl_ax.set_ylabel("KL(teacher || student), nats", color="C3")
handles, names_ = axes[1].get_legend_handles_labels()   # panels 2 and 3 draw the same series
kl_h, kl_n = kl_ax.get_legend_handles_labels()
fig.legend(handles + kl_h, names_ + kl_n, fontsize=9, loc="lower center", ncol=4, bbox_to_anchor=(0.67, 0.0))
axes[1].set_xticks(alphas)
axes[1].set_title(f"Trust the teacher: agreement {mean('agree', KD):.2f} soft only (alpha=0) vs "
                  f"{mean('agree', HARD):.2f}\nhard labels only (alpha=1); KL {mean('kl', KD):.3f} vs "
                  f"{mean('kl', HARD):.3f} nats (dots: seeds)", fontsize=10)
axes[2].set_xscale("log", base=2)
axes[2].set_xticks(TEMPS, [f"{T:g}" for T in TEMPS])
st = sep["temperature"]
axes[2].set_title(f"Low T: the soft term pulls less, the few labels take over:\nKL {mean('kl', lo_T):.3f} at "
                  f"T={T_PAIR[0]:g} vs {mean('kl', hi_T):.3f} at T={T_PAIR[1]:g} (every seed; worst "
                  f"{st['worst']:+.3f})", fontsize=10)
fig.tight_layout(rect=(0, 0.07, 1, 1))                  # room for the shared legend below
savefig(fig, "lesson07_distillation.png", tight=False)

# %%
ti, ri = runs[KD], runs[RANDOM]
print(f"\nteacher init starts with loss {np.mean([r['first'] for r in ti]):.3f} vs random init "
      f"{np.mean([r['first'] for r in ri]):.3f}")
# The lesson's claims, as assertions: each separated by more than the seed-to-seed spread.
assert max(r["first"] for r in ti) < min(r["first"] for r in ri), (ti, ri)   # copied layers start closer
assert sep["teacher_vs_random_init_kl"]["ok"], sep    # teacher init ends far closer to the teacher
assert sep["teacher_vs_random_init_acc"]["diff"] > 0, sep   # and more accurate on average (--tiny: a
# random-init student sometimes catches up in 60 steps, so accuracy is not separated there)
assert all(r["last"] < r["first"] for r in ri), ri                            # the random students do learn
assert sep["kd_vs_hard_acc"]["ok"], sep                # few labels: the distilled student is more accurate
assert sep["kd_vs_hard_kl"]["ok"], sep                 # ... and closer to the teacher's distribution
assert sep["temperature"]["ok"], sep                   # T decides how much of the runner-up it learns
assert all(entropy[a] < entropy[b] for a, b in zip(TEMPS, TEMPS[1:]))          # higher T, softer targets

results = {"teacher_acc": t_acc, "n_labelled": len(labelled), "n_train": len(train.labels),
           "steps": n_steps, "entropy_by_T": entropy, "separation": sep, "t_pair": T_PAIR,
           "runs": [{"init": i, "alpha": a, "T": T, "seeds": rs} for (i, a, T), rs in runs.items()]}
showed = [
    f"With {len(labelled)} gold labels and {len(train.labels)} examples the teacher labels, the distilled "
    f"student is more accurate than the hard-label one ({mean('acc', KD):.3f} vs {mean('acc', HARD):.3f}, "
    f"worst seed {d_kd['worst']:+.3f}, std {d_kd['std']:.3f}) and far closer to the teacher (KL "
    f"{mean('kl', KD):.3f} vs {mean('kl', HARD):.3f}).",
    f"Copying teacher layers is the biggest win: dev accuracy {mean('acc', KD):.3f} vs "
    f"{mean('acc', RANDOM):.3f} from random init after {n_steps} steps.",
    f"Temperature (alpha 0.5): KL to the teacher {mean('kl', lo_T):.3f} at T={T_PAIR[0]:g} vs "
    f"{mean('kl', hi_T):.3f} at T={T_PAIR[1]:g} on every seed: at low T the T^2-scaled soft term pulls "
    f"less (lesson 2) and the {len(labelled)} gold labels take over; from T=2 on it levels off.",
]
done(args, results, showed)
