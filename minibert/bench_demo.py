"""`minibert bench --demo-times RUN [RUN ...]`: the stage times of finished demo runs, as a table.

`minibert demo` records how long each stage took in its results.json ("timings_s": fetch and
data, teacher fine-tuning, the teacher's logits, each student (and each student's training
stages), evaluation, total). This prints them side by side, one column per run, and with two
or more runs the ratio of the last to the first, so "demo stage times before -> after" is one
command over the two output folders. Nothing is timed here: the figures are the runs' own.
"""

from __future__ import annotations

import json
from pathlib import Path

from minibert.errors import MinibertError

TIMINGS_KEY = "timings_s"


def load_demo_times(run) -> dict:
    """Inputs: a demo output folder (holding results.json) or a results.json file.
    Returns {"path", "seed", "quick", "timings": {stage key: seconds}}.
    MinibertError when the file is missing, unreadable or has no stage times."""
    path = Path(run)
    f = path / "results.json" if path.is_dir() else path
    if not f.is_file():
        raise MinibertError(f"bench --demo-times: {f} not found (a finished `minibert demo --out "
                            f"{path}` writes it)")
    try:
        res = json.loads(f.read_text(encoding="utf-8"))
        timings = {str(k): float(v) for k, v in res[TIMINGS_KEY].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise MinibertError(f"bench --demo-times: {f} is not a demo results.json with "
                            f"'{TIMINGS_KEY}' ({type(err).__name__}: {err})") from None
    if not timings:
        raise MinibertError(f"bench --demo-times: {f} records no stage times")
    return {"path": str(run), "seed": res.get("seed"), "quick": res.get("quick"), "timings": timings}


def _label(key: str) -> str:
    return (key[:-2] if key.endswith("_s") else key).replace("_", " ")


def stage_rows(runs: list[dict]) -> list[tuple[str, str]]:
    """The stages of all runs, in the order they ran (the first run's order, then stages only
    later runs have; total last), as (key, label). A student's training stages
    ("student_KD_stage1_train_s") are labelled with that student: "student KD: stage1 train"."""
    keys = []
    for r in runs:
        keys += [k for k in r["timings"] if k not in keys]
    keys = [k for k in keys if k != "total_s"] + (["total_s"] if "total_s" in keys else [])
    rows = []
    for k in keys:
        parent = next((p for p in keys if p != k and p.endswith("_s")
                       and k.startswith(p[:-2] + "_")), None)
        label = _label(k) if parent is None else f"{_label(parent)}: {_label(k[len(parent) - 1:])}"
        rows.append((k, label))
    return rows


def format_demo_times(runs: list[dict]) -> str:
    """A markdown table: a row per stage, a column of seconds per run, and last / first."""
    ratio = len(runs) > 1
    heads = [f"{i + 1}: {r['path']}" for i, r in enumerate(runs)]
    lines = ["**demo stage times (seconds, from each run's results.json)**", ""]
    lines += [f"- run {h} (seed {r['seed']}, {'quick' if r['quick'] else 'full'})"
              for h, r in zip(heads, runs)] + [""]
    lines.append("| stage | " + " | ".join(f"run {i + 1} s" for i in range(len(runs)))
                 + (f" | run {len(runs)} / run 1 |" if ratio else " |"))
    lines.append("|---|" + "---:|" * (len(runs) + ratio))
    for key, label in stage_rows(runs):
        values = [r["timings"].get(key) for r in runs]
        cells = ["-" if v is None else f"{v:.1f}" for v in values]
        if ratio:
            first, last = values[0], values[-1]
            cells.append(f"{last / first:.2f}" if first and last is not None else "-")
        label = f"**{label}**" if key == "total_s" else label
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cli_bench_demo_times(args) -> int:
    """`minibert bench --demo-times RUN [RUN ...] [--json]`."""
    runs = [load_demo_times(r) for r in args.demo_times]
    print(json.dumps(runs, indent=2) if args.json else format_demo_times(runs))
    return 0
