"""Shared plumbing for the lesson scripts (kept tiny so each lesson reads on its own).

Every lesson: `python lessons/NN_topic.py [--tiny]`. It prints what it shows with real
numbers, saves its figures into lessons/out/, and ends in assertions. `--tiny` shrinks every
size so the lesson runs in seconds (CI runs each lesson that way).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:          # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MPLBACKEND", "Agg")   # figures go to files; no display needed

OUT = Path(os.environ.get("MINIBERT_LESSON_OUT", ROOT / "lessons" / "out"))


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true", help="tiny sizes: runs in seconds (used by CI)")
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    args.t0 = time.perf_counter()
    return args


def section(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 72 - len(title)))


def savefig(fig, name: str) -> Path:
    path = OUT / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    print(f"[figure] {path}")
    return path


def done(args) -> None:
    print(f"\nAll assertions hold. ({time.perf_counter() - args.t0:.1f} s"
          f"{', --tiny' if args.tiny else ''})")
