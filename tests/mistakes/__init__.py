"""A bank of plausible student mistakes, one list per exercise.

Each entry is (wrong implementation, fragment or None): the implementation has the exercise's
signature and one realistic slip (a missing term, a wrong axis, a missing scale, a forgotten
residual, dropout ignored, decay on biases, ...). tests/test_mistakes.py requires every one to
be rejected by the exercise's checks and, where a fragment is given, the first failing check's
diagnosis to contain it (the diagnosis we promise for that kind of slip).
"""

from mistakes.attention import MISTAKES as _attention
from mistakes.layers import MISTAKES as _layers
from mistakes.losses import MISTAKES as _losses
from mistakes.relations import MISTAKES as _relations
from mistakes.shrink import MISTAKES as _shrink
from mistakes.training import MISTAKES as _training

MISTAKES = {**_layers, **_attention, **_losses, **_training, **_relations, **_shrink}
