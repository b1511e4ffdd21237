"""The training loop (shared by fine-tuning and distillation) and `minibert finetune`.

Shape legend: B batch, T tokens (longest in the batch), C classes.

How a run works
- The splits are tokenised once and cut into bucketed batches (`minibert.batches`).
- `train_step` is ONE optimisation step, the same for every model that trains here (fit,
  and the lessons' shorter loops): step_fn gives (loss, grads, parts) (the objective's
  forward and backward); we clip the global gradient norm and take an AdamW step at the
  scheduled learning rate (linear warm-up, linear decay).
- `fit` runs the epochs of train_step, evaluates on dev, remembers the best epoch, and
  writes a checkpoint atomically (`minibert.checkpoints`).
- Exact resume: every epoch draws its shuffle and dropout randomness from (seed, epoch) only
  (`batches.epoch_rngs`), so restarting at an epoch boundary from the checkpoint (params +
  AdamW m/v + step) replays the remaining epochs bit for bit.
- A NaN/inf loss (or gradient norm) stops the run *before* the update touches the params,
  naming the epoch, step and the last good checkpoint, which is left as it was.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from minibert.batches import EncodedSplit, encode_examples, epoch_rngs, train_batches
from minibert.checkpoints import CHECKPOINT_NAME, save_checkpoint, start_or_resume
from minibert.errors import DataError, MinibertError, NonFiniteError, TrainingDiverged
from minibert.files import atomic_write_json
from minibert.fast_optim import adamw_step
from minibert.optim import clip_grad_norm, linear_schedule
from minibert.progress import progress_bar


# ----------------------------------------------------------------------------- config

@dataclass
class TrainConfig:
    """Optimisation settings shared by finetune and distill (the CLI's training flags)."""
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 64
    warmup: float = 0.1          # fraction of all steps spent warming up
    weight_decay: float = 0.01
    clip: float = 1.0            # global gradient-norm clip; <= 0 disables
    seed: int = 0
    metric: str = "accuracy"     # key of eval_fn's dict that picks the best epoch (higher wins)
    progress: bool = True        # tqdm bar (never part of the run config)

    @classmethod
    def from_args(cls, args) -> "TrainConfig":
        return cls(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                   max_length=args.max_length, warmup=args.warmup,
                   weight_decay=args.weight_decay, clip=args.clip, seed=args.seed)

    def validate(self) -> None:
        checks = [("epochs", self.epochs >= 1), ("lr", self.lr > 0 and math.isfinite(self.lr)),
                  ("batch_size", self.batch_size >= 1), ("max_length", self.max_length >= 3),
                  ("warmup", 0.0 <= self.warmup < 1.0), ("weight_decay", self.weight_decay >= 0),
                  ("clip", math.isfinite(self.clip))]
        for name, ok in checks:
            if not ok:
                raise MinibertError(f"--{name.replace('_', '-')}: invalid value {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("progress")
        return d


class FitResult(NamedTuple):
    history: list          # one dict per epoch: epoch, train_loss, parts, lr, time_s, examples_per_s, dev
    step_losses: list      # every step's loss, in order
    best_epoch: int        # 1-based
    best_metrics: dict     # eval_fn's dict at the best epoch
    resumed_from: int      # epochs already done when this call started (0 = fresh run)


# ----------------------------------------------------------------------------- one step

class StepResult(NamedTuple):
    loss: float            # the objective's value on the batch (before the update)
    parts: dict            # step_fn's loss components, name -> float
    grad_norm: float       # global gradient norm before clipping
    lr: float              # the learning rate this update used


def train_step(params: dict, opt_state, step_fn: Callable, batch, rng: np.random.Generator, *,
               peak_lr: float, total_steps: int, warmup_steps: int, clip: float,
               weight_decay: float) -> StepResult:
    """One optimisation step on one batch, updating params and opt_state in place.

    Inputs:
      params: flat dict name -> float array; every entry is trained.
      opt_state: optim.AdamWState; its .step (updates done so far) is this step's 0-based index.
      step_fn(params, batch, rng) -> (loss, grads, parts): the objective's forward + backward
        (loss a float or 0-d array, grads fresh arrays with exactly params' keys, parts a dict
        name -> float to log, may be empty); rng: dropout randomness.
      peak_lr, total_steps, warmup_steps: optim.linear_schedule's warm-up and linear decay.
      clip: global gradient-norm clip (<= 0: none, the norm is only measured); weight_decay: AdamW's.
    Returns: StepResult. Raises TrainingDiverged on a NaN/inf loss or gradient norm BEFORE the
    update, so params and opt_state are left as they were.
    """
    loss, grads, parts = step_fn(params, batch, rng)
    if set(grads) != set(params):
        raise ValueError("step_fn: grads must have exactly params' keys; differing: "
                         f"{sorted(set(grads) ^ set(params))[:5]}")
    loss = float(loss)
    norm = clip_grad_norm(grads, clip if clip > 0 else math.inf)   # in place; inf: norm only
    if not (math.isfinite(loss) and math.isfinite(norm)):           # stop BEFORE the update
        raise TrainingDiverged(f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}")
    lr = linear_schedule(int(opt_state.step), total_steps, warmup_steps, peak_lr)
    adamw_step(params, grads, opt_state, lr, weight_decay=weight_decay)
    return StepResult(loss, parts, norm, lr)


# ----------------------------------------------------------------------------- the loop

def fit(params: dict, step_fn: Callable, train_batches_fn: Callable, eval_fn: Callable,
        out_dir, tcfg: TrainConfig, resume: bool = False, run_config: dict | None = None,
        on_best: Callable | None = None) -> FitResult:
    """Train `params` in place for tcfg.epochs epochs.

    Inputs:
      params: flat dict name -> float array; EVERY entry is trained (it may hold extra tensors
        such as distillation projections; saving only the model's keys is on_best's job).
      step_fn(params, batch, rng) -> (loss, grads, parts): loss a float (or 0-d array), grads
        a dict with exactly params' keys (fresh arrays; fit clips them in place), parts a dict
        name -> float of loss components to log (may be empty). rng: the epoch's dropout rng.
      train_batches_fn(epoch, rng) -> sequence of batches for 0-based `epoch`, same length
        every epoch; each batch has `.ids` (B, T) (used to count examples/s).
      eval_fn(params) -> dict of floats, must contain tcfg.metric; called after every epoch.
      out_dir: run directory; gets run_config.json, metrics.json, training_curves.png and
        checkpoint.safetensors (params + AdamW m/v + step + history + best), all atomic.
      resume: continue from out_dir's checkpoint; refused if the run config differs.
      run_config: JSON-able description of the run (e.g. CLI flags); tcfg is added as "train".
      on_best(params, epoch, metrics): called when an epoch beats every earlier one (1-based epoch).
    Returns: FitResult. Raises TrainingDiverged on a NaN/inf loss or gradient norm, before
    the update is applied; the last checkpoint is left intact and named in the message.
    """
    tcfg.validate()
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    config = json.loads(json.dumps({**(run_config or {}), "train": tcfg.to_dict()}, default=str))
    opt_state, run = start_or_resume(params, out_dir, config, resume)
    atomic_write_json(out_dir / "run_config.json", config)
    start_epoch = run["epochs_done"]
    last_good = (f"{ckpt_path} (after epoch {start_epoch})" if start_epoch > 0
                 else "none (no epoch had finished)")
    steps_per_epoch = None
    for epoch in range(start_epoch, tcfg.epochs):
        shuffle_rng, dropout_rng = epoch_rngs(tcfg.seed, epoch)
        batches = train_batches_fn(epoch, shuffle_rng)
        if steps_per_epoch is None:
            steps_per_epoch = len(batches)
            if steps_per_epoch == 0:
                raise DataError("the training split gave no batches")
            total_steps = steps_per_epoch * tcfg.epochs
            warmup_steps = int(round(tcfg.warmup * total_steps))
        elif len(batches) != steps_per_epoch:
            raise ValueError(f"train_batches_fn gave {len(batches)} batches in epoch {epoch}, "
                             f"{steps_per_epoch} before; the schedule needs a fixed count")
        t0, n_seen, loss_sum, part_sums, lr = time.perf_counter(), 0, 0.0, {}, 0.0
        bar = progress_bar(steps_per_epoch, f"epoch {epoch + 1}/{tcfg.epochs}", tcfg.progress)
        for i, batch in enumerate(batches):
            step = int(opt_state.step)                       # 0-based index of this update
            where = f"epoch {epoch + 1}, step {step + 1} (of {total_steps})"
            try:
                res = train_step(params, opt_state, step_fn, batch, dropout_rng, peak_lr=tcfg.lr,
                                 total_steps=total_steps, warmup_steps=warmup_steps,
                                 clip=tcfg.clip, weight_decay=tcfg.weight_decay)
            except KeyboardInterrupt:
                bar.close()
                print(f"interrupted at {where}; last checkpoint: {last_good}; "
                      "continue with --resume", file=sys.stderr, flush=True)
                raise
            except (TrainingDiverged, NonFiniteError) as err:   # the loss, or a layer's own check
                bar.close()
                what = err if isinstance(err, TrainingDiverged) else f"NaN/inf inside the model ({err})"
                raise TrainingDiverged(f"{what} at {where}; last good checkpoint: {last_good}") from None
            loss, parts, lr = res.loss, res.parts, res.lr
            n_seen += int(batch.ids.shape[0])
            loss_sum += loss
            run["step_losses"].append(loss)
            for k, v in parts.items():
                part_sums[k] = part_sums.get(k, 0.0) + float(v)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / (i + 1):.4f}", refresh=False,
                            ex_s=f"{n_seen / max(time.perf_counter() - t0, 1e-9):.1f}")
        bar.close()
        train_time = time.perf_counter() - t0
        try:
            metrics = {k: float(v) for k, v in eval_fn(params).items()}
        except NonFiniteError as err:                  # the last update overflowed the model
            raise TrainingDiverged(f"NaN/inf inside the model ({err}) at the dev evaluation after "
                                   f"epoch {epoch + 1}; last good checkpoint: {last_good}") from None
        if tcfg.metric not in metrics:
            raise ValueError(f"eval_fn must return {tcfg.metric!r}; got {sorted(metrics)}")
        record = {"epoch": epoch + 1, "train_loss": loss_sum / steps_per_epoch,
                  "parts": {k: v / steps_per_epoch for k, v in part_sums.items()},
                  "lr": lr, "steps": int(opt_state.step), "time_s": train_time,
                  "examples_per_s": n_seen / max(train_time, 1e-9), "dev": metrics}
        improved = _end_epoch(run, record, params, opt_state, out_dir, tcfg, on_best)
        last_good = f"{ckpt_path} (after epoch {epoch + 1})"
        _print_epoch(record, tcfg, improved)
    best = run["best"]
    return FitResult(history=run["history"], step_losses=run["step_losses"],
                     best_epoch=best["epoch"], best_metrics=best["metrics"],
                     resumed_from=start_epoch)


def _end_epoch(run: dict, record: dict, params: dict, opt_state, out_dir: Path,
               tcfg: TrainConfig, on_best) -> bool:
    """Record the epoch, export the best model (on_best), write checkpoint, metrics and plot.
    Returns True when this epoch is the best so far."""
    from minibert.plots import plot_training_curves
    run["history"].append(record)
    run["epochs_done"] = record["epoch"]
    best = run["best"]
    improved = best["metrics"] is None or record["dev"][tcfg.metric] > best["metrics"][tcfg.metric]
    if improved:
        run["best"] = {"epoch": record["epoch"], "metrics": record["dev"]}
        if on_best is not None:        # before the checkpoint: a crash in between replays the epoch
            on_best(params, record["epoch"], record["dev"])
    save_checkpoint(out_dir / CHECKPOINT_NAME, params, opt_state, run)
    atomic_write_json(out_dir / "metrics.json", {"history": run["history"], "metric": tcfg.metric,
                                          "best_epoch": run["best"]["epoch"],
                                          "best": run["best"]["metrics"],
                                          "step_losses": run["step_losses"]})
    plot_training_curves(run["history"], run["step_losses"], out_dir / "training_curves.png",
                         metric=tcfg.metric)
    return improved


def _print_epoch(record: dict, tcfg: TrainConfig, improved: bool) -> None:
    if not tcfg.progress:
        return
    dev = ", ".join(f"dev {k} {v:.4f}" for k, v in record["dev"].items())
    print(f"epoch {record['epoch']}/{tcfg.epochs}: train loss {record['train_loss']:.4f}, {dev}, "
          f"{record['examples_per_s']:.1f} ex/s, {record['time_s']:.1f} s"
          + (" (best so far)" if improved else ""), flush=True)


# ----------------------------------------------------------------------------- minibert finetune

def make_classify_step(config) -> Callable:
    """step_fn for plain fine-tuning: cross-entropy on the classifier's logits."""
    from minibert.losses import cross_entropy
    from minibert.fast_model import classify_backward, classify_forward

    def step(params, batch, rng):
        logits, _, cache = classify_forward(params, config, batch.ids, batch.mask,
                                            batch.token_type_ids, rng=rng)        # (B,C)
        loss, dlogits = cross_entropy(logits, batch.labels)
        return loss, classify_backward(dlogits, cache), {}
    return step


def make_eval_fn(config, dev: EncodedSplit, batch_size: int) -> Callable:
    """eval_fn for fit: dev accuracy and macro-F1 of a classifier."""
    from minibert.evaluate import predict_and_score

    def eval_fn(params):
        _, m = predict_and_score(params, config, dev, batch_size)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return eval_fn


def head_init_rng(seed: int) -> np.random.Generator:
    """The Generator that draws a fresh classifier head: a function of the run's seed only (its
    own stream, so the shuffling and dropout draws of the run do not move it)."""
    return np.random.default_rng([seed, 7919])


def with_fresh_head(params: dict, config, labels: list[str], rng: np.random.Generator):
    """A copy of (params, config) with a new classifier for `labels`: classifier.W ~
    N(0, initializer_range), classifier.b = 0 (as BERT initialises it). An old head and an MLM
    head are dropped (fine-tuning trains neither). Returns (params, config)."""
    import dataclasses
    from minibert.model import param_shapes
    new_config = dataclasses.replace(config, num_labels=len(labels), labels=list(labels),
                                     mlm_head=False)
    dtype = params["embeddings.word"].dtype
    shapes = param_shapes(new_config)
    new_params = {name: params[name] for name in shapes if not name.startswith("classifier.")}
    W = rng.normal(0.0, config.initializer_range, size=shapes["classifier.W"])    # (H, C)
    new_params["classifier.W"] = W.astype(dtype)
    new_params["classifier.b"] = np.zeros(shapes["classifier.b"], dtype=dtype)    # (C,)
    return new_params, new_config


def write_head_record(out_dir, data_spec: str, labels, dev_accuracy, epoch: int) -> None:
    """head.json: proof that this model's classifier was trained (distill checks it)."""
    atomic_write_json(Path(out_dir) / "head.json", {"finetuned": True, "data": data_spec,
                                             "labels": list(labels), "dev_accuracy": dev_accuracy,
                                             "epoch": epoch})


def finetune_classifier(params: dict, config, labels: list[str], train_split: EncodedSplit,
                        dev_split: EncodedSplit, tcfg: TrainConfig, out_dir, *, tokenizer_dir,
                        data_spec: str, run_dir=None, run_config: dict | None = None,
                        resume: bool = False):
    """The fine-tuning recipe (`minibert finetune`, the demo's teacher, the lessons' teacher):
    a fresh classifier head for `labels` (head_init_rng(tcfg.seed)), then fit() on train_split
    with dev accuracy picking the best epoch, which is saved into out_dir as a model directory
    (model + config + tokenizer files from tokenizer_dir + head.json naming data_spec).
    run_dir: where fit keeps its checkpoint and records (default out_dir).
    Returns (FitResult, the fine-tuned model's config)."""
    from minibert.weights import save_model
    out_dir = Path(out_dir)
    params, config = with_fresh_head(params, config, labels, head_init_rng(tcfg.seed))

    def on_best(p, epoch, metrics):
        save_model(out_dir, p, config, tokenizer_dir=tokenizer_dir)
        write_head_record(out_dir, data_spec, labels, metrics["accuracy"], epoch)

    res = fit(params, make_classify_step(config),
              lambda epoch, rng: train_batches(train_split, tcfg.batch_size, rng),
              make_eval_fn(config, dev_split, tcfg.batch_size), Path(run_dir or out_dir), tcfg,
              resume=resume, run_config=run_config, on_best=on_best)
    return res, config


def cli_finetune(args) -> int:
    """minibert finetune: train a fresh classifier head and the encoder; OUT holds the best epoch.
    OUT is claimed through minibert.outdir (new, or this command's run with --resume/--overwrite)."""
    from minibert.outdir import claim_dir
    tcfg = TrainConfig.from_args(args)
    tcfg.validate()
    with claim_dir(args.out, "finetune", resume=args.resume, overwrite=args.overwrite,
                   inputs=[args.model]) as out:
        return _finetune(args, tcfg, out)


def _finetune(args, tcfg: TrainConfig, out: Path) -> int:
    from minibert.data import load_dataset
    from minibert.tokenizer import check_length_fits
    from minibert.weights import load_model_and_tokenizer
    params, config, tokenizer = load_model_and_tokenizer(args.model)
    check_length_fits(tcfg.max_length, config)
    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column,
                        text_pair_column=args.text_pair_column, limit=args.limit, seed=args.seed)
    if not data.train:
        raise DataError(f"--data {args.data}: the training split is empty")
    if not data.dev:
        raise DataError(f"--data {args.data}: the dev split is empty (finetune picks the best "
                        "epoch on dev)")
    if len(data.labels) < 2:
        raise DataError(f"--data {args.data}: need at least 2 labels, got {data.labels}")
    if config.num_labels:
        print(f"note: replacing the model's {config.num_labels}-way head with a fresh "
              f"{len(data.labels)}-way head")
    train_split = encode_examples(tokenizer, data.train, tcfg.max_length)
    dev_split = encode_examples(tokenizer, data.dev, tcfg.max_length)
    print(f"fine-tuning {args.model} on {data.name}: {len(data.train)} train / {len(data.dev)} dev "
          f"examples, labels {data.labels}, {tcfg.epochs} epochs of "
          f"{-(-len(data.train) // tcfg.batch_size)} steps")
    run_config = {"command": "finetune", "model": str(args.model), "data": args.data,
                  "text_column": args.text_column, "label_column": args.label_column,
                  "text_pair_column": args.text_pair_column, "limit": args.limit,
                  "labels": list(data.labels), "n_train": len(data.train), "n_dev": len(data.dev)}
    res, _ = finetune_classifier(params, config, data.labels, train_split, dev_split, tcfg, out,
                                 tokenizer_dir=args.model, data_spec=args.data,
                                 run_config=run_config, resume=args.resume)
    best = res.best_metrics
    print(f"best epoch {res.best_epoch}: dev accuracy {best['accuracy']:.4f}, macro-F1 "
          f"{best['macro_f1']:.4f}; model written to {out}")
    return 0
