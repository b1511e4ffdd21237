"""Timing helpers of `minibert bench` (bench.py, bench_scaling.py): BLAS facts, the roofline
matmul, and timing engines alternately run by run so load from the rest of the machine hits both."""

from __future__ import annotations

import ctypes
import os
import statistics

import numpy as np

from minibert.evaluate import median_time


# ----------------------------------------------------------------------------------------------
# Timing helpers


def blas_info() -> dict:
    """NumPy's BLAS: thread count, kernel (core) name, and the OPENBLAS_* variables seen."""
    info = {"threads": None, "corename": None, "config": None,
            "env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                   "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
                                                   "OMP_NUM_THREADS")}}
    try:
        from threadpoolctl import threadpool_info   # optional
        for pool in threadpool_info():
            if pool.get("internal_api") == "openblas":
                info.update(threads=pool.get("num_threads"), corename=pool.get("architecture"),
                            config=pool.get("version"))
                break
    except Exception:
        pass
    if info["threads"] is None:                     # ask OpenBLAS itself, through ctypes
        try:
            with open("/proc/self/maps") as f:
                libs = sorted({line.split()[-1] for line in f if "openblas" in line.lower()})
            for path in libs:
                lib = ctypes.CDLL(path)
                for prefix, suffix in (("scipy_openblas_", "64_"), ("openblas_", "64_"),
                                       ("openblas_", ""), ("scipy_openblas_", "")):
                    get_threads = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                    if get_threads is None:
                        continue
                    info["threads"] = int(get_threads())
                    for key, fn in (("corename", "get_corename"), ("config", "get_config")):
                        f = getattr(lib, f"{prefix}{fn}{suffix}", None)
                        if f is not None:
                            f.restype = ctypes.c_char_p
                            info[key] = f().decode()
                    break
                if info["threads"] is not None:
                    break
        except Exception:
            pass
    if info["threads"] is None:
        info["threads"] = os.cpu_count() or 1
    return info


def roofline_fn(n=2048):
    """A closure computing one float32 (n,n) @ (n,n) with NumPy's BLAS: 2 n^3 FLOPs."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    return lambda: np.matmul(a, b, out=out)


# ----------------------------------------------------------------------------------------------
# Timing


def time_interleaved(engines, repeats, say, companions=None, budget_s=None, min_repeats=3):
    """Time every task of every engine, alternating engines run by run (so a load spike from
    the rest of the machine hits both alike).

    Inputs: engines: name -> {task: (fn, warmup)}; repeats: timed rounds per task (a round = one
    run of every engine); companions: task -> {name: fn}, extra functions timed in the same
    rounds as that task (the roofline matmul runs between teacher forwards, so both see the same
    machine); budget_s (None: always `repeats` rounds): seconds a task may take, judged from its
    first round: fewer rounds for a big task, but never fewer than min(min_repeats, repeats).
    Returns name -> {task + "_s": median, task + "_runs": [seconds...]} (companions included)."""
    companions = companions or {}
    out = {name: {} for name in engines}
    tasks = list(next(iter(engines.values())))
    for task in tasks:
        say(f"  {task} ...")
        timed = {name: ts[task] for name, ts in engines.items()}
        timed.update({name: (fn, 1) for name, fn in companions.get(task, {}).items()})
        for fn, warmup in timed.values():
            for _ in range(warmup):
                fn()
        runs = {name: [] for name in timed}
        n = repeats if "latency" not in task else max(repeats, 10)
        k = 0
        while k < n:
            for name, (fn, _) in timed.items():
                runs[name].append(median_time(fn, 1, warmup=0)[0])
            k += 1
            if k == 1 and budget_s is not None:          # one round's time decides the count
                round_s = sum(r[0] for r in runs.values())
                n = max(min(min_repeats, n), min(n, int(budget_s / max(round_s, 1e-9))))
        for name in timed:
            out.setdefault(name, {})[task + "_s"] = statistics.median(runs[name])
            out[name][task + "_runs"] = runs[name]
    return out
