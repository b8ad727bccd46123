"""`scicode-harness env build`: each sandbox environment's hashed lock as a venv, offline.

The venv is made by a system interpreter under /usr (``/usr/bin/python3`` when it is the
wheelhouse's Python version, else the harness's own), so the bwrap sandbox, which binds only
/usr and the venv, can run it. Its packages come from the same wheelhouse as the sandbox image
(harness.build.image.ensure_wheelhouse, downloaded once when missing), installed with
``pip --no-index --require-hashes``; it lands in ``<cache>/envs/<env>/<lock digest>``
(harness.sandbox.venvs), made world-readable, and ``.complete`` is written last.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

from harness.build.common import Say, flock, last_line
from harness.build.image import ensure_wheelhouse
from harness.sandbox.envs import SMOKE_SOURCE
from harness.sandbox.image_lookup import ImageError, lock_path
from harness.sandbox.venvs import STAMP, env_dir, find_env
from harness.util.paths import prune_siblings

WHEEL_PYTHON = (3, 11)      # the wheelhouse's interpreter (harness.build.image.PIP_PLATFORM_ARGS)


def base_python() -> str:
    """/usr/bin/python3 when it is the wheelhouse's version, else the harness's interpreter."""
    system = "/usr/bin/python3"
    if os.access(system, os.X_OK):
        try:
            out = subprocess.run([system, "-c", "import sys, venv; print(*sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=60).stdout.split()
            if tuple(map(int, out)) == WHEEL_PYTHON:
                return system
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return sys.executable


def _run(cmd: list[str], what: str, timeout: float = 1800) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"{what} failed: {exc}") from None
    if p.returncode != 0:
        raise ImageError(f"{what} failed (exit {p.returncode}): "
                         f"{last_line(p.stderr or p.stdout, 'no output')}")
    return p.stdout


def build(env: str, force: bool = False, python: Optional[str] = None, progress: Say = print,
          wheelhouse: Optional[Path] = None) -> Path:
    """The built venv of `env` (reused when its lock's venv is complete); `wheelhouse`: install
    from that directory instead of the cache's (the harness container's build)."""
    target = env_dir(env)
    if not force and find_env(env):
        progress(f"environment {env}: {target} is complete")
        return target
    wheelhouse = wheelhouse or ensure_wheelhouse(progress, env)
    with flock(target.parent.parent / f".{env}.lock"):
        if not force and find_env(env):
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        base = python or base_python()
        progress(f"environment {env}: venv from {base} into {target}")
        try:
            _run([base, "-m", "venv", str(target)], "python -m venv")
            _run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
                  "--disable-pip-version-check", "--no-index", "--find-links", str(wheelhouse), "--only-binary=:all:",
                  "--require-hashes", "--no-deps", "-r", str(lock_path(env))], "pip install")
            _run([str(target / "bin" / "python"), "-c", SMOKE_SOURCE[env]], "the smoke import")
            _world_readable(target)
            (target / STAMP).write_text(env + "\n")
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    for old in prune_siblings(target):
        progress(f"removed the outdated environment {old}")
    return target


def _world_readable(root: Path) -> None:
    """a+rX: uid 65534 (the bwrap and process sandboxes' user) reads the venv."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, mode | 0o444 | (0o111 if mode & 0o111 or os.path.isdir(p) else 0))
    os.chmod(root, 0o755)
