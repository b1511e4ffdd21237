"""`minibert demo`: the main job, end to end on the default data.

    fetch + convert the teacher (all-MiniLM-L6-v2)  ->  load the default tweets
    ->  fine-tune the teacher  ->  cache its logits on the transfer set (once)
    ->  distil a 2-layer student (alpha*CE + (1-alpha)*T^2*KL)
    ->  train the SAME student (same init, same steps) on hard labels only (alpha=1)
    ->  one table on the test split: accuracy, macro-F1, params, ms/example, speed-up
    ->  results.json / results.md, training_curves.png, accuracy_vs_speed.png under --out

Sizes. Measured on an idle 2-core CPU (2026-11-26, this demo's own records): the 6-layer
teacher fine-tunes at ~55 examples/s in NumPy (forward + backward, batch 32, T ~ 35 tokens),
the 2-layer student trains at ~150 examples/s, and the whole demo takes ~5 minutes. So it
uses stratified subsets of the training split (sizes printed at the start):
- the teacher is fine-tuned on `teacher_train` labelled examples;
- the KD student learns on a transfer set of `student_train` examples: the teacher's own
  plus as many again whose gold labels are NOT used (label -1). The teacher labels them with
  one cheap forward pass; that is the practical value of a teacher (DistilBERT and TinyBERT
  distil on large transfer sets for the same reason);
- the hard-label control starts from the same init with the same seed and takes the same
  number of steps, on the examples that have labels (so more passes over fewer examples).
`--quick` shrinks everything for a classroom run. Subsets use a fixed data seed (0), so
`--seed N` varies only the training randomness (head init, shuffling, dropout).

`--resume` in the same --out reuses the fine-tuned teacher and its cached logits when they
were made with the same settings (`--sweep`, temperature x alpha, reuses them too);
`--overwrite` starts again. The demo never deletes a file it did not write: its sub-folders
(teacher/, student_*/, sweep/) are cleared of minibert's files only (minibert.outdir).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minibert.errors import MinibertError
from minibert.files import atomic_write_json, atomic_write_text
from minibert.demo_cache import (STUDENT_MARKER, augmented_transfer, cached_teacher, read_marker,
                                 reused_student)
from minibert.outdir import claim_dir, prepare_subdir


class DemoSizes(NamedTuple):
    teacher_train: int        # examples the teacher is fine-tuned on
    student_train: int        # transfer set (superset of the teacher's) for both students
    dev: int                  # dev examples for picking each run's best epoch
    test: int | None          # test examples for the final table (None = the whole split)
    max_length: int
    teacher_epochs: int
    student_epochs: int
    batch_size: int
    teacher_lr: float
    student_lr: float
    augment_per_example: int = 3   # tinybert-aug: new sentences per transfer-set example
    augment_epochs: int = 1        # tinybert-aug: stage-2 epochs over transfer set + augmented


# FULL.augment_epochs = 2: on seed 0, a second stage-2 epoch over the 19,801 sentences raised the
# TinyBERT+aug student's accuracy on the WHOLE dev split (3,565 tweets) from 0.7515 to 0.7677,
# for ~2 more minutes of training (README, "Recipes"); one epoch left it short of the target.
FULL = DemoSizes(teacher_train=2500, student_train=5000, dev=400, test=None, max_length=64,
                 teacher_epochs=2, student_epochs=2, batch_size=32, teacher_lr=1e-4,
                 student_lr=2e-4, augment_epochs=2)
QUICK = DemoSizes(teacher_train=800, student_train=1600, dev=200, test=600, max_length=48,
                  teacher_epochs=2, student_epochs=2, batch_size=32, teacher_lr=1e-4,
                  student_lr=2e-4, augment_per_example=1)
STUDENT_LAYERS = 2
ALPHA, TEMPERATURE = 0.5, 2.0              # the KD student's loss
RECIPES = ("kd", "tinybert", "tinybert-aug")    # student recipes the demo runs (recipes.RECIPES)
QUICK_RECIPES = ("kd",)                    # --quick: KD + the control only (~100 s idle)
RECIPE_ROWS = {"kd": "student KD", "tinybert": "student TinyBERT",
               "tinybert-aug": "student TinyBERT+aug"}
INTERMEDIATE_EPOCHS = 1                    # tinybert: stage 1 epochs (then student_epochs of KD)
SWEEP_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)
SWEEP_ALPHAS = (0.1, 0.5, 0.9)
DATA_SEED = 0                              # fixed subsets; --seed varies training only


# ----------------------------------------------------------------------------- data

class DemoData(NamedTuple):
    labels: list
    teacher_train: object     # batches.EncodedSplit
    student_train: object
    dev: object
    test: object
    info: dict


def subsample(examples: list, n: int | None, rng: np.random.Generator) -> list:
    """A stratified subset of n examples (all when n is None or too big), order kept."""
    from minibert.data import stratified_subsample
    if n is None or n >= len(examples):
        return list(examples)
    keep = stratified_subsample([e.label for e in examples], n, rng)
    return [examples[i] for i in keep]


def prepare_data(dataset, tokenizer, sizes: DemoSizes) -> DemoData:
    """Stratified subsets (fixed DATA_SEED) of a data.Dataset, tokenised once.

    The teacher is fine-tuned on teacher_train labelled examples. The students' transfer set
    holds those plus (student_train - teacher_train) further training examples WITHOUT their
    gold labels (label -1): only the teacher labels them, which is what a teacher is for.
    """
    from minibert.batches import encode_examples
    student = subsample(dataset.train, sizes.student_train, np.random.default_rng([DATA_SEED, 0]))
    keep = set(range(len(student)))
    if sizes.teacher_train < len(student):
        from minibert.data import stratified_subsample
        keep = set(stratified_subsample([e.label for e in student], sizes.teacher_train,
                                        np.random.default_rng([DATA_SEED, 1])).tolist())
    teacher = [e for i, e in enumerate(student) if i in keep]
    dev = subsample(dataset.dev, sizes.dev, np.random.default_rng([DATA_SEED, 2]))
    test = subsample(dataset.test, sizes.test, np.random.default_rng([DATA_SEED, 3]))
    enc = {name: encode_examples(tokenizer, ex, sizes.max_length)
           for name, ex in (("teacher", teacher), ("student", student), ("dev", dev),
                            ("test", test))}
    gold = np.array([i in keep for i in range(len(student))])                   # (N,)
    enc["student"] = enc["student"]._replace(labels=np.where(gold, enc["student"].labels, -1))
    info = {"dataset": dataset.name, "labels": list(dataset.labels),
            "available": {"train": len(dataset.train), "dev": len(dataset.dev),
                          "test": len(dataset.test)},
            "used": {"teacher_train": len(teacher), "student_train": len(student),
                     "transfer_without_labels": int((~gold).sum()),
                     "dev": len(dev), "test": len(test)},
            "max_length": sizes.max_length, "data_seed": DATA_SEED}
    return DemoData(list(dataset.labels), enc["teacher"], enc["student"], enc["dev"],
                    enc["test"], info)


# ----------------------------------------------------------------------------- the teacher

def finetune_teacher(model_dir, data: DemoData, sizes: DemoSizes, seed: int, out_dir: Path,
                     progress: bool = True):
    """Fine-tune the pre-trained teacher (a fresh head) with train.fit; out_dir receives the
    best-dev model and head.json. Reused when out_dir already holds a teacher fine-tuned with
    the same settings (demo_teacher.json). Returns (params, config, info dict)."""
    from minibert.checkpoints import CHECKPOINT_NAME
    from minibert.train import TrainConfig, finetune_classifier
    from minibert.weights import load_model
    teacher_sizes = {k: v for k, v in sizes._asdict().items()
                     if k not in ("student_epochs", "student_lr", "test", "augment_per_example",
                                  "augment_epochs")}
    key = {"model": str(model_dir), "sizes": teacher_sizes, "seed": seed, "data": data.info}
    marker = out_dir / "demo_teacher.json"
    if marker.is_file() and (out_dir / "head.json").is_file():
        saved = read_marker(marker)
        if saved.get("key") == json.loads(json.dumps(key, default=str)):
            params, config = load_model(out_dir)
            print(f"reusing the fine-tuned teacher in {out_dir}")
            return params, config, saved["info"]
    prepare_subdir(out_dir, "demo-teacher", "demo: the teacher's settings changed")
    params, config = load_model(model_dir)
    tcfg = TrainConfig(epochs=sizes.teacher_epochs, lr=sizes.teacher_lr,
                       batch_size=sizes.batch_size, max_length=sizes.max_length, seed=seed,
                       progress=progress)
    t0 = time.perf_counter()
    res, _ = finetune_classifier(params, config, data.labels, data.teacher_train, data.dev, tcfg,
                                 out_dir, tokenizer_dir=model_dir, data_spec="default (demo subset)",
                                 run_config={"command": "demo-teacher", **key})
    info = {"time_s": time.perf_counter() - t0, "best_epoch": res.best_epoch,
            "dev": res.best_metrics, "history": res.history, "step_losses": res.step_losses,
            "examples_per_s": float(np.mean([h["examples_per_s"] for h in res.history]))}
    (out_dir / CHECKPOINT_NAME).unlink(missing_ok=True)            # 3x the model: not needed
    atomic_write_json(marker, {"key": key, "info": info})
    params, config = load_model(out_dir)                           # the best epoch
    return params, config, info


# ----------------------------------------------------------------------------- the students

def student_run(name: str, teacher_params, teacher_config, teacher, data: DemoData,
                sizes: DemoSizes, seed: int, alpha: float, temperature: float, out_dir: Path,
                progress: bool = True, train_split=None, epochs: int | None = None,
                recipe: str = "kd", intermediate_split=None, intermediate_params=None,
                reuse_key: dict | None = None) -> dict:
    """Train one 2-layer student (uniform init from the teacher; the init depends on the
    seed only, so every student of a demo starts identical) with a recipe (recipes.RECIPES;
    tinybert: INTERMEDIATE_EPOCHS of intermediate layers first; tinybert-aug: stage 1 on
    intermediate_split, or intermediate_params from a finished stage 1) and return a summary
    dict with its params, config, fit history and the training time of each stage.
    reuse_key: what the student depends on; when out_dir holds a student trained under the
    same key (demo --resume), it is loaded instead of trained again."""
    split = train_split if train_split is not None else data.student_train
    key = None if reuse_key is None else json.loads(json.dumps(
        {**reuse_key, "name": name, "recipe": recipe, "alpha": alpha, "T": temperature,
         "seed": seed, "epochs": epochs or sizes.student_epochs, "lr": sizes.student_lr,
         "batch_size": sizes.batch_size, "n": len(split.labels),
         "intermediate_epochs": INTERMEDIATE_EPOCHS}, default=str))
    if key is not None and (reused := reused_student(out_dir, key)) is not None:
        return reused
    from minibert.distill import train_recipe
    from minibert.objective import DistillSettings
    from minibert.student import default_init_layers, student_config, uniform_layer_map
    from minibert.checkpoints import CHECKPOINT_NAME
    from minibert.train import TrainConfig
    config = student_config(teacher_config, STUDENT_LAYERS)
    init_layers = default_init_layers(STUDENT_LAYERS, teacher_config.num_layers)
    settings = DistillSettings(alpha, temperature,
                               layer_map=tuple(uniform_layer_map(STUDENT_LAYERS,
                                                                 teacher_config.num_layers)))
    tcfg = TrainConfig(epochs=epochs or sizes.student_epochs, lr=sizes.student_lr,
                       batch_size=sizes.batch_size, max_length=sizes.max_length, seed=seed,
                       progress=progress)
    prepare_subdir(out_dir, f"demo-{name}", "demo")      # the demo's own previous student
    t0 = time.perf_counter()
    run = train_recipe(recipe, teacher_params, teacher_config, config, init_layers, settings,
                       teacher, split, data.dev, out_dir, tcfg, intermediate_epochs=INTERMEDIATE_EPOCHS,
                       intermediate_split=intermediate_split,
                       intermediate_params=intermediate_params, run_config={"command": f"demo-{name}", "alpha": alpha,
                                   "temperature": temperature, "init_layers": init_layers,
                                   "recipe": recipe},
                       data_spec="default (demo subset)")
    for ckpt in out_dir.glob(f"**/{CHECKPOINT_NAME}"):
        ckpt.unlink()
    stages = {f"stage{i + 1}_train_s": float(sum(h["time_s"] for h in f.history))
              for i, f in enumerate(run.stage_fits) if f is not None}
    summary = {"name": name, "alpha": alpha, "temperature": temperature,
               "init_layers": init_layers, "recipe": recipe, "stage_times_s": stages,
               "time_s": time.perf_counter() - t0, "best_epoch": run.fit.best_epoch,
               "dev": run.fit.best_metrics, "history": run.fit.history,
               "step_losses": run.fit.step_losses}
    if key is not None:
        atomic_write_json(out_dir / STUDENT_MARKER, {"key": key, "summary": summary})
    return {**summary, "params": run.params, "config": config}


def train_students(tparams, tconfig, tokenizer, teacher, data: DemoData, sizes: DemoSizes,
                   seed: int, recipes, out: Path, timings: dict, teacher_key: dict,
                   progress: bool = True) -> dict:
    """The demo's students: KD, the hard-label control, then every other recipe (tinybert-aug:
    the transfer set plus its augmentation, stage 1 shared with the TinyBERT row when that
    ran). The two-stage recipes train first (the rows an interrupted run most needs; finished
    students are reused by --resume). Records each one's wall time (and stage times) in
    `timings`. Returns {row name: student_run summary}, in table order."""
    from minibert.recipes import INTERMEDIATE_DIR, TWO_STAGE
    from minibert.teacher_cache import TeacherCache
    from minibert.transfer_set import concat_splits
    from minibert.weights import load_model
    plan = [("student KD", "kd", ALPHA, data.student_train, sizes.student_epochs, teacher),
            ("student hard-only", "kd", 1.0, data.teacher_train, hard_only_epochs(data, sizes),
             teacher)]
    plan += [(RECIPE_ROWS[r], r, ALPHA, data.student_train, sizes.student_epochs, teacher)
             for r in recipes if r not in ("kd", "tinybert-aug")]
    if "tinybert-aug" in recipes:
        t0 = time.perf_counter()
        aug, aug_logits, _ = augmented_transfer(tparams, tconfig, tokenizer, data.student_train,
                                                sizes.augment_per_example, DATA_SEED, out,
                                                teacher_key, progress)
        timings["augmentation_s"] = time.perf_counter() - t0
        split = concat_splits(data.student_train, aug)                # transfer set rows first
        cache = TeacherCache(tparams, tconfig, split, teacher.settings,
                             logits=np.concatenate([teacher.logits, aug_logits]))
        plan.append((RECIPE_ROWS["tinybert-aug"], "tinybert-aug", ALPHA, split,
                     sizes.augment_epochs, cache))
    runs = {}
    for name, recipe, alpha, split, epochs, cache in sorted(plan, key=lambda p: p[1] == "kd"):
        first = (f"{INTERMEDIATE_EPOCHS} epoch(s) of intermediate layers, then "
                 if recipe in TWO_STAGE else "")
        print(f"--- {name}: {first}alpha {alpha:g}, T {TEMPERATURE:g}, init from teacher "
              f"layers (uniform), seed {seed}, {len(split.labels)} examples x {epochs} "
              f"epochs", flush=True)
        stage1, key = None, {**teacher_key, "data": data.info}
        if recipe == "tinybert-aug":
            key["augment_per_example"] = sizes.augment_per_example
            shared = out / RECIPE_ROWS["tinybert"].replace(" ", "_") / INTERMEDIATE_DIR
            if RECIPE_ROWS["tinybert"] in runs and (shared / "model.safetensors").is_file():
                stage1 = load_model(shared)[0]
                print(f"stage 1 (intermediate layers) shared with the TinyBERT row: {shared}")
        t0 = time.perf_counter()
        runs[name] = student_run(name, tparams, tconfig, cache, data, sizes, seed, alpha,
                                 TEMPERATURE, out / name.replace(" ", "_"), progress,
                                 train_split=split, epochs=epochs, recipe=recipe,
                                 intermediate_split=data.student_train if stage1 is None
                                 and recipe == "tinybert-aug" else None,
                                 intermediate_params=stage1, reuse_key=key)
        run = runs[name]
        timings[name.replace(" ", "_") + "_s"] = (run["time_s"] if run.get("reused")
                                                  else time.perf_counter() - t0)
        for stage, t in run["stage_times_s"].items():
            timings[f"{name.replace(' ', '_')}_{stage}"] = t
    return {p[0]: runs[p[0]] for p in plan}


def hard_only_epochs(data: DemoData, sizes: DemoSizes) -> int:
    """Epochs for the hard-label control so that it takes as many steps as the KD student:
    it can only use the labelled examples (teacher_train), the KD student the whole transfer
    set, so the control makes proportionally more passes over its smaller set."""
    def steps(n):
        return -(-n // sizes.batch_size)
    ratio = steps(len(data.student_train.labels)) / steps(len(data.teacher_train.labels))
    return max(1, int(round(sizes.student_epochs * ratio)))


# ----------------------------------------------------------------------------- the command

def run_demo(out, quick: bool = False, seed: int = 0, sweep: bool = False, recipes=RECIPES,
             teacher_dir="weights/minilm-l6", dataset=None, sizes: DemoSizes | None = None,
             progress: bool = True, resume: bool = False, overwrite: bool = False) -> dict:
    """The whole demo (see the module docstring). `dataset` / `sizes` / `teacher_dir` let the
    tests run it on a tiny model and dataset. `out` is claimed with minibert.outdir.claim_dir:
    new or empty, or an earlier demo run with resume (reuse its teacher and logits when the
    settings match) or overwrite (its files removed first; other files are kept).
    Returns the results dict (also results.json)."""
    with claim_dir(out, "demo", resume=resume, overwrite=overwrite, inputs=[teacher_dir]) as out:
        return _run_demo(out, quick, seed, sweep, teacher_dir, dataset, sizes, progress, recipes)


def _run_demo(out: Path, quick: bool, seed: int, sweep: bool, teacher_dir, dataset,
              sizes: DemoSizes | None, progress: bool, recipes=RECIPES) -> dict:
    from minibert.data import load_dataset
    from minibert.distill import compare_models, format_table
    from minibert.fetch import fetch_teacher
    from minibert.plots import plot_accuracy_vs_latency, plot_runs
    from minibert.tokenizer import Tokenizer
    t_start = time.perf_counter()
    sizes = sizes or (QUICK if quick else FULL)
    timings = {}

    t0 = time.perf_counter()
    teacher_dir = fetch_teacher(teacher_dir) if dataset is None else Path(teacher_dir)
    dataset = dataset if dataset is not None else load_dataset("default")
    tokenizer = Tokenizer.from_dir(teacher_dir)
    data = prepare_data(dataset, tokenizer, sizes)
    timings["fetch_and_data_s"] = time.perf_counter() - t0
    u = data.info["used"]
    print(f"demo ({'quick' if quick else 'full'}, seed {seed}): {dataset.name}, labels "
          f"{data.labels}; teacher fine-tuned on {u['teacher_train']} examples x "
          f"{sizes.teacher_epochs} epochs; KD student on a transfer set of {u['student_train']} "
          f"examples ({u['transfer_without_labels']} without gold labels) x "
          f"{sizes.student_epochs} epochs; hard-only control on the {u['teacher_train']} "
          f"labelled ones, same steps; dev {u['dev']}, test {u['test']} examples (of "
          f"{data.info['available']['test']}); max_length {sizes.max_length}, batch "
          f"{sizes.batch_size}", flush=True)

    t0 = time.perf_counter()
    tparams, tconfig, tinfo = finetune_teacher(teacher_dir, data, sizes, seed, out / "teacher",
                                               progress=progress)
    timings["teacher_finetune_s"] = time.perf_counter() - t0
    teacher_key = {"teacher": read_marker(out / "teacher" / "demo_teacher.json")["key"],
                   "n": len(data.student_train.labels)}
    teacher, timings["teacher_logits_s"] = cached_teacher(
        tparams, tconfig, data.student_train, STUDENT_LAYERS, out, teacher_key, progress=progress)
    print(teacher.describe())

    runs = {}
    if not sweep:
        runs = train_students(tparams, tconfig, tokenizer, teacher, data, sizes, seed, recipes,
                              out, timings, teacher_key, progress)
    else:
        t0 = time.perf_counter()
        from minibert.demo_sweep import run_sweep
        sweep_rows = run_sweep(student_run, tparams, tconfig, teacher, data, sizes, seed, out,
                               SWEEP_TEMPERATURES, SWEEP_ALPHAS)
        timings["sweep_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_start
        return {"sweep": sweep_rows, "timings_s": timings}

    t0 = time.perf_counter()
    models = [("teacher", tparams, tconfig)] + [(n, r["params"], r["config"])
                                                for n, r in runs.items()]
    rows = compare_models(models, data.test, sizes.batch_size)
    timings["evaluation_s"] = time.perf_counter() - t0
    table = format_table(rows, title=f"{dataset.name} test split ({rows[0]['n']} examples), "
                                     f"seed {seed}")
    kd, hard, t_row = rows[1], rows[2], rows[0]
    verdict = {"kd_over_teacher_accuracy": kd["accuracy"] / t_row["accuracy"],
               "kd_minus_hard_accuracy": kd["accuracy"] - hard["accuracy"],
               "kd_keeps_97_percent": kd["accuracy"] >= 0.97 * t_row["accuracy"],
               "kd_beats_hard_only": kd["accuracy"] > hard["accuracy"],
               "recipes": {r["name"]: {"over_teacher": r["accuracy"] / t_row["accuracy"],
                                       "minus_hard_points": 100 * (r["accuracy"]
                                                                   - hard["accuracy"])}
                           for r in rows if r["name"] not in ("teacher", "student hard-only")}}
    timings["total_s"] = time.perf_counter() - t_start

    curves = [{"name": "teacher (fine-tuning)", "history": tinfo["history"],
               "step_losses": tinfo["step_losses"]}]
    curves += [{"name": n, "history": r["history"], "step_losses": r["step_losses"]}
               for n, r in runs.items()]
    plot_runs(curves, out / "training_curves.png")
    plot_accuracy_vs_latency([{"name": r["name"], "ms_per_example": r["ms_per_example"],
                               "accuracy": r["accuracy"], "params": r["params"]} for r in rows],
                             out / "accuracy_vs_speed.png",
                             title="test accuracy vs latency (marker size = parameters)")
    results = {"seed": seed, "quick": quick, "sizes": sizes._asdict(), "data": data.info,
               "student": {"layers": STUDENT_LAYERS, "init_layers": runs["student KD"]["init_layers"],
                           "alpha": ALPHA, "temperature": TEMPERATURE},
               "rows": rows, "verdict": verdict, "timings_s": timings,
               "dev": {"teacher": tinfo["dev"], **{n: r["dev"] for n, r in runs.items()}}}
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", table + "\n")
    print(table)
    for name, v in verdict["recipes"].items():
        print(f"{name} keeps {100 * v['over_teacher']:.1f}% of the teacher's test accuracy; "
              f"minus hard-only = {v['minus_hard_points']:+.2f} points")
    print("time: " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in timings.items()))
    print(f"results, plots and models in {out}")
    return results


def cli_demo(args) -> int:
    if getattr(args, "seed", 0) < 0:
        raise MinibertError(f"--seed must be >= 0, got {args.seed}")
    seeds = getattr(args, "seeds", None)
    recipes = tuple(getattr(args, "recipes", None)
                    or (QUICK_RECIPES if args.quick else RECIPES))
    if not seeds:
        run_demo(args.out, quick=args.quick, seed=args.seed, sweep=getattr(args, "sweep", False),
                 recipes=recipes, resume=args.resume, overwrite=args.overwrite)
        return 0
    from minibert.report import format_report, load_runs, seed_report
    out = Path(args.out)
    dirs = [out / f"seed-{s}" for s in seeds]
    for s, d in zip(seeds, dirs):
        run_demo(d, quick=args.quick, seed=s, recipes=recipes, resume=args.resume,
                 overwrite=args.overwrite)
    text = format_report(seed_report(load_runs(dirs)))
    atomic_write_text(out / "seeds.md", text + "\n")
    print(text)
    return 0
