"""`minibert bench --scaling`: how the cost per real token grows with sequence length and batch.

Shape legend: B batch, T tokens (padded length), N real tokens of a batch, L layers.

For every T in LENGTHS and B in BATCH_SIZES one padded batch (bench_tasks.random_batch: lengths
uniform in [T/4, T], one of them T long) is timed on the same model in both engines, alternating
run by run (bench.time_interleaved): the inference forward (eval mode, no caches) and the train
step (forward with dropout + cross-entropy + backward + AdamW). Figures are microseconds per REAL
token (median time / N), so a reader sees where attention's T^2 takes over and what the padding
costs: minibert's inference forward skips the padding, its train step and PyTorch do not. The
padding fraction is 1 - N / (B*T). Ratios minibert / PyTorch are paired (the median of run-by-run
ratios: both engines saw the same load). The model is the 2-layer student by default (the
teacher's widths, L = 2), so the whole table takes a few minutes on 2 cores.
"""

from __future__ import annotations

import dataclasses
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


def run_scaling(lengths=LENGTHS, batch_sizes=BATCH_SIZES, repeats: int = 3, layers: int = 2,
                config: BertConfig | None = None, with_torch: bool = True,
                threads: int | None = None, progress=None) -> dict:
    """Time the forward and the train step per real token on a grid of (T, B).

    Inputs: lengths, batch_sizes, repeats (timed runs per cell after warm-up), layers (of the
    model timed), config (its widths; default the teacher's), with_torch, threads (PyTorch's
    thread count; default BLAS's), progress (callable(str) or None).
    Returns: {"layers", "repeats", "loadavg_before"/"_after", "rows": [{"seq_len", "batch_size",
    "real_tokens", "padding_fraction", "minibert_forward_us_per_token", ..., "ratio_forward_paired",
    "ratio_train_step_paired"}]} (torch figures absent without torch).
    """
    say = progress or (lambda msg: None)
    config = dataclasses.replace(config or teacher_config(), num_layers=layers)
    if repeats < 1 or not lengths or not batch_sizes:
        raise MinibertError("bench --scaling: need repeats >= 1 and some lengths and batch sizes")
    if max(lengths) > config.max_position or min(lengths) < 2:
        raise MinibertError(f"bench --scaling: lengths must be in [2, {config.max_position}], "
                            f"got {list(lengths)}")
    use_torch = with_torch and torch_available()
    params = init_params(config, np.random.default_rng(0))
    train_params = {k: v.copy() for k, v in params.items()}
    if use_torch:
        import torch
        torch.set_num_threads(threads or blas_info()["threads"])
        torch.manual_seed(0)
        tmodel = torch_model(config, config.num_layers)
    with open("/proc/loadavg") as f:
        out = {"layers": config.num_layers, "hidden": config.hidden_size, "repeats": repeats,
               "torch": use_torch, "loadavg_before": f.read().split()[:3], "rows": []}
    rng = np.random.default_rng(0)
    for T in lengths:
        for B in batch_sizes:
            ids, mask, tt, labels = random_batch(rng, B, T, config.vocab_size)
            n = int(mask.sum())
            say(f"  T={T} B={B} ({n} real tokens) ...")
            engines = {"minibert": {
                "forward": (minibert_forward_fn(params, config, ids, mask, tt), 1),
                "train_step": (minibert_train_fn(train_params, config, ids, mask, tt, labels), 1)}}
            if use_torch:
                t = [torch.from_numpy(np.ascontiguousarray(a)) for a in (ids, mask, tt, labels)]
                engines["torch"] = {"forward": (torch_forward_fn(tmodel, *t[:3]), 1),
                                    "train_step": (torch_train_fn(tmodel, *t), 1)}
            timed = time_interleaved(engines, repeats, lambda m: None)
            row = {"seq_len": T, "batch_size": B, "real_tokens": n,
                   "padding_fraction": 1.0 - n / (B * T)}
            for name, res in timed.items():
                for task in TASKS:
                    row[f"{name}_{task}_us_per_token"] = res[task + "_s"] / n * 1e6
            if use_torch:
                for task in TASKS:
                    row[f"ratio_{task}_paired"] = statistics.median(
                        a / b for a, b in zip(timed["minibert"][task + "_runs"],
                                              timed["torch"][task + "_runs"]))
            out["rows"].append(row)
    with open("/proc/loadavg") as f:
        out["loadavg_after"] = f.read().split()[:3]
    return out


def _cell(row, key, fmt="{:.1f}"):
    return fmt.format(row[key]) if key in row else "-"


def format_scaling(res: dict) -> str:
    """A markdown table of run_scaling's rows: one line per (T, B)."""
    lines = [f"**cost per real token, {res['layers']}-layer model (hidden {res['hidden']}), "
             f"median of {res['repeats']} runs; load {' '.join(res['loadavg_before'])} -> "
             f"{' '.join(res['loadavg_after'])}**", "",
             "| T | B | real tokens | padding | minibert fwd us/tok | torch fwd us/tok | "
             "fwd ratio (paired) | minibert step us/tok | torch step us/tok | step ratio (paired) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['seq_len']} | {r['batch_size']} | {r['real_tokens']} | "
            f"{r['padding_fraction']:.0%} | {_cell(r, 'minibert_forward_us_per_token')} | "
            f"{_cell(r, 'torch_forward_us_per_token')} | "
            f"{_cell(r, 'ratio_forward_paired', '{:.2f}')} | "
            f"{_cell(r, 'minibert_train_step_us_per_token')} | "
            f"{_cell(r, 'torch_train_step_us_per_token')} | "
            f"{_cell(r, 'ratio_train_step_paired', '{:.2f}')} |")
    if not res["torch"]:
        lines += ["", "(PyTorch not timed: --no-torch, or torch/transformers not installed)"]
    return "\n".join(lines)
