"""Errors meant for the user: the CLI prints them as one line, without a traceback.

They subclass ValueError so library callers can catch them the usual way.
"""


class MinibertError(ValueError):
    """A problem with the user's input (files, data, flags) explained in one sentence."""


class CheckpointError(MinibertError):
    """A checkpoint is missing, corrupt, or does not match its config."""


class TokenizerError(MinibertError):
    """A tokenizer file is missing or does not fit the model."""


class DataError(MinibertError):
    """A dataset is missing, empty, or malformed."""


class TrainingDiverged(MinibertError):
    """A loss became NaN or inf; the message names the step and the last good checkpoint."""


class NonFiniteError(ValueError):
    """An array holds NaN or inf where the maths needs finite numbers (layers.check_finite). Not a
    MinibertError: in training, train.fit turns it into TrainingDiverged with the step."""
