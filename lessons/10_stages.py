"""Lesson 10: what each stage of TinyBERT, data augmentation and MiniLM's relations add.

Lesson 7 distilled the teacher's logits, lesson 8 added its inside (hidden states, attention
scores). The methods that made small students strong in the literature stack more on top:

- TinyBERT (Jiao et al. 2020) distils in two stages, in this order: first the intermediate
  layers only (embedding output, hidden states through the uniform map, attention scores; no
  logit loss), then the prediction layer (the logit loss alone), starting from stage 1's student.
- data augmentation: TinyBERT replaces words of every training sentence by near neighbours
  (minibert.augment: candidates from the teacher's own word-embedding table here) and lets the
  TEACHER label each new sentence: the student sees many more inputs with soft targets, though
  no new gold label.
- general distillation (minibert.general_distill's objective): before the task, the student
  learns the teacher's inside on plain unlabelled text; that student is the task's start.
- MiniLM (Wang et al. 2020): the KL between the last layers' attention distributions and value
  relations (softmax(v v^T / sqrt(hs))), per head, padding masked: no layer map, no projection.

One student (2 layers, the teacher's width; --tiny: random init, nothing copied, the start that
general distillation replaces; class size: the teacher's blocks copied, because a random start
learns nothing in two minutes of CPU), the same labelled examples, the same prediction-layer steps
for every student; each stage ADDS its own steps (printed), so the table says what a stage adds
and what it costs. The hard-label control sees the labelled examples only (augmented sentences
have no gold label). Several seeds where the differences are small; the figure draws each seed.

Derive it yourself first (exercises relation_kl and value_relation_backward): section 1 checks
the library's relation loss and value-relation backward against float64 finite differences.

Run: python lessons/10_stages.py [--tiny]
"""

# %%
from _common import (Task, done, teacher_and_splits, parse_args, savefig, section, spread,
                     teacher_comparison)

import dataclasses
import time

import numpy as np

from minibert.augment import AugmentSettings, augment_sentences
from minibert.batches import train_batches
from minibert.evaluate import predict_logits
from minibert.exercise_checks import FD_TOL
from minibert.general_distill import load_student_init
from minibert.general_objective import GeneralSettings, general_student, make_general_step
from minibert.gradcheck import numerical_vjp, rel_error
from minibert.objective import DistillSettings, make_distill_step
from minibert.optim import adamw_init
from minibert.recipes import stage_settings
from minibert.relation_losses import relation_kl, value_relation_backward, value_relation_forward
from minibert.student import (default_init_layers, init_student, student_config, student_init_rng,
                              uniform_layer_map)
from minibert.teacher_cache import TeacherCache
from minibert.train import train_step
from minibert.transfer_set import concat_splits, teacher_logits, transfer_split
from minibert.weights import save_model

args = parse_args(10, __doc__)
task = Task(args.tiny)

# %%
section("1. MiniLM's relations, and their gradients (float64 finite differences)")
rng = np.random.default_rng(0)
mask = np.array([[1, 1, 1, 1], [1, 1, 1, 0]])                 # the second example has 1 pad
bias = (1.0 - mask)[:, None, None, :] * -1e9                  # (B,1,1,T) as in cache.scores
s_sc, t_sc = rng.standard_normal((2, 2, 4, 4)) + bias, rng.standard_normal((2, 2, 4, 4)) + bias
kl, ds = relation_kl(s_sc, t_sc, mask)
fd_kl = numerical_vjp(lambda z: np.array([relation_kl(z, t_sc, mask)[0]]), s_sc, np.ones(1))
v = rng.standard_normal((2, 2, 4, 3))                          # (B,nh,T,hs)
r, vcache = value_relation_forward(v)
dr = rng.standard_normal(r.shape)                              # not symmetric
dv = value_relation_backward(dr, vcache)
fd_dv = numerical_vjp(lambda x: value_relation_forward(x)[0], v, dr)
errs = {"relation_kl dstudent": rel_error(ds, fd_kl), "value_relation dv": rel_error(dv, fd_dv)}
print(f"relation_kl with padding: loss {float(kl):.4f}; " +
      ", ".join(f"{k} rel error {e:.1e}" for k, e in errs.items()))
print(f"  gradient at the padded query row and key column: "
      f"{max(np.abs(ds[1, :, 3]).max(), np.abs(ds[1, :, :, 3]).max()):.1e} (exactly 0)")
print(f"  v appears twice in v v^T: dv without the transpose term is off by "
      f"{rel_error(dr @ v * vcache.scale, dv):.1e}")

# %%
section("2. The teacher, the labelled examples and the two transfer sets")
tparams, tconfig, tok, train, dev = teacher_and_splits(task)   # labels in the teacher's order
t_dev = predict_logits(tparams, tconfig, dev)
teacher_acc = float((t_dev.argmax(1) == dev.labels).mean())
if args.tiny:
    SIZE = dict(n_labelled=48, steps=48, inter_steps=48, general_steps=120, per_example=8,
                seeds=[0, 1, 2], lr=5e-3, batch=16, init="random")
else:
    SIZE = dict(n_labelled=96, steps=12, inter_steps=12, general_steps=10, per_example=3,
                seeds=[0, 1], lr=5e-4, batch=16, init="teacher layers")     # 67 s on 2 idle cores
task.n_labelled = SIZE["n_labelled"]
labelled = task.labelled_subset(train)
L_s = 2
g = tuple(uniform_layer_map(L_s, tconfig.num_layers))
config = student_config(tconfig, L_s)
init_layers = None if SIZE["init"] == "random" else default_init_layers(L_s, tconfig.num_layers)
print(f"teacher: {tconfig.num_layers} layers, H={tconfig.hidden_size}, dev accuracy "
      f"{teacher_acc:.3f}; student: {L_s} layers, H={config.hidden_size}, {config.num_heads} heads; "
      f"layer map g = {list(g)}")
t0 = time.perf_counter()
aug = augment_sentences(tparams, tconfig, tok, labelled.ids, labelled.mask, labelled.token_type_ids,
                        AugmentSettings(per_example=SIZE["per_example"], p=0.4, candidates=8, seed=0))
aug_logits = teacher_logits(tparams, tconfig, aug.ids, aug.lengths, aug.token_type_ids)
augmented = concat_splits(labelled, transfer_split(aug, task.max_length))
aug_secs = time.perf_counter() - t0
n_lab, n_aug = len(labelled.labels), len(aug.lengths)
print(f"labelled set: {n_lab} sentences with gold labels; augmented transfer set: + {n_aug} "
      f"teacher-labelled variants ({n_aug / n_lab:.1f} per sentence, p=0.4, embedding "
      f"neighbours), {aug_secs:.1f} s")
for i in range(2):
    j = int(np.flatnonzero(aug.source == i)[0]) if (aug.source == i).any() else None
    if j is not None:
        print(f"  {tok.decode(labelled.ids[i, :labelled.lengths[i]])!r}\n  -> "
              f"{tok.decode(aug.ids[j, :aug.lengths[j]])!r}")

# %%
section("3. The training loop: the same optimiser, schedule and batch size for every stage")


def batches(split, n, seed):
    """The first n training batches of epochs over `split` (reshuffled each epoch, by seed)."""
    out, epoch = [], 0
    while len(out) < n:
        out += list(train_batches(split, SIZE["batch"], np.random.default_rng([seed, epoch])))
        epoch += 1
    return out[:n]


def train_steps(params, step_fn, batch_list, seed):
    """AdamW with warm-up and linear decay over len(batch_list) steps (lesson 6's step).
    Trains params in place; returns the per-step parts."""
    state, dropout = adamw_init(params), np.random.default_rng([seed, 1])
    n, parts = len(batch_list), []
    for b in batch_list:
        res = train_step(params, state, step_fn, b, dropout, peak_lr=SIZE["lr"], total_steps=n,
                         warmup_steps=max(1, n // 10), clip=1.0, weight_decay=0.01)
        parts.append(res.parts)
    return parts


STAGE_CACHES = {}      # (transfer set, stage settings) -> TeacherCache: the teacher runs once per set


def stage_cache(data, s):
    """The teacher's outputs that stage settings `s` need on transfer set `data` (its logits
    reused from the set's logit cache), computed on first use."""
    split, cache = splits[data]
    if not (s.needs_hidden or s.needs_scores or s.needs_relation):
        return cache
    if (data, s) not in STAGE_CACHES:
        STAGE_CACHES[data, s] = TeacherCache(tparams, tconfig, split, s, logits=cache.logits)
    return STAGE_CACHES[data, s]


def task_distill(params, data, settings, recipe, seed):
    """Train params on transfer set `data` with a recipe. `kd`: the settings for SIZE["steps"]
    steps. `tinybert`: the intermediate stage first (SIZE["inter_steps"] steps, no logit
    loss), then the prediction stage (SIZE["steps"])."""
    for name, s in stage_settings(recipe, settings):
        n = SIZE["inter_steps"] if name == "intermediate" else SIZE["steps"]
        step = make_distill_step(config, stage_cache(data, s), s)
        train_steps(params, step, batches(splits[data][0], n, seed), seed)
    return params


kd = DistillSettings(0.5, 2.0, layer_map=g)
hard = DistillSettings(1.0, 2.0, layer_map=g)
cache_lab = TeacherCache(tparams, tconfig, labelled, kd)
cache_aug = TeacherCache(tparams, tconfig, augmented, kd,
                         logits=np.concatenate([cache_lab.logits, aug_logits]))
agree_aug = float((cache_aug.logits[n_lab:].argmax(1) == cache_aug.logits[aug.source].argmax(1)).mean())
splits = {"labelled": (labelled, cache_lab), "augmented": (augmented, cache_aug)}
print(f"teacher logits cached once: {n_lab} labelled + {n_aug} augmented; on {agree_aug:.0%} of "
      f"the variants the teacher keeps the label of the sentence they came from")

# general distillation: TinyBERT's embedding + hidden + attention losses on the training split's
# text (its labels unused), from the same start as every student; the task starts from its result
gsettings = GeneralSettings(1.0, 1.0, 1.0, layer_map=g)
n_general = SIZE["general_steps"]          # --tiny: 2 epochs of the 960 sentences
general_dir = args.out / "lesson10_general"
gconfig = dataclasses.replace(config, num_labels=0, labels=None, pooler=False, mlm_head=False)


def general_start(seed):
    """A general-distilled student (the others' start, then n_general steps on the unlabelled
    text), saved and read back as `minibert distill --student-init DIR` does (head: the teacher's)."""
    params = general_student(tparams, tconfig, gconfig, init_layers, gsettings, student_init_rng(seed))
    step = make_general_step(tparams, tconfig, gconfig, gsettings, None, None)
    parts = train_steps(params, step, batches(train, n_general, seed), seed)
    save_model(general_dir, {k: v for k, v in params.items() if not k.startswith("distill.")},
               gconfig)
    return load_student_init(general_dir, task.teacher_dir, tparams, tconfig, config,
                             student_init_rng(seed)), parts


# %%
section("4. The students: the same labelled examples, the same prediction-layer steps")
STUDENTS = [  # name, start, transfer set, settings, recipe
    ("hard labels only (control)", "init", "labelled", hard, "kd"),
    ("logit KD", "init", "labelled", kd, "kd"),
    ("+ intermediate stage (TinyBERT order)", "init", "labelled", kd, "tinybert"),
    ("+ general distillation as the start", "general", "labelled", kd, "tinybert"),
    ("+ data augmentation", "general", "augmented", kd, "tinybert"),
    ("+ MiniLM relation term", "general", "augmented", kd._replace(relation_weight=1.0), "tinybert"),
]
if args.tiny:   # the twist of the tiny task (a random start); at class size the start is the teacher's
    STUDENTS.append(("augmentation without general distillation", "init", "augmented", kd, "tinybert"))
print(f"student start: {SIZE['init']} ({'nothing copied' if init_layers is None else f'teacher blocks {init_layers}'}); "
      f"{SIZE['steps']} prediction steps each, + {SIZE['inter_steps']} for the intermediate stage, "
      f"+ {n_general} of general distillation; batch {SIZE['batch']}, peak lr {SIZE['lr']:g}")
runs, starts = {}, {}
for name, start, data, settings, recipe in STUDENTS:
    t0 = time.perf_counter()
    for seed in SIZE["seeds"]:
        if start == "general":
            if seed not in starts:
                starts[seed] = general_start(seed)
            params = {k: v.copy() for k, v in starts[seed][0].items()}
        else:
            params = init_student(tparams, tconfig, config, init_layers, student_init_rng(seed))
        task_distill(params, data, settings, recipe, seed)
        runs.setdefault(name, []).append(teacher_comparison(params, config, dev, t_dev))
    steps = (SIZE["steps"] + (SIZE["inter_steps"] if recipe == "tinybert" else 0)
             + (n_general if start == "general" else 0))
    rs = runs[name]
    for r in rs:
        r["steps"] = steps
    print(f"{name:42s} {steps:4d} steps  dev acc {spread([r['acc'] for r in rs])}  agrees "
          f"{spread([r['agree'] for r in rs])}  KL {spread([r['kl'] for r in rs])}  "
          f"[{len(rs)} seed{'s' * (len(rs) > 1)}, {time.perf_counter() - t0:.1f} s]")
print("(each cell: mean (min-max) over seeds on dev; KL(teacher || student) in nats)")
names = [st[0] for st in STUDENTS]


def vals(name, key):
    return [r[key] for r in runs[name]]


def separated(lower, higher, key="kl"):
    """Every seed of `lower` has a smaller value than every seed of `higher`."""
    return max(vals(lower, key)) < min(vals(higher, key))


def paired(lower, higher, key="kl"):
    """Seed by seed (the same start and batches), `lower` has the smaller value."""
    return all(a < b for a, b in zip(vals(lower, key), vals(higher, key)))


ladder = {}
for k in range(1, 5):
    a, b = names[k], names[k + 1]
    sep, pair = separated(b, a), paired(b, a)
    ladder[b] = {"vs": a, "kl": np.mean(vals(b, "kl")), "kl_before": np.mean(vals(a, "kl")),
                 "separated": sep, "paired": pair}
    how = ("every seed below every seed before" if sep else
           "lower seed by seed, but the ranges overlap" if pair else "NOT lower: within the seed spread")
    print(f"  {b:38s} KL {ladder[b]['kl']:.3f} vs {ladder[b]['kl_before']:.3f} before it ({how})")

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(14, 5.2))
short = ["hard only", "logit KD", "+ intermediate", "+ general", "+ augmentation", "+ MiniLM",
         "augm., no general"][:len(names)]
for ax, key, label in ((axes[0], "acc", "dev accuracy"), (axes[1], "kl", "KL(teacher || student) on dev, nats (log; wide tick: mean)")):
    for k, name in enumerate(names):
        v = vals(name, key)
        colour = "0.6" if k in (0, 6) else f"C{k}"
        if key == "kl":   # a bar on a log axis has no zero to start from: the mean as a wide tick
            ax.plot(k, np.mean(v), "_", ms=40, mew=4, color=colour, alpha=0.8)
        else:
            ax.bar(k, np.mean(v), color=colour, alpha=0.55)
        ax.plot([k] * len(v), v, "ko", ms=4, label="one seed" if k == 0 else None)
    ax.set_xticks(range(len(names)), [f"{s}\n{runs[n][0]['steps']} steps" for s, n in zip(short, names)],
                  fontsize=8)
    ax.set_ylabel(label)
axes[0].axhline(teacher_acc, color="k", ls="--", lw=1, label=f"teacher {teacher_acc:.3f}")
lo = min(min(vals(n, "acc")) for n in names)
axes[0].set_ylim(max(0.0, lo - 0.05), min(1.0, max(teacher_acc, max(max(vals(n, "acc")) for n in names)) + 0.03))
axes[0].legend(fontsize=8, loc="upper left")
axes[1].set_yscale("log")
kls = [np.mean(vals(n, "kl")) for n in names]
axes[0].set_title(f"Each stage on top of the last (bars: mean of {len(SIZE['seeds'])} seeds, dots: seeds)\n"
                  f"logit KD {np.mean(vals(names[1], 'acc')):.3f} -> all stages {np.mean(vals(names[5], 'acc')):.3f}"
                  f" (hard-only {np.mean(vals(names[0], 'acc')):.3f})", fontsize=10)
axes[1].set_title(f"Distance to the teacher: KL {kls[1]:.3f} (logit KD) -> {kls[5]:.3f} (all stages)\n"
                  f"transfer set: {n_lab} labelled + {n_aug} teacher-labelled variants "
                  f"({n_aug / n_lab:.0f}x)", fontsize=10)
savefig(fig, "lesson10_stages.png")

# %%
# the claims, as code: what holds at this size (and only that)
C = tconfig.num_labels
assert max(errs.values()) < FD_TOL, errs                    # the exercise checks' tolerance
assert np.abs(ds[1, :, 3]).max() == 0 and np.abs(ds[1, :, :, 3]).max() == 0
assert n_aug >= 2 * n_lab and aug_logits.shape == (n_aug, C)                  # N times larger ...
assert np.allclose(aug_logits[:8], teacher_logits(tparams, tconfig, aug.ids[:8], aug.lengths[:8],
                                                  aug.token_type_ids[:8]), atol=1e-5)  # ... teacher-labelled
assert set(aug.source.tolist()) <= set(range(n_lab))                          # variants of the labelled set
assert np.all(augmented.labels[n_lab:] == -1)                                 # no gold label for a variant
if args.tiny:
    # from a random start: the inside (intermediate stage) and then a general-distilled start
    # each bring the student closer to the teacher on every seed; augmentation does too, on
    # top of general distillation; without it (a random start, this budget) augmentation hurts
    assert ladder[names[2]]["separated"] and ladder[names[3]]["separated"], ladder
    assert ladder[names[4]]["separated"], ladder
    assert ladder[names[5]]["paired"], ladder                 # MiniLM: seed by seed only
    assert min(vals(names[3], "acc")) > max(vals(names[1], "acc"))            # accuracy too
    assert separated(names[4], names[6])                      # augmentation needs a trained start
    assert np.mean(vals(names[5], "acc")) >= teacher_acc - 0.02
# class size: only the structure above is asserted; the guide gives the measured numbers

results = {"teacher_acc": teacher_acc, "fd_rel_errors": errs, "n_labelled": n_lab,
           "n_augmented": n_aug, "augment_seconds": aug_secs, "variants_keep_label": agree_aug,
           "size": SIZE, "general_steps": n_general, "seeds": SIZE["seeds"],
           "runs": runs, "ladder": ladder}
kd_acc, all_acc = np.mean(vals(names[1], "acc")), np.mean(vals(names[5], "acc"))


def said(name):
    d = ladder[name]
    return ("on every seed" if d["separated"] else "seed by seed, ranges overlap" if d["paired"]
            else "within the seed spread")


showed = [
    f"Stacked on logit KD (dev accuracy {kd_acc:.3f}, KL to the teacher {kls[1]:.3f}; hard labels "
    f"only {np.mean(vals(names[0], 'acc')):.3f}), the stages bring the student to {all_acc:.3f} "
    f"(teacher {teacher_acc:.3f}), KL {kls[5]:.3f}: intermediate stage KL {kls[2]:.3f} "
    f"({said(names[2])}), general-distilled start {kls[3]:.3f} ({said(names[3])}), "
    f"augmentation {kls[4]:.3f} ({said(names[4])}), MiniLM relations {kls[5]:.3f} ({said(names[5])}).",
    (f"Augmentation gave the student {n_aug / n_lab:.0f}x more teacher-labelled sentences, but from a "
     f"random start and this budget it {'hurt' if np.mean(vals(names[6], 'kl')) > kls[2] else 'helped'} "
     f"(KL {np.mean(vals(names[6], 'kl')):.3f} vs {kls[2]:.3f}): more data needs a student that has "
     f"already learned the basics, or more steps." if args.tiny else
     f"Augmentation gave the student {n_aug / n_lab:.0f}x more teacher-labelled sentences (the teacher "
     f"keeps the source sentence's label on {agree_aug:.0%} of them)."),
    ("" if args.tiny else "At class size and this budget, compare the ranges before reading a "
     "difference into the table: only the structure (sizes, teacher labels) is asserted."),
]
done(args, results, [line for line in showed if line])
