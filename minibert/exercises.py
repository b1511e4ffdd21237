"""Moved: the exercises now live in minibert/classroom/ (registry.py lists them in course order).

`EXERCISES` and `exercise_by_name` stay importable here for the lesson scripts.
"""

from minibert.classroom.registry import EXERCISES, Exercise, exercise_by_name

__all__ = ["EXERCISES", "Exercise", "exercise_by_name"]
