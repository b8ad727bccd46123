"""The program every backend runs inside the sandbox (``python3 -c RUNNER_SOURCE``).

Shipped verbatim by harness.sandbox.runner, which prepends the sources it embeds
(``_CODEC_SRC``: harness/sandbox/codec.py, ``_CMP_SRC``: shim_cmp.py, ``_PARSE_SRC``:
shim_parse.py). The protocol is described in harness.sandbox.runner. Importing this
module runs nothing; it runs only as that program. It imports numpy and scipy (and any
``--preload=a,b`` modules) before reading stdin, so a warm container has paid for them.
"""
import builtins
import json
import linecache
import os
import sys
import traceback
import types

_CODEC_SRC = globals().get("_CODEC_SRC")
_CMP_SRC = globals().get("_CMP_SRC")
_PARSE_SRC = globals().get("_PARSE_SRC")


def _init():
    """PID 1 of a fresh PID namespace (process backend): stay a minimal init, like Docker's
    tini, so the program is an ordinary process (self-signals work, orphans are reaped)."""
    if os.getpid() != 1:
        return
    child = os.fork()
    if child:
        while True:
            pid, status = os.wait()
            if pid == child:
                break
        code = os.waitstatus_to_exitcode(status)
        os._exit(128 - code if code < 0 else code)


def _preload(args):
    for arg in args:
        if arg.startswith("--preload="):
            for name in filter(None, arg[len("--preload="):].split(",")):
                try:
                    __import__(name)
                except Exception:
                    pass


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
    _describe = codec.describe
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


def main():
    _init()
    argv = sys.argv[1:]
    sys.argv = [""]
    __import__("numpy")   # paid for before the job arrives (a warm container has)
    __import__("scipy")
    _preload(argv)
    _main()


if __name__ == "__main__" and _CODEC_SRC is not None:
    main()
