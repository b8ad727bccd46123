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

from harness.run.grade.split import Split, split_test

GRADING_VERSION = "strict-1"
UNSUPPORTED_TEST = "pass  # this test cannot be graded outside the sandbox\n"


def plan(problem: dict, step_index: int) -> list[Split]:
    step = problem["sub_steps"][step_index]
    deps = problem.get("required_dependencies") or ""
    return [split_test(t, deps, f"{step['step_number']} test{i + 1}")
            for i, t in enumerate(step.get("test_cases") or [])]


def sandbox_tests(splits: list[Split]) -> list[str]:
    return [s.sandbox if s.supported else UNSUPPORTED_TEST for s in splits]


def grade(outcome, splits: list[Split], deps: str, targets: Callable[[], list],
          verifier, targets_key: str = "") -> tuple[str, list[dict]]:
    """(step status, per-test results). pass needs: the program ran to the runner's end
    (exit 0, report, completed), and the verifier passed every test on its values."""
    report = outcome.report or {}
    tests = list(report.get("tests") or [])
    if outcome.status in ("timeout", "oom", "infra"):
        return outcome.status, tests
    if not report.get("completed") or report.get("import_error") or len(tests) != len(splits):
        return "error", tests
    records = report.get("records") or []
    todo = [i for i, t in enumerate(tests) if isinstance(t, dict) and t.get("status") == "pass"
            and splits[i].supported]
    results = [dict(t) if isinstance(t, dict) else {"status": "error", "error": "bad report"}
               for t in tests]
    for i, sp in enumerate(splits):
        if not sp.supported:
            results[i] = {"status": "error", "error": f"not gradable safely: {sp.error}"}
    if todo:
        checks = [{"program": splits[i].verifier, "t": i if splits[i].uses_target else None,
                   "records": records[i] if i < len(records) and isinstance(records[i], list) else []}
                  for i in todo]
        report["records"] = None     # the checks hold them; nothing else needs them

        def encoded_targets():      # read and encoded only when the verifier lacks them
            return [_encode_target(v) if sp.uses_target else None
                    for v, sp in zip(targets(), splits)]
        for i, res in zip(todo, verifier.check(deps, checks, targets_key or str(id(splits)),
                                               encoded_targets)):
            results[i] = {"status": res.get("status"), "error": res.get("error")}
    if outcome.status == "ok" and all(r.get("status") == "pass" for r in results):
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
