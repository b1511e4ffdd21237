"""The student: which teacher layers it learns from, and how it starts.

Shape legend: Ls / Lt student / teacher encoder layers, Hs / Ht student / teacher hidden size.

The student is the teacher with fewer layers. Student layer j (1-based) is tied to teacher
layer g(j) = j*Lt//Ls, the *uniform* mapping: for 2 layers out of 6, g = (3, 6). Hidden
states are indexed with 0 = the embedding output, so hidden states map 0->0, 1->3, 2->6,
and attention scores of student block 0/1 map to teacher block 2/5 (0-based blocks).
By default the student's encoder block j-1 starts as a copy of teacher block g(j)-1, and
the embeddings, pooler and classifier head are copied too (same width only). A narrower
student learns projections Hs -> Ht for the hidden-state loss (`init_projections`); they
train with it and are stripped before it is saved.
"""

from __future__ import annotations

import numpy as np

from minibert.errors import MinibertError
from minibert.model import BertConfig, init_params

PROJ_PREFIX = "distill.proj."   # learned projections live in the student params under this prefix


# ----------------------------------------------------------------------------- layer mapping

def uniform_layer_map(n_student: int, n_teacher: int) -> list[int]:
    """The uniform student -> teacher hidden-state mapping g.

    Inputs: n_student (Ls) and n_teacher (Lt) encoder layers, 1 <= Ls <= Lt.
    Returns: a list g of length Ls+1 with g[0] = 0 (embeddings) and g[j] = j*Lt//Ls,
    so g[Ls] = Lt: the student's last layer always learns from the teacher's last layer.
    """
    check_layer_counts(n_student, n_teacher)
    # BEGIN EXERCISE uniform_layer_map
    return [j * n_teacher // n_student for j in range(n_student + 1)]
    # END EXERCISE uniform_layer_map


def check_layer_counts(n_student: int, n_teacher: int) -> None:
    if not 1 <= n_student <= n_teacher:
        raise MinibertError(
            f"--layers: the student needs between 1 and {n_teacher} layers (the teacher's "
            f"count), got {n_student}; a student deeper than its teacher is not a distillation")


def default_init_layers(n_student: int, n_teacher: int) -> list[int]:
    """0-based teacher blocks to copy into the student's blocks: g(j)-1 for j = 1..Ls."""
    return [g - 1 for g in uniform_layer_map(n_student, n_teacher)[1:]]


def parse_init_from(text: str | None, n_student: int, n_teacher: int) -> list[int]:
    """Parse `--init-from "2,5"` into [2, 5] (0-based teacher blocks), or the uniform default.

    Raises MinibertError when the count differs from the student's layers or a block does
    not exist in the teacher.
    """
    check_layer_counts(n_student, n_teacher)
    if text is None or text.strip() == "":
        return default_init_layers(n_student, n_teacher)
    try:
        layers = [int(tok) for tok in text.split(",")]
    except ValueError:
        raise MinibertError(f"--init-from: expected comma-separated layer numbers like "
                            f"'0,5', got {text!r}") from None
    if len(layers) != n_student:
        raise MinibertError(f"--init-from: the student has {n_student} layers, so name "
                            f"{n_student} teacher layers; got {len(layers)} ({text!r})")
    bad = [k for k in layers if not 0 <= k < n_teacher]
    if bad:
        raise MinibertError(f"--init-from: teacher layer(s) {bad} do not exist; the teacher has "
                            f"{n_teacher} layers, numbered 0..{n_teacher - 1}")
    return layers


def describe_mapping(init_layers: list[int] | None, n_student: int, n_teacher: int) -> str:
    """A few human-readable lines: which teacher layers initialise / supervise which student layers."""
    g = uniform_layer_map(n_student, n_teacher)
    lines = []
    if init_layers is None:
        lines.append("init: random (no teacher layers copied)")
    else:
        pairs = ", ".join(f"student {j} <- teacher {t}" for j, t in enumerate(init_layers))
        lines.append(f"init: encoder blocks {pairs} (0-based; embeddings, pooler, head copied)")
    lines.append("hidden states (0 = embeddings): "
                 + ", ".join(f"{j}->{g[j]}" for j in range(n_student + 1)))
    lines.append("attention (0-based blocks): "
                 + ", ".join(f"{j}->{g[j + 1] - 1}" for j in range(n_student)))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- student

def student_config(teacher: BertConfig, layers: int, hidden_size: int | None = None,
                   intermediate_size: int | None = None, heads: int | None = None) -> BertConfig:
    """The student's config: the teacher's with fewer layers (and optionally narrower).

    A narrower student keeps the teacher's head size where it can (heads = H / hs) and the
    teacher's FFN ratio. The classifier head (num_labels, labels) is the teacher's; no MLM head.
    """
    check_layer_counts(layers, teacher.num_layers)
    d = teacher.to_dict()
    h = teacher.hidden_size if hidden_size is None else int(hidden_size)
    if h <= 0:
        raise MinibertError(f"--hidden-size must be positive, got {h}")
    if heads is None:
        heads = teacher.num_heads if h == teacher.hidden_size else max(1, h // teacher.head_size)
    if h % heads != 0:
        raise MinibertError(f"--heads: the hidden size {h} must be divisible by the number of "
                            f"heads, got {heads}")
    if intermediate_size is None:
        intermediate_size = h * teacher.intermediate_size // teacher.hidden_size
    d.update(num_layers=layers, hidden_size=h, num_heads=heads,
             intermediate_size=int(intermediate_size), mlm_head=False,
             pruned_heads=None, activation_quant="none", activation_scales=None)  # a full float student
    return BertConfig.from_dict(d)


def same_shape_layers(teacher: BertConfig, student: BertConfig) -> bool:
    return (teacher.hidden_size == student.hidden_size
            and teacher.intermediate_size == student.intermediate_size
            and teacher.num_heads == student.num_heads)


def init_student(teacher_params: dict, teacher_config: BertConfig, config: BertConfig,
                 init_layers: list[int] | None, rng: np.random.Generator,
                 dtype=np.float32) -> dict:
    """Build the student's parameters.

    Inputs: the teacher's params/config, the student's config, init_layers (0-based teacher
    blocks to copy, one per student block; None = random init), a Generator, a dtype.
    Returns: a fresh params dict (copies; the teacher is never aliased). With init_layers,
    student block j is teacher block init_layers[j], and the embeddings, pooler and
    classifier head are the teacher's; every other tensor (none, when the shapes match) is
    drawn from init_params.
    """
    # BEGIN EXERCISE init_student
    params = init_params(config, rng, dtype=dtype)
    if init_layers is None:
        return params
    if not same_shape_layers(teacher_config, config):
        raise MinibertError(
            f"--init-from copies teacher layers (hidden {teacher_config.hidden_size}, "
            f"intermediate {teacher_config.intermediate_size}, heads {teacher_config.num_heads}) "
            f"but the student has hidden {config.hidden_size}, intermediate "
            f"{config.intermediate_size}, heads {config.num_heads}; there is no projection for "
            f"weights: use --init random (the --hidden-weight loss learns a projection)")
    if len(init_layers) != config.num_layers:
        raise MinibertError(f"init_layers: expected {config.num_layers} teacher layers, "
                            f"got {len(init_layers)}")
    for name in params:
        if name.startswith("encoder."):
            _, j, rest = name.split(".", 2)               # "encoder.1.attn.qkv.W"
            source = f"encoder.{init_layers[int(j)]}.{rest}"
        else:
            source = name                                 # embeddings.*, pooler.*, classifier.*
        if source not in teacher_params:                  # e.g. the teacher has no pooler
            continue
        if teacher_params[source].shape != params[name].shape:
            raise MinibertError(f"init_student: teacher {source} has shape "
                                f"{teacher_params[source].shape}, student {name} needs "
                                f"{params[name].shape}")
        params[name] = teacher_params[source].astype(dtype, copy=True)
    return params
    # END EXERCISE init_student


def init_projections(config: BertConfig, teacher_config: BertConfig,
                     rng: np.random.Generator, dtype=np.float32) -> dict:
    """Learned projections Hs -> Ht, one per student hidden state (0..Ls), for the hidden MSE.

    Only needed when the student is narrower; returns {} when widths match (identity).
    Names: "distill.proj.{j}.W" (Hs, Ht), "distill.proj.{j}.b" (Ht,). They train with the
    student but are not part of the saved model (`strip_projections`).
    """
    hs, ht = config.hidden_size, teacher_config.hidden_size
    if hs == ht:
        return {}
    out = {}
    for j in range(config.num_layers + 1):
        out[f"{PROJ_PREFIX}{j}.W"] = (rng.standard_normal((hs, ht))
                                      * config.initializer_range).astype(dtype)
        out[f"{PROJ_PREFIX}{j}.b"] = np.zeros(ht, dtype=dtype)
    return out


def strip_projections(params: dict) -> dict:
    """The student's own parameters (what is saved and counted), without the projections."""
    return {k: v for k, v in params.items() if not k.startswith(PROJ_PREFIX)}



def student_init_rng(seed: int) -> np.random.Generator:
    """The Generator that draws a student's random tensors: a function of the seed only, so two
    students with the same seed (e.g. distilled vs hard-label control) start identical."""
    return np.random.default_rng([seed, 20150309])

