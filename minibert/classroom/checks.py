"""One exercise's checks run on a student's file, and the verdict in words.

A verdict's status is one of: "pass" (every check holds), "fail" (a check does not), "stub"
(the `raise NotImplementedError` is still there), "error" (the file does not import, or has no
such function). `message` is the first failing check, diagnosed; it never states the answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

from minibert.classroom import (checks_attention, checks_layers, checks_losses, checks_relations,
                                checks_shrink, checks_training)
from minibert.classroom.registry import EXERCISES, Exercise, exercise_by_name
from minibert.classroom.report import CheckResult
from minibert.classroom.workspace import load_student_function
from minibert.errors import MinibertError

CHECKS: dict[str, Callable[[Callable], list[CheckResult]]] = {
    "rel_error": checks_layers.check_rel_error,
    "numerical_vjp": checks_layers.check_numerical_vjp,
    "linear_backward": checks_layers.check_linear_backward,
    "softmax_backward": checks_layers.check_softmax_backward,
    "softmax_cross_entropy": checks_losses.check_softmax_cross_entropy,
    "layernorm_backward": checks_layers.check_layernorm_backward,
    "gelu_backward": checks_layers.check_gelu_backward,
    "embedding_backward": checks_layers.check_embedding_backward,
    "attention_backward": checks_attention.check_attention_backward,
    "encoder_layer_backward": checks_attention.check_encoder_layer_backward,
    "adamw_step": checks_training.check_adamw_step,
    "soft_kl": checks_losses.check_soft_kl,
    "distillation_loss": checks_losses.check_distillation_loss,
    "uniform_layer_map": checks_training.check_uniform_layer_map,
    "init_student": checks_training.check_init_student,
    "hidden_mse": checks_losses.check_hidden_mse,
    "attention_mse": checks_losses.check_attention_mse,
    "cosine_loss": checks_losses.check_cosine_loss,
    "param_count": checks_training.check_param_count,
    "relation_kl": checks_relations.check_relation_kl,
    "value_relation_backward": checks_relations.check_value_relation_backward,
    "quantize": checks_shrink.check_quantize,
    "dequantize": checks_shrink.check_dequantize,
    "head_gate_backward": checks_shrink.check_head_gate_backward,
}
assert list(CHECKS) == [ex.name for ex in EXERCISES], "one check list per exercise, in order"


class Verdict(NamedTuple):
    name: str
    status: str                  # pass | fail | stub | error
    passed: int                  # checks that hold
    total: int
    message: str                 # the first failing check (diagnosed), or the error; "" on a pass
    results: list[CheckResult]


def verdict_of(ex: Exercise, results: list[CheckResult]) -> Verdict:
    failed = [r for r in results if not r.passed]
    n_ok = len(results) - len(failed)
    if not results:
        return Verdict(ex.name, "error", 0, 0, "no checks ran", results)
    if not failed:
        return Verdict(ex.name, "pass", n_ok, len(results), "", results)
    first = failed[0]
    if f"NotImplementedError: Exercise {ex.name}:" in first.detail:
        return Verdict(ex.name, "stub", n_ok, len(results), "not implemented yet", results)
    return Verdict(ex.name, "fail", n_ok, len(results), f"{first.name}: {first.describe()}", results)


def check_exercise(name: str, directory: str | Path) -> Verdict:
    """Load DIR/<name>.py and run its checks. A file that does not load is an "error"."""
    ex = exercise_by_name(name)
    try:
        func = load_student_function(ex, directory)
    except MinibertError as err:
        return Verdict(ex.name, "error", 0, 0, str(err), [])
    return verdict_of(ex, CHECKS[ex.name](func))


def format_verdict(v: Verdict, directory: str, show_passes: bool = False) -> str:
    ex = exercise_by_name(v.name)
    lines = [f"Exercise {ex.name}: {ex.title} ({Path(directory) / (ex.name + '.py')})"]
    if v.status == "error":
        return "\n".join(lines + [f"  ERROR  {v.message}"])
    failed = [r for r in v.results if not r.passed]
    for r in (v.results if show_passes else failed[:6]):
        lines.append(f"  {'PASS' if r.passed else 'FAIL'}  {r.name}: {r.describe()}")
    if len(failed) > 6 and not show_passes:
        lines.append(f"  ... and {len(failed) - 6} more failing checks")
    cmd = f"--path {directory}"
    if v.status == "pass":
        lines.append(f"All {v.total} checks pass. Well done: on to the next exercise "
                     f"(minibert exercises list {cmd}).")
    elif v.status == "stub":
        lines.append(f"Not implemented yet: replace the `raise NotImplementedError` in "
                     f"{Path(directory) / (ex.name + '.py')} with your code.")
        lines.append(f"Read first: {ex.lesson}, section {ex.section}.")
    else:
        lines.append(f"{v.passed} of {v.total} checks pass. Start with the first failure above.")
        lines.append(f"Read: {ex.lesson}, section {ex.section}.")
        lines.append(f"Stuck? minibert exercises hint {ex.name} --level 1 {cmd}")
    return "\n".join(lines)
