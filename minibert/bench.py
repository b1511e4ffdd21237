"""`minibert bench`: how fast is the NumPy engine, and how does it compare with PyTorch?

Shape legend
    B batch   T tokens (padded length)   H hidden   nh heads   hs head size   I intermediate
    V vocab   L layers   C classes   N = B*T rows of every token-wise matmul

One run measures, on the teacher's shapes (all-MiniLM-L6-v2: L=6, H=384, nh=12, I=1536,
V=30522; random weights from model.init_params) and one padded batch (B=32, T=64, lengths varied):

    teacher forward        classify_forward, eval mode, keep_cache=False (inference)
    teacher train step     forward with dropout + cross-entropy + backward + AdamW over ALL
                           parameters (the 30522x384 word table included: its gradient is dense)
    student train step     the same with L=2
    batch-1 latency        forward of one sequence (its real length), teacher and student
    tokens per second      real (non-padding) tokens / median time
    peak RSS               of a fresh subprocess that builds the teacher and runs train steps
                           (VmHWM in /proc/self/status: the high-water mark of the whole process)
    roofline               GFLOP/s of one large float32 a @ b on this machine (timed in the same
                           rounds as the teacher forwards), and the fraction of it the teacher
                           forward reaches (its FLOPs counted analytically)

and, when torch and transformers are installed (imported only in bench_tasks, lazily), the same for
transformers' BertForSequenceClassification with the same config and thread count, in the same
process, plus the ratio minibert / PyTorch for each figure (time ratios < 1: minibert is faster).
Every time is the median of `repeats` runs after warm-up; the machine may be shared, so compare
ratios measured in one run: the two engines alternate run by run, so load from the rest of the
machine falls on both alike ("paired" figures are medians of run-by-run ratios).

Where the time goes (measured 2026-11-26, 2 cores; the teacher inference forward above, ~210 ms):
the four token-wise matmuls ~68% (QKV, output projection, FFN in and out, each at 180-195
GFLOP/s, near the roofline), the exact-erf GELU ~16%, the packed attention core (per-sequence
q k^T, softmax, probs @ v) ~9%, LayerNorm ~4%, the rest ~2%. What it took to get there, in order
of effect: running every token-wise layer on the real tokens only (-30%); keeping freed memory in
the process instead of faulting it back in page by page (minibert/allocator.py: ~11,000 faults
and ~35 ms of system time per forward before, -10%); attention per packed sequence instead of
the padded (B,nh,T,T) grid (-10%); one softmax shift per sequence (-2%); the inference GELU
keeping Phi(x) in the CPU cache (-2%). NumPy's elementwise work runs on one core while
OpenBLAS's workers keep spinning on the other for a while after each matmul
(OPENBLAS_THREAD_TIMEOUT, default 2^28 cycles), so splitting ufuncs across Python threads gained
nothing right after a matmul (measured: GELU 6.8 ms on one thread, 4.7 ms on two when no matmul
ran just before, 6.9 ms when one did); tried and reverted.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys

import numpy as np

from minibert.allocator import is_tuned
from minibert.bench_tasks import (forward_flops, minibert_tasks, minibert_train_fn, random_batch,
                                  teacher_config, torch_available, torch_model, torch_tasks,
                                  torch_train_fn)
from minibert.bench_timing import blas_info, roofline_fn, time_interleaved  # noqa: F401
from minibert.errors import MinibertError
from minibert.model import BertConfig, init_params


# ----------------------------------------------------------------------------------------------
# Peak memory: a fresh subprocess per engine, so nothing else this process allocated counts


def _status_mb(field) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MiB.

    Not resource.getrusage().ru_maxrss: Linux carries ru_maxrss over fork + exec, so a child
    started from a big parent would report the parent's peak. VmHWM belongs to the new process.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024                     # kB -> MiB
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_child(engine, config_dict, batch_size, seq_len, steps=3):
    """Entry point of the measuring subprocess: build the model, run `steps` train steps, print JSON.

    Reports peak_rss_mb (VmHWM: the process' high-water mark, everything included: Python,
    the libraries, parameters, gradients, AdamW moments, activations) and before_mb, the RSS just
    before the first step (after imports and parameters; minibert's AdamW state is in place by
    then, torch.optim.AdamW allocates its state in the first step, so compare the peaks only).
    """
    config = BertConfig.from_dict(config_dict)
    batch = random_batch(np.random.default_rng(0), batch_size, seq_len, config.vocab_size)
    if engine == "minibert":
        params = init_params(config, np.random.default_rng(0))
        run = minibert_train_fn(params, config, *batch)           # allocates the AdamW state
    else:
        import torch
        torch.set_num_threads(max(1, blas_info()["threads"]))
        model = torch_model(config, config.num_layers)
        run = torch_train_fn(model, *(torch.from_numpy(np.ascontiguousarray(a)) for a in batch))
    before = _status_mb("VmRSS")
    for _ in range(steps):
        run()
    print(json.dumps({"peak_rss_mb": _status_mb("VmHWM"), "before_mb": before}))


def measure_peak_rss(engine, config, batch_size, seq_len, steps=3):
    """Run rss_child in a fresh Python. Returns its dict, or {"error": message} if it failed."""
    code = ("import json, sys\n"
            "from minibert.allocator import keep_freed_memory\n"
            "from minibert.bench import rss_child\n"
            "if sys.argv[6] == '1':\n"
            "    keep_freed_memory()\n"                         # the same malloc policy as this process
            "rss_child(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), "
            "int(sys.argv[5]))\n")
    cmd = [sys.executable, "-c", code, engine, json.dumps(config.to_dict()), str(batch_size),
           str(seq_len), str(steps), "1" if is_tuned() else "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------
# The whole benchmark


def run_bench(batch_size=32, seq_len=64, repeats=5, with_torch=True, with_rss=True,
              student_layers=2, config=None, roofline_n=2048, progress=None):
    """Measure everything; returns a JSON-friendly dict (see the module docstring).

    Inputs: batch_size B, seq_len T, repeats (timed runs per figure, after warm-up), with_torch
    (compare with PyTorch when installed), with_rss (peak-RSS subprocesses), student_layers,
    config (BertConfig of the teacher; default teacher_config()), roofline_n (size of the
    roofline matmul), progress (callable(str) or None).
    """
    say = progress or (lambda msg: None)
    config = config or teacher_config()
    if batch_size < 1 or seq_len < 2 or seq_len > config.max_position:
        raise MinibertError(f"bench: need --batch-size >= 1 and 2 <= --seq-len <= "
                            f"{config.max_position}, got {batch_size} and {seq_len}")
    if repeats < 1:
        raise MinibertError(f"bench: --repeats must be >= 1, got {repeats}")
    if not 1 <= student_layers <= config.num_layers:
        raise MinibertError(f"bench: student_layers must be in [1, {config.num_layers}], got {student_layers}")
    batch = random_batch(np.random.default_rng(0), batch_size, seq_len, config.vocab_size)
    real_tokens = int(batch[1].sum())
    blas = blas_info()
    with open("/proc/loadavg") as f:
        load_before = f.read().split()[:3]
    out = {
        "shapes": {"batch_size": batch_size, "seq_len": seq_len, "real_tokens": real_tokens,
                   "lengths": batch[1].sum(axis=1).tolist(), "layers": config.num_layers,
                   "student_layers": student_layers, "hidden": config.hidden_size,
                   "heads": config.num_heads, "intermediate": config.intermediate_size,
                   "vocab": config.vocab_size, "labels": config.num_labels, "dtype": "float32"},
        "repeats": repeats, "numpy_version": np.__version__, "blas": blas,
        "loadavg_before": load_before,
        "malloc": "freed memory kept (minibert.allocator)" if is_tuned() else "system default",
    }
    out["roofline_n"] = roofline_n
    flops = forward_flops(config, batch_size, seq_len)
    out["teacher_forward_flops"] = flops                      # the padded batch (PyTorch's work)
    engine_flops = {"minibert": forward_flops(config, batch_size, seq_len, batch[1].sum(axis=1)),
                    "torch": flops}                           # minibert skips the padding
    out["minibert_teacher_forward_flops"] = engine_flops["minibert"]
    out["teacher_train_step_flops_approx"] = 3 * flops        # backward ~ 2x the forward's matmuls
    train_flops = {name: 3 * f for name, f in engine_flops.items()}   # minibert trains packed too
    out["minibert_teacher_train_step_flops_approx"] = train_flops["minibert"]

    say("timing (minibert and PyTorch alternate run by run) ...")
    tasks, facts = {}, {}
    tasks["minibert"], facts["minibert"] = minibert_tasks(config, student_layers, batch)
    if with_torch and torch_available():
        tasks["torch"], facts["torch"] = torch_tasks(config, student_layers, batch, blas["threads"])
    elif with_torch:
        out["torch_skipped"] = "torch/transformers not installed"
    timed = time_interleaved(tasks, repeats, say, {"teacher_forward": {"roofline": roofline_fn(roofline_n)}})
    roof = timed.pop("roofline")
    out["roofline_s"], out["roofline_runs"] = roof["teacher_forward_s"], roof["teacher_forward_runs"]
    out["roofline_gflops"] = 2.0 * roofline_n ** 3 / out["roofline_s"] / 1e9
    engines = {name: {**facts[name], **timed[name]} for name in tasks}
    del tasks                                                          # free both models
    gc.collect()
    mb = engines["minibert"]
    for name, res in engines.items():
        res["teacher_forward_gflops"] = engine_flops[name] / res["teacher_forward_s"] / 1e9
        res["teacher_forward_roofline_fraction"] = res["teacher_forward_gflops"] / out["roofline_gflops"]
        res["teacher_train_step_gflops"] = train_flops[name] / res["teacher_train_step_s"] / 1e9
        res["teacher_train_step_roofline_fraction"] = res["teacher_train_step_gflops"] / out["roofline_gflops"]
        for key in ("teacher_forward", "teacher_train_step", "student_train_step"):
            res[key + "_tokens_per_s"] = real_tokens / res[key + "_s"]
    if with_rss:
        for name in engines:
            say(f"peak RSS ({name}) ...")
            rss = measure_peak_rss(name, config, batch_size, seq_len)
            engines[name]["teacher_train_peak_rss_mb"] = rss.get("peak_rss_mb")
            engines[name]["teacher_train_rss_before_mb"] = rss.get("before_mb")
            if "error" in rss:
                engines[name]["rss_error"] = rss["error"]
    out.update(engines)
    # Paired figures: run i of each engine (and of the roofline) ran back to back, under the same
    # load, so the median over i of their ratio is steadier than a ratio of medians when the
    # machine is shared.
    for name, res in engines.items():
        res["teacher_forward_roofline_fraction_paired"] = statistics.median(
            r / f for r, f in zip(roof["teacher_forward_runs"], res["teacher_forward_runs"])
        ) * engine_flops[name] / (2.0 * roofline_n ** 3)
    if "torch" in engines:
        th = engines["torch"]
        ratio_keys = ("teacher_forward_s", "teacher_train_step_s", "student_train_step_s",
                      "teacher_latency_s", "student_latency_s", "teacher_train_peak_rss_mb")
        out["ratio_minibert_over_torch"] = {
            k: mb[k] / th[k] for k in ratio_keys if mb.get(k) and th.get(k)}
        out["ratio_minibert_over_torch_paired"] = {
            k: statistics.median(a / b for a, b in zip(mb[k[:-2] + "_runs"], th[k[:-2] + "_runs"]))
            for k in ratio_keys[:-1]}
    with open("/proc/loadavg") as f:
        out["loadavg_after"] = f.read().split()[:3]
    out["method"] = ("times: median of `repeats` runs after warm-up (1 forward, 2 train steps); "
                     "roofline: 2 n^3 / median time of a float32 (n,n) @ (n,n), run between the "
                     "teacher forwards; "
                     "train step = forward with dropout + cross-entropy + backward + AdamW (all "
                     "params, no clipping); engines alternate run by run; latency (>= 10 runs): one "
                     "unpadded sequence of the batch's first length; tokens/s: real tokens; peak "
                     "RSS: VmHWM of a fresh subprocess "
                     "after 3 teacher train steps (whole process)")
    return out


# ----------------------------------------------------------------------------------------------
# Output


def _fmt(value, unit):
    if value is None:
        return "-"
    if unit == "ms":
        return f"{value * 1e3:.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "tok/s":
        return f"{value:,.0f}"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "%":
        return f"{100 * value:.0f}%"
    return f"{value:.1f}"


def format_table(res) -> str:
    """The human-readable table of a run_bench result."""
    s, b = res["shapes"], res["blas"]
    mb, th = res["minibert"], res.get("torch", {})
    ratio = res.get("ratio_minibert_over_torch", {})
    lines = [
        f"shapes: B={s['batch_size']} T={s['seq_len']} ({s['real_tokens']} real tokens), "
        f"L={s['layers']} (student {s['student_layers']}), H={s['hidden']}, nh={s['heads']}, "
        f"I={s['intermediate']}, V={s['vocab']}, float32",
        f"BLAS: {b.get('corename')} {b['threads']} threads; numpy {res['numpy_version']}"
        + (f"; torch {th['torch_version']} ({th['threads']} threads, attention "
           f"{th.get('attn_implementation')})" if th else f"; PyTorch: {res.get('torch_skipped', 'off')}"),
        f"float32 matmul roofline ({res['roofline_n']}^2 @ {res['roofline_n']}^2): "
        f"{res['roofline_gflops']:.1f} GFLOP/s; teacher forward = "
        f"{res['teacher_forward_flops'] / 1e9:.2f} GFLOP on the padded batch (matmuls, counted "
        f"analytically); minibert skips the padding: "
        f"{res['minibert_teacher_forward_flops'] / 1e9:.2f} GFLOP",
        f"malloc: {res.get('malloc', '-')}, for both engines; "
        f"median of {res['repeats']} runs; load average {' '.join(res['loadavg_before'])} before, "
        f"{' '.join(res['loadavg_after'])} after; 'paired': median over runs of the ratio of two "
        f"runs made back to back (for the roofline row: minibert's fraction, paired)",
        "",
    ]
    rows = [("teacher forward (B x T)", "teacher_forward_s", "s"),
            ("teacher train step", "teacher_train_step_s", "s"),
            ("student train step", "student_train_step_s", "s"),
            ("teacher latency (batch 1)", "teacher_latency_s", "ms"),
            ("student latency (batch 1)", "student_latency_s", "ms"),
            ("teacher forward tokens/s", "teacher_forward_tokens_per_s", "tok/s"),
            ("teacher train tokens/s", "teacher_train_step_tokens_per_s", "tok/s"),
            ("student train tokens/s", "student_train_step_tokens_per_s", "tok/s"),
            ("teacher forward GFLOP/s", "teacher_forward_gflops", ""),
            ("  of the matmul roofline", "teacher_forward_roofline_fraction", "%"),
            ("teacher train GFLOP/s (3x forward)", "teacher_train_step_gflops", ""),
            ("  of the matmul roofline", "teacher_train_step_roofline_fraction", "%"),
            ("teacher train peak RSS", "teacher_train_peak_rss_mb", "MB")]
    paired = res.get("ratio_minibert_over_torch_paired", {})
    table = [("", "minibert", "PyTorch", "minibert/PyTorch", "paired")]
    for label, key, unit in rows:
        r = ratio.get(key)
        if r is None and th and mb.get(key) and th.get(key):
            r = mb[key] / th[key]
        pr = paired.get(key)
        if key == "teacher_forward_roofline_fraction":
            pr = mb.get(key + "_paired")                  # here: minibert's own paired fraction
            pr = _fmt(pr, "%") if pr is not None else "-"
        else:
            pr = f"{pr:.2f}" if pr is not None else "-"
        table.append((label, _fmt(mb.get(key), unit), _fmt(th.get(key), unit) if th else "-",
                      f"{r:.2f}" if r is not None else "-", pr))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for k, row in enumerate(table):
        lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cli_bench(args):
    """`minibert bench [--json] [--repeats N] [--no-torch] [--batch-size B] [--seq-len T]`;
    instead, `--augment N`: the augmentation stages (bench_augment.py), `--scaling`: cost per
    token over lengths and batch sizes (bench_scaling.py), `--model DIR`: real model folders
    (bench_model.py), `--demo-times RUN...`: finished demo runs' stage times (bench_demo.py)."""
    modes = [f"--{m.replace('_', '-')}" for m in ("augment", "scaling", "model", "demo_times")
             if getattr(args, m, None)]
    if len(modes) > 1:
        raise MinibertError(f"bench: {' and '.join(modes)} are separate benchmarks; give one")
    if getattr(args, "augment", None):
        from minibert.bench_augment import cli_bench_augment
        return cli_bench_augment(args)
    if getattr(args, "scaling", False):                # see minibert/bench_scaling.py
        from minibert.bench_scaling import cli_bench_scaling
        return cli_bench_scaling(args)
    if getattr(args, "demo_times", None):              # see minibert/bench_demo.py
        from minibert.bench_demo import cli_bench_demo_times
        return cli_bench_demo_times(args)
    if getattr(args, "model", None):                   # see minibert/bench_model.py
        from minibert.bench_model import cli_bench_model
        return cli_bench_model(args)
    for flag in ("lengths", "batch_sizes", "layers"):
        if getattr(args, flag, None) is not None:
            raise MinibertError(f"bench: --{flag.replace('_', '-')} goes with --scaling")
    res = run_bench(batch_size=getattr(args, "batch_size", 32), seq_len=getattr(args, "seq_len", 64),
                    repeats=args.repeats, with_torch=not args.no_torch,
                    progress=None if args.json else (lambda m: print(m, file=sys.stderr, flush=True)))
    print(json.dumps(res, indent=2) if args.json else format_table(res))
    return 0
