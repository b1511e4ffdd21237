"""Task-distillation recipes: which losses the student minimises, in which order.

- `kd` (the default): one stage, the settings as given: alpha*CE + (1-alpha)*T^2*KL on the
  logits, plus whatever intermediate / relation weights were asked for.
- `tinybert` (Jiao et al. 2020, task-specific distillation): two stages.
    1. intermediate layers only, for `intermediate_epochs`: embedding output (hidden state 0)
       and hidden-state MSE through the uniform map (a learned projection when the student is
       narrower), plus attention-score MSE; NO logit loss (prediction_weight 0). The weights
       are the given --hidden-weight / --attention-weight, or 1 each when they are 0.
    2. the prediction layer: the logit loss (alpha, T as given) alone, starting from stage 1's
       LAST epoch (stage 1 does not train the head, so its dev accuracy cannot pick an epoch).
  The projections of stage 1 are dropped afterwards (TinyBERT discards them too).
- `tinybert-aug`: `tinybert` with TinyBERT's data augmentation in stage 2: stage 1 runs on the
  task's own training rows, stage 2 on those plus the augmented sentences (`minibert augment`,
  labelled once by the teacher: only its logits teach them, no gold label). Stage 1 is exactly
  `tinybert`'s, so the demo trains it once for both rows.

Relation distillation (MiniLM, --relation-weight) is a term of the objective, not a recipe: it
can join `kd`, and TinyBERT's stage 2 keeps it when asked for.
"""

from __future__ import annotations

from minibert.errors import MinibertError
from minibert.objective import DistillSettings

RECIPES = ("kd", "tinybert", "tinybert-aug")
TWO_STAGE = ("tinybert", "tinybert-aug")
INTERMEDIATE_DIR = "intermediate"       # stage 1's run directory inside the student's --out


def check_recipe(recipe: str, intermediate_epochs: int) -> None:
    if recipe not in RECIPES:
        raise MinibertError(f"--recipe: expected one of {', '.join(RECIPES)}, got {recipe!r}")
    if recipe in TWO_STAGE and intermediate_epochs < 1:
        raise MinibertError(f"--intermediate-epochs: the {recipe} recipe needs >= 1 epoch of "
                            f"intermediate-layer distillation, got {intermediate_epochs}")


def stage_settings(recipe: str, settings: DistillSettings) -> list[tuple[str, DistillSettings]]:
    """The (stage name, settings) pairs a recipe trains with, in order."""
    if recipe == "kd":
        return [("kd", settings)]
    intermediate = settings._replace(hidden_weight=settings.hidden_weight or 1.0,
                                     attention_weight=settings.attention_weight or 1.0,
                                     cosine_weight=0.0, relation_weight=0.0,
                                     prediction_weight=0.0)
    prediction = settings._replace(hidden_weight=0.0, attention_weight=0.0, cosine_weight=0.0,
                                   prediction_weight=1.0)
    return [("intermediate", intermediate), ("prediction", prediction)]


def describe_recipe(recipe: str, settings: DistillSettings, epochs: int,
                    intermediate_epochs: int) -> str:
    """One line per stage: what is minimised and for how many epochs."""
    def terms(s: DistillSettings) -> str:
        out = []
        if s.prediction_weight > 0:
            out.append(f"{s.alpha:g}*CE + {1 - s.alpha:g}*T^2*KL at T={s.temperature:g}")
        for name, w in (("hidden MSE (0 = embeddings)", s.hidden_weight),
                        ("attention MSE", s.attention_weight), ("cosine", s.cosine_weight),
                        ("MiniLM relation KL (last layers)", s.relation_weight)):
            if w > 0:
                out.append(f"{w:g}*{name}")
        return " + ".join(out)
    stages = stage_settings(recipe, settings)
    n = {"kd": epochs, "intermediate": intermediate_epochs, "prediction": epochs}
    return "\n".join(f"recipe {recipe}, stage {name}: {terms(s)}, {n[name]} epochs"
                     for name, s in stages)
