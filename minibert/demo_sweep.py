"""`minibert demo --sweep`: temperature x alpha for the demo's 2-layer student, reusing the
demo's fine-tuned teacher and its cached logits (split from minibert.demo)."""

from __future__ import annotations

from pathlib import Path

from minibert.files import atomic_write_json, atomic_write_text
from minibert.outdir import RUN_RECORD, clear_project_files, prepare_subdir


def run_sweep(student_run, teacher_params, teacher_config, teacher, data, sizes, seed: int,
              out: Path, temperatures, alphas, progress: bool = False) -> list[dict]:
    """Temperature x alpha for the 2-layer student (same init, data and budget; the teacher's
    cached logits are reused by every run). student_run: minibert.demo.student_run (passed in,
    so this module does not import the demo). Writes sweep.json, sweep.md and sweep.png into
    out/sweep. Returns one row per setting with dev and test accuracy / macro-F1."""
    from minibert.evaluate import predict_and_score
    from minibert.plots import plot_sweep
    sweep_dir = prepare_subdir(out / "sweep", "demo-sweep", "demo --sweep")
    atomic_write_json(sweep_dir / RUN_RECORD, {"command": "demo-sweep"})   # --overwrite finds it
    rows = []
    for T in temperatures:
        for a in alphas:
            r = student_run(f"T{T:g}_a{a:g}", teacher_params, teacher_config, teacher, data,
                            sizes, seed, a, T, sweep_dir / f"T{T:g}_a{a:g}", progress=progress)
            _, m = predict_and_score(r["params"], r["config"], data.test)
            rows.append({"temperature": T, "alpha": a, "dev_accuracy": r["dev"]["accuracy"],
                         "test_accuracy": m["accuracy"], "test_macro_f1": m["macro_f1"],
                         "time_s": r["time_s"]})
            print(f"sweep T={T:g} alpha={a:g}: dev acc {rows[-1]['dev_accuracy']:.4f}, test acc "
                  f"{m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f} ({r['time_s']:.0f} s)",
                  flush=True)
            run_dir = sweep_dir / f"T{T:g}_a{a:g}"                  # keep only the table:
            clear_project_files(run_dir, "demo --sweep", verbose=False)   # what this run wrote
            if not any(run_dir.iterdir()):
                run_dir.rmdir()
    atomic_write_json(sweep_dir / "sweep.json", {"seed": seed, "sizes": sizes._asdict(), "rows": rows})
    lines = ["| T \\ alpha | " + " | ".join(f"{a:g}" for a in alphas) + " |",
             "|---|" + "---:|" * len(alphas)]
    for T in temperatures:
        cells = [next(r for r in rows if r["temperature"] == T and r["alpha"] == a)
                 for a in alphas]
        lines.append(f"| T={T:g} | " + " | ".join(
            f"{c['test_accuracy']:.4f} (F1 {c['test_macro_f1']:.3f})" for c in cells) + " |")
    table = ("Student test accuracy (macro-F1) by temperature and alpha (weight of the hard "
             f"CE), seed {seed}\n\n" + "\n".join(lines))
    atomic_write_text(sweep_dir / "sweep.md", table + "\n")
    plot_sweep(rows, temperatures, alphas, sweep_dir / "sweep.png")
    print(table)
    return rows
