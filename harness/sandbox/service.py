"""Long-lived helper programs in a backend's environment (`Backend.service`).

A service runs trusted code (the verifier), never model code, but it still handles
untrusted data, so the Docker one gets the sandbox's hardening: no network, read-only
root, no capabilities, non-root, memory/pids limits, labelled for `sweep`. It speaks
lines: `send(bytes)`, `readline(timeout) -> bytes | None`, `close()`.
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
import time
from typing import Optional

LINE_LIMIT = 512 << 20


class _Lines:
    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > LINE_LIMIT and b"\n" not in self.buf:
            raise OSError("service line too long")

    def pop(self) -> Optional[bytes]:
        i = self.buf.find(b"\n")
        if i < 0:
            return None
        line = bytes(self.buf[:i])
        del self.buf[:i + 1]
        return line


def _readline(lines: _Lines, recv, timeout: float, feed=None) -> Optional[bytes]:
    """The next line, reading with `recv(seconds_left)` (None: nothing yet, b"": closed);
    `feed` takes raw chunks (default: straight into `lines`). None on timeout or EOF."""
    feed = feed or lines.feed
    end = time.monotonic() + timeout
    while True:
        line = lines.pop()
        if line is not None:
            return line
        left = end - time.monotonic()
        if left <= 0:
            return None
        chunk = recv(left)
        if chunk == b"":
            return None
        if chunk:
            feed(chunk)


class ProcessService:
    """A child process of the backend's interpreter, in its own session."""

    def __init__(self, argv: list[str], env: dict, cwd: Optional[str] = None, pass_fds: tuple = ()):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=env, cwd=cwd,
                                     start_new_session=True, pass_fds=pass_fds)
        self.lines = _Lines()

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def readline(self, timeout: float) -> Optional[bytes]:
        return _readline(self.lines, self._recv, timeout)

    def _recv(self, left: float) -> Optional[bytes]:
        """Up to 1 MB, b"" at EOF, None when nothing came within `left` seconds."""
        fd = self.proc.stdout.fileno()
        r, _, _ = select.select([fd], [], [], left)
        return os.read(fd, 1 << 20) if r else None

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, 9)
        except OSError:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


class DockerService:
    """A hardened long-lived container from the backend's image, over the attach socket."""

    def __init__(self, backend, source: str, name: str, args: Optional[list[str]] = None):
        from harness.sandbox.docker_pool import Demux, Slot
        self.backend = backend
        self.lines = _Lines()

        class _Sink:
            def __init__(self, lines):
                self.lines = lines

            def feed(self, data):
                self.lines.feed(data)

        class _Drop:
            def feed(self, data):
                pass

        self.demux = Demux(_Sink(self.lines), _Drop())
        self.slot: Slot = backend.start_service(["python3", "-c", source, *(args or [])], name)
        self.raw = self.slot.raw

    def send(self, data: bytes) -> None:
        self.raw.settimeout(60)
        self.raw.sendall(data)

    def readline(self, timeout: float) -> Optional[bytes]:
        return _readline(self.lines, self._recv, timeout, self.demux.feed)

    def _recv(self, left: float) -> Optional[bytes]:
        self.raw.settimeout(left)
        try:
            return self.raw.recv(1 << 20)
        except socket.timeout:
            return None

    def close(self) -> None:
        self.backend.discard_service(self.slot)
