"""The bank of plausible student mistakes (tests/mistakes/): every one must be rejected by its
exercise's checks, with the diagnosis we promise for it where one is given, and no failure
message may state the answer."""

from __future__ import annotations

import pytest
from mistakes import MISTAKES

from minibert.classroom.checks import CHECKS, verdict_of
from minibert.classroom.registry import EXERCISES, exercise_by_name, texts

CASES = [pytest.param(name, impl, fragment, id=f"{name}-{impl.__name__}")
         for name, bank in MISTAKES.items() for impl, fragment in bank]


def normalise(text: str) -> str:
    return "".join(text.split()).lower()


def test_every_exercise_has_at_least_three_mistakes():
    assert set(MISTAKES) == {ex.name for ex in EXERCISES}
    small = {name: len(bank) for name, bank in MISTAKES.items() if len(bank) < 3}
    assert not small, small


@pytest.mark.parametrize("name, impl, fragment", CASES)
def test_a_plausible_mistake_is_rejected_with_a_diagnosis(name, impl, fragment):
    v = verdict_of(exercise_by_name(name), CHECKS[name](impl))
    print(f"{name} / {impl.__name__}: {v.status}: {v.message}")
    assert v.status == "fail", f"{impl.__name__} was not rejected: {v.status} {v.message}"
    if fragment is not None:
        assert fragment in v.message, f"expected {fragment!r} in the first failure: {v.message}"
    for answer in texts(name).answers:
        assert normalise(answer) not in normalise(v.message), f"the message gives away {answer!r}"
