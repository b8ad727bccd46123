"""Longest-expected-first dispatch: the priority pool and the step-duration history."""
import json
import threading

import pytest

from harness.run import schedule
from harness.run.schedule import History, PriorityPool


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
