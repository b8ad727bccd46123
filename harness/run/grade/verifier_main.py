"""The verifier: decides every verdict, outside the candidate's sandbox.

Shipped verbatim (``python3 -c SOURCE``) into a long-lived process that never runs model
code: a hardened container from the pinned sandbox image (Docker backend) or a child
process of the sandbox interpreter (process backend), so verdicts follow the pinned
numpy/scipy, not the harness's.

Protocol, one JSON object per line each way:
  hello (first line out): {"hello": 1, "versions": {...}}
  in:  {"id", "deps", "checks": [{"program", "target", "records"}]}
       program: the verifier half of a test (harness.grade.split); target: codec-encoded
       (trusted); records: the sandbox's encoded value entries for that test (untrusted).
  out: {"id", "results": [{"status": "pass"|"fail"|"error", "error": str|null}]}

Values from the sandbox are decoded as data only (no pickle, no sympify, numeric dtypes
only), after the codec's schema and bounds check; a value that cannot be decoded fails its
test. `--memory=BYTES` caps the process's address space, so a comparison that would
allocate too much raises MemoryError and errs that test, and each check has
CHECK_SECONDS. np.allclose / np.array_equal (and
the scicode comparators built on them) are strict: a comparison whose two sides hold a
different number of elements fails instead of passing by broadcasting.
"""
import builtins
import contextlib
import io
import json
import os
import signal
import sys
import types

import numpy as np

_CODEC_SRC = globals().get("_CODEC_SRC")
_CMP_SRC = globals().get("_CMP_SRC")
CHECK_SECONDS = 30      # one test's check; the host restarts a verifier stuck longer
_HOLD_BUDGET = 1 << 30   # characters of encoded targets kept across requests


def _load(name, src):
    mod = types.ModuleType(name)
    exec(compile(src, "<%s>" % name, "exec", dont_inherit=True), mod.__dict__)
    return mod


class StreamMismatch(AssertionError):
    """The sandbox's value stream does not fit the test: never a pass."""


def _size(x):
    try:
        return int(np.size(x))
    except Exception:
        return None


def _vacuous(a, b):
    sa, sb = _size(a), _size(b)
    return sa is not None and sb is not None and sa != sb


class Strict:
    """np.allclose / np.array_equal that fail when the sides differ in size."""

    @staticmethod
    def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
        if _vacuous(a, b):
            return False
        return bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))

    @staticmethod
    def array_equal(a1, a2, equal_nan=False):
        return bool(np.array_equal(a1, a2, equal_nan=equal_nan))


def _safe_decode(codec, o):
    """Decode an untrusted value: checked against the codec's schema and bounds first
    (codec.checked), numeric/str arrays only, sympy only as plain symbols."""
    o = codec.checked(o)
    for node in _walk(o):
        t = node.get("__t")
        if t == "nd" and np.dtype(node.get("dtype")).kind not in "biufc":
            raise ValueError("array of dtype %r not accepted" % node.get("dtype"))
        if t == "strarr" and np.dtype(node.get("dtype")).kind not in "US":
            raise ValueError("text array of dtype %r not accepted" % node.get("dtype"))
        if t == "sympy":
            name = node.get("v")
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError("sympy value not accepted (only plain symbols)")
    return codec.decode(o, sympy_symbols_only=True)


class CheckTimeout(BaseException):
    """A check ran longer than CHECK_SECONDS (never caught by a test's `except Exception`)."""


def _alarm(signum, frame):
    raise CheckTimeout()


def _options(argv):
    """`--memory=BYTES`: the address space this process may use, so a comparison that
    allocates too much fails with MemoryError instead of the process being killed;
    `--check-seconds=S`: CHECK_SECONDS."""
    global CHECK_SECONDS
    import resource
    for arg in argv:
        if arg.startswith("--memory="):
            n = int(arg.split("=", 1)[1])
            resource.setrlimit(resource.RLIMIT_AS, (n, n))
        elif arg.startswith("--check-seconds="):
            CHECK_SECONDS = float(arg.split("=", 1)[1])


def _walk(o):
    stack = [o]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            yield x
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


class Verifier:
    def __init__(self):
        self.codec = _load("_scicode_codec", _CODEC_SRC)
        self.cmp = _load("scicode.compare.cmp", _CMP_SRC)
        self.cmp._allclose = Strict.allclose
        pkg = {n: types.ModuleType(n) for n in ("scicode", "scicode.compare")}
        pkg["scicode"].compare = pkg["scicode.compare"]
        pkg["scicode.compare"].cmp = self.cmp
        sys.modules.update(pkg)
        sys.modules["scicode.compare.cmp"] = self.cmp
        self.deps = {}
        self.held = {}          # targets_key -> decoded targets (trusted: from the harness)
        self.held_size = 0

    def targets(self, req):
        """(decoded targets of the request's step, whether they are kept for later)."""
        key = req.get("targets_key")
        if "targets" not in req:
            if key not in self.held:
                raise KeyError("targets not held: %r" % key)
            return self.held[key], True
        values, errors = [], []
        for t in req["targets"]:
            try:
                values.append(self.codec.decode(t))
                errors.append(None)
            except Exception as exc:
                values.append(None)
                errors.append("cannot decode target: " + self.codec.describe(exc))
        values = (values, errors)
        size = len(json.dumps(req["targets"]))
        if key is not None and self.held_size + size <= _HOLD_BUDGET:
            self.held[key] = values
            self.held_size += size
            return values, True
        return values, False

    def _deps(self, src):
        ns = self.deps.get(src)
        if ns is None:
            ns = {"__builtins__": builtins, "__name__": "__verifier__"}
            try:
                exec(compile(src or "", "<dependencies>", "exec", dont_inherit=True), ns)
            except Exception:
                pass   # a missing optional library: the tests that need it fail on their own
            self.deps[src] = ns
        return ns

    def check(self, deps, check, targets):
        values, errors = targets
        t = check.get("t")
        if t is not None and (not isinstance(t, int) or not 0 <= t < len(values)):
            return {"status": "error", "error": "no target %r" % (t,)}
        if t is not None and errors[t]:
            return {"status": "error", "error": errors[t]}
        target = values[t] if t is not None else None
        try:
            entries = [_safe_decode(self.codec, r) for r in (check.get("records") or [])]
        except MemoryError:
            return {"status": "fail", "error": "value from the sandbox not accepted: too large"}
        except Exception as exc:
            return {"status": "fail",
                    "error": "value from the sandbox not accepted: " + self.codec.describe(exc)}
        stream = list(reversed(entries))

        def values(ident):
            if not stream:
                raise StreamMismatch("the sandbox sent no value for assert %d" % ident)
            entry = stream.pop()
            if (not isinstance(entry, tuple) or len(entry) != 2 or entry[0] != ident
                    or not isinstance(entry[1], tuple)):
                raise StreamMismatch("the sandbox's values do not match assert %d" % ident)
            return entry[1]

        ns = dict(self._deps(deps))
        ns.update(target=target, __scicode_values__=values, __scicode_strict__=Strict)
        sink = io.StringIO()
        try:
            code = compile(check["program"], "<test>", "exec", dont_inherit=True)
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                signal.setitimer(signal.ITIMER_REAL, CHECK_SECONDS)
                try:
                    exec(code, ns)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
        except AssertionError as exc:
            return {"status": "fail", "error": self.codec.describe(exc)}
        except MemoryError:
            return {"status": "error", "error": "the comparison needs more memory than the verifier has"}
        except CheckTimeout:
            return {"status": "error", "error": "the comparison took over %g s" % CHECK_SECONDS}
        except Exception as exc:
            return {"status": "error", "error": self.codec.describe(exc)}
        if stream:
            return {"status": "fail", "error": "the sandbox sent more values than the test checks"}
        return {"status": "pass", "error": None}


def main():
    _options(sys.argv[1:])
    signal.signal(signal.SIGALRM, _alarm)
    out = os.fdopen(os.dup(1), "w", buffering=1)
    sys.stdout = sys.stderr
    import scipy
    versions = {"numpy": np.__version__, "scipy": scipy.__version__,
                "python": sys.version.split()[0]}
    out.write(json.dumps({"hello": 1, "versions": versions}) + "\n")
    v = Verifier()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            targets, held = v.targets(req)
            req.pop("targets", None)
            results = [v.check(req.get("deps") or "", c, targets) for c in req["checks"]]
            reply = {"id": req.get("id"), "results": results, "held": held}
        except (Exception, CheckTimeout) as exc:   # a malformed request: say so, keep serving
            reply = {"id": None, "error": v.codec.describe(exc)}
        out.write(json.dumps(reply) + "\n")


if __name__ == "__main__" and _CODEC_SRC is not None:
    main()
