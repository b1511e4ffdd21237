"""The exercises, in course order, and where each one's words live.

An exercise is a function of the library whose body holds a `# BEGIN EXERCISE <name>` region.
This file says which module holds it and which lesson section teaches it; the words a student
reads (the task, the numbered questions that go into the stub, three levels of hints, a stub
docstring where the library's states the answer) live in `texts_model.py`,
`texts_distill.py` and `texts_shrink.py`; the checks live in `checks_*.py`.
"""

from __future__ import annotations

from typing import NamedTuple

from minibert.classroom.text import Text
from minibert.classroom.texts_distill import TEXTS as DISTILL_TEXTS
from minibert.classroom.texts_model import TEXTS as MODEL_TEXTS
from minibert.classroom.texts_shrink import TEXTS as SHRINK_TEXTS
from minibert.errors import MinibertError


class Exercise(NamedTuple):
    name: str      # the marker name: `# BEGIN EXERCISE <name>`, and the workspace file <name>.py
    module: str    # library module holding the region: minibert/<module>.py
    lesson: str    # the lesson script that explains the idea
    section: str   # the lesson's section to read ("2. LayerNorm backward ...")
    title: str     # one line for `minibert exercises list` (never the answer)


L1, L2, L3 = "lessons/01_gradients.py", "lessons/02_softmax_temperature.py", "lessons/03_layernorm_gelu.py"
L4, L5, L6 = "lessons/04_attention.py", "lessons/05_bert.py", "lessons/06_finetune.py"
L7, L8, L9 = "lessons/07_distillation.py", "lessons/08_intermediate.py", "lessons/09_compression.py"
L10, L11 = "lessons/10_stages.py", "lessons/11_shrink.py"

# Course order: each exercise builds on the ideas (not the code) of the ones before it.
EXERCISES: list[Exercise] = [
    Exercise("rel_error", "gradcheck", L1, "3. Checking the whole gradient",
             "the relative error that decides whether two gradients agree"),
    Exercise("numerical_vjp", "gradcheck", L1, "2. One derivative, many step sizes h",
             "the gradient check itself: centred differences of sum(f(x) * dout)"),
    Exercise("linear_backward", "layers", L1, "1. The analytic gradient",
             "backward of y = x @ W + b"),
    Exercise("softmax_backward", "layers", L2, "3. softmax_backward without the Jacobian",
             "backward of the softmax, without building its Jacobian"),
    Exercise("softmax_cross_entropy", "losses", L2, "2. Cross-entropy and its gradient",
             "mean cross-entropy of softmax(logits), and its gradient"),
    Exercise("layernorm_backward", "layers", L3, "2. LayerNorm backward",
             "backward of LayerNorm from the cached xhat and rstd"),
    Exercise("gelu_backward", "layers", L3, "4. GELU backward",
             "backward of the exact (erf) GELU"),
    Exercise("embedding_backward", "layers", L5, "2. The whole model against PyTorch",
             "backward of an embedding lookup (ids may repeat)"),
    Exercise("attention_backward", "attention", L4, "4. The backward pass, with the mask",
             "backward of multi-head self-attention with padding and dropout"),
    Exercise("encoder_layer_backward", "model", L5, "1. The encoder layer's backward",
             "backward of one post-LayerNorm encoder layer, composed from the layers'"),
    Exercise("adamw_step", "optim", L6, "2. One AdamW step",
             "one AdamW step: bias-corrected moments, decoupled weight decay"),
    Exercise("soft_kl", "losses", L2, "4. Temperature softens the teacher's distribution",
             "KL between teacher and student at temperature T, and its gradient"),
    Exercise("distillation_loss", "losses", L7, "2. The teacher's soft targets",
             "the hard + soft distillation loss, forward and backward"),
    Exercise("uniform_layer_map", "student", L8, "2. Teacher, student shapes",
             "which teacher layer each student layer learns from"),
    Exercise("init_student", "student", L7, "3. Init from teacher layers vs random",
             "initialise a shallow student from chosen teacher layers"),
    Exercise("hidden_mse", "losses", L8, "1. The two losses, and the projection's gradient",
             "TinyBERT hidden-state MSE through a learned projection"),
    Exercise("attention_mse", "losses", L8, "1. The two losses, and the projection's gradient",
             "TinyBERT attention-score MSE with padding masked"),
    Exercise("cosine_loss", "losses", L8, "1. The two losses, and the projection's gradient",
             "the DistilBERT cosine loss on hidden states"),
    Exercise("param_count", "model_size", L9, "1. The teacher",
             "how many parameters a BERT has, from its config alone"),
    Exercise("relation_kl", "relation_losses", L10, "1. MiniLM's relations, and their gradients",
             "MiniLM's relation loss: KL between teacher and student rows, padding left out"),
    Exercise("value_relation_backward", "relation_losses", L10,
             "1. MiniLM's relations, and their gradients",
             "backward of the value relation r = v v^T / sqrt(hs)"),
    Exercise("quantize", "quantize", L11, "1. One weight matrix, 8, 6 and 4 bits",
             "symmetric int8 quantization, one scale per tensor, column or row"),
    Exercise("dequantize", "quantize", L11, "1. One weight matrix, 8, 6 and 4 bits",
             "the float weights that int8 levels and their scales stand for"),
    Exercise("head_gate_backward", "prune", L11, "4. Which heads matter: |dL/d gate| per head",
             "backward of a gate per attention head: the gradient head pruning ranks by"),
]


def exercise_by_name(name: str) -> Exercise:
    for ex in EXERCISES:
        if ex.name == name:
            return ex
    valid = ", ".join(ex.name for ex in EXERCISES)
    raise MinibertError(f"unknown exercise {name!r}; the exercises are: {valid}")


def texts(name: str) -> Text:
    return {**MODEL_TEXTS, **DISTILL_TEXTS, **SHRINK_TEXTS}[name]
