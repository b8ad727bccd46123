"""The program every backend runs inside the sandbox, and the host-side helpers around it.

Protocol (shared with the pipeline; see the module docs of harness.sandbox):

* The sandbox runs ``python3 -c RUNNER_SOURCE``. The source is self-contained: it
  embeds harness/codec.py and the scicode shims. It imports numpy and scipy (and
  any ``--preload=a,b`` modules) *before* reading stdin, so a warm container has
  already paid for them.
* Then it reads one line of stdin: the JSON object made by :func:`payload`
  ``{"code", "tests", "targets", "record", "marker"}``. It does not need EOF (so
  transports that cannot half-close still work); fd 0 is then pointed at
  /dev/null, so model code never sees or waits on the harness's input.
* Script mode (``tests`` is None): ``code`` runs as ``__main__``; the exit status
  is the program's own. No report.
* Tests mode: ``code`` runs as ``__main__``, then each test snippet in the same
  namespace with ``target`` bound to its decoded target; pass / fail
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

_HERE = Path(__file__).resolve().parent
REPORT_LIMIT = 256 << 20          # bytes: a report larger than this is dropped (job -> error)
TRUNCATION_NOTE = "\n...[{n} bytes truncated]...\n"

# ----------------------------------------------------------------------------------------
# in-sandbox program
# ----------------------------------------------------------------------------------------

_PARSE_SHIM = r'''
"""Stand-in for scicode.parse.parse: targets come from the harness, not from test_data.h5."""
import _scicode_runtime


def process_hdf5_to_tuple(step_id, test_num, *args, **kwargs):
    """The decoded targets the harness sent for this job (the first test_num of them)."""
    return list(_scicode_runtime.TARGETS[:int(test_num)])
'''

_TEMPLATE = r'''
import sys, os
if os.getpid() == 1:
    # PID 1 of a fresh PID namespace (process backend): stay a minimal init, like Docker's
    # tini, so the program is an ordinary process (self-signals work, orphans are reaped)
    _child = os.fork()
    if _child:
        while True:
            _pid, _status = os.wait()
            if _pid == _child:
                break
        _code = os.waitstatus_to_exitcode(_status)
        os._exit(128 - _code if _code < 0 else _code)
_argv = sys.argv[1:]
sys.argv = [""]
import json, types, builtins, linecache, traceback
import numpy
import scipy


def _preload(args):
    for arg in args:
        if arg.startswith("--preload="):
            for name in filter(None, arg[len("--preload="):].split(",")):
                try:
                    __import__(name)
                except Exception:
                    pass


_preload(_argv)
del _argv

_CODEC_SRC = @CODEC@
_CMP_SRC = @CMP@
_PARSE_SRC = @PARSE@
_ERR_MAX = 2000


def _module(name, src, filename):
    mod = types.ModuleType(name)
    mod.__file__ = filename
    exec(compile(src, filename, "exec", dont_inherit=True), mod.__dict__)
    sys.modules[name] = mod
    return mod


def _main():
    line = sys.stdin.buffer.readline()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull, "r")
    req = json.loads(line)
    if req.get("tests") is None:
        _script(req["code"])
    else:
        _tests(req)


def _fresh_main():
    mod = types.ModuleType("__main__")
    mod.__file__ = "solution.py"
    mod.__builtins__ = builtins
    sys.modules["__main__"] = mod
    return mod.__dict__


def _compile(src, filename):
    linecache.cache[filename] = (len(src), None, src.splitlines(True), filename)
    return compile(src, filename, "exec", dont_inherit=True)


def _script(code):
    ns = _fresh_main()
    try:
        exec(_compile(code, "solution.py"), ns)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__.tb_next)
        sys.stderr.flush()
        sys.exit(1)


def _describe(exc):
    try:
        text = str(exc)
    except BaseException:
        text = "<unprintable %s>" % type(exc).__name__
    msg = "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
    if not text:
        frames = traceback.extract_tb(exc.__traceback__)
        for fr in reversed(frames):
            if fr.filename.startswith("test_") or fr.filename == "solution.py":
                msg += " at %s:%s: %s" % (fr.filename, fr.lineno, (fr.line or "").strip())
                break
    return msg[:_ERR_MAX]


class _ShimFinder:
    """Serves scicode, scicode.compare(.cmp) and scicode.parse(.parse) from embedded sources."""

    _SOURCES = {"scicode": "", "scicode.compare": "", "scicode.parse": "",
                "scicode.compare.cmp": _CMP_SRC, "scicode.parse.parse": _PARSE_SRC}

    def find_spec(self, name, path=None, target=None):
        if name not in self._SOURCES:
            return None
        import importlib.util
        return importlib.util.spec_from_loader(name, self, is_package=name.count(".") == 0
                                               or name in ("scicode.compare", "scicode.parse"))

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        name = module.__name__
        filename = "<scicode-shim %s>" % name
        exec(compile(self._SOURCES[name], filename, "exec", dont_inherit=True), module.__dict__)


def _tests(req):
    write, dumps, _exit = os.write, json.dumps, os._exit
    report_fd = os.dup(1)
    done_fd = os.dup(2)
    marker = req["marker"]
    codec = _module("_scicode_codec", _CODEC_SRC, "<scicode-codec>")
    tests = list(req["tests"])
    targets = [codec.decode(t) for t in (req.get("targets") or [])]
    runtime = types.ModuleType("_scicode_runtime")
    runtime.TARGETS = targets
    sys.modules["_scicode_runtime"] = runtime
    sys.meta_path.insert(0, _ShimFinder())
    record = bool(req.get("record"))
    records = [] if record else None
    results = []
    completed = False
    import_error = None
    ns = _fresh_main()
    try:
        try:
            exec(_compile(req["code"], "solution.py"), ns)
        except Exception as exc:
            import_error = _describe(exc)
            results = [{"status": "error", "error": "not run: the program failed before the tests"}
                       for _ in tests]
            completed = True
        else:
            for i, test in enumerate(tests):
                if req.get("targets") is not None:   # in-process grading only
                    ns["target"] = targets[i] if i < len(targets) else None
                rec = []
                if record:
                    records.append(rec)

                    def __scicode_record__(value, _rec=rec):
                        _rec.append(codec.encode(value))
                        return value
                    ns["__scicode_record__"] = __scicode_record__
                name = "test_%d.py" % (i + 1)
                results.append({"status": "error", "error": "the run stopped in this test"})
                try:
                    exec(_compile(test, name), ns)
                    results[-1] = {"status": "pass", "error": None}
                except AssertionError as exc:
                    results[-1] = {"status": "fail", "error": _describe(exc)}
                except Exception as exc:
                    results[-1] = {"status": "error", "error": _describe(exc)}
            completed = True
    except BaseException as exc:
        completed = False
        if import_error is None and not results:
            import_error = "%s raised before the tests; the run stopped" % _describe(exc)
        elif results and results[-1]["status"] == "error":
            results[-1]["error"] = ("%s raised in this test; the run stopped"
                                    % _describe(exc))[:_ERR_MAX]
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    ok = completed and all(r["status"] == "pass" for r in results)
    line = ("\n" + marker + dumps({"completed": completed, "import_error": import_error,
                                   "tests": results, "records": records}) + "\n").encode()
    for fd, data in ((done_fd, ("\n" + marker + "\n").encode()), (report_fd, line)):
        try:
            view = memoryview(data)
            while view:
                n = write(fd, view)
                view = view[n:]
        except BaseException:
            pass
    _exit(0 if ok else 1)


_main()
'''


def _source() -> str:
    codec_src = (_HERE.parent / "codec.py").read_text()
    cmp_src = (_HERE / "shim_cmp.py").read_text()
    return (_TEMPLATE.replace("@CODEC@", repr(codec_src))
            .replace("@CMP@", repr(cmp_src))
            .replace("@PARSE@", repr(_PARSE_SHIM)))


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


def parse_report(stdout: str, marker: str) -> Optional[dict]:
    """The last report line in stdout, or None if absent or unreadable."""
    idx = stdout.rfind(marker)
    if idx < 0:
        return None
    end = stdout.find("\n", idx)
    raw = stdout[idx + len(marker): end if end >= 0 else len(stdout)]
    return _load_report(raw)


def strip_report(stdout: str, marker: str) -> str:
    """stdout without the report line(s) the runner appended."""
    return re.sub("\n?" + re.escape(marker) + "[^\n]*\n?", "", stdout)


def _load_report(raw) -> Optional[dict]:
    try:
        rep = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rep, dict) or not isinstance(rep.get("tests"), list):
        return None
    return rep


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
        self.report_raw: Optional[bytes] = None
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
                    self.report_raw = bytes(self.current)
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
            self.report_raw = bytes(self.current)   # report without trailing newline
        self.current = None
        self.out.feed(self.carry)
        self.carry = b""

    @property
    def truncated(self) -> bool:
        return self.out.truncated or self.report_overflow

    @property
    def seen(self) -> bool:
        """A complete marker line (report, or the stderr end sentinel) has arrived."""
        return self.report_raw is not None

    def report(self) -> Optional[dict]:
        return None if self.report_raw is None else _load_report(self.report_raw)

    def text(self) -> str:
        return self.out.text()


def classify(exit_code: Optional[int], tests_mode: bool, report: Optional[dict],
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


def memory_evidence(stderr: str, report: Optional[dict]) -> bool:
    """True when the job died of memory exhaustion it noticed itself (a MemoryError)."""
    if _MEMERR.search(stderr[-8192:]):
        return True
    if report:
        texts = [report.get("import_error") or ""]
        texts += [t.get("error") or "" for t in report.get("tests") or [] if isinstance(t, dict)]
        return any(_MEMERR.match(t) for t in texts)
    return False
