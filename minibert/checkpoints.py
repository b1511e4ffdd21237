"""Checkpoints: everything needed to continue a run exactly where an epoch ended.

One file, checkpoint.safetensors: the parameters and AdamW's moments m/v as tensors, and the
run's JSON state (epochs done, history, step losses, best epoch, run config, optimizer step)
in its metadata. Written atomically, so a crash never leaves half a checkpoint, and a resume
is refused when the run config differs (the keys that differ are named).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from minibert.errors import CheckpointError, MinibertError
from minibert.files import atomic_write
from minibert.optim import AdamWState, adamw_init, check_state

CHECKPOINT_NAME = "checkpoint.safetensors"   # one file: tensors + JSON state in its metadata
CHECKPOINT_FORMAT = 1


def save_checkpoint(path, params: dict, opt_state, state: dict) -> None:
    """params + AdamW m/v as tensors, `state` (JSON-able) in the metadata; atomic."""
    from safetensors.numpy import save_file
    path = Path(path)
    tensors = {}
    for name, p in params.items():
        tensors[f"params/{name}"] = np.ascontiguousarray(p)
        tensors[f"adam_m/{name}"] = np.ascontiguousarray(opt_state.m[name])
        tensors[f"adam_v/{name}"] = np.ascontiguousarray(opt_state.v[name])
    meta = {"minibert_checkpoint": json.dumps({**state, "format": CHECKPOINT_FORMAT,
                                               "opt_step": int(opt_state.step)}, default=str)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))


def load_checkpoint(path):
    """Returns (params, opt_state, state). CheckpointError if missing or unreadable."""
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="np") as f:
            state = json.loads((f.metadata() or {})["minibert_checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:   # safetensors raises several types; the user needs one message
        raise CheckpointError(f"checkpoint {path} is unreadable: {err}") from err
    groups = {"params": {}, "adam_m": {}, "adam_v": {}}
    for key, arr in tensors.items():
        group, _, name = key.partition("/")
        if group not in groups or "opt_step" not in state:
            raise CheckpointError(f"checkpoint {path} is unreadable: not a minibert checkpoint "
                                  f"(tensor {key!r}, format {state.get('format')!r})")
        groups[group][name] = arr
    opt_state = AdamWState(step=int(state["opt_step"]), m=groups["adam_m"], v=groups["adam_v"])
    return groups["params"], opt_state, state


def _config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ, as 'key: old -> new'."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def start_or_resume(params: dict, out_dir: Path, config: dict, resume: bool):
    """Fresh AdamW state, or (resume) params/state/history loaded from the checkpoint.
    Returns (opt_state, run) with run = {epochs_done, run_config, history, step_losses, best}."""
    if out_dir.exists() and not out_dir.is_dir():
        raise MinibertError(f"--out {out_dir}: exists and is not a directory")
    ckpt_path = out_dir / CHECKPOINT_NAME
    if not resume:
        if ckpt_path.exists():
            raise MinibertError(f"--out {out_dir} already holds a run ({CHECKPOINT_NAME}); "
                                "pass --resume to continue it or choose a new --out")
        out_dir.mkdir(parents=True, exist_ok=True)
        return adamw_init(params), {"epochs_done": 0, "run_config": config, "history": [],
                                    "step_losses": [], "best": {"epoch": 0, "metrics": None}}
    if not ckpt_path.is_file():
        raise CheckpointError(f"--resume: no checkpoint to resume from ({ckpt_path} not found)")
    saved, opt_state, state = load_checkpoint(ckpt_path)
    diff = _config_diff(state["run_config"], config)
    if diff:
        raise CheckpointError(f"--resume: {out_dir} was started with a different config ("
                              + "; ".join(diff) + "); use the same flags or a new --out")
    if set(saved) != set(params):
        raise CheckpointError(f"--resume: {ckpt_path} holds different tensors than the model: "
                              f"{sorted(set(saved) ^ set(params))[:5]}")
    wrong = [f"{k} {saved[k].shape} vs {params[k].shape}" for k in params if saved[k].shape != params[k].shape]
    if wrong:
        raise CheckpointError(f"--resume: {ckpt_path} has other shapes than the model: {wrong[:5]}")
    for name in params:
        params[name] = saved[name].astype(params[name].dtype, copy=False)
    try:
        check_state(opt_state, params)
    except ValueError as err:
        raise CheckpointError(f"--resume: {ckpt_path}: {err}") from None
    run = {k: state[k] for k in ("epochs_done", "run_config", "history", "step_losses", "best")}
    return opt_state, run
