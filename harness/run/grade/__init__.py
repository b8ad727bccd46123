"""Strict grading: the sandbox computes values, the verifier decides verdicts.

    candidate job (sandbox)                    verifier (outside the sandbox)
    program + tests' sandbox halves  --values-->  tests' verifier halves + targets
    never sees target, decides nothing            never runs model code

`plan` splits a step's tests once (harness.run.grade.split); `grade` turns a sandbox Outcome
plus the verifier's answers into a step verdict. A test that cannot be split is never
run in the sandbox and fails with the reason (none of SciCode's 1,082 tests is such).
"""
from __future__ import annotations

from typing import Callable

from harness.run.grade.split import Split
from harness.run.grade.split_stmt import split_test
from harness.run.status import StepStatus
from harness.sandbox import TEST_STATUSES, Outcome, TestResult

GRADING_VERSION = "strict-1"
UNSUPPORTED_TEST = "pass  # this test cannot be graded outside the sandbox\n"


def plan(problem: dict, step_index: int) -> list[Split]:
    step = problem["sub_steps"][step_index]
    deps = problem.get("required_dependencies") or ""
    return [split_test(t, deps, f"{step['step_number']} test{i + 1}")
            for i, t in enumerate(step.get("test_cases") or [])]


def sandbox_tests(splits: list[Split]) -> list[str]:
    return [s.sandbox if s.supported else UNSUPPORTED_TEST for s in splits]


def grade(outcome: Outcome, splits: list[Split], deps: str, targets: Callable[[], list],
          verifier, targets_key: str = "") -> tuple[StepStatus, list[TestResult]]:
    """(step status, per-test results). pass needs: the program ran to the runner's end
    (exit 0, report, completed), and the verifier passed every test on its values (a step
    without tests: the first part only)."""
    report = outcome.report
    tests = list(report.tests) if report else []
    if outcome.status in ("timeout", "oom", "infra"):
        return outcome.status, tests
    if report is None or not report.completed or report.import_error or len(tests) != len(splits):
        return "error", tests
    if not splits:    # a step without tests: the program ran to its end
        return ("pass" if outcome.status == "ok" else "error"), tests
    records = report.records or []
    report.records = None     # the checks below hold them; nothing else needs them
    todo = [i for i, t in enumerate(tests) if t.status == "pass" and splits[i].supported]
    results = list(tests)
    for i, sp in enumerate(splits):
        if not sp.supported:
            results[i] = TestResult("error", f"not gradable safely: {sp.error}")
    if todo:
        checks = [{"program": splits[i].verifier, "t": i if splits[i].uses_target else None,
                   "records": records[i] if i < len(records) and isinstance(records[i], list) else []}
                  for i in todo]
        del records

        def encoded_targets():      # read and encoded only when the verifier lacks them
            return [_encode_target(v) if sp.uses_target else None
                    for v, sp in zip(targets(), splits)]
        for i, res in zip(todo, verifier.check(deps, checks, targets_key or str(id(splits)),
                                               encoded_targets)):
            status = res.get("status")
            results[i] = TestResult(status if status in TEST_STATUSES else "error", res.get("error"))
    if outcome.status == "ok" and all(r.status == "pass" for r in results):
        return "pass", results
    return "fail", results


def _encode_target(value):
    from harness.sandbox import codec
    return codec.encode(value)


def counts(splits_by_step: dict[str, list[Split]]) -> dict:
    """How the run's tests are graded, for the results JSON."""
    out = {"tests": 0, "target": 0, "test": 0, "unsupported": 0, "unsupported_tests": []}
    for sid, splits in splits_by_step.items():
        for i, sp in enumerate(splits):
            out["tests"] += 1
            out[sp.kind] += 1
            if not sp.supported:
                out["unsupported_tests"].append(f"{sid} test{i + 1}")
    return out


__all__ = ["GRADING_VERSION", "plan", "sandbox_tests", "grade", "counts", "Split", "split_test"]
