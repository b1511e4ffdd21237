"""`minibert bench --model DIR [--model DIR ...]`: the inference speed of real model folders.

Shape legend: B batch, T tokens (padded length), N real tokens, H hidden, L layers.

`minibert bench` alone times the built-in teacher / student shapes on random weights. This times
the model folders it is given, as every command loads them (weights.load_model: a `minibert
quantize` folder is dequantized to float32 on load; a `minibert prune-heads` folder has smaller
attention matrices and its heads per layer in config.json), on their real config:

    forward, batch B     the inference forward (+ classifier when the model has one) of one padded
                         batch (bench_tasks.random_batch, lengths varied, the longest T), median s,
                         real tokens / s, GFLOP/s, and its fraction of the float32 matmul roofline
    latency, batch 1     one sequence at its real length, median ms (>= 10 runs)

FLOPs count the matmuls this forward really runs: real tokens only, and in each layer the heads
it really has (config.heads_in_layer(i); bench_tasks.forward_flops). Several folders are timed in
the same rounds, alternating run by run, and each gets its paired ratio to the FIRST folder (the
median of run-by-run ratios), so "int8 dynamic vs float32" or "pruned vs not" is one command.
What int8 costs or saves here: NumPy has no fast int8 matmul, so the weights are float32 once
loaded (weight-only int8 runs at float32 speed); dynamic / static activation modes add the
rounding of every linear's input (elementwise work, not counted as FLOPs).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np

from minibert.bench_tasks import forward_flops, random_batch
from minibert.bench_timing import roofline_fn, time_interleaved
from minibert.errors import MinibertError


def describe(model_dir, config) -> dict:
    """What a model folder is: weights (float32 / the int8 scheme), activation mode, heads per
    layer, pruned heads, file size of model.safetensors in bytes."""
    from minibert.shrink import read_quantization
    q = read_quantization(model_dir)
    if q is None:
        weights = "float32"
    else:                                    # "per output channel (embeddings: per row)" -> "per channel"
        scheme = q.get("weights", q.get("scheme", ""))
        weights = "int8 per channel" if scheme.startswith("per output channel") else f"int8 {scheme}"
    heads = [config.heads_in_layer(i) for i in range(config.num_layers)]
    return {"weights": weights, "activations": config.activation_quant, "heads_per_layer": heads,
            "pruned_heads": config.num_heads * config.num_layers - sum(heads),
            "file_bytes": (Path(model_dir) / "model.safetensors").stat().st_size}


def forward_fn(params, config, ids, mask, tt):
    """A closure: the inference forward (eval mode, no caches); the classifier too when the model
    has one (num_labels > 0), else the encoder only (a teacher or an embedding model)."""
    from minibert.fast_model import bert_forward, classify_forward

    if config.num_labels > 0:
        return lambda: classify_forward(params, config, ids, mask, tt, rng=None, keep_cache=False)[0]
    return lambda: bert_forward(params, config, ids, mask, tt, rng=None, keep_cache=False)[0].last


def run_model_bench(model_dirs, batch_size: int = 32, seq_len: int = 64, repeats: int = 5,
                    roofline_n: int = 2048, progress=None) -> dict:
    """Time the inference forward (batch `batch_size`) and batch-1 latency of model folders.

    Inputs: model_dirs (one or more folders), batch_size B, seq_len T (padded length; <= every
    model's max_position), repeats (timed rounds; latency >= 10), roofline_n, progress.
    Returns: {"shapes": {...}, "roofline_gflops", "loadavg_before"/"_after", "models": [{"path",
    "weights", "activations", "heads_per_layer", "pruned_heads", "file_bytes", "params",
    "forward_s", "forward_tokens_per_s", "forward_flops", "forward_gflops",
    "forward_roofline_fraction_paired", "latency_ms", "ratio_forward_paired",
    "ratio_latency_paired"}]} (ratios to the first folder; 1.0 for the first itself).
    """
    from minibert.weights import load_model

    say = progress or (lambda msg: None)
    dirs = [str(d) for d in model_dirs]
    if not dirs:
        raise MinibertError("bench --model: give at least one model folder")
    if len(set(dirs)) != len(dirs):
        raise MinibertError(f"bench --model: a folder is given twice: {dirs}")
    if batch_size < 1 or seq_len < 2 or repeats < 1:
        raise MinibertError(f"bench --model: need --batch-size >= 1, --seq-len >= 2 and "
                            f"--repeats >= 1, got {batch_size}, {seq_len}, {repeats}")
    models = []
    for d in dirs:
        params, config = load_model(d)
        if seq_len > config.max_position:
            raise MinibertError(f"bench --model: --seq-len {seq_len} is longer than {d}'s "
                                f"position table ({config.max_position})")
        models.append((d, params, config))
    vocab = min(c.vocab_size for _, _, c in models)
    ids, mask, tt, _ = random_batch(np.random.default_rng(0), batch_size, seq_len, vocab)
    lengths = mask.sum(axis=1)                                          # (B,)
    n1 = int(lengths[0])
    one = (ids[:1, :n1], mask[:1, :n1], tt[:1, :n1])                    # batch 1, unpadded
    keys = [f"model {i}" for i in range(len(models))]                  # engine names: never "roofline"
    engines = {k: {"forward": (forward_fn(p, c, ids, mask, tt), 1),
                   "latency": (forward_fn(p, c, *one), 2)} for k, (_, p, c) in zip(keys, models)}
    with open("/proc/loadavg") as f:
        out = {"shapes": {"batch_size": batch_size, "seq_len": seq_len,
                          "real_tokens": int(lengths.sum()), "lengths": lengths.tolist()},
               "repeats": repeats, "roofline_n": roofline_n, "loadavg_before": f.read().split()[:3]}
    say(f"timing {len(dirs)} model(s), alternating run by run ...")
    timed = time_interleaved(engines, repeats, say, {"forward": {"roofline": roofline_fn(roofline_n)}})
    roof = timed.pop("roofline")["forward_runs"]
    out["roofline_gflops"] = 2.0 * roofline_n ** 3 / statistics.median(roof) / 1e9
    first = timed[keys[0]]
    out["models"] = []
    for k, (d, params, config) in zip(keys, models):
        t = timed[k]
        flops = forward_flops(config, batch_size, seq_len, lengths)
        out["models"].append({
            "path": d, **describe(d, config), "params": int(sum(v.size for v in params.values())),
            "forward_s": t["forward_s"], "forward_tokens_per_s": out["shapes"]["real_tokens"] / t["forward_s"],
            "forward_flops": flops, "forward_gflops": flops / t["forward_s"] / 1e9,
            "forward_roofline_fraction_paired": statistics.median(
                r / s for r, s in zip(roof, t["forward_runs"])) * flops / (2.0 * roofline_n ** 3),
            "latency_ms": 1e3 * t["latency_s"],
            "ratio_forward_paired": statistics.median(
                a / b for a, b in zip(t["forward_runs"], first["forward_runs"])),
            "ratio_latency_paired": statistics.median(
                a / b for a, b in zip(t["latency_runs"], first["latency_runs"]))})
    with open("/proc/loadavg") as f:
        out["loadavg_after"] = f.read().split()[:3]
    return out


def format_model_bench(res: dict) -> str:
    """A markdown table: one row per model folder."""
    s = res["shapes"]
    lines = [f"**inference of model folders: forward on B={s['batch_size']} x T={s['seq_len']} "
             f"({s['real_tokens']} real tokens), latency on one sequence of {s['lengths'][0]} "
             f"tokens; medians of {res['repeats']} runs (latency >= 10); matmul roofline "
             f"{res['roofline_gflops']:.1f} GFLOP/s; load {' '.join(res['loadavg_before'])} -> "
             f"{' '.join(res['loadavg_after'])}**", "",
             "| model | weights | activations | heads per layer | params | file MB | forward s | "
             "tokens/s | GFLOP | roofline | latency ms | forward / first (paired) | "
             "latency / first (paired) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for m in res["models"]:
        lines.append(
            f"| {m['path']} | {m['weights']} | {m['activations']} | "
            f"{','.join(map(str, m['heads_per_layer']))} | {m['params']:,} | "
            f"{m['file_bytes'] / 2**20:.2f} | {m['forward_s']:.4f} | {m['forward_tokens_per_s']:,.0f} | "
            f"{m['forward_flops'] / 1e9:.3f} | {m['forward_roofline_fraction_paired']:.0%} | "
            f"{m['latency_ms']:.2f} | {m['ratio_forward_paired']:.2f} | {m['ratio_latency_paired']:.2f} |")
    lines += ["", "(GFLOP: the matmuls this forward runs, real tokens and the heads each layer has; "
                  "int8 weights are float32 once loaded: NumPy has no fast int8 matmul)"]
    return "\n".join(lines)


def cli_bench_model(args) -> int:
    """`minibert bench --model DIR [--model DIR ...] [--batch-size B] [--seq-len T] [--repeats N]
    [--json]`."""
    import json
    import sys
    res = run_model_bench(args.model, batch_size=args.batch_size, seq_len=args.seq_len,
                          repeats=args.repeats,
                          progress=None if args.json else (lambda m: print(m, file=sys.stderr, flush=True)))
    print(json.dumps(res, indent=2) if args.json else format_model_bench(res))
    return 0
