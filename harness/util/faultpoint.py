"""Test seam for the fault-injection suite (tests/test_faults.py): widen a moment of a run.

``SCICODE_FAULT_PAUSE="h5read=3,container_start=2,report=3"`` makes the first pass through
each named point announce itself on stderr (``scicode_eval: fault point NAME``) and then
pause, so a test can deliver a signal exactly there. Unset (always, outside tests): nothing.
Points: ``h5read`` (the targets reader, holding h5py's global lock as a read does),
``container_start`` (a sandbox container created, not yet started), ``report`` (about to
write records.jsonl and the results JSON).
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import nullcontext

ENV = "SCICODE_FAULT_PAUSE"
_done: set = set()
_lock = threading.Lock()


def _spec() -> dict:
    out = {}
    for part in (os.environ.get(ENV) or "").split(","):
        name, _, secs = part.partition("=")
        if name.strip():
            out[name.strip()] = float(secs or 1.0)
    return out


def point(name: str, hold=None) -> None:
    """Pause at `name` once per process if the environment asks; `hold`: a lock (context
    manager) kept held during the pause."""
    if ENV not in os.environ:
        return
    secs = _spec().get(name)
    with _lock:
        if secs is None or name in _done:
            return
        _done.add(name)
    with hold if hold is not None else nullcontext():
        print(f"scicode_eval: fault point {name}", file=sys.stderr, flush=True)
        time.sleep(secs)
