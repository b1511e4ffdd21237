"""Knowledge distillation: a shallow student learns from a fine-tuned teacher.

Shape legend: B batch, T tokens, Hs / Ht student / teacher hidden size, nh heads,
C classes, N training examples, Ls / Lt student / teacher layers.

The recipe (Hinton et al. 2015; DistilBERT, Sanh et al. 2019; TinyBERT, Jiao et al. 2020):

1. The teacher is fine-tuned on the task first. A pre-trained teacher without a trained
   classifier head has nothing to teach (its "soft labels" are noise), so we refuse it.
2. The student is the teacher with fewer layers, tied to it by the uniform layer mapping and
   by default initialised from the mapped teacher blocks (`minibert.student`).
3. It minimises alpha*CE(student, gold) + (1-alpha)*T^2*KL(teacher_T || student_T), plus
   optional intermediate terms: hidden-state MSE (through a learned projection when the
   student is narrower), attention-score MSE (padding masked) and the DistilBERT cosine
   loss on the last hidden state (`minibert.objective.student_objective`).
4. The teacher's logits on the training set are computed ONCE and cached, on disk too (under a
   fingerprint of teacher, tokenizer, data and max_length, shared by later runs); its hidden
   states / attention scores are cached in memory when they fit, else recomputed per batch
   (`minibert.teacher_cache`). A hard-only run (alpha 1, no intermediate loss) never runs it.

This module is the command: it checks the teacher, trains a student with train.fit, and
compares teacher and student (accuracy, macro-F1, size, latency).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minibert.batches import encode_examples, train_batches
from minibert.data import load_dataset
from minibert.errors import DataError, MinibertError
from minibert.evaluate import align_labels, measure_latency, predict_and_score
from minibert.files import atomic_write_json
from minibert.model import BertConfig, count_params
from minibert.objective import DistillSettings, check_settings, make_distill_step
from minibert.recipes import (INTERMEDIATE_DIR, check_recipe, describe_recipe,
                              stage_settings)
from minibert.student import (describe_mapping, init_projections, init_student, parse_init_from,
                              same_shape_layers, strip_projections, student_config,
                              student_init_rng, uniform_layer_map)
from minibert.teacher_cache import TeacherCache, cached_logits, shared_cache_dir, teacher_fingerprint
from minibert.train import TrainConfig, fit, make_eval_fn, write_head_record
from minibert.weights import load_model, load_model_and_tokenizer, save_model


# ----------------------------------------------------------------------------- checks on inputs

def check_teacher(model_dir, config: BertConfig) -> dict:
    """Refuse a teacher that was not fine-tuned. Returns its head.json record.

    A pre-trained checkpoint (all-MiniLM-L6-v2 as downloaded) has no classifier, and one with a
    random head would hand the student noise as "soft labels": distillation needs a teacher
    that already solves the task (`minibert finetune` writes head.json to say so).
    """
    fix = f"fine-tune it first: minibert finetune --model {model_dir} --data SPEC --out DIR"
    if config.num_labels == 0:
        raise MinibertError(f"--teacher {model_dir} has no classification head (num_labels 0): "
                            f"it is a pre-trained, not a fine-tuned model; {fix}")
    path = Path(model_dir) / "head.json"
    if not path.is_file():
        raise MinibertError(f"--teacher {model_dir} has a {config.num_labels}-way head but no "
                            f"head.json, so nothing says the head was trained (an untrained head "
                            f"teaches noise); {fix}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise MinibertError(f"--teacher {model_dir}: head.json is unreadable ({err})") from None
    if not isinstance(record, dict) or record.get("finetuned") is not True:
        raise MinibertError(f"--teacher {model_dir}: head.json does not say "
                            f"'finetuned': true; {fix}")
    return record


def label_map(data_labels: list[str], config: BertConfig) -> np.ndarray:
    """Dataset label index -> teacher label index. The label SETS must be equal (a teacher that
    was fine-tuned on other classes cannot teach this task); their order may differ."""
    if config.labels and sorted(config.labels) != sorted(data_labels):
        raise MinibertError(f"label mismatch: the teacher was fine-tuned on labels "
                            f"{list(config.labels)} but --data has labels {list(data_labels)}")
    return align_labels(data_labels, config)      # by name; an unnamed head by position


# ----------------------------------------------------------------------------- training a student

class StudentRun(NamedTuple):
    params: dict             # the best epoch's student parameters (projections stripped)
    config: BertConfig
    fit: object              # train.FitResult
    init_layers: list | None
    stage_fits: tuple = ()   # a multi-stage recipe's FitResult per stage (tinybert: 2)


def train_student(teacher_params: dict, teacher_config: BertConfig, config: BertConfig,
                  init_layers: list[int] | None, settings: DistillSettings, teacher: TeacherCache,
                  train_split, dev_split, out_dir, tcfg, tokenizer_dir=None,
                  run_config: dict | None = None, resume: bool = False,
                  data_spec: str = "?", init_params: dict | None = None,
                  keep_last: bool = False) -> StudentRun:
    """Initialise a student and train it with train.fit on the distillation loss.

    Inputs: the teacher (params, config), the student config, init_layers (None = random),
    settings, a TeacherCache built on train_split, encoded train/dev splits (labels in the
    teacher's indices), out_dir, a train.TrainConfig, the tokenizer directory to copy, a
    run_config for the checkpoint, resume, data_spec: the data named in the student's head.json,
    init_params: the student's starting parameters (e.g. `--student-init`; None = init_student),
    keep_last: keep the LAST epoch instead of the best-dev one (TinyBERT's intermediate stage,
    whose dev accuracy reads a head that stage does not train).
    Returns: StudentRun. out_dir receives the best epoch's model (model.safetensors,
    config.json, tokenizer, head.json) plus fit's run_config/metrics/curves/checkpoint.
    """
    check_settings(settings, config, teacher_config)
    rng = student_init_rng(tcfg.seed)
    if init_params is None:
        params = init_student(teacher_params, teacher_config, config, init_layers, rng)
    else:
        params = {k: v.copy() for k, v in init_params.items()}
    if settings.hidden_weight > 0:
        params.update(init_projections(config, teacher_config, rng))
    base_eval = make_eval_fn(config, dev_split, tcfg.batch_size)
    best = {}

    def on_best(p, epoch, metrics):
        best["params"] = {k: v.copy() for k, v in strip_projections(p).items()}
        save_model(out_dir, best["params"], config, tokenizer_dir=tokenizer_dir)
        write_head_record(out_dir, data_spec, config.labels or [],
                          metrics["accuracy"], epoch)

    if keep_last:                                  # saved once, after the last epoch (below)
        on_best = None

    res = fit(params, make_distill_step(config, teacher, settings),
              lambda epoch, r: train_batches(train_split, tcfg.batch_size, r),
              lambda p: base_eval(strip_projections(p)), out_dir, tcfg, resume=resume,
              run_config=run_config, on_best=on_best)
    if keep_last:
        best["params"] = {k: v.copy() for k, v in strip_projections(params).items()}
        save_model(out_dir, best["params"], config, tokenizer_dir=tokenizer_dir)
        write_head_record(out_dir, data_spec, config.labels or [],
                          res.history[-1]["dev"]["accuracy"], len(res.history))
    elif "params" not in best:                     # resumed after the best epoch: reload it
        best["params"], _ = load_model(out_dir)
    return StudentRun(best["params"], config, res, init_layers)


def train_recipe(recipe: str, teacher_params: dict, teacher_config, config, init_layers,
                 settings: DistillSettings, teacher: TeacherCache, train_split, dev_split,
                 out_dir, tcfg, intermediate_epochs: int = 1, init_params: dict | None = None,
                 intermediate_split=None, intermediate_params: dict | None = None, **train_kw):
    """Train a student with a recipe; returns the final stage's distill.StudentRun.

    Inputs: as distill.train_student (teacher: a TeacherCache on train_split holding at least
    the logits; stage 1 of tinybert makes its own cache for the intermediate outputs, reusing
    those logits), recipe, intermediate_epochs (tinybert's stage 1). tinybert-aug only:
    intermediate_split, the rows stage 1 trains on: the FIRST rows of train_split (the task's
    own, before the augmented ones); intermediate_params: a finished stage 1's student (the
    same stage 1 as tinybert's) to start stage 2 from instead of training stage 1 again.
    out_dir holds the final student; stage 1 runs in out_dir/intermediate (checkpoints,
    --resume like any run).
    Returns: StudentRun; for two-stage recipes its .fit is stage 2's and .stage_fits holds
    (stage 1's FitResult or None when intermediate_params were given, stage 2's).
    """
    check_recipe(recipe, intermediate_epochs)
    out_dir = Path(out_dir)
    stages = stage_settings(recipe, settings)
    if recipe == "kd":
        return train_student(teacher_params, teacher_config, config, init_layers, settings,
                             teacher, train_split, dev_split, out_dir, tcfg,
                             init_params=init_params, **train_kw)
    if recipe == "tinybert-aug" and intermediate_split is None and intermediate_params is None:
        raise MinibertError("recipe tinybert-aug: stage 1 trains on the task's rows without the "
                            "augmented ones; give intermediate_split (distill: --transfer FILE)")
    (_, s1), (_, s2) = stages
    run_config = dict(train_kw.pop("run_config", None) or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    if intermediate_params is not None:
        first = StudentRun(intermediate_params, config, None, init_layers)
    else:
        split1 = train_split if intermediate_split is None else intermediate_split
        n1 = len(split1.labels)
        cache1 = TeacherCache(teacher_params, teacher_config, split1, s1, teacher.batch_size,
                              logits=teacher.logits[:n1])
        tcfg1 = dataclasses.replace(tcfg, epochs=intermediate_epochs)
        first = train_student(teacher_params, teacher_config, config, init_layers, s1, cache1,
                              split1, dev_split, out_dir / INTERMEDIATE_DIR, tcfg1,
                              init_params=init_params, keep_last=True,
                              run_config={**run_config, "stage": "intermediate"}, **train_kw)
    if s2.needs_relation and not teacher.settings.needs_relation:
        teacher = TeacherCache(teacher_params, teacher_config, train_split, s2,
                               teacher.batch_size, logits=teacher.logits)
    second = train_student(teacher_params, teacher_config, config, init_layers, s2, teacher,
                           train_split, dev_split, out_dir, tcfg, init_params=first.params,
                           run_config={**run_config, "stage": "prediction"}, **train_kw)
    return second._replace(init_layers=first.init_layers, stage_fits=(first.fit, second.fit))


# ----------------------------------------------------------------------------- evaluation

def compare_models(models: list[tuple[str, dict, BertConfig]], split, batch_size: int = 32,
                   rounds: int = 3, repeats: int = 3) -> list[dict]:
    """Accuracy, macro-F1, parameters, latency and speed-up (vs the FIRST model, the teacher).

    Inputs: models as (name, params, config), an EncodedSplit with labels in the models'
    indices, batch_size, timing rounds x repeats. Latencies are measured in interleaved
    rounds (teacher, student, teacher, ...) and the median taken, so a burst of load on a
    shared machine hits every model alike.
    Returns: one dict per model: name, accuracy, macro_f1, params, ms_per_example, speedup, n.
    """
    rows = []
    for name, params, config in models:
        _, m = predict_and_score(params, config, split, batch_size)
        rows.append({"name": name, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                     "params": count_params(params), "n": int(len(split.labels))})
    times = [[] for _ in models]
    for _ in range(rounds):
        for k, (_, params, config) in enumerate(models):
            times[k].append(measure_latency(params, config, split, batch_size, repeats))
    for row, t in zip(rows, times):
        row["ms_per_example"] = float(np.median(t))
        row["speedup"] = float(np.median(times[0]) / row["ms_per_example"])
    return rows


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def format_table(rows: list[dict], title: str | None = None) -> str:
    """A markdown table of compare_models rows (readable in a terminal too)."""
    lines = [f"**{title}**", ""] if title else []
    lines += ["| model | accuracy | macro-F1 | params | ms/example | speed-up |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
                     f"{_count(r['params'])} | {r['ms_per_example']:.3f} | "
                     f"{r['speedup']:.2f}x |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- minibert distill

def resolve_init(args, teacher_config: BertConfig, config: BertConfig) -> list[int] | None:
    """--init / --init-from -> 0-based teacher blocks to copy (None = random), with clear errors."""
    if args.init == "random":
        if args.init_from:
            raise MinibertError("--init-from names teacher layers to copy, which --init random "
                                "does not do; drop one of them")
        return None
    layers = parse_init_from(args.init_from, config.num_layers, teacher_config.num_layers)
    if not same_shape_layers(teacher_config, config):
        which = f"--init-from {args.init_from}" if args.init_from else "--init teacher (default)"
        raise MinibertError(
            f"{which} copies teacher layers of width {teacher_config.hidden_size} (FFN "
            f"{teacher_config.intermediate_size}, {teacher_config.num_heads} heads) into a student "
            f"of width {config.hidden_size} (FFN {config.intermediate_size}, {config.num_heads} "
            f"heads); weights cannot be copied without a projection: use --init random (the "
            f"--hidden-weight loss learns a {config.hidden_size}->{teacher_config.hidden_size} "
            f"projection)")
    return layers


def cli_distill(args) -> int:
    """minibert distill: distil a fine-tuned teacher into a shallow student; OUT holds the
    best-dev student plus a teacher-vs-student evaluation (evaluation.json)."""
    from minibert.outdir import claim_dir
    tcfg = TrainConfig.from_args(args)
    tcfg.validate()
    with claim_dir(args.out, "distill", resume=args.resume, overwrite=args.overwrite,
                   inputs=[args.teacher]) as out:
        return _distill(args, tcfg, out)


def _distill(args, tcfg: TrainConfig, out: Path) -> int:
    from minibert.tokenizer import check_length_fits
    tparams, tconfig, tokenizer = load_model_and_tokenizer(args.teacher)
    check_teacher(args.teacher, tconfig)
    check_length_fits(tcfg.max_length, tconfig)
    config = student_config(tconfig, args.layers, args.hidden_size, args.intermediate_size,
                            args.heads)
    init_params = None
    if getattr(args, "student_init", None):
        from minibert.general_distill import load_student_init
        if args.init_from or args.init == "random":
            raise MinibertError("--student-init gives the student's starting weights; drop "
                                "--init / --init-from")
        init_layers = None
        init_params = load_student_init(args.student_init, args.teacher, tparams, tconfig, config,
                                        student_init_rng(tcfg.seed))
    else:
        init_layers = resolve_init(args, tconfig, config)
    settings = DistillSettings(args.alpha, args.temperature, args.hidden_weight,
                               args.attention_weight, args.cosine_weight,
                               tuple(uniform_layer_map(config.num_layers, tconfig.num_layers)),
                               relation_weight=getattr(args, "relation_weight", 0.0))
    recipe = getattr(args, "recipe", "kd")
    inter_epochs = getattr(args, "intermediate_epochs", 1)
    check_recipe(recipe, inter_epochs)
    for _, stage in stage_settings(recipe, settings):
        check_settings(stage, config, tconfig)
    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column,
                        text_pair_column=args.text_pair_column, limit=args.limit, seed=args.seed)
    lmap = label_map(data.labels, tconfig)
    if not data.train or not data.dev:
        raise DataError(f"--data {args.data}: distillation needs train and dev examples, got "
                        f"{len(data.train)} train / {len(data.dev)} dev")
    splits = {}
    for name, examples in (("train", data.train), ("dev", data.dev), ("test", data.test)):
        if examples:
            s = encode_examples(tokenizer, examples, tcfg.max_length)
            splits[name] = s._replace(labels=lmap[s.labels])           # teacher's label indices
    transfer_logits = None
    own_rows = splits["train"]                       # the task's rows (tinybert-aug's stage 1)
    if recipe == "tinybert-aug" and not getattr(args, "transfer", None):
        raise MinibertError("--recipe tinybert-aug trains stage 2 on augmented sentences: give "
                            "--transfer FILE (made by minibert augment), or use --recipe tinybert")
    if getattr(args, "transfer", None):
        from minibert.transfer_set import concat_splits, read_transfer
        extra, transfer_logits = read_transfer(args.transfer, args.teacher, data.train,
                                               tconfig.num_labels, tcfg.max_length)
        n_labelled = len(splits["train"].labels)
        splits["train"] = concat_splits(splits["train"], extra)       # labelled rows first
        print(f"transfer set {args.transfer}: {len(extra.labels)} augmented sentences "
              f"(teacher logits stored) + {n_labelled} labelled examples")
    print(f"teacher {args.teacher}: {tconfig.num_layers} layers, hidden {tconfig.hidden_size}; "
          f"student: {config.num_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_heads} heads, FFN {config.intermediate_size}")
    print(describe_mapping(init_layers, config.num_layers, tconfig.num_layers)
          if init_params is None else
          f"init: the general-distilled student {args.student_init} (embeddings and every "
          f"block; pooler and classifier from the teacher)\n"
          + describe_mapping(None, config.num_layers, tconfig.num_layers).split("\n", 1)[1])
    print(describe_recipe(recipe, settings, tcfg.epochs, inter_epochs))
    print(f"{len(data.train)} train / {len(data.dev)} dev examples, max_length {tcfg.max_length}")
    logits = None
    last_stage = stage_settings(recipe, settings)[-1][1]        # the run's own teacher cache
    if not last_stage.hard_only:                     # hard-only: the teacher never runs
        labelled = splits["train"]
        if transfer_logits is not None:              # the teacher runs on the labelled rows only
            n_labelled = len(splits["train"].labels) - len(transfer_logits)
            labelled = labelled._replace(**{f: getattr(labelled, f)[:n_labelled]
                                            for f in labelled._fields})
        fp = teacher_fingerprint(args.teacher, labelled, tcfg.max_length)
        logits, found = cached_logits(tparams, tconfig, labelled, fp,
                                      [out, shared_cache_dir() / fp], tcfg.batch_size,
                                      progress=True)
        if found is not None:
            print(f"teacher logits: reused from {found} (fingerprint {fp[:12]})")
        if transfer_logits is not None:
            logits = np.concatenate([logits, transfer_logits])
    teacher = TeacherCache(tparams, tconfig, splits["train"], last_stage, tcfg.batch_size,
                           progress=True, logits=logits)
    print(teacher.describe())
    run_config = {"command": "distill", "teacher": str(args.teacher), "data": args.data,
                  "limit": args.limit, "labels": list(tconfig.labels or []),
                  "student": config.to_dict(), "init_layers": init_layers,
                  "transfer": getattr(args, "transfer", None),
                  "student_init": getattr(args, "student_init", None),
                  "settings": {k: v for k, v in settings._asdict().items()},
                  "recipe": recipe, "intermediate_epochs": inter_epochs}
    run = train_recipe(recipe, tparams, tconfig, config, init_layers, settings, teacher,
                       splits["train"], splits["dev"], out, tcfg, intermediate_epochs=inter_epochs,
                       init_params=init_params, tokenizer_dir=args.teacher,
                       intermediate_split=own_rows if recipe == "tinybert-aug" else None,
                       run_config=run_config, resume=args.resume, data_spec=args.data)
    split_name = "test" if "test" in splits else "dev"
    rows = compare_models([("teacher", tparams, tconfig), ("student", run.params, config)],
                          splits[split_name], tcfg.batch_size)
    atomic_write_json(out / "evaluation.json", {"split": split_name, "rows": rows,
                                         "best_epoch": run.fit.best_epoch,
                                         "init_layers": init_layers,
                                         "layer_map": list(settings.layer_map)})
    print(format_table(rows, title=f"{data.name} {split_name} ({rows[0]['n']} examples)"))
    print(f"student written to {out}")
    return 0
