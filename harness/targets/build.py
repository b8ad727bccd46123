"""Regenerate targets: run every step's gold code with rewritten tests in the sandbox and keep the values."""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Literal, Optional

from harness.data.dataset import step_key
from harness.run.schedule import JobQueue
from harness.targets.compare import values_close, values_equal
from harness.targets.rewrite import NO_TARGET, PLACEHOLDER_TEST, RewriteResult, reduced_target, rewrite_test

# One gold run's result for one test: ("ok", value or None when it has no target),
# ("fail", message) or ("unsupported", None).
GoldKind = Literal["ok", "fail", "unsupported"]
GoldResult = tuple[GoldKind, Any]


@dataclass
class Issue:
    step: str
    test: Optional[int]          # 1-based (h5 "test<k>"); None = the whole step
    message: str
    run: Optional[int] = None    # 1-based run number where relevant

    def __str__(self):
        where = self.step + (f" test{self.test}" if self.test is not None else "")
        run = f" (run {self.run})" if self.run is not None else ""
        return f"{where}{run}: {self.message}"


@dataclass
class BuildReport:
    out: Optional[str]
    split: str
    runs: int
    backend: str = ""
    memory: str = ""                     # the jobs' memory limit
    steps: int = 0                       # steps with test cases
    tests: int = 0                       # their test cases
    tests_with_target: int = 0
    tests_without_target: int = 0
    steps_written: list = field(default_factory=list)
    steps_missing: list = field(default_factory=list)    # steps left without targets
    unsupported: list = field(default_factory=list)      # Issue
    flaky: list = field(default_factory=list)            # Issue
    failed: list = field(default_factory=list)           # Issue
    skipped_steps: list = field(default_factory=list)    # steps with no tests (prefilled)
    duration: float = 0.0
    # the values written, {step_id: [value per test]} (not part of to_dict)
    targets: dict = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.steps_missing

    def to_dict(self) -> dict:
        d = asdict(dataclasses.replace(self, targets={}))
        d.pop("targets")
        for k in ("unsupported", "flaky", "failed"):
            d[k] = [asdict(i) for i in getattr(self, k)]
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        lines = [
            f"targets: {len(self.steps_written)}/{self.steps} steps written, "
            f"{self.tests} tests ({self.tests_with_target} with target, {self.tests_without_target} without), "
            f"{self.runs} run(s) each on {self.backend or '?'} (memory {self.memory or '?'}) "
            f"in {self.duration:.1f}s",
            f"  unsupported: {len(self.unsupported)}  flaky: {len(self.flaky)}  failed: {len(self.failed)}"
            f"  steps without targets: {len(self.steps_missing)}",
        ]
        for title, items in (("unsupported", self.unsupported), ("flaky", self.flaky), ("failed", self.failed)):
            for it in items:
                lines.append(f"  {title}: {it}")
        if self.steps_missing:
            lines.append("  steps without targets: " + ", ".join(self.steps_missing))
        oom = sorted({f.step for f in self.failed if "out of memory" in f.message}, key=step_key)
        if oom:
            lines.append(f"  hint: {', '.join(oom)} ran out of memory at the {self.memory or 'default'} limit; "
                         f"gold code may need more (e.g. --memory {_more_memory(self.memory)})")
        if self.out:
            lines.append(f"  written to {self.out}")
        return "\n".join(lines)


@dataclass
class StepPlan:
    step_id: str
    problem_id: str
    code: str
    tests: list[str]                 # original test cases
    rewrites: list[RewriteResult]

    def job_tests(self) -> list[str]:
        return [r.source if r.supported else PLACEHOLDER_TEST for r in self.rewrites]


def load_problem_file(path: Path) -> list[dict]:
    """Problems in SciCode's JSONL format (one problem object per line)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
    for p in out:
        if "problem_id" not in p or "sub_steps" not in p:
            raise ValueError(f"{path}: every problem needs problem_id and sub_steps")
    return out


def load_problems(split: str = "dev", problems_path: Optional[Path] = None) -> list[dict]:
    """The split's problems, or the problems of a SciCode-format JSONL file."""
    if problems_path is not None:
        return load_problem_file(Path(problems_path))
    from harness.data import dataset
    return dataset.load_problems(split)


def _prefilled(step_id: str) -> Optional[str]:
    try:
        from harness.data.dataset import SKIPPED_STEPS, prefilled_code
    except ImportError:
        return None
    if step_id in SKIPPED_STEPS:
        return prefilled_code(step_id)
    return None


def has_gold(problem: dict) -> bool:
    """Whether any step of the problem ships gold code (the test split ships none)."""
    return any(s.get("ground_truth_code") for s in problem.get("sub_steps", []))


def plan_steps(problems: Iterable[dict], skipped: Optional[list] = None) -> list[StepPlan]:
    """One plan per step with tests: code = deps + previous gold (or prefilled) + this gold.

    Problems without any gold code are left out (so split "all" plans the dev part);
    a step with tests but no gold code in a problem that has some is an error.
    """
    from harness.run import candidate
    problems = list(problems)
    with_gold = [p for p in problems if has_gold(p)]
    if problems and not with_gold:
        raise ValueError("none of these problems ships gold code (ground_truth_code); the test split has "
                         "none -- build targets for --split dev or for --problems FILE with gold code")
    plans = []
    for prob in with_gold:
        deps = prob.get("required_dependencies") or ""
        prev: list[str] = []
        for step in prob["sub_steps"]:
            sid = str(step["step_number"])
            tests = list(step.get("test_cases") or [])
            gold = step.get("ground_truth_code")
            if not tests:
                code = _prefilled(sid) or gold or ""
                prev.append(code)
                if skipped is not None:
                    skipped.append(sid)
                continue
            if not gold:
                raise ValueError(f"step {sid} has no ground_truth_code (gold code is needed for targets)")
            code = candidate.program(deps, prev, gold)  # the pipeline's order and joins
            prev.append(gold)
            rewrites = [rewrite_test(t, f"{sid} test{i + 1}") for i, t in enumerate(tests)]
            plans.append(StepPlan(sid, str(prob["problem_id"]), code, tests, rewrites))
    return plans


def _tail(s: str, n: int = 300) -> str:
    s = (s or "").strip()
    return s if len(s) <= n else "..." + s[-n:]


def _interpret(plan: StepPlan, outcome) -> tuple[list[GoldResult], Optional[str]]:
    """(a GoldResult per test; a message when the whole step failed, else None)."""
    from harness.sandbox import codec
    n = len(plan.tests)
    rep = getattr(outcome, "report", None)
    if rep is not None and rep.invalid:
        msg = f"runner report refused: {rep.invalid}"
        return [("fail", msg)] * n, msg
    if not rep:
        msg = f"no runner report (status {outcome.status}, exit {outcome.exit_code}"
        msg += ", timed out" if outcome.timed_out else ""
        msg += ", out of memory" if outcome.oom_killed else ""
        msg += f"): {_tail(outcome.stderr)}"
        return [("fail", msg)] * n, msg
    if rep.import_error:
        msg = f"gold code failed before the tests: {_tail(rep.import_error)}"
        return [("fail", msg)] * n, msg
    statuses = rep.tests
    records = rep.records or []
    results = []
    for i in range(n):
        rw = plan.rewrites[i]
        if not rw.supported:
            results.append(("unsupported", None))
            continue
        if i >= len(statuses):
            why = "run stopped before this test" if not rep.completed else "no status reported"
            results.append(("fail", why + (f" (status {outcome.status})" if outcome.status != "ok" else "")))
            continue
        st = statuses[i]
        if st.status != "pass":
            results.append(("fail", f"{st.status}: {_tail(st.error or '')}"))
            continue
        recs = records[i] if i < len(records) and isinstance(records[i], list) else []
        if not rw.has_target:
            results.append(("ok", None))
            continue
        if len(recs) != 1:
            results.append(("fail", f"recorded {len(recs)} values (expected 1)"))
            continue
        try:
            value = codec.decode(recs[0])
        except Exception as e:
            results.append(("fail", f"cannot decode recorded value: {e}"))
            continue
        why = None
        if rw.reduced_by:      # the test compares with target.any(): see reduced_target
            value, why = reduced_target(value, rw.reduced_by)
        results.append(("fail", why) if why else ("ok", value))
    return results, None


def _get_backend(backend, workers: int):
    """(backend, owned) from a Backend object, a kind name or None (auto)."""
    if backend is not None and not isinstance(backend, str):
        return backend, False
    from harness.sandbox.registry import get_backend
    return get_backend(backend or "auto", workers=workers), True


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def build(split: str = "dev", out: Optional[Path] = None, problems_path: Optional[Path] = None,
          backend=None, runs: int = 2, progress: Optional[Callable[[str], None]] = print,
          workers: Optional[int] = None, timeout: Optional[float] = None,
          memory: Optional[str] = None, steps: Optional[Iterable[str]] = None,
          problems: Optional[list] = None) -> BuildReport:
    """Regenerate targets by running gold code; write them to ``out`` (h5, official schema).

    backend: a Backend instance (used, not closed), a kind ("docker"/"process"/"auto") or None.
    steps: optional subset of step ids (for debugging).
    problems: already loaded problems (instead of loading `split` / `problems_path`).
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    say = progress or (lambda s: None)
    t0 = time.monotonic()
    if problems is None:
        problems = load_problems(split, problems_path)
    skipped: list = []
    plans = plan_steps(problems, skipped)
    if steps is not None:
        wanted = {str(s) for s in steps}
        plans = [p for p in plans if p.step_id in wanted]
    label = "problems " + str(problems_path) if problems_path else split
    report = BuildReport(out=str(out) if out else None, split=label, runs=runs, skipped_steps=skipped)
    _count_tests(plans, report)

    nworkers = workers or default_workers()
    be, owned = _get_backend(backend, nworkers)
    report.backend = getattr(be, "name", type(be).__name__)
    nworkers = max(1, int(getattr(be, "workers", None) or nworkers))
    limits = _limits(be, timeout, memory)
    report.memory = str(limits.memory)
    say(f"targets: {len(plans)} steps x {runs} run(s) on {report.backend} with {nworkers} worker(s)")
    try:
        results = _run_plans(plans, runs, be, limits, nworkers, say)
    finally:
        if owned:
            be.close()

    targets = _collect(plans, runs, results, report)
    if out is not None:
        _drop_unstorable(targets, report)
    report.targets = targets
    if out is not None:
        from harness.data.h5targets import write_targets
        write_targets(Path(out), targets)
    report.duration = time.monotonic() - t0
    return report


def _count_tests(plans: list[StepPlan], report: BuildReport) -> None:
    report.steps = len(plans)
    for p in plans:
        report.tests += len(p.tests)
        for i, rw in enumerate(p.rewrites):
            if not rw.supported:
                msg = (rw.error or "unsupported").removeprefix(f"{p.step_id} test{i + 1}: ")
                report.unsupported.append(Issue(p.step_id, i + 1, msg))
            elif rw.has_target:
                report.tests_with_target += 1
            else:
                report.tests_without_target += 1


def _limits(be, timeout: Optional[float], memory: Optional[str]):
    from harness.sandbox import Limits
    limits = getattr(be, "limits", None) or Limits()   # the backend's limits keep its warm pool usable
    if timeout:
        limits = dataclasses.replace(limits, timeout=float(timeout))
    if memory:
        limits = dataclasses.replace(limits, memory=str(memory))
    return limits


def _run_plans(plans: list[StepPlan], runs: int, be, limits, nworkers: int,
               say: Callable[[str], None]) -> dict[tuple[str, int], tuple[list, Optional[str]]]:
    """Every plan `runs` times, longest expected step first: {(step id, run): (results, step error)}."""
    from harness.sandbox import Job
    results: dict[tuple[str, int], tuple[list, Optional[str]]] = {}
    lock = threading.Lock()
    done = [0]
    total = len(plans) * runs

    def run_one(plan: StepPlan, run: int):
        job = Job(code=plan.code, tests=plan.job_tests(), targets=None, record=True, limits=limits)
        start = time.monotonic()
        try:
            outcome = queue.run(job, plan.step_id)
            res = _interpret(plan, outcome)
            if not res[1]:   # gold-code times seed later runs' order
                queue.record(plan.step_id, outcome.duration)
        except Exception as e:  # infrastructure problem: report, do not hide
            msg = f"sandbox error: {type(e).__name__}: {e}"
            res = ([("fail", msg)] * len(plan.tests), msg)
        with lock:
            results[(plan.step_id, run)] = res
            done[0] += 1
            nfail = sum(1 for r in res[0] if r[0] == "fail")
            say(f"  [{done[0]}/{total}] {plan.step_id} run {run + 1}: "
                f"{'ok' if not nfail else f'{nfail} failed'} ({time.monotonic() - start:.1f}s)")

    # on success every job is done; on Ctrl-C or an error, the queue waits for no running one
    with JobQueue(be, nworkers, total, name="targets") as queue:
        futs = [queue.submit(p.step_id, run_one, p, r) for r in range(runs) for p in plans]
        for f in futs:
            f.result()
    return results


_MISSING = object()   # a test no run recorded a value for (a recorded value may itself be None)


def _collect(plans: list[StepPlan], runs: int, results: dict, report: BuildReport) -> dict[str, list]:
    """The first run's value of every test, the flaky and failed ones reported; complete steps only."""
    targets: dict[str, list] = {}
    for plan in plans:
        for r in range(runs):
            step_error = results[(plan.step_id, r)][1]
            if step_error:   # one entry for the step, not one per test
                report.failed.append(Issue(plan.step_id, None, step_error, run=r + 1))
        values = [_test_value(plan, i, runs, results, report) for i in range(len(plan.tests))]
        if all(v is not _MISSING for v in values):
            targets[plan.step_id] = values
            report.steps_written.append(plan.step_id)
        else:
            report.steps_missing.append(plan.step_id)
    return targets


def _test_value(plan: StepPlan, i: int, runs: int, results: dict, report: BuildReport):
    """Test i's target (NO_TARGET when it compares none), or _MISSING when no run recorded one."""
    rw = plan.rewrites[i]
    if not rw.supported:
        return _MISSING
    got = []
    for r in range(runs):
        kind, val = results[(plan.step_id, r)][0][i]
        if kind == "fail" and results[(plan.step_id, r)][1]:
            continue      # already reported for the whole step
        if kind == "fail":
            report.failed.append(Issue(plan.step_id, i + 1,
                                       val + ("" if rw.has_target else " (test without target)"),
                                       run=r + 1))
        elif kind == "ok":
            got.append((r, val))
    if not rw.has_target:
        return NO_TARGET
    if not got:
        return _MISSING
    first_run, first = got[0]
    for r, v in got[1:]:
        if not values_equal(first, v):
            report.flaky.append(Issue(plan.step_id, i + 1,
                                      f"value differs between run {first_run + 1} and run {r + 1} "
                                      f"(kept run {first_run + 1}'s): {_describe_diff(first, v)}",
                                      run=r + 1))
    return first


def _more_memory(limit: str) -> str:
    """A limit twice the given one, in GiB (the hint must name more than what failed)."""
    from harness.sandbox.runner import parse_size
    try:
        gib = parse_size(limit or "4g") / (1 << 30)
    except ValueError:
        gib = 4
    return f"{max(int(gib * 2), 1)}g"


def _describe_diff(a, b) -> str:
    ok, d = values_close(a, b)
    return ("close (allclose) but not identical" if ok else f"not close: {d}")


def _drop_unstorable(targets: dict, report: BuildReport) -> None:
    """Steps whose values the h5 schema cannot hold unchanged are reported and left out."""
    from harness.data.h5targets import write_targets
    with tempfile.TemporaryDirectory(prefix="scicode-targets-") as tmp:
        probe = Path(tmp) / "probe.h5"
        for sid in list(targets):
            try:
                write_targets(probe, {sid: targets[sid]})
            except ValueError as e:
                del targets[sid]
                report.steps_written.remove(sid)
                report.steps_missing.append(sid)
                report.failed.append(Issue(sid, None, f"value cannot be stored in the h5 schema: {e}"))


