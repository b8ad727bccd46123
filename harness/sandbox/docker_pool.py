"""The Docker backend's moving parts: a started container (`Slot`), the attach-stream
demultiplexer, the single-use warm pool and the reaper that removes finished containers
off the job's path. See harness/sandbox/docker_backend.py for the design."""
from __future__ import annotations

import collections
import logging
import queue
import select
import socket
import struct
import threading
import time
from typing import Optional, Protocol

from harness.sandbox import Limits

log = logging.getLogger("harness.sandbox.docker_backend")
JOIN_WAIT = 3.0            # seconds close() waits for warm-pool threads (they are daemons)


class PoolHost(Protocol):
    """What the warm pool and the reaper need of their backend (DockerBackend)."""

    limits: Limits
    _closed: bool

    def _start(self, lim: Limits, job_id: str) -> "Slot": ...

    def _discard(self, slot: "Slot") -> None: ...

    def _discard_async(self, slot: "Slot") -> None: ...

    def _remove(self, cid: str) -> None: ...


def limits_key(lim: Limits) -> tuple:
    return (lim.memory, float(lim.cpus), int(lim.pids), lim.fsize, lim.tmpfs)


class Slot:
    """A created, attached and started container waiting for (or running) one job."""

    __slots__ = ("cid", "sock", "raw", "key", "started", "tls", "wall")

    def __init__(self, cid, sock, key, tls):
        self.cid = cid
        self.sock = sock
        self.raw = getattr(sock, "_sock", sock)   # the real socket under SocketIO
        self.key = key
        self.started = time.monotonic()
        self.wall = time.time()
        self.tls = tls

    def dead(self) -> bool:
        """True if the container already closed its streams (exited before its job)."""
        if self.tls:
            return False
        try:
            r, _, _ = select.select([self.raw], [], [], 0)
            if not r:
                return False
            return self.raw.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True


class Demux:
    """Splits Docker's multiplexed attach stream (8-byte headers) into stdout/stderr."""

    def __init__(self, out, err):
        self.sinks = {1: out, 2: err, 3: err, 0: out}
        self.header = bytearray()
        self.stream = None
        self.left = 0

    def feed(self, data: bytes) -> None:
        mv = memoryview(data)
        while mv:
            if self.left == 0:
                need = 8 - len(self.header)
                self.header += mv[:need]
                mv = mv[need:]
                if len(self.header) < 8:
                    return
                self.stream, self.left = struct.unpack(">BxxxL", bytes(self.header))
                self.header.clear()
                continue
            part = mv[:self.left]
            mv = mv[len(part):]
            self.left -= len(part)
            sink = self.sinks.get(self.stream)
            if sink is not None:
                sink.feed(bytes(part))


class WarmPool:
    """Single-use pre-started containers; `size` of them ready or being made at once."""

    def __init__(self, backend: PoolHost, size: int):
        self.backend = backend
        self.size = max(int(size), 0)
        self.key = limits_key(backend.limits)
        self.ready: collections.deque[Slot] = collections.deque()
        self.cond = threading.Condition()
        self.creating = 0
        self.closed = False
        self.failures = 0
        self.hits = 0
        self.misses = 0
        self.left: Optional[int] = None   # jobs still to come, when the caller says
        self.threads = [threading.Thread(target=self._fill, name=f"sandbox-warm-{i}", daemon=True)
                        for i in range(self.size)]
        for t in self.threads:
            t.start()

    def _fill(self) -> None:
        while True:
            with self.cond:
                while not self.closed and len(self.ready) + self.creating >= self._target():
                    self.cond.wait()
                if self.closed:
                    return
                self.creating += 1
            slot = None
            try:
                slot = self.backend._start(self.backend.limits, "warm")
            except Exception as exc:
                with self.cond:
                    self.creating -= 1
                    self.cond.notify_all()
                    if self.closed or self.backend._closed:
                        return
                    self.failures += 1
                    delay = min(10.0, 0.25 * 2 ** min(self.failures, 6))
                    log.warning("warm sandbox container failed to start (%s); retrying in %.1fs",
                                short_error(exc), delay)
                    self.cond.wait(delay)
                continue
            with self.cond:
                self.creating -= 1
                if slot is not None:
                    if self.closed:
                        self.backend._discard(slot)
                    else:
                        self.ready.append(slot)
                        self.failures = 0
                self.cond.notify_all()

    def _target(self) -> int:
        return self.size if self.left is None else min(self.size, self.left)

    def set_left(self, n: int) -> None:
        with self.cond:
            self.left = max(int(n), 0)
            self.cond.notify_all()

    def take(self, limits: Limits, wait: float = 30.0) -> Optional[Slot]:
        """A ready container for these limits, waiting for one being made; else None."""
        if self.size == 0 or limits_key(limits) != self.key:
            return None
        end = time.monotonic() + wait
        with self.cond:
            while True:
                while self.ready:
                    slot = self.ready.popleft()
                    self.cond.notify_all()
                    if slot.dead():
                        self.backend._discard_async(slot)
                        continue
                    self.hits += 1
                    return slot
                remaining = end - time.monotonic()
                if self.closed or self.failures or self.creating == 0 or remaining <= 0:
                    self.misses += 1
                    return None
                self.cond.wait(remaining)

    def close(self) -> None:
        with self.cond:
            self.closed = True
            slots = list(self.ready)
            self.ready.clear()
            self.cond.notify_all()
        for slot in slots:
            self.backend._discard(slot)
        end = time.monotonic() + JOIN_WAIT   # a start stuck in the daemon must not hold up exit
        for t in self.threads:
            t.join(timeout=max(end - time.monotonic(), 0))


class Reaper:
    """Removes finished containers off the job's critical path, with a bounded backlog."""

    def __init__(self, backend: PoolHost, backlog: int):
        self.backend = backend
        self.slots = threading.BoundedSemaphore(max(backlog, 1))
        self.queue: "queue.Queue[Optional[Slot]]" = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="sandbox-reaper", daemon=True)
        self.thread.start()

    def submit(self, slot: Slot) -> None:
        close_sock(slot.sock)
        self.slots.acquire()          # back-pressure: never more than `backlog` pending
        self.queue.put(slot)

    def _loop(self) -> None:
        while True:
            slot = self.queue.get()
            if slot is None:
                return
            try:
                self.backend._remove(slot.cid)
            finally:
                self.slots.release()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join(timeout=30)


def close_sock(sock) -> None:
    for obj in (getattr(sock, "_sock", None), sock):
        if obj is None:
            continue
        try:
            obj.close()
        except Exception:
            pass
    resp = getattr(sock, "_response", None)
    if resp is not None:
        try:
            resp.close()
        except Exception:
            pass


def short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(exc).__name__}: {msg}"[:500] if msg else type(exc).__name__

