"""`minibert report`: was distillation worth it? Means and 95% intervals over seeds.

One demo run (one seed) says little: over 3 seeds the KD student's margin over the hard-label
control ranged from +0.1 to +2.2 points. This module reads finished demo runs (their
results.json) and prints, for every student recipe the runs share, the margin over the
hard-label control (student - hard-only, in accuracy points) and the share of the teacher's
accuracy it keeps (student / teacher), each as a mean over seeds with a 95% confidence interval
from the t-distribution:

    mean +- t_{0.975, n-1} * s / sqrt(n)          (s: sample standard deviation, ddof = 1)

With n = 3 seeds t = 4.303, so the interval is wide: it is the honest size of "over 3 seeds".
The per-seed numbers are paired (each seed's students share the teacher, the data and the
init), so the interval of the DIFFERENCE is the one to read, not two overlapping intervals.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from minibert.errors import MinibertError
from minibert.files import atomic_write_text

CONTROL = "student hard-only"     # the row every recipe is compared with
TEACHER = "teacher"

# Two-sided 95% quantiles t_{0.975, df} of Student's t for df = 1..30 (standard tables).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table for df <= 30, beyond it the Cornish-Fisher expansion around the
    normal quantile z = 1.95996 (error < 1e-4 for df > 30). Raises ValueError for df < 1."""
    if df < 1:
        raise ValueError(f"df: the t-distribution needs df >= 1 (at least 2 seeds), got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_interval(values) -> tuple[float, float]:
    """Mean and 95% half-width (t-distribution, ddof = 1) of a sample.

    Inputs: values, a sequence of >= 1 floats. Returns: (mean, half_width); half_width is NaN
    for a single value (one seed has no spread to measure).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values: expected a non-empty 1-D sequence, got shape {v.shape}")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), t_quantile_975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)


def find_results(paths) -> list[Path]:
    """results.json files: each path is a results.json, a run directory holding one, or a
    directory of runs (e.g. `demo --seeds` output: seed-0/, seed-1/, ...)."""
    found = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / "results.json").is_file():
            found.append(p / "results.json")
        elif p.is_dir():
            inner = sorted(p.glob("*/results.json"))
            if not inner:
                raise MinibertError(f"{p}: no results.json in it or in its subdirectories "
                                    f"(run `minibert demo --out {p}` first)")
            found += inner
        else:
            raise MinibertError(f"{p}: no such file or directory")
    return found


def load_runs(paths) -> list[dict]:
    runs = []
    for f in find_results(paths):
        try:
            r = json.loads(f.read_text(encoding="utf-8"))
            acc = {row["name"]: float(row["accuracy"]) for row in r["rows"]}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise MinibertError(f"{f}: not a demo results.json ({err})") from None
        if TEACHER not in acc or CONTROL not in acc:
            raise MinibertError(f"{f}: needs a '{TEACHER}' and a '{CONTROL}' row to compare "
                                f"against, got {sorted(acc)}")
        runs.append({"path": str(f), "seed": r.get("seed"), "accuracy": acc})
    return runs


def seed_report(runs: list[dict]) -> dict:
    """Per recipe (every student row but the control, present in all runs): per-seed accuracy,
    student - hard-only and student / teacher, and their means with 95% half-widths."""
    recipes = [n for n in runs[0]["accuracy"] if n not in (TEACHER, CONTROL)
               and all(n in r["accuracy"] for r in runs)]
    out = {"seeds": [r["seed"] for r in runs], "n": len(runs), "recipes": {}}
    teacher = [r["accuracy"][TEACHER] for r in runs]
    control = [r["accuracy"][CONTROL] for r in runs]
    out["teacher"] = mean_interval(teacher)
    out["control"] = mean_interval(control)
    for name in recipes:
        acc = [r["accuracy"][name] for r in runs]
        margin = [100 * (a - c) for a, c in zip(acc, control)]            # points
        share = [100 * a / t for a, t in zip(acc, teacher)]               # percent
        out["recipes"][name] = {"accuracy": acc, "margin_points": margin, "share_percent": share,
                                "margin": mean_interval(margin), "share": mean_interval(share),
                                "accuracy_mean": mean_interval(acc)}
    return out


def _pm(mean: float, half: float, fmt: str) -> str:
    """'mean ± half' in format `fmt` (the half-width without a sign); just the mean for 1 seed."""
    m = format(mean, fmt)
    return m if math.isnan(half) else f"{m} ± {format(half, fmt.lstrip('+'))}"


def format_report(rep: dict) -> str:
    """A markdown table per recipe: mean [95% interval] of the margin and of the share."""
    n = rep["n"]
    lines = [f"Over {n} seed(s) {rep['seeds']} (mean ± 95% half-width, t-distribution, "
             f"{n - 1} degrees of freedom):", "",
             "| model | accuracy | - hard-only (points) | / teacher | per seed: - hard-only |",
             "|---|---:|---:|---:|---|"]
    t, c = rep["teacher"], rep["control"]
    lines.append(f"| {TEACHER} | {_pm(*t, '.4f')} | | | |")
    lines.append(f"| {CONTROL} | {_pm(*c, '.4f')} | | | |")
    for name, r in rep["recipes"].items():
        per = ", ".join(f"{m:+.2f}" for m in r["margin_points"])
        lines.append(f"| {name} | {_pm(*r['accuracy_mean'], '.4f')} | {_pm(*r['margin'], '+.2f')} "
                     f"| {_pm(*r['share'], '.1f')}% | {per} |")
    return "\n".join(lines)


def cli_report(args) -> int:
    """minibert report RUN... : the seed table of finished demo runs (also --out FILE.md)."""
    runs = load_runs(args.runs)
    text = format_report(seed_report(runs))
    print(text)
    if getattr(args, "out", None):
        from minibert.outdir import claim_file
        with claim_file(args.out, "report", overwrite=args.overwrite) as out:
            atomic_write_text(out, text + "\n")
    return 0


def summarize_seeds(out_dirs) -> str:
    """Mean and spread over several demo runs (e.g. --seed 0/1/2 with their own --out).

    Inputs: directories holding results.json. Returns a markdown table: per model, the mean
    and standard deviation (ddof=1) of accuracy, macro-F1 and ms/example, and per seed the
    KD student's share of the teacher's accuracy and its margin over the hard-only student.
    """
    results = [json.loads((Path(d) / "results.json").read_text()) for d in out_dirs]
    names = [r["name"] for r in results[0]["rows"]]

    def stat(values):
        v = np.asarray(values, dtype=np.float64)
        sd = v.std(ddof=1) if len(v) > 1 else 0.0
        return f"{v.mean():.4f} ± {sd:.4f}"

    lines = [f"Mean ± std over seeds {[r['seed'] for r in results]}", "",
             "| model | accuracy | macro-F1 | ms/example | speed-up |",
             "|---|---:|---:|---:|---:|"]
    for k, name in enumerate(names):
        rows = [r["rows"][k] for r in results]
        lines.append(f"| {name} | {stat([x['accuracy'] for x in rows])} | "
                     f"{stat([x['macro_f1'] for x in rows])} | "
                     f"{stat([x['ms_per_example'] for x in rows])} | "
                     f"{stat([x['speedup'] for x in rows])} |")
    lines += ["", "| seed | teacher acc | KD acc | hard-only acc | KD / teacher | KD - hard |",
              "|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        t, kd, hard = (x["accuracy"] for x in r["rows"][:3])
        lines.append(f"| {r['seed']} | {t:.4f} | {kd:.4f} | {hard:.4f} | {100 * kd / t:.1f}% | "
                     f"{100 * (kd - hard):+.2f} |")
    return "\n".join(lines)
