"""Sandboxed execution: every backend turns a Job into an Outcome.

The pipeline only ever sees `Job -> Outcome`; backends live in
`harness.sandbox.docker_backend`, `harness.sandbox.bwrap_backend` and
`harness.sandbox.process_backend`, chosen by `harness.sandbox.registry`.
"""
from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, get_args

from harness.errors import HarnessError

# The environment of every job, whatever the backend (each adds HOME, PATH, ...).
# One thread per BLAS/OpenMP pool: a job gets one CPU. Memory: glibc malloc takes
# big blocks from the heap and keeps freed memory, instead of an mmap/munmap (and
# fresh page faults) for every large temporary array; numpy does not ask for huge
# pages, whose compaction stalls when two jobs allocate at once. Dev step 10.11
# (2.3 GB peak): 15 s -> 8 s alone, 13.5 s -> 8 s next to another job, same peak.
JOB_ENV = {"TZ": "UTC", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
           "NUMPY_MADVISE_HUGEPAGE": "0"}

OutcomeStatus = Literal["ok", "error", "timeout", "oom", "infra"]   # the sandbox's one vocabulary
OUTCOME_STATUSES: tuple[OutcomeStatus, ...] = get_args(OutcomeStatus)
OUTCOME_KEYS = ("status", "exit_code", "duration", "stdout", "stderr", "truncated",
                "timed_out", "oom_killed", "backend", "image")


class SandboxUnavailable(HarnessError, RuntimeError):
    """The requested backend cannot run here (no daemon, no image, ...). One-line message."""


@dataclass
class Limits:
    timeout: float = 1800.0      # seconds of wall time per job (upstream's value)
    memory: str = "4g"           # memory limit, swap equal (dev step 10.11 peaks at ~2.3 GB)
    cpus: float = 1.0
    pids: int = 256
    fsize: str = "64m"           # largest file a job may write
    tmpfs: str = "256m"          # scratch space at /tmp
    output: int = 1 << 20        # bytes kept per stream (head + tail)


@dataclass
class Job:
    code: str                                  # program text, executed as __main__
    tests: Optional[list[str]] = None          # SciCode test snippets; None = plain script
    targets: Optional[list[Any]] = None        # harness.sandbox.codec-encoded values, one per test
    record: bool = False                       # collect values passed to __scicode_record__
    limits: Limits = field(default_factory=Limits)
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])


TestStatus = Literal["pass", "fail", "error"]   # one test of the runner's report
TEST_STATUSES: tuple[TestStatus, ...] = get_args(TestStatus)


@dataclass
class TestResult:
    __test__ = False   # not a pytest test class
    status: TestStatus
    error: Optional[str] = None

    def to_dict(self) -> dict:
        return {"status": self.status, "error": self.error}


@dataclass
class Report:
    """The in-sandbox runner's report (tests mode). Untrusted: model code shared its process,
    so it can at worst fail a candidate (strict grading re-checks every "pass"). Made only by
    harness.sandbox.boundary (bounded, checked)."""
    completed: bool                     # the runner reached its end (no exit, no BaseException)
    import_error: Optional[str]         # the program failed before the tests
    tests: list[TestResult]             # one per test snippet, in order
    records: Optional[list] = None      # strict grading: per test, its codec-encoded values
    size: int = field(default=0, compare=False)   # bytes of the report line (its weight)
    invalid: Optional[str] = None       # why the report was refused (harness.sandbox.boundary)

    @property
    def all_passed(self) -> bool:
        """What the runner's exit status says: completed, and no test failed or erred."""
        return self.completed and all(t.status == "pass" for t in self.tests)


@dataclass
class Outcome:
    status: OutcomeStatus
    exit_code: Optional[int]
    duration: float
    stdout: str
    stderr: str
    truncated: bool
    timed_out: bool
    oom_killed: bool
    backend: str
    image: Optional[str]
    report: Optional[Report] = None   # the runner's report (tests mode), not part of to_dict()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: d[k] for k in OUTCOME_KEYS}


class Backend:
    """Runs jobs; thread-safe `run`; `close` removes everything it started."""

    name = "base"
    image: Optional[str] = None
    runtime: Optional[str] = None     # Docker's OCI runtime (runc | runsc); None elsewhere
    # the isolation it gives: docker | bwrap | bwrap-noproc | process, and why (--sandbox auto)
    tier: Optional[str] = None
    tier_reason: str = ""

    @property
    def closing(self) -> bool:
        """True once the backend is shut (or being shut, e.g. on Ctrl-C): failures
        from then on are the shutdown's, not the sandbox's."""
        return bool(getattr(self, "_closed", False))

    def run(self, job: Job) -> Outcome:  # pragma: no cover - interface
        raise NotImplementedError

    def service(self, source: str, name: str, args: Optional[list[str]] = None):
        """A long-lived program (trusted code, e.g. the verifier) in this backend's pinned
        environment, speaking lines over stdin/stdout (harness.sandbox.service); `args` follow
        ``python3 -c source``."""
        raise NotImplementedError

    def jobs_left(self, n: int) -> None:
        """A hint: at most `n` more jobs will start, besides those already passed to
        `run`. A backend that prepares ahead (Docker's warm pool) prepares no more."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
