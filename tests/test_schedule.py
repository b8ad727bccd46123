"""Longest-expected-first dispatch: the priority pool and the step-duration history."""
import json
import threading

import pytest

from harness.run import schedule
from harness.run.schedule import History, JobQueue, PriorityPool


def test_pool_runs_highest_priority_first_then_in_submission_order():
    pool = PriorityPool(1)
    gate, order = threading.Event(), []
    blocker = pool.submit(0, gate.wait)            # holds the only worker while we queue
    futs = [pool.submit(p, order.append, name) for p, name in
            [(1.0, "light"), (30.0, "heavy"), (2.0, "a"), (2.0, "b"), (5.0, "mid")]]
    gate.set()
    assert blocker.result(timeout=5) is True
    for f in futs:
        f.result(timeout=5)
    assert order == ["heavy", "mid", "a", "b", "light"]
    pool.shutdown()


def test_pool_delivers_exceptions_and_cancels_queued_work_on_shutdown():
    pool = PriorityPool(1)
    gate = threading.Event()
    pool.submit(0, gate.wait)
    bad = pool.submit(9, lambda: 1 / 0)
    queued = pool.submit(0, lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        pool.submit(1, print)
    # `bad` was queued behind the blocker, so it was cancelled too; a running call's error arrives
    assert bad.cancelled()
    pool2 = PriorityPool(2)
    with pytest.raises(ZeroDivisionError):
        pool2.submit(1, lambda: 1 / 0).result(timeout=5)
    pool2.shutdown()


def test_pool_shutdown_without_cancel_drains_the_queue():
    pool = PriorityPool(2)
    futs = [pool.submit(i, lambda i=i: i * i) for i in range(20)]
    pool.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futs] == [i * i for i in range(20)]


def test_history_learns_saves_and_merges(tmp_path):
    path = tmp_path / "h" / "step_seconds.json"
    h = History(path)
    assert h.expect("51.4") is None and h.priority("51.4") == schedule.UNKNOWN
    h.record("51.4", 40.0)
    h.record("51.4", 20.0)                # halfway towards the newest
    assert h.expect("51.4") == 30.0
    h.save()
    other = History(path)                 # another run, meanwhile, learned another step
    other.record("1.1", 0.5)
    other.save()
    again = History(path)
    assert again.expect("51.4") == 30.0 and again.expect("1.1") == 0.5
    assert json.loads(path.read_text()) == {"1.1": 0.5, "51.4": 30.0}


def test_history_ignores_a_damaged_file_and_defaults_to_the_cache_dir(tmp_cache, monkeypatch):
    monkeypatch.delenv(schedule.ENV_PATH)
    h = History()
    assert h.path == tmp_cache / schedule.FILE
    tmp_cache.mkdir(parents=True)
    h.path.write_text("{not json")
    assert History().expect("1.1") is None
    h.save()                              # nothing learned: the file is left alone
    assert h.path.read_text() == "{not json"
    h.record("1.1", 1.0)
    h.save()
    assert History().expect("1.1") == 1.0


def test_history_path_override_and_only_finite_values(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.json"
    monkeypatch.setenv(schedule.ENV_PATH, str(path))
    path.write_text('{"1.1": NaN, "1.2": -1, "1.3": Infinity, "1.4": 3.5}')
    h = History()
    assert h.path == path
    assert h.known == {"1.4": 3.5}


class FakeBackend:
    """Outcomes from a script (statuses in order); records the jobs-left hints."""

    def __init__(self, statuses=(), close_on_run=False):
        self.statuses, self.close_on_run = list(statuses), close_on_run
        self.hints, self.runs, self.closing = [], 0, False

    def jobs_left(self, n):
        self.hints.append(n)

    def run(self, job):
        from types import SimpleNamespace
        self.runs += 1
        if self.close_on_run:
            self.closing = True   # as Ctrl-C shuts the backend under a running job
        status = self.statuses.pop(0) if self.statuses else "ok"
        return SimpleNamespace(status=status, stderr="daemon went away", duration=1.0)


def test_queue_counts_jobs_left_down_and_runs_the_longest_first(tmp_path):
    history = History(tmp_path / "h.json")
    history.record("slow", 50.0)
    be = FakeBackend()
    order = []
    with JobQueue(be, 1, 4, history=history) as q:
        gate = threading.Event()
        first = q.submit("x", lambda: (gate.wait(), q.run("job", "x")))   # holds the only worker
        futs = [q.submit(s, lambda s=s: (order.append(s), q.run("job", s))) for s in ("fast", "slow")]
        q.skip()                                  # one job will never start (e.g. a cached verdict)
        gate.set()
        for f in [first, *futs]:
            f.result(timeout=5)
        q.record("fast", 0.1)
    assert order == ["slow", "fast"]
    assert be.hints == [4, 3, 2, 1, 0]            # the warm pool is told, in order, what is left
    assert History(tmp_path / "h.json").expect("fast") == 0.1   # stop saved what was learned


def test_queue_submits_in_order_when_fifo(tmp_path):
    history = History(tmp_path / "h.json")
    history.record("slow", 50.0)
    order = []
    with JobQueue(FakeBackend(), 1, 3, history=history, fifo=True) as q:
        gate = threading.Event()
        futs = [q.submit("x", gate.wait)]
        futs += [q.submit(s, order.append, s) for s in ("fast", "slow")]
        gate.set()
        for f in futs:
            f.result(timeout=5)
    assert order == ["fast", "slow"]


def test_queue_retries_infra_failures_a_bounded_number_of_times(tmp_path):
    history = History(tmp_path / "h.json")
    be = FakeBackend(["infra", "ok"])
    with JobQueue(be, 1, 1, history=history, backoff=(0.01, 0.01)) as q:
        assert q.run("job", "1.1").status == "ok" and be.runs == 2
    be = FakeBackend(["infra"] * 5)
    with JobQueue(be, 1, 1, history=history, backoff=(0.01, 0.01)) as q:
        assert q.run("job", "1.1").status == "infra"
    assert be.runs == 1 + schedule.INFRA_RETRIES
    assert be.hints == [1, 0]                     # one job, counted once however often it ran


def test_queue_does_not_retry_once_the_backend_is_shut(tmp_path):
    be = FakeBackend(["infra"] * 5, close_on_run=True)
    with JobQueue(be, 1, 1, history=History(tmp_path / "h.json"), backoff=(30.0, 30.0)) as q:
        assert q.run("job", "1.1").status == "infra"
    assert be.runs == 1


def test_queue_stop_cancels_queued_jobs_and_refuses_new_ones(tmp_path):
    q = JobQueue(FakeBackend(), 1, 3, history=History(tmp_path / "h.json"))
    gate, started = threading.Event(), threading.Event()
    running = q.submit("a", lambda: (started.set(), gate.wait())[1])
    queued = q.submit("b", lambda: "never")
    assert started.wait(5)
    q.stop()
    assert queued.cancelled()
    with pytest.raises(RuntimeError):
        q.submit("c", print)
    gate.set()
    assert running.result(timeout=5) is True
    assert q.join(1.0)
