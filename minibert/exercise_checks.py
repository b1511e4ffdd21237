"""Moved: the exercises' checks now live in minibert/classroom/ (checks_*.py, report.py).

These names stay importable for the lesson scripts that print an exercise's checks.
"""

from minibert.classroom.checks import CHECKS
from minibert.classroom.checks_attention import check_attention_backward, check_encoder_layer_backward
from minibert.classroom.checks_training import check_adamw_step
from minibert.classroom.report import CLOSED_TOL, FD_TOL, CheckResult

__all__ = ["CHECKS", "CLOSED_TOL", "FD_TOL", "CheckResult", "check_adamw_step",
           "check_attention_backward", "check_encoder_layer_backward"]
