"""A step's status: the run layer's one vocabulary (records, counts, progress).

The sandbox's own is harness.sandbox.OutcomeStatus; a test's status belongs to grade/."""
from __future__ import annotations

from typing import Literal, get_args

StepStatus = Literal["pass", "fail", "error", "timeout", "oom", "gen_error", "truncated", "no_target", "infra",
                     "context_overflow"]   # new statuses go last: the counts' order stays
STEP_STATUSES: tuple[StepStatus, ...] = get_args(StepStatus)   # the order of the results' counts
