"""The test program for one candidate: dependencies, the chain's code, the step's tests."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from harness.sandbox import boundary, codec
from harness.run.status import StepStatus
from harness.sandbox import Job, Limits, Outcome, TestResult


@dataclass
class Candidate:
    problem_id: str
    step_id: str           # e.g. "13.7"
    index: int             # 0-based step index in the problem
    sample: int
    code: str              # this step's extracted code
    chain: list[str]       # code of steps 0..index-1 in this sample's chain


def program(dependencies: str, chain: list[str], code: str) -> str:
    """Upstream order: dependencies, previous steps' code, this step's code."""
    return "\n".join([dependencies, *chain, code]) + "\n"


def build_job(cand: Candidate, problem: dict, targets: Optional[list[Any]], limits: Limits,
              tests: Optional[list[str]] = None) -> Job:
    """Strict grading (targets None): the tests' sandbox halves, values recorded, no target.
    In-process grading (unsafe): the original tests and this step's targets (encoded)."""
    step = problem["sub_steps"][cand.index]
    strict = targets is None
    return Job(code=program(problem["required_dependencies"], cand.chain, cand.code),
               tests=list(tests if tests is not None else step["test_cases"]),
               targets=None if strict else [codec.encode(t) for t in targets],
               record=strict,
               limits=limits,
               job_id=f"{cand.step_id}-s{cand.sample}")


def verdict(outcome: Outcome, n_tests: int) -> tuple[StepStatus, list[TestResult]]:
    """In-process grading: pass only if the program ran to the runner's end and each of the
    step's n_tests tests passed (a step without tests: it ran to the end)."""
    report = outcome.report
    tests = report.tests if report else []
    if outcome.status in ("timeout", "oom", "infra"):
        return outcome.status, tests
    ran = bool(report and report.completed and not report.import_error and len(tests) == n_tests)
    if outcome.status == "ok" and ran and report.all_passed:
        return "pass", tests
    if ran and tests:
        return "fail", tests
    return "error", tests


def error_summary(outcome: Outcome, tests: list[TestResult]) -> Optional[str]:
    """The first reason the candidate did not pass (texts already bounded by the boundary)."""
    if outcome.report and outcome.report.invalid:
        return "report refused: " + outcome.report.invalid
    if outcome.report and outcome.report.import_error:
        return outcome.report.import_error
    for t in tests:
        if t.status != "pass" and t.error:
            return t.error
    if outcome.status != "ok":
        tail = (outcome.stderr or "").strip().splitlines()[-1:] or [outcome.status]
        return boundary.text(tail[0], 500)
    return None
