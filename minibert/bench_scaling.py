"""`minibert bench --scaling`: how the cost per real token grows with sequence length and batch.

Shape legend: B batch, T tokens (padded length), N real tokens of a batch, L layers.

For every T in LENGTHS and B in BATCH_SIZES one padded batch (bench_tasks.random_batch: lengths
uniform in [T/4, T], one of them T long) is timed on the same model in both engines, alternating
run by run (bench_timing.time_interleaved): the inference forward (eval mode, no caches) and the
train step (forward with dropout + cross-entropy + backward + AdamW). Figures are microseconds per
REAL token (median time / N), so a reader sees where attention's T^2 takes over and what the
padding costs: minibert runs the forward and the train step on the real tokens only (the packed
paths of fast_model / fast_packed), PyTorch on the padded grid. The padding fraction is
1 - N / (B*T). Ratios minibert / PyTorch are paired (the
median of run-by-run ratios: both engines saw the same load).

Time budget: a cell's first timed round (one run of each engine) decides how many more it gets,
so small cells get `repeats` rounds and the big ones (T = 512, B = 32: seconds per train step)
the minimum of 3; the "runs" column says how many each cell had. Rows are reported as they
finish (`on_row`), so a reader sees the table grow. The model is the 2-layer student by default
(the teacher's widths, L = 2): the whole default grid takes a few minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics

import numpy as np

from minibert.bench_tasks import (minibert_forward_fn, minibert_train_fn, random_batch,
                                  teacher_config, torch_available, torch_forward_fn, torch_model,
                                  torch_train_fn)
from minibert.bench_timing import blas_info, time_interleaved
from minibert.errors import MinibertError
from minibert.model import BertConfig, init_params

LENGTHS = (16, 64, 128, 256, 512)
BATCH_SIZES = (1, 8, 32)
TASKS = ("forward", "train_step")
BUDGET_S = 4.0          # seconds per task and cell, judged from its first round
MIN_REPEATS = 3         # never fewer timed rounds than this (unless `repeats` is smaller)


def _loadavg() -> list[str]:
    with open("/proc/loadavg") as f:
        return f.read().split()[:3]


def check_grid(lengths, batch_sizes, repeats, layers, max_position) -> None:
    """MinibertError naming the option when the grid cannot be run."""
    if repeats < 1:
        raise MinibertError(f"bench --scaling: --repeats must be >= 1, got {repeats}")
    if layers < 1:
        raise MinibertError(f"bench --scaling: --layers must be >= 1, got {layers}")
    if not lengths or not batch_sizes:
        raise MinibertError("bench --scaling: --lengths and --batch-sizes need at least one value")
    if max(lengths) > max_position or min(lengths) < 2:
        raise MinibertError(f"bench --scaling: lengths must be in [2, {max_position}], "
                            f"got {list(lengths)}")
    if min(batch_sizes) < 1:
        raise MinibertError(f"bench --scaling: batch sizes must be >= 1, got {list(batch_sizes)}")


def time_cell(engines_of, T, B, rng, config, repeats, budget_s, min_repeats) -> dict:
    """Time one (T, B) cell. engines_of(ids, mask, tt, labels) -> {engine: {task: (fn, warmup)}}.
    Returns the row: seq_len, batch_size, real_tokens, padding_fraction, runs_<task>, and per
    engine and task <engine>_<task>_us_per_token, plus ratio_<task>_paired with two engines."""
    ids, mask, tt, labels = random_batch(rng, B, T, config.vocab_size)
    n = int(mask.sum())
    timed = time_interleaved(engines_of(ids, mask, tt, labels), repeats, lambda m: None,
                             budget_s=budget_s, min_repeats=min_repeats)
    row = {"seq_len": T, "batch_size": B, "real_tokens": n, "padding_fraction": 1.0 - n / (B * T)}
    for task in TASKS:
        row[f"runs_{task}"] = len(timed["minibert"][task + "_runs"])
    for name, res in timed.items():
        for task in TASKS:
            row[f"{name}_{task}_us_per_token"] = res[task + "_s"] / n * 1e6
    if "torch" in timed:
        for task in TASKS:
            row[f"ratio_{task}_paired"] = statistics.median(
                a / b for a, b in zip(timed["minibert"][task + "_runs"], timed["torch"][task + "_runs"]))
    return row


def run_scaling(lengths=LENGTHS, batch_sizes=BATCH_SIZES, repeats: int = 5, layers: int = 2,
                config: BertConfig | None = None, with_torch: bool = True,
                threads: int | None = None, budget_s: float | None = BUDGET_S,
                min_repeats: int = MIN_REPEATS, progress=None, on_row=None) -> dict:
    """Time the forward and the train step per real token on a grid of (T, B).

    Inputs: lengths, batch_sizes, repeats (most timed rounds per cell and task, after warm-up),
    layers (of the model timed), config (its widths; default the teacher's), with_torch,
    threads (PyTorch's thread count; default BLAS's), budget_s / min_repeats (fewer rounds for
    big cells, see the module docstring; budget_s None: always `repeats`), progress
    (callable(str) or None), on_row (callable(result so far, row) or None: called as each row
    finishes, e.g. to print it).
    Returns: {"layers", "hidden", "heads", "repeats", "budget_s", "torch", "loadavg_before" /
    "_after", "rows": [time_cell rows, in grid order]} (torch figures absent without torch).
    """
    say = progress or (lambda msg: None)
    config = config or teacher_config()
    check_grid(lengths, batch_sizes, repeats, layers, config.max_position)
    config = dataclasses.replace(config, num_layers=layers)
    use_torch = with_torch and torch_available()
    params = init_params(config, np.random.default_rng(0))
    train_params = {k: v.copy() for k, v in params.items()}
    if use_torch:
        import torch
        torch.set_num_threads(threads or blas_info()["threads"])
        torch.manual_seed(0)
        tmodel = torch_model(config, config.num_layers)

    def engines_of(ids, mask, tt, labels):
        engines = {"minibert": {
            "forward": (minibert_forward_fn(params, config, ids, mask, tt), 1),
            "train_step": (minibert_train_fn(train_params, config, ids, mask, tt, labels), 1)}}
        if use_torch:
            t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (ids, mask, tt, labels)]
            engines["torch"] = {"forward": (torch_forward_fn(tmodel, *t[:3]), 1),
                                "train_step": (torch_train_fn(tmodel, *t), 1)}
        return engines

    out = {"layers": config.num_layers, "hidden": config.hidden_size, "heads": config.num_heads,
           "repeats": repeats, "min_repeats": min(min_repeats, repeats), "budget_s": budget_s,
           "torch": use_torch, "loadavg_before": _loadavg(), "rows": []}
    rng = np.random.default_rng(0)
    for T in lengths:
        for B in batch_sizes:
            say(f"  T={T} B={B} ...")
            row = time_cell(engines_of, T, B, rng, config, repeats, budget_s, min_repeats)
            gc.collect()                          # this cell's caches before the next cell
            out["rows"].append(row)
            if on_row is not None:
                on_row(out, row)
    out["loadavg_after"] = _loadavg()
    return out


# ----------------------------------------------------------------------------------------------
# Output: a markdown table, header / rows / footer separately so rows can print as they finish


def _cell(row, key, fmt="{:.1f}"):
    return fmt.format(row[key]) if key in row else "-"


def scaling_header(res: dict) -> list[str]:
    """The title and column lines of the table (everything known before the first row)."""
    budget = (f"{res['min_repeats']}-{res['repeats']} timed runs per cell (fewer for big cells, "
              f"budget {res['budget_s']:g} s per task)" if res["budget_s"] is not None
              else f"{res['repeats']} timed runs per cell")
    return [f"**cost per real token, {res['layers']}-layer model (hidden {res['hidden']}, "
            f"{res['heads']} heads), medians of {budget}; load before "
            f"{' '.join(res['loadavg_before'])}**", "",
            "| T | B | real tokens | padding | runs fwd/step | minibert fwd us/tok | "
            "torch fwd us/tok | fwd ratio (paired) | minibert step us/tok | torch step us/tok | "
            "step ratio (paired) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]


def format_row(r: dict) -> str:
    """One table line for one (T, B) cell."""
    return (f"| {r['seq_len']} | {r['batch_size']} | {r['real_tokens']} | "
            f"{r['padding_fraction']:.0%} | {r['runs_forward']}/{r['runs_train_step']} | "
            f"{_cell(r, 'minibert_forward_us_per_token')} | {_cell(r, 'torch_forward_us_per_token')} | "
            f"{_cell(r, 'ratio_forward_paired', '{:.2f}')} | "
            f"{_cell(r, 'minibert_train_step_us_per_token')} | "
            f"{_cell(r, 'torch_train_step_us_per_token')} | "
            f"{_cell(r, 'ratio_train_step_paired', '{:.2f}')} |")


def scaling_footer(res: dict) -> list[str]:
    """What is known only at the end: the load after, and whether PyTorch was timed."""
    lines = ["", f"load after: {' '.join(res['loadavg_after'])}; ratios < 1: minibert is faster"]
    if not res["torch"]:
        lines.append("(PyTorch not timed: --no-torch, or torch/transformers not installed)")
    return lines


def format_scaling(res: dict) -> str:
    """The whole markdown table of a finished run_scaling result."""
    return "\n".join(scaling_header(res) + [format_row(r) for r in res["rows"]]
                     + scaling_footer(res))


def cli_bench_scaling(args) -> int:
    """`minibert bench --scaling [--lengths 16,64] [--batch-sizes 1,8] [--layers L] [--repeats N]
    [--no-torch] [--json]`: rows print as each cell finishes (JSON: all at the end)."""
    import json
    import sys
    shown = []

    def show(res, row):
        if not shown:
            print("\n".join(scaling_header(res)), flush=True)
            shown.append(True)
        print(format_row(row), flush=True)

    res = run_scaling(lengths=args.lengths or LENGTHS, batch_sizes=args.batch_sizes or BATCH_SIZES,
                      repeats=args.repeats, layers=args.layers or 2, with_torch=not args.no_torch,
                      progress=None if args.json else (lambda m: print(m, file=sys.stderr, flush=True)),
                      on_row=None if args.json else show)
    print(json.dumps(res, indent=2) if args.json else "\n".join(scaling_footer(res)))
    return 0
