"""Lesson 9: what compression buys.

We distil the fine-tuned teacher into students of 1, 2 and 3 layers (teacher init, KD) and
one narrower 2-layer student (half the width, random init, KD + TinyBERT hidden loss through
a learned projection), with the library's own training entry point (distill.train_student,
what `minibert distill` runs), then measure each model's dev accuracy, parameter count and
latency: interleaved timing rounds (teacher, student 1, student 2, ..., again), a speed-up per
round from the SAME round's timings, and the median over rounds, so a burst of load on a
shared machine hits every model alike and cannot invert a comparison. At --tiny sizes a
forward takes microseconds: the timings are printed but neither drawn nor asserted.

Two things to notice:
- Parameters are not speed. The word-embedding table (30522 x 384 = 11.7M numbers, half the
  teacher) is a lookup: it costs memory, not time. The time is in the encoder layers, so
  dropping 4 of 6 layers removes only ~1/3 of the parameters but most of the compute.
- Width shrinks both: a narrower student has a smaller embedding table AND cheaper layers,
  but its weights cannot be copied from the teacher, so it starts from scratch.

Short classroom runs: read the accuracies as "after a minute of training", not as the best a
student can do (`minibert distill --epochs 3` on the full corpus does better).

Run: python lessons/09_compression.py [--tiny]
"""

# %%
from _common import Task, done, drop_checkpoints, teacher_and_splits, parse_args, savefig, section

import shutil
import time

import numpy as np

from minibert.distill import compare_models, format_table, train_student
from minibert.evaluate import measure_latency
from minibert.objective import DistillSettings
from minibert.student import default_init_layers, student_config, uniform_layer_map
from minibert.teacher_cache import TeacherCache

args = parse_args(9, __doc__)
task = Task(args.tiny)


def breakdown(params):
    """Parameters in the embeddings, the encoder layers and the head (pooler + classifier)."""
    emb = sum(v.size for k, v in params.items() if k.startswith("embeddings."))
    enc = sum(v.size for k, v in params.items() if k.startswith("encoder."))
    return emb, enc, sum(v.size for v in params.values()) - emb - enc


# %%
section("1. The teacher")
tparams, tconfig, tok, train, dev = teacher_and_splits(task)   # labels in the teacher's order
emb, enc, head = breakdown(tparams)
print(f"{tconfig.num_layers} layers, H={tconfig.hidden_size}: {emb + enc + head:,} parameters = "
      f"embeddings {emb:,} ({emb / (emb + enc + head):.0%}) + encoder {enc:,} + head {head:,}")

# %%
section("2. Distilling four students (distill.train_student)")
students = [("1 layer", student_config(tconfig, 1), "teacher"),
            ("2 layers", student_config(tconfig, 2), "teacher"),
            ("3 layers", student_config(tconfig, 3), "teacher"),
            ("2 layers, half width", student_config(tconfig, 2, hidden_size=tconfig.hidden_size // 2,
                                                    heads=tconfig.num_heads), "random")]
models = [("teacher", tparams, tconfig)]
run_root = args.out / "students"
shutil.rmtree(run_root, ignore_errors=True)
caches = {}
t_train_logits = task.teacher_logits(tparams, tconfig, train, "train")
for name, config, init in students:
    L = config.num_layers
    g = tuple(uniform_layer_map(L, tconfig.num_layers))
    narrow = config.hidden_size != tconfig.hidden_size
    settings = DistillSettings(0.5, 2.0, hidden_weight=1.0 if narrow else 0.0, layer_map=g)
    key = g if settings.needs_hidden else "logits"       # logits do not depend on the layer map
    if key not in caches:
        caches[key] = TeacherCache(tparams, tconfig, train, settings, batch_size=task.batch_size,
                                   logits=t_train_logits)        # lesson 6's cached logits
    init_layers = default_init_layers(L, tconfig.num_layers) if init == "teacher" else None
    t0 = time.perf_counter()
    run = train_student(tparams, tconfig, config, init_layers, settings, caches[key], train, dev,
                        run_root / name.replace(" ", "_").replace(",", ""), task.compress)
    print(f"{name:22s} init {init:7s} ({init_layers}), loss {'KD + hidden MSE' if narrow else 'KD'}: "
          f"{len(run.fit.step_losses)} steps, dev accuracy {run.fit.best_metrics['accuracy']:.3f} "
          f"({time.perf_counter() - t0:.1f} s)")
    models.append((name, run.params, config))

drop_checkpoints(run_root)                               # resumable checkpoints: not needed here

# %%
section("3. Accuracy, parameters, latency")
rows = compare_models(models, dev, batch_size=task.batch_size, rounds=1, repeats=1)   # accuracy, params
ROUNDS = 3 if args.tiny else 7
times = np.zeros((ROUNDS, len(models)))                 # ms per example, one batch, round x model
for r in range(ROUNDS):                                  # interleaved: every round times every model
    for k, (_, params, config) in enumerate(models):
        times[r, k] = measure_latency(params, config, dev, task.batch_size, repeats=1)
paired = times[:, :1] / times                            # speed-up vs the teacher, within each round
for k, row in enumerate(rows):
    row["ms_per_example"] = float(np.median(times[:, k]))
    row["speedup"] = float(np.median(paired[:, k]))
    row["speedup_range"] = (float(paired[:, k].min()), float(paired[:, k].max()))
print(f"latency: {ROUNDS} interleaved rounds, median; speed-up = median over rounds of the same "
      f"round's teacher / student time" + (" (tiny sizes: microseconds, noise)" if args.tiny else ""))
print(format_table(rows, title=f"dev ({rows[0]['n']} examples), batch {task.batch_size}, "
                               f"max_length {task.max_length}, float32"))
print(f"\n{'model':22s} {'embeddings':>11s} {'encoder':>11s} {'params vs teacher':>18s} {'speed-up':>9s} {'(range over rounds)':>20s}")
for (name, params, _), row in zip(models, rows):
    e, n, h = breakdown(params)
    lo_, hi_ = row["speedup_range"]
    print(f"{name:22s} {e:11,} {n:11,} {row['params'] / rows[0]['params']:18.0%} {row['speedup']:8.2f}x "
          f"{lo_:9.2f}-{hi_:.2f}x")

# %%
import matplotlib.pyplot as plt

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.6))
for row, c in zip(rows, ["k", "C0", "C1", "C2", "C3"]):
    x = row["params"] / 1e6 if args.tiny else row["ms_per_example"]
    ax1.scatter(x, row["accuracy"], s=30 + row["params"] / max(r["params"] for r in rows) * 400,
                color=c, alpha=0.7, label=f"{row['name']} ("
                + (f"{row['params']:,}" if args.tiny else f"{row['params'] / 1e6:.1f}M")
                + ("" if args.tiny else f", {row['speedup']:.1f}x") + ")")
accs = [r["accuracy"] for r in rows]
ax1.set_ylim(max(0.0, min(accs) - 0.08), min(1.0, max(accs)) + 0.05)
ax1.set_ylabel("dev accuracy")
by = {r["name"]: r for r in rows}
if args.tiny:      # microsecond forwards: a latency axis would draw noise
    ax1.set_xlabel("parameters (millions); latency not drawn at --tiny sizes (noise)")
    ax1.set_title("Accuracy vs parameters (marker area = parameters)", fontsize=10)
else:
    ax1.set_xlabel(f"latency, ms per example (batch of {task.batch_size}, median of {ROUNDS} rounds)")
    ax1.set_title(f"2 layers: {by['2 layers']['params'] / by['teacher']['params']:.0%} of the parameters, "
                  f"{by['2 layers']['speedup']:.1f}x faster, accuracy {by['2 layers']['accuracy']:.2f} vs "
                  f"{by['teacher']['accuracy']:.2f}", fontsize=10)
ax1.legend(fontsize=8, loc="lower right")
names = [r["name"] for r in rows]
parts = np.array([breakdown(p) for _, p, _ in models]) / 1e6
ax2.barh(names, parts[:, 0], label="embeddings")
ax2.barh(names, parts[:, 1], left=parts[:, 0], label="encoder layers")
ax2.barh(names, parts[:, 2], left=parts[:, 0] + parts[:, 1], label="head")
ax2.set_xlabel("parameters (millions)")
ax2.set_title(f"Where the parameters are: embeddings {parts[0, 0] / parts[0].sum():.0%} of the teacher,\n"
              f"kept whole by every same-width student", fontsize=10)
ax2.legend(fontsize=8)
savefig(fig, "lesson09_compression.png")

# %%
assert all(r["params"] < by["teacher"]["params"] for r in rows[1:])
if not args.tiny:     # tiny models run in microseconds: their timings are noise
    assert all(r["speedup"] > 1.0 for r in rows[1:]), rows      # every student is faster
    assert by["1 layer"]["ms_per_example"] < by["3 layers"]["ms_per_example"], rows
    # dropping layers removes far less of the parameters than of the time (the embedding table stays)
    assert by["2 layers"]["params"] / by["teacher"]["params"] > 1 / by["2 layers"]["speedup"]

results = {"rows": rows, "times_ms_round_by_model": times, "rounds": ROUNDS,
           "breakdown_millions": {n: list(b) for n, b in zip(names, parts)}}
r2 = by["2 layers"]
showed = [
    (f"Parameters are not speed: the 2-layer student keeps {r2['params'] / by['teacher']['params']:.0%} of "
     f"the parameters (the embedding table stays) but runs {r2['speedup']:.1f}x faster: layers cost time, "
     f"the table only memory." if not args.tiny else
     f"At toy sizes the embedding table is only {parts[0, 0] / parts[0].sum():.0%} of the teacher, so "
     f"parameters shrink with layers; the class size shows the table dominating (and real timings)."),
    f"Accuracy: teacher {by['teacher']['accuracy']:.3f}, 1/2/3 layers {by['1 layer']['accuracy']:.3f} / "
    f"{r2['accuracy']:.3f} / {by['3 layers']['accuracy']:.3f}, half width (random init) "
    f"{by['2 layers, half width']['accuracy']:.3f}.",
]
done(args, results, showed)
