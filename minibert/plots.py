"""Plots written into run directories (PNG, matplotlib's Agg backend: no display needed).

- plot_training_curves: train loss per step (and its running mean) + dev metrics per epoch.
- plot_accuracy_vs_latency: one point per model (e.g. teacher and students), for the demo.
- plot_runs, plot_sweep: the demo's runs side by side, and its temperature x alpha sweep.
Every function saves atomically (tmp file + os.replace) and closes its figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")   # before pyplot: render to files only, never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from minibert.files import atomic_write  # noqa: E402


def save_figure(fig, path) -> None:
    """Save fig atomically (format from the suffix) and close it."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight",
                                                   format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)


def running_mean(x, window: int) -> np.ndarray:
    """Mean of the last `window` values at each position (shorter at the start)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.cumsum(np.concatenate([[0.0], x]))
    lo = np.maximum(np.arange(1, len(x) + 1) - window, 0)
    return (c[1:] - c[lo]) / (np.arange(1, len(x) + 1) - lo)


def plot_training_curves(history: list, step_losses: list, path, metric: str = "accuracy",
                         title: str | None = None) -> None:
    """Left: loss per step with a running mean. Right: dev metrics per epoch.

    Inputs: history (fit's per-epoch dicts with "epoch", "train_loss", "dev"), step_losses
    (floats), path (PNG), metric (marked as the selection metric in the legend).
    """
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = np.arange(1, len(step_losses) + 1)
    if len(step_losses):
        ax_loss.plot(steps, step_losses, color="0.6", lw=0.8, label="loss per step")
        window = max(1, len(step_losses) // 50)
        if window > 1:
            ax_loss.plot(steps, running_mean(step_losses, window), color="C0", lw=1.5,
                         label=f"running mean ({window} steps)")
    if history:
        spe = len(step_losses) / len(history)                  # steps per epoch
        ax_loss.plot([h["epoch"] * spe for h in history], [h["train_loss"] for h in history],
                     "o", color="C3", label="epoch mean")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(fontsize=8)
    epochs = [h["epoch"] for h in history]
    keys = list(history[0]["dev"]) if history else []
    for i, key in enumerate(keys):
        label = f"dev {key}" + (" (selects best)" if key == metric else "")
        ax_dev.plot(epochs, [h["dev"][key] for h in history], "o-", color=f"C{i}", label=label)
    ax_dev.set_xlabel("epoch")
    ax_dev.set_ylabel("dev metric")
    if epochs:
        ax_dev.set_xticks(epochs)
    if keys:
        ax_dev.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def plot_accuracy_vs_latency(points: list[dict], path, title: str = "accuracy vs latency",
                             x_key: str = "ms_per_example", y_key: str = "accuracy") -> None:
    """Scatter of models. points: dicts with "name", x_key, y_key (and optional "params",
    drawn as the marker size). Lower-left is fast but worse; upper-left is what we want."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    sizes = [p.get("params") for p in points]
    biggest = max((s for s in sizes if s), default=None)
    for i, p in enumerate(points):
        s = 40 + 260 * (p["params"] / biggest) if p.get("params") and biggest else 60
        ax.scatter(p[x_key], p[y_key], s=s, color=f"C{i % 10}", alpha=0.8, zorder=3)
        ax.annotate(p["name"], (p[x_key], p[y_key]), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    ax.set_xlabel("latency, ms per example" if x_key == "ms_per_example" else x_key)
    ax.set_ylabel(y_key)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    save_figure(fig, path)


def plot_runs(runs: list[dict], path) -> None:
    """Several runs in one figure (the demo's teacher and students): training loss (running
    mean) and dev accuracy at the end of each epoch, against steps. runs: dicts with name,
    step_losses and history (fit's records)."""
    fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(11, 4))
    for i, r in enumerate(runs):                      # x in optimizer steps: the students
        losses = r["step_losses"]                     # take equally many, epochs differ
        steps_per_epoch = len(losses) / max(1, len(r["history"]))
        if losses:
            ax_loss.plot(np.arange(1, len(losses) + 1),
                         running_mean(losses, max(1, len(losses) // 25)), color=f"C{i}",
                         label=r["name"])
        ax_dev.plot([h["epoch"] * steps_per_epoch for h in r["history"]],
                    [h["dev"]["accuracy"] for h in r["history"]], "o-", color=f"C{i}",
                    label=r["name"])
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (running mean; KD loss is not CE)")
    ax_dev.set_xlabel("step (end of each epoch)")
    ax_dev.set_ylabel("dev accuracy")
    for ax in (ax_loss, ax_dev):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("minibert demo: teacher fine-tuning and student training")
    save_figure(fig, path)


def plot_sweep(rows, temperatures, alphas, path) -> None:
    """The demo's sweep: student test accuracy against temperature, one line per alpha."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, a in enumerate(alphas):
        acc = [next(r["test_accuracy"] for r in rows
                    if r["temperature"] == T and r["alpha"] == a) for T in temperatures]
        ax.plot(temperatures, acc, "o-", color=f"C{i}", label=f"alpha = {a:g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(temperatures))
    ax.set_xticklabels([f"{T:g}" for T in temperatures])
    ax.set_xlabel("temperature T")
    ax.set_ylabel("student test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("distillation sweep: temperature x alpha")
    save_figure(fig, path)
