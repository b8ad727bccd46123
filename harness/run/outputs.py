"""Writes to the output directory that can fail (full disk, quota, read-only) and the run log."""
from __future__ import annotations

import logging
from pathlib import Path

from harness.errors import HarnessError


class OutputError(HarnessError):
    """The output directory became unwritable or full: the run stops, stored work is kept."""


def output(fn, *args):
    """Write to the output dir; an OSError there (read-only, no space) stops the run."""
    try:
        return fn(*args)
    except OSError as e:
        raise OutputError(f"cannot write the output ({e})") from None


class _QuietFileHandler(logging.FileHandler):
    """A full or read-only log disk stops the run through the stores (one clear line),
    not through a logging traceback per record."""

    def handleError(self, record) -> None:
        pass


def setup_logging(log_dir: Path, quiet: bool) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    handler = _QuietFileHandler(log_dir / "scicode_eval.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
