"""The training loop (shared by fine-tuning and distillation) and `minibert finetune`.

Shape legend: N examples in a split, B batch, T tokens (longest in the batch), Tmax longest in
the split, C classes.

How a run works
- Tokenise once (`encode_examples`): every split becomes padded int64 arrays plus lengths.
- Each epoch, `bucket_batches` shuffles, sorts by length inside chunks of ~50 batches and
  shuffles the batches, so a batch holds similar lengths and is padded only to its longest.
- `fit` runs the epochs: step_fn gives (loss, grads, parts); we clip the global gradient
  norm, take an AdamW step at the scheduled learning rate (linear warm-up, linear decay),
  evaluate on dev, remember the best epoch, and write a checkpoint atomically.
- Exact resume: every epoch draws its shuffle and dropout randomness from (seed, epoch) only,
  so restarting at an epoch boundary from the checkpoint (params + AdamW m/v + step) replays
  the remaining epochs bit for bit.
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
from typing import Callable, NamedTuple, Sequence

import numpy as np

from minibert.errors import CheckpointError, DataError, MinibertError, TrainingDiverged
from minibert.files import atomic_write, atomic_write_json

CHECKPOINT_NAME = "checkpoint.safetensors"   # one file: tensors + JSON state in its metadata
CHECKPOINT_FORMAT = 1


# ----------------------------------------------------------------------------- batching

class EncodedSplit(NamedTuple):
    """A tokenised split, padded once to its longest sequence (batches trim it further)."""
    ids: np.ndarray             # (N, Tmax) int64
    mask: np.ndarray            # (N, Tmax) int64, 1 = real token, 0 = padding
    token_type_ids: np.ndarray  # (N, Tmax) int64
    labels: np.ndarray          # (N,) int64
    lengths: np.ndarray         # (N,) int64, real tokens per example


class LabeledBatch(NamedTuple):
    """What step_fn receives. `index` says which examples of the split these are
    (distillation uses it to look up cached teacher outputs)."""
    ids: np.ndarray             # (B, T) int64
    mask: np.ndarray            # (B, T) int64
    token_type_ids: np.ndarray  # (B, T) int64
    labels: np.ndarray          # (B,) int64
    index: np.ndarray           # (B,) int64 positions in the EncodedSplit


def encode_examples(tokenizer, examples, max_length: int) -> EncodedSplit:
    """Tokenise a list of data.Example once.

    Inputs: tokenizer (minibert.tokenizer.Tokenizer), examples (list of Example with .text,
    .label, .text_pair), max_length (truncation, in tokens including [CLS]/[SEP]).
    Returns: EncodedSplit. Raises DataError on an empty list.
    """
    if len(examples) == 0:
        raise DataError("no examples to encode (the split is empty)")
    texts = [ex.text for ex in examples]
    has_pair = [ex.text_pair is not None for ex in examples]
    if any(has_pair) and not all(has_pair):
        raise DataError("some examples have a text pair and some do not")
    pairs = [ex.text_pair for ex in examples] if has_pair[0] else None
    enc = tokenizer.encode(texts, pairs=pairs, max_length=max_length)
    labels = np.asarray([ex.label for ex in examples], dtype=np.int64)      # (N,)
    mask = np.asarray(enc.mask, dtype=np.int64)
    return EncodedSplit(ids=np.asarray(enc.ids, dtype=np.int64), mask=mask,
                        token_type_ids=np.asarray(enc.token_type_ids, dtype=np.int64),
                        labels=labels, lengths=mask.sum(axis=1))


def make_batch(split: EncodedSplit, index: np.ndarray) -> LabeledBatch:
    """Gather examples `index` and trim the padding to the longest of them."""
    index = np.asarray(index, dtype=np.int64)
    T = int(split.lengths[index].max())
    return LabeledBatch(ids=split.ids[index, :T], mask=split.mask[index, :T],       # (B, T)
                        token_type_ids=split.token_type_ids[index, :T],
                        labels=split.labels[index], index=index)


def bucket_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                   chunk_batches: int = 50) -> list[np.ndarray]:
    """Sort-ish bucketing: shuffle, sort by length inside chunks of `chunk_batches` batches,
    cut into batches, shuffle the batch order. Returns a list of index arrays covering every
    example exactly once (only the last batch may be short)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    order = rng.permutation(len(lengths))
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start:start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """For inference: batches of similar length, deterministic, no shuffling."""
    order = np.argsort(lengths, kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class Batches(Sequence):
    """A list of LabeledBatch that gathers each batch only when it is used."""

    def __init__(self, split: EncodedSplit, index_lists: list[np.ndarray]):
        self.split, self.index_lists = split, index_lists

    def __len__(self) -> int:
        return len(self.index_lists)

    def __getitem__(self, i: int) -> LabeledBatch:
        return make_batch(self.split, self.index_lists[i])


def train_batches(split: EncodedSplit, batch_size: int, rng: np.random.Generator) -> Batches:
    """One epoch of bucketed, shuffled training batches."""
    return Batches(split, bucket_batches(split.lengths, batch_size, rng))


def epoch_rngs(seed: int, epoch: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(shuffle_rng, dropout_rng) for an epoch, a function of (seed, epoch) only: this is
    what makes a resumed run replay exactly."""
    return (np.random.default_rng([seed, epoch, 0]), np.random.default_rng([seed, epoch, 1]))


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


# ----------------------------------------------------------------------------- checkpoints

def write_json(path, obj) -> None:
    """Write JSON atomically (minibert.files: tmp file in the same directory + os.replace)."""
    atomic_write_json(path, obj)


def save_checkpoint(path, params: dict, opt_state, state: dict) -> None:
    """params + AdamW m/v as tensors, `state` (JSON-able) in the metadata; atomic."""
    from safetensors.numpy import save_file
    path = Path(path)
    tensors = {}
    for name, p in params.items():
        tensors[f"params/{name}"] = np.ascontiguousarray(p)
        tensors[f"adam_m/{name}"] = np.ascontiguousarray(opt_state.m[name])
        tensors[f"adam_v/{name}"] = np.ascontiguousarray(opt_state.v[name])
    meta = {"minibert_checkpoint": json.dumps({**state, "format": CHECKPOINT_FORMAT,
                                               "opt_step": int(opt_state.step)}, default=str)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_checkpoint(path):
    """Returns (params, opt_state, state). CheckpointError if missing or unreadable."""
    from safetensors import safe_open
    from minibert.optim import AdamWState
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            state = json.loads((f.metadata() or {})["minibert_checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:   # safetensors raises several types; the user needs one message
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from err
    groups = {"params": {}, "adam_m": {}, "adam_v": {}}
    for key, arr in tensors.items():
        group, _, name = key.partition("/")
        if group not in groups or "opt_step" not in state:
            raise CheckpointError(f"checkpoint {path} is unreadable: not a minibert checkpoint "
                                  f"(tensor {key!r}, format {state.get('format')!r})")
        groups[group][name] = arr
    opt_state = AdamWState(step=int(state["opt_step"]), m=groups["adam_m"], v=groups["adam_v"])
    return groups["params"], opt_state, state


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as 'key: old -> new'."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


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
    from minibert.optim import adamw_step, clip_grad_norm, linear_schedule
    tcfg.validate()
    out_dir = Path(out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    config = json.loads(json.dumps({**(run_config or {}), "train": tcfg.to_dict()}, default=str))
    opt_state, run = _start_or_resume(params, out_dir, config, resume)
    write_json(out_dir / "run_config.json", config)
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
                loss, grads, parts = step_fn(params, batch, dropout_rng)
            except KeyboardInterrupt:
                bar.close()
                print(f"interrupted at {where}; last checkpoint: {last_good}; "
                      "continue with --resume", file=sys.stderr, flush=True)
                raise
            if set(grads) != set(params):
                raise ValueError("step_fn: grads must have exactly params' keys; differing: "
                                 f"{sorted(set(grads) ^ set(params))[:5]}")
            loss = float(loss)
            norm = clip_grad_norm(grads, tcfg.clip if tcfg.clip > 0 else math.inf)  # inf: norm only
            if not (math.isfinite(loss) and math.isfinite(norm)):   # stop BEFORE the update
                bar.close()
                what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {norm}"
                raise TrainingDiverged(f"{what} at {where}; last good checkpoint: {last_good}")
            lr = linear_schedule(step, total_steps, warmup_steps, tcfg.lr)
            adamw_step(params, grads, opt_state, lr, weight_decay=tcfg.weight_decay)
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
        metrics = {k: float(v) for k, v in eval_fn(params).items()}
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


def _start_or_resume(params: dict, out_dir: Path, config: dict, resume: bool):
    """Fresh AdamW state, or (resume) params/state/history loaded from the checkpoint.
    Returns (opt_state, run) with run = {epochs_done, run_config, history, step_losses, best}."""
    from minibert.optim import adamw_init, check_state
    if out_dir.exists() and not out_dir.is_dir():
        raise MinibertError(f"--out {out_dir}: exists and is not a directory")
    ckpt_path = out_dir / CHECKPOINT_NAME
    if not resume:
        if ckpt_path.exists():
            raise MinibertError(f"--out {out_dir} already holds a run ({CHECKPOINT_NAME}); "
                                "pass --resume to continue it or choose a new --out")
        out_dir.mkdir(parents=True, exist_ok=True)
        return adamw_init(params), {"epochs_done": 0, "run_config": config, "history": [],
                                    "step_losses": [], "best": {"epoch": 0, "metrics": None}}
    if not ckpt_path.is_file():
        raise CheckpointError(f"--resume: no checkpoint to resume from ({ckpt_path} not found)")
    saved, opt_state, state = load_checkpoint(ckpt_path)
    diff = _config_diff(state["run_config"], config)
    if diff:
        raise CheckpointError(f"--resume: {out_dir} was started with a different config ("
                              + "; ".join(diff) + "); use the same flags or a new --out")
    if set(saved) != set(params):
        raise CheckpointError(f"--resume: {ckpt_path} holds different tensors than the model: "
                              f"{sorted(set(saved) ^ set(params))[:5]}")
    wrong = [f"{k} {saved[k].shape} vs {params[k].shape}" for k in params if saved[k].shape != params[k].shape]
    if wrong:
        raise CheckpointError(f"--resume: {ckpt_path} has other shapes than the model: {wrong[:5]}")
    for name in params:
        params[name] = saved[name].astype(params[name].dtype, copy=False)
    try:
        check_state(opt_state, params)
    except ValueError as err:
        raise CheckpointError(f"--resume: {ckpt_path}: {err}") from None
    run = {k: state[k] for k in ("epochs_done", "run_config", "history", "step_losses", "best")}
    return opt_state, run


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
    write_json(out_dir / "metrics.json", {"history": run["history"], "metric": tcfg.metric,
                                          "best_epoch": run["best"]["epoch"],
                                          "best": run["best"]["metrics"],
                                          "step_losses": run["step_losses"]})
    plot_training_curves(run["history"], run["step_losses"], out_dir / "training_curves.png",
                         metric=tcfg.metric)
    return improved


class _NoBar:
    def update(self, n): pass
    def set_postfix(self, **kw): pass
    def close(self): pass


def progress_bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="batch", mininterval=0.5, leave=False)


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
    from minibert.model import classify_backward, classify_forward

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
    write_json(Path(out_dir) / "head.json", {"finetuned": True, "data": data_spec,
                                             "labels": list(labels), "dev_accuracy": dev_accuracy,
                                             "epoch": epoch})


def check_out_dir(out, *inputs) -> Path:
    """--out must be (or become) a directory and must not be one of the input model dirs."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MinibertError(f"--out {out}: exists and is not a directory")
    for d in inputs:
        if Path(d).exists() and out.exists() and out.resolve() == Path(d).resolve():
            raise MinibertError(f"--out {out}: must differ from the input model directory {d}")
    return out


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
    """minibert finetune: train a fresh classifier head and the encoder; OUT holds the best epoch."""
    from minibert.data import load_dataset
    from minibert.weights import load_model_and_tokenizer
    tcfg = TrainConfig.from_args(args)
    tcfg.validate()
    out = check_out_dir(args.out, args.model)
    params, config, tokenizer = load_model_and_tokenizer(args.model)
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
