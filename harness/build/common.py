"""What the two builds (sandbox image, harness container) share: the Docker client, a file lock,
streaming a command's output, the last line of an error."""
from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from typing import Callable

from harness.sandbox.image_lookup import ImageError
from harness.util.paths import cache_dir

Say = Callable[[str], None]   # where a build reports its lines (print, typer.echo)


def docker_client(timeout: int = 120):
    """A docker SDK client that answered ping, else ImageError."""
    try:
        import docker
    except ImportError:  # pragma: no cover - a declared dependency
        raise ImageError("the docker Python SDK is not installed (pip install 'docker>=7.1')") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as e:  # DockerException, requests errors, socket errors
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"cannot reach the Docker engine ({msg[:200]}); "
                         "start one with scripts/ensure-docker.sh or set DOCKER_HOST") from None
    return client


@contextlib.contextmanager
def flock(path: Path):
    """Hold an exclusive lock on `path` (serialises builds across processes: tests, CLI, workers)."""
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build_lock():
    """The lock every image build holds (the sandbox image, and the harness container while it
    debootstraps the shared base or fills the sandbox wheelhouse)."""
    return flock(cache_dir() / "image-build.lock")


def last_line(text: str, default: str = "") -> str:
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line:
            return line[:300]
    return default


def run_streaming(cmd: list[str], progress: Say, log_path: Path | None = None,
                  env: dict | None = None, prefix: str = "") -> tuple[int, str]:
    """Run cmd, forward each output line to progress, return (rc, last lines)."""
    tail: list[str] = []
    log = open(log_path, "w") if log_path else None
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, errors="replace", env=env)
        assert proc.stdout is not None
        for line in proc.stdout:
            if log:
                log.write(line)
            line = line.rstrip()
            if line:
                tail = (tail + [line])[-20:]
                progress(prefix + line)
        rc = proc.wait()
    finally:
        if log:
            log.close()
    return rc, "\n".join(tail)
