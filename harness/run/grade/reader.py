"""Targets read by one thread that owns every h5py handle.

h5py serialises all calls behind a global lock. If a worker thread were stopped in the
middle of a read (Ctrl-C, SIGTERM), interpreter exit could block on that lock forever.
Here a single reader thread holds the open file; `close()` stops it between reads,
closes the file and joins it, so nothing of h5py outlives the run. No other thread
touches h5py while the reader runs, so a slow read in flight at a Ctrl-C blocks nobody.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, TimeoutError as FutureTimeout
from pathlib import Path


class ReaderClosed(RuntimeError):
    pass


class TargetReader:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.requests: "queue.Queue" = queue.Queue()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name="targets-reader", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        from harness.util import faultpoint
        from harness.data import h5targets
        f = None
        try:
            while True:
                item = self.requests.get()
                if item is None:
                    return
                fut, step_id, n = item
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    if f is None:
                        f = h5targets._open(self.path)
                    faultpoint.point("h5read", _h5_lock())
                    fut.set_result([h5targets._read_test(f, str(step_id), k) for k in range(1, n + 1)])
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting job
                    fut.set_exception(exc)
        finally:
            if f is not None:
                f.close()
            while True:   # nobody waits forever on a request left behind
                try:
                    item = self.requests.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item[0].cancel()

    def get(self, step_id: str, n: int) -> list:
        """The targets of tests 1..n of a step (blocks until read)."""
        if self.closed:
            raise ReaderClosed("targets reader closed")
        fut: Future = Future()
        self.requests.put((fut, step_id, n))
        while True:   # bounded waits: after close() nobody waits for an answer
            try:
                return fut.result(timeout=0.2)
            except FutureTimeout:
                if self.closed:
                    fut.cancel()
                    raise ReaderClosed("targets reader closed") from None

    def close(self, wait: float = 2.0) -> bool:
        """Stop after the read in flight, close the file, join; True if the thread ended.
        A read still running after `wait` s keeps its (daemon) thread: the process then
        leaves without interpreter finalization (cli.evaluate._leave), never blocking on it."""
        self.closed = True
        self.requests.put(None)
        self.thread.join(timeout=wait)
        return not self.thread.is_alive()


def _h5_lock():
    """h5py's global lock, held by every h5py call (the fault suite holds it to stand for a
    read in flight)."""
    from h5py import _objects
    return _objects.phil

