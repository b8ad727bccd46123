"""The sandbox job queue (eval run, targets build, benchmarks): longest expected job first.

A step's run time is set mostly by its test inputs, not by the model's code, so how
long the same step took before is a good guess. Starting the longest jobs first
keeps all workers busy to the end instead of leaving one heavy job alone at the
tail (the classic LPT rule). With no history, jobs run in arrival order.
`JobQueue` adds what every user of the pool needs: the backend's warm-pool hint (jobs
left), retries of infrastructure failures, and a stop that cancels what has not started.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Callable, Optional

from harness.util import paths

log = logging.getLogger(__name__)

UNKNOWN = 2.0      # seconds assumed for a step never seen: above a light step (~0.5 s)
FILE = paths.STEP_HISTORY_FILE
ENV_PATH = paths.ENV_STEP_HISTORY
INFRA_RETRIES = 2
INFRA_BACKOFF = (2.0, 8.0)   # seconds before each retry (a restarting Docker daemon comes back)
WORKER_JOIN = 3.0            # seconds to wait, after a stop, for jobs to notice it


def default_path() -> Path:
    return paths.step_history_path()


class History:
    """Seconds per step id from earlier runs, kept in the cache dir (or `path`)."""

    def __init__(self, path: Optional[Path] = None):
        self.path = Path(path) if path else default_path()
        self.seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self.known = self._load()

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            known = {str(k): float(v) for k, v in data.items()}
            return {k: v for k, v in known.items() if math.isfinite(v) and v >= 0}
        except (OSError, ValueError, AttributeError, TypeError):
            return {}   # missing or damaged: only the order suffers

    def expect(self, step_id: str) -> Optional[float]:
        with self._lock:
            return self.seen.get(step_id, self.known.get(step_id))

    def priority(self, step_id: str) -> float:
        got = self.expect(step_id)
        return UNKNOWN if got is None else got

    def record(self, step_id: str, seconds: float) -> None:
        """A finished job's duration; the estimate moves halfway towards it."""
        with self._lock:
            old = self.seen.get(step_id, self.known.get(step_id))
            self.seen[step_id] = seconds if old is None else (old + seconds) / 2

    def save(self) -> None:
        """Merge into the file; never fails a run (the history is only a hint)."""
        with self._lock:
            if not self.seen:
                return
            merged = dict(self._load(), **self.seen)
        try:
            paths.write_text_atomic(self.path, json.dumps(merged, indent=0, sort_keys=True))
        except OSError:
            pass


class PriorityPool:
    """A fixed set of worker threads; the queued call with the highest priority runs next
    (ties in submission order). `submit` returns a concurrent.futures.Future."""

    def __init__(self, workers: int, name: str = "worker"):
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    def submit(self, priority: float, fn: Callable, *args) -> Future:
        fut: Future = Future()
        with self._cv:
            if self._closed:
                raise RuntimeError("pool is shut down")
            heapq.heappush(self._heap, (-priority, next(self._seq), fut, fn, args))
            self._cv.notify()
        return fut

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._closed:
                    self._cv.wait()
                if not self._heap:
                    return
                _, _, fut, fn, args = heapq.heappop(self._heap)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:   # delivered to whoever waits on the future
                fut.set_exception(e)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._cv:
            self._closed = True
            if cancel_futures:
                for item in self._heap:
                    item[2].cancel()
                self._heap.clear()
            self._cv.notify_all()
        if wait:
            for t in self._threads:
                t.join()

    def join(self, timeout: float) -> bool:
        """Wait (at most `timeout` seconds in all) for the workers to end; True if they did."""
        end = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(end - time.monotonic(), 0))
        return not any(t.is_alive() for t in self._threads)


class JobQueue:
    """Jobs for one backend on `workers` threads, longest expected step first (`fifo`: in
    submission order). The backend is told how many of the `total` jobs are still to start
    (its warm pool prepares no more); a job whose outcome is "infra" is run again, at most
    `retries` times, unless the backend is being shut (Ctrl-C). `sibling` makes a queue for
    another backend (another sandbox environment) on the same workers and history."""

    def __init__(self, backend, workers: int, total: int, name: str = "sandbox",
                 history: Optional[History] = None, fifo: bool = False,
                 retries: int = INFRA_RETRIES, backoff: tuple = INFRA_BACKOFF,
                 pool: Optional[PriorityPool] = None):
        self.backend = backend
        self.history = history if history is not None else History()
        self.fifo, self.retries, self.backoff = fifo, retries, backoff
        self.left = total
        self._lock = threading.Lock()
        self.pool = pool or PriorityPool(workers, name=name)
        backend.jobs_left(total)

    def sibling(self, backend, total: int = 0) -> "JobQueue":
        """A queue for `backend` that shares this one's workers, order and history."""
        return JobQueue(backend, 0, total, history=self.history, fifo=self.fifo,
                        retries=self.retries, backoff=self.backoff, pool=self.pool)

    def add(self) -> None:
        """One more job than `total` will start (e.g. a retry in the next environment)."""
        with self._lock:
            self.left += 1
            self.backend.jobs_left(self.left)

    @property
    def closing(self) -> bool:
        return self.backend.closing

    def submit(self, step_id: str, fn: Callable, *args) -> Future:
        """fn(*args) on a worker, ordered by the step's expected duration; fn calls `run`."""
        return self.pool.submit(0.0 if self.fifo else self.history.priority(step_id), fn, *args)

    def skip(self) -> None:
        """One of the `total` jobs will never start (cached, not generated, no target)."""
        self._count_down()

    def _count_down(self) -> None:
        with self._lock:   # hints in order: a stale higher count would over-warm
            self.left = max(self.left - 1, 0)
            self.backend.jobs_left(self.left)

    def run(self, job, label: str):
        """On a worker: the job's Outcome, infrastructure failures retried after a pause."""
        self._count_down()   # this job has started: one fewer to come
        for attempt in range(1 + self.retries):
            if attempt and not self._pause(self.backoff[min(attempt, len(self.backoff)) - 1]):
                break
            outcome = self.backend.run(job)
            if outcome.status != "infra" or self.closing:
                break
            log.warning("sandbox failure on %s (attempt %d): %s", label, attempt + 1,
                        (outcome.stderr or "").strip()[-300:])
        return outcome

    def _pause(self, seconds: float) -> bool:
        """Wait before a retry; False as soon as the backend is being shut."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.closing:
                return False
            time.sleep(0.1)
        return not self.closing

    def record(self, step_id: str, seconds: float) -> None:
        """A job's duration, for the next run's order (only when its tests ran)."""
        self.history.record(step_id, seconds)

    def stop(self) -> None:
        """No job starts any more: queued ones are cancelled, running ones go on; the
        durations learned are saved."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.history.save()

    def join(self, timeout: float = WORKER_JOIN) -> bool:
        """After `stop` and the backend's close: wait a bounded time for running jobs to end."""
        return self.pool.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
