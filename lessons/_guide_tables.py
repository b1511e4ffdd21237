"""Print the teaching guide's tables (lessons/README.md) from the lessons' own records.

Every lesson writes lessonNN.json (class size: lessons/out/, --tiny: lessons/out/tiny/) with
its run time and the numbers it printed and asserted. After running the lessons:

    python lessons/_guide_tables.py            # markdown: times, then the key numbers

and paste the output into the guide, so every number there is one a lesson measured.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

OUT = Path(os.environ.get("MINIBERT_LESSON_OUT", Path(__file__).resolve().parent / "out"))


def load(tiny: bool) -> dict[int, dict]:
    root = OUT / "tiny" if tiny else OUT
    out = {}
    for path in sorted(root.glob("lesson[0-9][0-9].json")):
        rec = json.loads(path.read_text(encoding="utf-8"))
        out[rec["lesson"]] = rec
    return out


def runs_by_setting(rec: dict) -> dict:
    return {(r["init"], r["alpha"], r["T"]): r["seeds"] for r in rec["results"]["runs"]}


def cell(seeds: list[dict], key: str) -> str:
    v = [s[key] for s in seeds]
    mean = sum(v) / len(v)
    return f"{mean:.3f} ({min(v):.3f}-{max(v):.3f}, {len(v)})" if len(v) > 1 else f"{mean:.3f} (1)"


def main() -> None:
    full, tiny = load(False), load(True)
    def when(rec):
        if rec is None:
            return "-"
        cpu = f", CPU {rec['cpu_seconds']:.1f} s" if "cpu_seconds" in rec else ""
        load = f", load {rec['load_average']:.1f}" if "load_average" in rec else ""
        return f"{rec['seconds']:.1f} s{cpu}{load}"

    print("| lesson | class size: wall time, CPU time, load average | `--tiny`: the same |\n|---|---|---|")
    for n in sorted(set(full) | set(tiny)):
        print(f"| {n} | {when(full.get(n))} | {when(tiny.get(n))} |")
    for name, recs in (("class size", full), ("--tiny", tiny)):
        if 7 not in recs:
            continue
        rs = runs_by_setting(recs[7])
        res = recs[7]["results"]
        print(f"\nLesson 7, {name}: mean (min-max, seeds) on dev; teacher accuracy "
              f"{res['teacher_acc']:.3f}; gold labels for {res['n_labelled']} of {res.get('n_train', '?')} "
              f"training examples (the rest: transfer set), {res['steps']} steps\n")
        print("| student | dev accuracy | agrees with teacher | same runner-up | KL(teacher \\|\\| student) |")
        print("|---|---|---|---|---|")
        for (init, alpha, T), seeds in rs.items():
            tag = f"{init} init, " + ("hard labels only" if alpha == 1 else f"alpha={alpha:g}, T={T:g}")
            print(f"| {tag} | {cell(seeds, 'acc')} | {cell(seeds, 'agree')} | "
                  f"{cell(seeds, 'runner_up')} | {cell(seeds, 'kl')} |")
        ent = recs[7]["results"]["entropy_by_T"]
        print("\nsoft-target entropy / ln C: " + ", ".join(f"T={float(k):g}: {v:.3f}" for k, v in ent.items()))
        seps = recs[7]["results"].get("separation", {})
        if seps:
            print("\n| difference tested | mean | worst case | seed-to-seed std | separated |\n|---|---|---|---|---|")
            for what, sp in seps.items():
                print(f"| {what.replace('_', ' ')} | {sp['diff']:+.3f} | {sp['worst']:+.3f} | {sp['std']:.3f} | "
                      f"{'yes' if sp['ok'] else 'no'} |")
    for name, recs in (("class size", full), ("--tiny", tiny)):
        for k in (8, 10):                     # the same table: students -> their seeds
            if k in recs:
                print(f"\nLesson {k}, {name}:\n")
                print("| student | dev accuracy | agrees with teacher | KL |\n|---|---|---|---|")
                for tag, seeds in recs[k]["results"]["runs"].items():
                    print(f"| {tag} | {cell(seeds, 'acc')} | {cell(seeds, 'agree')} | {cell(seeds, 'kl')} |")
                sp = recs[k]["results"].get("separation_agree")
                if sp:
                    print(f"\nwide students' agreement, KD + hidden + attn - KD only (paired): {sp['diff']:+.3f}, "
                          f"worst {sp['worst']:+.3f}, std {sp['std']:.3f}: {'separated' if sp['ok'] else 'not separated'}")
        if 9 in recs:
            print(f"\nLesson 9, {name}:\n")
            print("| model | dev accuracy | params | speed-up (median, range over rounds) |\n|---|---:|---:|---|")
            for r in recs[9]["results"]["rows"]:
                lo, hi = r["speedup_range"]
                print(f"| {r['name']} | {r['accuracy']:.3f} | {r['params']:,} | "
                      f"{r['speedup']:.2f}x ({lo:.2f}-{hi:.2f}) |")
    for n, recs in ((n, full) for n in sorted(full)):
        print(f"\nLesson {n} showed (class size):")
        for line in recs[n]["showed"]:
            print(f"- {line}")


if __name__ == "__main__":
    main()
