"""Host side of the verifier: one long-lived verifier process per run, shared by all jobs.

The backend starts it in its own pinned environment (``Backend.service``): a hardened
container from the sandbox image, or a child process of the sandbox interpreter. Requests
are serialised (a check takes milliseconds); a verifier that dies or does not answer in
time is restarted (counted in `restarts`) and tried once more, then the candidate's tests
become errors, never passes; the next candidate gets a fresh one. Its address space is
capped (`memory`), so a comparison that would allocate too much errs that test instead.
What it answers is bounded on the way back (harness.sandbox.boundary.verdicts).
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Callable, Optional
from pathlib import Path

from harness.sandbox import boundary

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
_SANDBOX = _HERE.parents[1] / "sandbox"   # the in-sandbox sources it embeds
CHECK_TIMEOUT = 120.0      # seconds for one candidate's checks (honest ones take under 3 s)
START_TIMEOUT = 120.0


def _source() -> str:
    # These bytes are part of every cached verdict's key (pipeline.Engine.grading_key): an edit
    # to verifier_main.py, even to its docstring, re-runs every candidate of a resumed run.
    codec_src = (_SANDBOX / "codec.py").read_text()
    cmp_src = (_SANDBOX / "shim_cmp.py").read_text()
    main_src = (_HERE / "verifier_main.py").read_text()
    return (f"_CODEC_SRC = {codec_src!r}\n_CMP_SRC = {cmp_src!r}\n__name__ = '__main__'\n"
            + main_src)


VERIFIER_SOURCE: str = _source()


class VerifierError(RuntimeError):
    """The verifier could not be started or stopped answering."""


class Verifier:
    def __init__(self, backend, memory: int = 0, check_seconds: Optional[float] = None):
        self.backend = backend
        self.args = [f"--memory={memory}"] if memory else []   # its address space (0: no limit)
        if check_seconds:   # one test's check (default: verifier_main.CHECK_SECONDS)
            self.args.append(f"--check-seconds={check_seconds}")
        self.restarts = 0          # times it was restarted after dying or not answering
        self._svc = None
        self._lock = threading.Lock()
        self._n = 0
        self.versions: dict = {}
        self.closed = False
        self._held: set[str] = set()    # targets the running verifier keeps
        self.started = threading.Event()
        self._background = False
        self.start_error: Optional[BaseException] = None

    def _start(self) -> None:
        self._svc = self.backend.service(VERIFIER_SOURCE, "verifier", args=self.args)
        line = self._svc.readline(START_TIMEOUT)
        if not line:
            err = self._svc.stderr_tail() if hasattr(self._svc, "stderr_tail") else ""
            self._stop()
            raise VerifierError(f"the verifier did not start{': ' + err if err else ''}")
        hello = json.loads(line)
        self.versions = hello.get("versions") or {}

    def _stop(self) -> None:
        self._held = set()
        if self._svc is not None:
            try:
                self._svc.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the verifier: %s", exc)
            self._svc = None

    def start(self) -> dict:
        """Start now, so a broken environment fails before any verdict is needed."""
        with self._lock:
            if self._svc is None and not self.closed:
                self._start()
                if self.closed:   # closed while starting (Ctrl-C): nothing will use it
                    self._stop()
            return self.versions

    def start_background(self) -> None:
        """`start` on a thread of its own, so the first jobs need not wait for it; `started`
        is set when it has ended, with `start_error` set if it failed (a check then tries
        again, under the same lock, and fails the same way)."""
        self._background = True

        def go():
            try:
                self.start()
            except Exception as exc:  # noqa: BLE001 - reported by whoever waits on `started`
                self.start_error = exc
            finally:
                self.started.set()
        threading.Thread(target=go, name="verifier-start", daemon=True).start()

    def check(self, deps: str, checks: list[dict], targets_key: str,
              targets: Callable[[], list], timeout: float = CHECK_TIMEOUT) -> list[dict]:
        """One result per check: {"status": pass|fail|error, "error": str|None}. Each check
        names its test's target by index ("t") in the step's targets; `targets()` gives them
        encoded, and is called only when the verifier does not hold `targets_key` yet (it
        keeps each step's targets, so n samples of a step send them once)."""
        if not checks:
            return []
        # read outside the lock: a read can block (the h5 reader), and close() must not wait on it
        encoded = targets() if targets_key not in self._held else None
        with self._lock:
            if self.closed:
                raise VerifierError("the verifier is closed")
            why = "the verifier did not answer"
            for attempt in (1, 2):
                if self._svc is None:
                    try:
                        self._start()
                    except VerifierError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - daemon gone, backend closed
                        raise VerifierError(f"cannot (re)start the verifier: {exc}") from None
                self._n += 1
                req = {"id": self._n, "deps": deps, "checks": checks, "targets_key": targets_key}
                if targets_key not in self._held:   # (again after a restart)
                    encoded = targets() if encoded is None else encoded
                    req["targets"] = encoded
                try:
                    self._send(req)
                    del req
                    line = self._svc.readline(timeout)
                except (ValueError, TypeError, RecursionError) as exc:   # values no channel carries
                    self._stop()   # half a line may be sent: a fresh verifier for the next one
                    self.restarts += 1
                    return [{"status": "error", "error": f"not verified: value not sendable ({exc})"[:300]}
                            for _ in checks]
                except OSError as exc:
                    line, why = None, f"lost the verifier: {exc}"
                else:
                    why = "the verifier died or did not answer in time"
                if line:
                    results, why = self._reply(line, len(checks), targets_key)
                    if results is not None:
                        return results
                log.warning("%s (attempt %d); restarting it", why, attempt)
                self._stop()
                self.restarts += 1
            return [{"status": "error", "error": f"not verified: {why}"} for _ in checks]

    def _reply(self, line: bytes, n: int, targets_key: str) -> tuple[Optional[list], str]:
        """(bounded results, or None and why) from the verifier's answer line."""
        try:
            reply = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None, "unreadable verifier reply"
        results = boundary.verdicts(reply.get("results"), n) if isinstance(reply, dict) else None
        if results is None or reply.get("id") != self._n:
            err = reply.get("error") if isinstance(reply, dict) else None
            return None, f"bad verifier reply: {boundary.text(str(err or reply), 200)}"
        if reply.get("held"):
            self._held.add(targets_key)
        return results, ""

    def _send(self, obj: dict, size: int = 1 << 20) -> None:
        """One JSON line, written in pieces of about `size` (large values are never held as
        one JSON text plus its bytes)."""
        buf, n = [], 0
        for piece in json.JSONEncoder(allow_nan=False).iterencode(obj):
            buf.append(piece)
            n += len(piece)
            if n >= size:
                self._svc.send("".join(buf).encode())
                buf, n = [], 0
        buf.append("\n")
        self._svc.send("".join(buf).encode())

    def close(self, wait: float = 5.0) -> None:
        self.closed = True
        if self._background and not self.started.wait(wait):
            return   # a hung start: it stops what it makes (it sees `closed`); the backend's
            #          close removes its container
        if not self._lock.acquire(timeout=wait):
            # a check is waiting for an answer: end the service under it (it then fails)
            svc = self._svc
            if svc is not None:
                try:
                    svc.close()
                except Exception as exc:  # noqa: BLE001
                    log.warning("closing the verifier: %s", exc)
            if not self._lock.acquire(timeout=wait):
                log.warning("the verifier did not stop in time")
                return
        try:
            self._stop()
        finally:
            self._lock.release()
