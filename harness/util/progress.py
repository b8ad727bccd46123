"""Progress for generation and execution: rich bars on a terminal, plain lines otherwise."""
from __future__ import annotations

import sys
import threading
import time
from collections import Counter


class Progress:
    def __init__(self, total: int, quiet: bool = False, interval: float = 15.0, stream=None, style: str = "auto"):
        self.total, self.quiet, self.interval = total, quiet, interval
        self.stream = stream or sys.stderr
        self.gen = self.gen_failed = self.done = 0
        self.status: Counter = Counter()
        self._lock = threading.Lock()
        self._last = 0.0
        self._rich = None
        self._t0 = time.time()
        self.style = style

    def __enter__(self):
        if not self.quiet and (self.style == "rich" or (self.style == "auto" and self.stream.isatty())):
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeElapsedColumn
            self._rich = RP(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), transient=False)
            self._rich.start()
            self._g = self._rich.add_task("generate", total=self.total, info="")
            self._e = self._rich.add_task("execute ", total=self.total, info="")
        return self

    def __exit__(self, *exc):
        if self._rich:
            self._rich.stop()
        elif not self.quiet:
            self._line(force=True)

    def _counts(self) -> str:
        return " ".join(f"{k} {v}" for k, v in sorted(self.status.items()))

    def _line(self, force=False):
        now = time.time()
        if force or now - self._last >= self.interval:
            self._last = now
            print(f"[scicode_eval {now - self._t0:6.0f}s] generated {self.gen}/{self.total}"
                  f" (failed {self.gen_failed}), executed {self.done}/{self.total}: {self._counts()}",
                  file=self.stream, flush=True)

    def generated(self, failed: bool = False):
        with self._lock:
            self.gen += 1
            self.gen_failed += failed
            if self._rich:
                self._rich.update(self._g, advance=1, info=f"failed {self.gen_failed}" if self.gen_failed else "")
            elif not self.quiet:
                self._line()

    def executed(self, status: str):
        with self._lock:
            self.done += 1
            self.status[status] += 1
            if self._rich:
                self._rich.update(self._e, advance=1, info=self._counts())
            elif not self.quiet:
                self._line()
