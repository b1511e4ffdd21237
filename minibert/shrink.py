"""Shrinking a trained model: `minibert quantize` and `minibert prune-heads` (workflows).

The arithmetic lives in quantize.py (the int8 format) and prune.py (head gates, importance,
removing heads); this module reads and writes model directories and runs the commands.

A quantized model directory is an ordinary model directory whose model.safetensors holds int8
weights with float32 scales (quantize.SCALE_SUFFIX) and a `quantization` record in its metadata
(also written as quantization.json); its config.json names the activation mode. weights.load_model
dequantizes on load, so every command reads it with no extra option.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minibert.errors import CheckpointError, DataError, MinibertError

QUANT_RECORD = "quantization.json"
PRUNE_RECORD = "prune.json"


def read_quantization(model_dir) -> dict | None:
    """The quantization record of a model directory's model.safetensors (None for a float model).
    Looks at the file's metadata and dtypes only (no tensor is loaded)."""
    from safetensors import safe_open

    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
            if "quantization" in meta:
                return json.loads(meta["quantization"])
            from minibert.quantize import SCALE_SUFFIX
            if any(k.endswith(SCALE_SUFFIX) for k in f.keys()):
                return {"scheme": "int8 (no record)"}
    except Exception as err:  # safetensors raises its own error type for corrupt files
        raise CheckpointError(f"{path} is not readable safetensors ({err})") from None
    return None


def _copy_side_files(src, out: Path) -> None:
    """Tokenizer files and head.json from the input model directory (the outputs must be usable
    by every command, and `distill --teacher` reads head.json)."""
    from minibert.files import atomic_write_bytes
    from minibert.weights import TOKENIZER_FILES
    for name in (*TOKENIZER_FILES, "head.json"):
        if (Path(src) / name).is_file() and Path(src).resolve() != out.resolve():
            atomic_write_bytes(out / name, (Path(src) / name).read_bytes())


def save_quantized(out_dir, params: dict, config, per_channel: bool = True,
                   tokenizer_dir=None) -> Path:
    """Write a quantized model directory: model.safetensors (int8 weights + float32 scales),
    config.json (with its activation mode), quantization.json, each atomically.
    Inputs: float params and their config (config.activation_quant / activation_scales set as
    wanted), per_channel, tokenizer_dir (tokenizer files and head.json copied from it)."""
    import safetensors.numpy

    from minibert.files import atomic_write, atomic_write_json
    from minibert.quantize import metadata_for, quantization_record, quantize_params
    from minibert.weights import CONFIG_FILE, MODEL_FILE, _check_params

    out = Path(out_dir)
    _check_params(params, config, "save_quantized")
    stored = quantize_params(params, per_channel=per_channel)
    record = quantization_record(per_channel, config.activation_quant)
    atomic_write(out / MODEL_FILE, lambda tmp: safetensors.numpy.save_file(
        stored, str(tmp), metadata=metadata_for(record)))
    atomic_write_json(out / CONFIG_FILE, config.to_dict())
    atomic_write_json(out / QUANT_RECORD, record)
    if tokenizer_dir is not None:
        _copy_side_files(tokenizer_dir, out)
    return out


def _calibration_batches(config, tokenizer, spec: str, rows: int, max_length: int):
    """Batches of up to `rows` training examples of data spec `spec`, for calibrate."""
    from minibert.data import load_dataset
    from minibert.batches import encode_examples, make_batch, sorted_batches

    data = load_dataset(spec)
    examples = data.train[:rows]
    if not examples:
        raise DataError(f"--calibrate {spec}: the training split has no rows to calibrate on")
    split = encode_examples(tokenizer, examples, max_length)
    return [make_batch(split, idx) for idx in sorted_batches(split.lengths, 32)]


def quantize_model(model_dir, out_dir, per_channel: bool = True, activations: str = "none",
                   calibrate_spec: str | None = None, calibrate_rows: int = 256,
                   max_length: int = 64) -> dict:
    """Quantize the float model in model_dir into out_dir. activations: "none" (weight-only),
    "dynamic" (per-row int8 at run time) or "static" (needs calibrate_spec: one scale per
    linear input measured on its training split). Returns the quantization record plus sizes.
    MinibertError if model_dir is already quantized."""
    import dataclasses

    from minibert.quantize import ACTIVATION_MODES, calibrate
    from minibert.weights import MODEL_FILE, load_model_and_tokenizer

    if activations not in ACTIVATION_MODES:
        raise MinibertError(f"--activations: expected one of {ACTIVATION_MODES}, got {activations!r}")
    if (activations == "static") != (calibrate_spec is not None):
        raise MinibertError("static activation quantization needs --calibrate SPEC, and --calibrate "
                            "means static activations (not --activations dynamic)")
    already = read_quantization(model_dir)
    if already is not None:
        raise MinibertError(f"{model_dir} is already quantized ({already.get('scheme')}, weights "
                            f"{already.get('weights', '?')}); quantizing again would round twice: "
                            f"quantize the float model it came from")
    params, config, tokenizer = load_model_and_tokenizer(model_dir)
    scales = None
    if activations == "static":
        if calibrate_rows < 1:
            raise DataError(f"--calibrate-rows: expected a positive number of rows, got {calibrate_rows}")
        batches = _calibration_batches(config, tokenizer, calibrate_spec, calibrate_rows, max_length)
        scales = calibrate(params, config, batches)
    config = dataclasses.replace(config, activation_quant=activations, activation_scales=scales)
    save_quantized(out_dir, params, config, per_channel, tokenizer_dir=model_dir)
    before = (Path(model_dir) / MODEL_FILE).stat().st_size
    after = (Path(out_dir) / MODEL_FILE).stat().st_size
    return {"per_channel": per_channel, "activations": activations, "bytes_before": before,
            "bytes_after": after, "ratio": after / before}


def cli_quantize(args) -> int:
    """minibert quantize: int8 weights (+ optional activation mode) into a new model folder."""
    from minibert.outdir import claim_dir
    activations = "static" if args.calibrate else args.activations
    if args.calibrate and args.activations != "none":
        raise MinibertError(f"--calibrate means static activations; it cannot go with "
                            f"--activations {args.activations}")
    record = {"model": str(args.model), "per_tensor": bool(args.per_tensor), "activations": activations,
              "calibrate": args.calibrate, "calibrate_rows": args.calibrate_rows}
    with claim_dir(args.out, "quantize", overwrite=args.overwrite, inputs=[args.model],
                   record=record) as out:
        res = quantize_model(args.model, out, per_channel=not args.per_tensor, activations=activations,
                             calibrate_spec=args.calibrate, calibrate_rows=args.calibrate_rows,
                             max_length=args.max_length)
    print(f"quantized {args.model} -> {out}: int8 weights "
          f"{'per tensor' if args.per_tensor else 'per output channel'}, activations {activations}; "
          f"model.safetensors {res['bytes_before'] / 2**20:.2f} MB -> {res['bytes_after'] / 2**20:.2f} MB "
          f"({res['ratio']:.1%})")
    print("(every command loads it as float32: NumPy has no fast int8 matmul, so the weights are "
          "dequantized once on load)")
    return 0


# ----------------------------------------------------------------------------------------------
# prune-heads


def prune_model(params: dict, config, train_split, keep=None, fraction=None, sample: int = 512,
                batch_size: int = 32, seed: int = 0):
    """Score every head on up to `sample` training examples and remove the least important.
    Returns (new params, new config, record dict: importance, removed, heads per layer)."""
    from minibert.prune import choose_heads, head_importance, heads_per_layer, remaining_heads, remove_heads
    from minibert.batches import make_batch

    n = len(train_split.labels)
    if n == 0:
        raise DataError("prune-heads: the data has no training rows to score the heads on")
    rng = np.random.default_rng([seed, 31])
    pick = np.sort(rng.permutation(n)[:min(sample, n)])
    batches = [make_batch(train_split, pick[i:i + batch_size]) for i in range(0, len(pick), batch_size)]
    imp = head_importance(params, config, batches, progress=False)
    remove = choose_heads(imp, keep=keep, fraction=fraction)
    original = {i: remaining_heads(config, i) for i in range(config.num_layers)}
    new_params, new_config = remove_heads(params, config, remove)
    record = {"importance": [s.tolist() for s in imp], "examples_scored": int(len(pick)),
              "removed": {str(i): [original[i][h] for h in hs] for i, hs in remove.items()},
              "heads_per_layer_before": heads_per_layer(config),
              "heads_per_layer": heads_per_layer(new_config),
              "pruned_heads": new_config.pruned_heads}
    return new_params, new_config, record


def cli_prune_heads(args) -> int:
    """minibert prune-heads: importance-ranked head removal, optionally re-distilled."""
    from minibert.data import load_dataset
    from minibert.distill import label_map
    from minibert.evaluate import predict_and_score
    from minibert.outdir import claim_dir
    from minibert.batches import encode_examples
    from minibert.files import atomic_write_json as write_json
    from minibert.weights import load_model_and_tokenizer, save_model

    params, config, tokenizer = load_model_and_tokenizer(args.model)
    if config.num_labels < 1:
        raise MinibertError(f"{args.model} has no classifier head: head importance needs a task loss "
                            f"(fine-tune or distil it first)")
    if args.keep is None and args.fraction is None:
        raise MinibertError("give --keep K (heads kept in total) or --fraction F (share of heads removed)")
    data = load_dataset(args.data, text_column=args.text_column, label_column=args.label_column,
                        text_pair_column=args.text_pair_column, limit=args.limit, seed=args.seed)
    lmap = label_map(data.labels, config)
    splits = {}
    for name, examples in (("train", data.train), ("dev", data.dev)):
        if examples:
            s = encode_examples(tokenizer, examples, args.max_length)
            splits[name] = s._replace(labels=lmap[s.labels])
    if "train" not in splits:
        raise DataError(f"--data {args.data}: the training split is empty (head importance reads it)")
    run = {"model": str(args.model), "data": args.data, "limit": args.limit, "keep": args.keep,
           "fraction": args.fraction, "sample": args.sample, "seed": args.seed, "teacher": args.teacher}
    with claim_dir(args.out, "prune-heads", overwrite=args.overwrite, inputs=[args.model],
                   record=run) as out:
        new_params, new_config, record = prune_model(params, config, splits["train"], args.keep,
                                                     args.fraction, args.sample, seed=args.seed)
        if "dev" in splits:
            record["dev_accuracy_before"] = predict_and_score(params, config, splits["dev"])[1]["accuracy"]
            record["dev_accuracy_after"] = predict_and_score(new_params, new_config, splits["dev"])[1]["accuracy"]
        kept = sum(record["heads_per_layer"])
        print(f"head importance on {record['examples_scored']} training examples; kept {kept} of "
              f"{sum(record['heads_per_layer_before'])} heads, per layer {record['heads_per_layer']}")
        for i, hs in record["removed"].items():
            print(f"  layer {i}: removed heads {hs}")
        if "dev_accuracy_after" in record:
            print(f"dev accuracy {record['dev_accuracy_before']:.4f} -> {record['dev_accuracy_after']:.4f} "
                  f"(no re-training)")
        if args.teacher:
            new_params, record["redistill"] = redistill(new_params, new_config, args, splits, out)
        save_model(out, new_params, new_config, tokenizer_dir=args.model)
        _copy_side_files(args.model, out)
        write_json(out / PRUNE_RECORD, record)
    print(f"pruned model written to {out}")
    return 0


def redistill(params: dict, config, args, splits: dict, out: Path):
    """A short distillation of the pruned model from args.teacher (KD on logits: alpha, T), fit's
    best dev epoch kept. Returns (params of the best epoch, record)."""
    from minibert.distill import check_teacher, make_distill_step
    from minibert.objective import DistillSettings
    from minibert.teacher_cache import TeacherCache
    from minibert.batches import train_batches
    from minibert.checkpoints import CHECKPOINT_NAME
    from minibert.train import TrainConfig, fit, make_eval_fn
    from minibert.weights import load_model

    if "dev" not in splits:
        raise DataError(f"--data {args.data}: re-distillation picks its best epoch on dev, which is empty")
    tparams, tconfig = load_model(args.teacher)
    check_teacher(args.teacher, tconfig)
    if tconfig.labels != config.labels:
        raise MinibertError(f"--teacher {args.teacher}: labels {tconfig.labels} differ from the "
                            f"pruned model's {config.labels}")
    tcfg = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=32, max_length=args.max_length,
                       seed=args.seed)
    tcfg.validate()
    settings = DistillSettings(args.alpha, args.temperature)
    teacher = TeacherCache(tparams, tconfig, splits["train"], settings, progress=True)
    best = {}

    def on_best(p, epoch, metrics):
        best.update(params={k: v.copy() for k, v in p.items()}, epoch=epoch, dev=metrics["accuracy"])

    res = fit({k: v.copy() for k, v in params.items()}, make_distill_step(config, teacher, settings),
              lambda e, r: train_batches(splits["train"], tcfg.batch_size, r),
              make_eval_fn(config, splits["dev"], tcfg.batch_size), out / "redistill", tcfg,
              run_config={"command": "prune-heads --teacher", "teacher": str(args.teacher)},
              on_best=on_best)
    (out / "redistill" / CHECKPOINT_NAME).unlink(missing_ok=True)   # 3x the model; prune-heads has no --resume
    print(f"re-distilled {args.epochs} epoch(s): best dev accuracy {best['dev']:.4f} (epoch {best['epoch']})")
    return best["params"], {"teacher": str(args.teacher), "epochs": args.epochs, "lr": args.lr,
                            "best_epoch": res.best_epoch, "dev_accuracy": best["dev"]}
