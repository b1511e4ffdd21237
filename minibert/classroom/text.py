"""What a student reads for one exercise (task, step questions, hint levels); kept apart from
the registry so the per-topic text modules and the registry do not import each other."""

from __future__ import annotations

from typing import NamedTuple


class Text(NamedTuple):
    task: str                      # one sentence: what to write (goes into the stub's raise)
    steps: tuple[str, ...]         # numbered questions, written into the stub's region
    hints: tuple[str, str, str]    # `exercises hint NAME --level 1|2|3`, each revealing more
    doc: str | None = None         # stub docstring, when the library's states the answer
    answers: tuple[str, ...] = ()  # fragments of the answer that must appear in no student text
