"""The program every backend runs inside the sandbox, and the host-side helpers around it.

Protocol (shared with the pipeline; see the module docs of harness.sandbox):

* The sandbox runs ``python3 -c RUNNER_SOURCE``: harness/sandbox/inside.py with
  harness/sandbox/codec.py and the scicode shims embedded. It imports numpy and scipy (and
  any ``--preload=a,b`` modules) *before* reading stdin, so a warm container has
  already paid for them.
* Then it reads one line of stdin: the JSON object made by :func:`payload`
  ``{"code", "tests", "targets", "record", "marker"}``. It does not need EOF (so
  transports that cannot half-close still work); fd 0 is then pointed at
  /dev/null, so model code never sees or waits on the harness's input.
* Script mode (``tests`` is None): ``code`` runs as ``__main__``; the exit status
  is the program's own. No report.
* Tests mode: ``code`` runs as ``__main__``, then each test snippet in the same
  namespace. Strict grading sends no targets and ``record``: each test's
  ``__scicode_record__(value)`` calls collect codec-encoded values for the verifier,
  and "pass" only means the snippet ran. In-process grading (unsafe) binds
  ``target`` to its decoded target and the snippets assert; pass / fail
  (AssertionError) / error (any other Exception). SystemExit, KeyboardInterrupt
  or any other BaseException stops the run with ``completed=false``. The report
  goes to a copy of the original stdout taken before model code ran, as one line
  ``"\\n" + marker + json + "\\n"``, right after ``"\\n" + marker + "\\n"`` on a
  copy of the original stderr (so the host knows both streams are complete without
  waiting for the process to end); exit 0 only if completed and all passed.

Host side: :func:`payload`, :func:`parse_report`, :func:`new_marker`, the bounded
output captures that backends feed the raw streams into (the report line is
split off before capping, so a large report survives a small output cap), and
:func:`classify` that maps exit status + report to an Outcome status.
"""
from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Optional

from harness.sandbox import Report
from harness.sandbox.boundary import REPORT_LIMIT, read_report

_HERE = Path(__file__).resolve().parent
TRUNCATION_NOTE = "\n...[{n} bytes truncated]...\n"

# ----------------------------------------------------------------------------------------
# in-sandbox program
# ----------------------------------------------------------------------------------------

def _source() -> str:
    embed = {"_CODEC_SRC": (_HERE / "codec.py").read_text(),
             "_CMP_SRC": (_HERE / "shim_cmp.py").read_text(),
             "_PARSE_SRC": (_HERE / "shim_parse.py").read_text()}
    head = "".join(f"{k} = {v!r}\n" for k, v in embed.items())
    return head + (_HERE / "inside.py").read_text()


RUNNER_SOURCE: str = _source()


def runner_argv(python: str = "python3", preload: Optional[list[str]] = None) -> list[str]:
    """argv that starts the runner; `preload` names extra modules imported before stdin."""
    argv = [python, "-c", RUNNER_SOURCE]
    if preload:
        argv.append("--preload=" + ",".join(preload))
    return argv


# ----------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------

def new_marker() -> str:
    """A per-job random marker; model code cannot guess it from outside the runner."""
    return "@@SCICODE-REPORT-" + secrets.token_hex(16) + "@@"


def payload(job, marker: str) -> bytes:
    """The single stdin line the runner reads (JSON never contains a raw newline)."""
    obj = {"code": job.code, "tests": None if job.tests is None else list(job.tests),
           "targets": job.targets, "record": bool(job.record), "marker": marker}
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False)
    text += "\n"  # in place when nothing else holds the string: one large copy less
    return text.encode("ascii")


def payload_chunks(job, marker: str, size: int = 1 << 20):
    """The same bytes as payload(), in pieces of about `size`: large targets are never
    held as one JSON text plus its bytes at once (the harness's peak memory)."""
    obj = {"code": job.code, "tests": None if job.tests is None else list(job.tests),
           "targets": job.targets, "record": bool(job.record), "marker": marker}
    buf, n = [], 0
    for piece in json.JSONEncoder(ensure_ascii=True, allow_nan=False).iterencode(obj):
        data = piece.encode("ascii")
        buf.append(data)
        n += len(data)
        if n >= size:
            yield b"".join(buf)
            buf, n = [], 0
    buf.append(b"\n")
    yield b"".join(buf)


def parse_report(stdout: str, marker: str) -> Optional[Report]:
    """The last report line in stdout (bounded, checked: harness.sandbox.boundary), or None if
    absent."""
    idx = stdout.rfind(marker)
    if idx < 0:
        return None
    end = stdout.find("\n", idx)
    raw = stdout[idx + len(marker): end if end >= 0 else len(stdout)]
    return _load_report(raw)


def strip_report(stdout: str, marker: str) -> str:
    """stdout without the report line(s) the runner appended."""
    return re.sub("\n?" + re.escape(marker) + "[^\n]*\n?", "", stdout)


def _load_report(raw) -> Report:
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    return read_report(raw)   # forged by model code: an invalid report, never an exception


def parse_size(value) -> int:
    """'256m' / '2g' / '1.5G' / '4096' / 4096 -> bytes (binary units)."""
    if isinstance(value, (int, float)):
        return int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)i?b?\s*", str(value), re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 512m, 2g)")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


class HeadTail:
    """Keeps the first and last `limit/2` bytes of a stream; memory stays O(limit)."""

    def __init__(self, limit: int):
        self.limit = max(int(limit), 0)
        self.head_cap = self.limit // 2
        self.tail_cap = self.limit - self.head_cap
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        if not data:
            return
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data or self.tail_cap == 0:
            return
        if len(data) >= self.tail_cap:
            self.tail[:] = data[-self.tail_cap:]
        else:
            self.tail += data
            if len(self.tail) > 2 * self.tail_cap:
                del self.tail[:len(self.tail) - self.tail_cap]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + min(len(self.tail), self.tail_cap)

    def text(self) -> str:
        tail = bytes(self.tail[-self.tail_cap:]) if self.tail_cap else b""
        kept = len(self.head) + len(tail)
        if self.total > kept:
            body = (bytes(self.head).decode("utf-8", "replace")
                    + TRUNCATION_NOTE.format(n=self.total - kept)
                    + tail.decode("utf-8", "replace"))
        else:
            body = (bytes(self.head) + tail).decode("utf-8", "replace")
        return body


class StdoutCapture:
    """stdout capture that splits off the runner's report line before capping.

    The report starts at ``"\\n" + marker`` and ends at the next newline; it is kept
    (up to REPORT_LIMIT) apart from the capped program output. The last report wins.
    """

    def __init__(self, limit: int, marker: Optional[str]):
        self.out = HeadTail(limit)
        self.needle = ("\n" + marker).encode() if marker else None
        self.carry = b""
        self.current: Optional[bytearray] = None    # report being read
        self.report_raw: Optional[bytearray] = None   # freed once parsed
        self._parsed = False
        self._report: Optional[Report] = None
        self.report_overflow = False

    def feed(self, data: bytes) -> None:
        if self.needle is None:
            self.out.feed(data)
            return
        while data:
            if self.current is not None:
                nl = data.find(b"\n")
                part = data if nl < 0 else data[:nl]
                if len(self.current) + len(part) > REPORT_LIMIT:
                    self.report_overflow = True
                else:
                    self.current += part
                if nl < 0:
                    return
                if not self.report_overflow:
                    self.report_raw = self.current     # no copy: large values
                self.current = None
                self.report_overflow = False
                data = data[nl + 1:]
                continue
            buf = self.carry + data
            idx = buf.find(self.needle)
            if idx >= 0:
                self.out.feed(buf[:idx])
                self.carry = b""
                self.current = bytearray()
                data = buf[idx + len(self.needle):]
                continue
            keep = len(self.needle) - 1
            if len(buf) > keep:
                self.out.feed(buf[:len(buf) - keep])
                self.carry = buf[len(buf) - keep:]
            else:
                self.carry = buf
            return

    def finish(self) -> None:
        if self.current is not None and not self.report_overflow:
            self.report_raw = self.current   # report without trailing newline
        self.current = None
        self.out.feed(self.carry)
        self.carry = b""

    @property
    def truncated(self) -> bool:
        return self.out.truncated or self.report_overflow

    @property
    def seen(self) -> bool:
        """A complete marker line (report, or the stderr end sentinel) has arrived."""
        return self.report_raw is not None or self._parsed

    def report(self) -> Optional[Report]:
        if not self._parsed and self.report_raw is not None:
            # parsed once; the raw bytes go (a report can carry tens of MB of values)
            self._report, self.report_raw, self._parsed = _load_report(self.report_raw), None, True
        return self._report

    def text(self) -> str:
        return self.out.text()


def classify(exit_code: Optional[int], tests_mode: bool, report: Optional[Report],
             timed_out: bool = False, oom: bool = False) -> str:
    """Outcome status from how the job ended.

    tests mode: `ok` needs exit 0 *and* a report (an os._exit(0) that skipped the
    runner's report is an error, never a pass).
    """
    if timed_out:
        return "timeout"
    if oom:
        return "oom"
    if exit_code is None:
        return "infra"
    if exit_code != 0:
        return "error"
    if tests_mode and report is None:
        return "error"
    return "ok"


_MEMERR = re.compile(r"^(?:[\w.]+\.)?_?\w*MemoryError\b", re.MULTILINE)


def memory_evidence(stderr: str, report: Optional[Report]) -> bool:
    """True when the job died of memory exhaustion it noticed itself (a MemoryError)."""
    if _MEMERR.search(stderr[-8192:]):
        return True
    if report:
        texts = [report.import_error or ""] + [t.error or "" for t in report.tests]
        return any(_MEMERR.match(t) for t in texts)
    return False
