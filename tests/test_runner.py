"""The in-sandbox runner, its host-side helpers and the scicode.compare shim (no Docker)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from harness.sandbox.boundary import from_obj
from harness.sandbox import codec
from harness.sandbox import Job, Limits, Report
from harness.sandbox import runner as R
from harness.sandbox import shim_cmp


def run_direct(job: Job, timeout: float = 60):
    """Run the runner as a plain subprocess (no sandbox): exit code, stdout, stderr, report."""
    marker = R.new_marker()
    p = subprocess.run(R.runner_argv(sys.executable), input=R.payload(job, marker),
                       capture_output=True, timeout=timeout)
    cap = R.StdoutCapture(1 << 20, marker)
    cap.feed(p.stdout)
    cap.finish()
    return p.returncode, cap.text(), p.stderr.decode(), cap.report()


@pytest.fixture(scope="module")
def process():
    from harness.sandbox.process_backend import ProcessBackend
    with ProcessBackend(limits=Limits(timeout=30, memory="1g")) as be:
        yield be


def tjob(code, tests, targets=None, **kw):
    return Job(code=code, tests=tests, targets=targets, limits=Limits(timeout=30, memory="1g"), **kw)


# ---------------------------------------------------------------- script mode

def test_script_mode_exit_codes_and_output():
    rc, out, err, rep = run_direct(Job(code="print('hello')\nimport sys\nprint('e', file=sys.stderr)"))
    assert (rc, out, err, rep) == (0, "hello\n", "e\n", None)
    rc, out, err, rep = run_direct(Job(code="raise SystemExit(3)"))
    assert rc == 3 and rep is None
    rc, out, err, rep = run_direct(Job(code="def f():\n    1/0\nf()"))
    assert rc == 1 and "ZeroDivisionError" in err and 'File "solution.py", line 2' in err
    assert "<string>" not in err      # runner frames are not shown


def test_script_runs_as_main_and_cannot_read_the_payload():
    code = ("import sys\nassert __name__ == '__main__'\n"
            "print(repr(sys.stdin.read()), sys.argv)\n")
    rc, out, _, _ = run_direct(Job(code=code))
    assert rc == 0 and out == "'' ['']\n"


def test_numpy_and_scipy_are_imported_before_stdin():
    import ast
    import inspect

    from harness.sandbox import inside
    body = [ast.unparse(st) for st in ast.parse(inspect.getsource(inside.main)).body[0].body]
    first_read = body.index("_main()")      # _main() reads the job from stdin
    assert body.index("__import__('numpy')") < first_read
    assert body.index("__import__('scipy')") < first_read
    assert "stdin.buffer.readline" in inspect.getsource(inside._main)


# ---------------------------------------------------------------- tests mode

def test_tests_mode_pass_fail_error(process):
    code = "import numpy as np\ndef f(x):\n    return 2 * x\nprint('from the program')"
    tests = ["assert np.allclose(f(target), 4)",
             "assert f(1) == target, 'wrong'",
             "f(None)",
             "assert f(3) == target"]
    o = process.run(tjob(code, tests, [codec.encode(2), codec.encode(3), None, codec.encode(6)]))
    rep = o.report
    assert o.status == "error" and o.exit_code == 1
    assert rep.completed is True and rep.import_error is None
    assert [t.status for t in rep.tests] == ["pass", "fail", "error", "pass"]
    assert rep.tests[1].error == "AssertionError: wrong"
    assert rep.tests[2].error.startswith("TypeError")
    assert o.stdout == "from the program\n"          # the report line is stripped


def test_all_pass_is_ok(process):
    o = process.run(tjob("x = 1", ["assert x == target", "assert x + 1 == 2"], [1, None]))
    assert o.status == "ok" and o.exit_code == 0
    assert [t.status for t in o.report.tests] == ["pass", "pass"]


def test_import_error_reported(process):
    o = process.run(tjob("import numpy as np\nraise ValueError('bad import')", ["pass", "pass"]))
    rep = o.report
    assert o.status == "error" and rep.completed is True
    assert rep.import_error == "ValueError: bad import"
    assert [t.status for t in rep.tests] == ["error", "error"]


def test_syntax_error_is_an_import_error():
    rc, _, _, rep = run_direct(tjob("def f(:\n  pass", ["pass"]))
    assert rc == 1 and rep.import_error.startswith("SyntaxError")


@pytest.mark.parametrize("code,tests", [
    ("exit()", ["pass"]),
    ("import sys; sys.exit(0)", ["pass"]),
    ("raise SystemExit", ["pass"]),
    ("raise KeyboardInterrupt", ["pass"]),
    ("import os; os._exit(0)", ["pass"]),
    ("x = 1", ["pass", "exit(0)", "pass"]),
    ("x = 1", ["import sys; sys.exit(0)"]),
    ("x = 1", ["import os; os._exit(0)"]),
    ("import atexit, os\natexit.register(lambda: os._exit(0))", ["raise SystemExit(0)"]),
    ("import sys, os\nsys.stdout = open(os.devnull, 'w')\nos.close(1)", ["assert False"]),
])
def test_escapes_never_pass(process, code, tests):
    o = process.run(tjob(code, tests))
    assert o.status == "error", o.to_dict()
    rep = o.report
    if rep is not None:
        assert not (rep.completed and all(t.status == "pass" for t in rep.tests))


def test_system_exit_in_a_test_stops_the_run():
    rc, _, _, rep = run_direct(tjob("x = 1", ["pass", "exit(0)", "pass"]))
    assert rc == 1 and rep.completed is False
    assert [t.status for t in rep.tests] == ["pass", "error"]
    assert "SystemExit" in rep.tests[1].error
    rc, _, _, rep = run_direct(tjob("import sys\nsys.exit(0)", ["pass"]))
    assert rc == 1 and rep.completed is False and "SystemExit" in rep.import_error


def test_program_output_does_not_break_the_report():
    code = "import sys\nsys.stdout.write('no newline at end')\nprint('x' * 100000, file=sys.stderr)"
    rc, out, err, rep = run_direct(tjob(code, ["print('in test')", "assert True"]))
    assert rc == 0 and rep.completed and out == "no newline at endin test\n"


def test_tests_share_the_program_namespace_and_see_target():
    code = "import numpy as np\nstate = []"
    tests = ["state.append(target)", "state.append(target)", "assert state[0] == 'a' and state[1] is None"]
    rc, _, _, rep = run_direct(tjob(code, tests, ["a"]))
    assert rc == 0, rep


def test_records_mode_returns_encoded_values():
    code = "import numpy as np\ndef f(n):\n    return np.arange(n) * 1.5"
    tests = ["assert np.allclose(__scicode_record__(f(3)), target)",
             "__scicode_record__((1, 'a')); __scicode_record__({'k': 2j})"]
    rc, _, _, rep = run_direct(tjob(code, tests, [codec.encode(np.arange(3) * 1.5)], record=True))
    assert rc == 0, rep
    recs = [[codec.decode(v) for v in per_test] for per_test in rep.records]
    np.testing.assert_array_equal(recs[0][0], np.arange(3) * 1.5)
    assert recs[1] == [(1, "a"), {"k": 2j}]


def test_records_absent_without_record_flag():
    rc, _, _, rep = run_direct(tjob("x=1", ["pass"]))
    assert rep.records is None


def test_shims_are_importable_in_tests_mode():
    code = ("from scicode.parse.parse import process_hdf5_to_tuple\n"
            "from scicode.compare.cmp import cmp_tuple_or_list, are_dicts_close, are_csc_matrix_close\n"
            "targets = process_hdf5_to_tuple('1.1', 2)\n")
    tests = ["assert cmp_tuple_or_list(targets[0], (1.0, [2, 3]))",
             "assert are_dicts_close(target, {'a': 1.0})",
             "import scipy.sparse as sp\nassert are_csc_matrix_close(sp.csr_matrix([[1, 0]]), sp.csr_matrix([[1, 0]]))"]
    targets = [codec.encode((1.0, [2, 3])), codec.encode({"a": 1.0})]
    rc, _, err, rep = run_direct(tjob(code, tests, targets))
    assert rc == 0, (rep, err)


def test_sparse_targets_decode_in_the_sandbox():
    m = sp.csc_matrix(np.eye(3))
    rc, _, _, rep = run_direct(tjob("import numpy as np", [
        "from scicode.compare.cmp import are_csc_matrix_close\n"
        "import scipy.sparse as sp\nassert are_csc_matrix_close(target, sp.csc_matrix(np.eye(3)))"],
        [codec.encode(m)]))
    assert rc == 0, rep


# ---------------------------------------------------------------- host helpers

def test_payload_is_one_json_line():
    job = Job(code="print('a\\nb')\n", tests=["x\ny"], targets=[codec.encode("line\nbreak")])
    data = R.payload(job, "@@M@@")
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    obj = json.loads(data)
    assert obj == {"code": job.code, "tests": ["x\ny"], "targets": ["line\nbreak"],
                   "record": False, "marker": "@@M@@"}


def test_markers_are_random():
    assert R.new_marker() != R.new_marker()


def test_parse_and_strip_report():
    m = R.new_marker()
    rep = {"completed": True, "import_error": None, "tests": [], "records": None}
    text = "out\n" + "\n" + m + json.dumps(rep) + "\n"
    assert R.parse_report(text, m) == from_obj(rep)
    assert R.strip_report(text, m) == "out\n"
    assert R.parse_report("no report", m) is None
    assert R.parse_report("\n" + m + "{broken\n", m).invalid.startswith("unreadable report")
    deep = '{"tests": ' + "[" * 100000 + "]" * 100000 + "}"   # forged: json's recursion limit
    assert R.parse_report("\n" + m + deep + "\n", m).invalid


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 100000])
def test_stdout_capture_splits_report_across_chunks(chunk):
    m = R.new_marker()
    rep = {"completed": True, "import_error": None, "tests": [{"status": "pass", "error": None}],
           "records": [["x" * 5000]]}
    stream = ("A" * 3000 + "\n" + m + json.dumps(rep) + "\n").encode()
    cap = R.StdoutCapture(1000, m)      # report far larger than the output cap
    for i in range(0, len(stream), chunk):
        cap.feed(stream[i:i + chunk])
    cap.finish()
    assert cap.report() == from_obj(rep)
    assert cap.truncated and "truncated" in cap.text()
    assert cap.text().startswith("A" * 500) and cap.text().endswith("A" * 500)


def test_last_report_wins_and_no_report():
    m = R.new_marker()
    cap = R.StdoutCapture(1 << 20, m)
    fake = json.dumps({"completed": True, "import_error": None, "tests": [], "records": None})
    real = json.dumps({"completed": False, "import_error": "x", "tests": [], "records": None})
    cap.feed(f"a\n\n{m}{fake}\nb\n\n{m}{real}\n".encode())
    cap.finish()
    assert cap.report().completed is False and cap.text() == "a\nb\n"
    cap = R.StdoutCapture(100, m)
    cap.feed(b"x" * 50)
    cap.finish()
    assert cap.report() is None and cap.text() == "x" * 50 and not cap.truncated


def test_head_tail_memory_is_bounded():
    h = R.HeadTail(1000)
    for _ in range(10000):
        h.feed(b"y" * 997)
    assert h.total == 9970000 and len(h.head) == 500 and len(h.tail) <= 1000
    assert h.truncated and len(h.text()) < 1100


def test_classify():
    assert R.classify(0, False, None) == "ok"
    assert R.classify(0, True, None) == "error"          # os._exit(0) skipped the report
    assert R.classify(0, True, from_obj({"tests": []})) == "ok"
    assert R.classify(1, True, from_obj({"tests": []})) == "error"
    assert R.classify(None, True, None, timed_out=True) == "timeout"
    assert R.classify(137, False, None, oom=True) == "oom"
    assert R.classify(None, False, None) == "infra"


def test_parse_size():
    assert R.parse_size("256m") == 256 << 20
    assert R.parse_size("2g") == 2 << 30
    assert R.parse_size("1.5G") == 3 << 29
    assert R.parse_size("4096") == 4096 and R.parse_size(7) == 7
    with pytest.raises(ValueError):
        R.parse_size("lots")


def test_memory_evidence():
    assert R.memory_evidence("Traceback...\nMemoryError\n", None)
    assert R.memory_evidence("numpy.core._exceptions._ArrayMemoryError: Unable to allocate", None)
    assert R.memory_evidence("", from_obj({"import_error": "MemoryError", "tests": []}))
    assert not R.memory_evidence("ValueError: x", from_obj({"import_error": None, "tests": []}))


def test_report_parse_never_invents_a_pass():
    for bad in ({"completed": True}, [1], {"completed": True, "tests": [], "records": "x"}):
        rep = from_obj(bad)
        assert rep.invalid and not rep.all_passed and rep.tests == [] and rep.records is None
    rep = from_obj({"completed": 1, "tests": [{"status": "pass"}, "pass", {"status": "PASS"},
                                             {"status": "fail", "error": 3}]})
    assert rep.completed is False and not rep.all_passed and rep.records is None
    assert [t.status for t in rep.tests] == ["pass", "error", "error", "fail"]
    assert rep.tests[3].error is None and rep.tests[1].error == "bad report entry"
    assert from_obj({"completed": True, "tests": [{"status": "pass"}]}).all_passed
    assert from_obj({"tests": [], "import_error": False}).import_error is None


# ---------------------------------------------------------------- compare shim semantics

def test_cmp_tuple_or_list():
    f = shim_cmp.cmp_tuple_or_list
    assert f((1.0, 2.0), (1.0, 2.0 + 1e-9))
    assert not f((1.0,), (1.0, 2.0))
    assert not f((1.0,), (1.1,))
    assert f([np.ones(3)], [np.ones(3)])
    assert f([True], [True]) and not f([True], [False])
    assert f([True], [1])                             # bool compares with ==
    assert f([[1, [2, 3]]], [[1, [2, 3]]])           # ragged: allclose ValueError -> ==
    assert not f([[1, [2, 3]]], [[1, [2, 4]]])
    with pytest.raises(TypeError):                    # strings: numpy raises TypeError, as upstream
        f(["abc"], ["abc"])
    assert f([{"a": 1.0}], [{"a": 1.0 + 1e-10}])
    assert f([sp.csr_matrix(np.eye(2))], [sp.csr_matrix(np.eye(2))])
    assert not f([sp.csc_matrix(np.eye(2))], [sp.csc_matrix(np.zeros((2, 2)))])


def test_cmp_prints_the_value_error(capsys):
    assert shim_cmp.cmp_tuple_or_list([[1, [2, 3]]], [[1, [2, 3]]])
    assert capsys.readouterr().out.strip() != ""


def test_are_dicts_close():
    f = shim_cmp.are_dicts_close
    assert f({"a": 1.0, "b": np.ones(2)}, {"b": np.ones(2), "a": 1.0 + 1e-9})
    assert not f({"a": 1.0}, {"b": 1.0})
    assert not f({"a": 1.0}, {"a": 1.1})
    assert f({"a": 1.0}, {"a": 1.05}, atol=0.1)
    assert f({"s": "x"}, {"s": "x"}) and not f({"s": "x"}, {"s": "y"})
    assert f({1.5: sp.coo_matrix(np.eye(2))}, {1.5: sp.coo_matrix(np.eye(2))})
    assert f({"l": "abc"}, {"l": "abc"})
    with pytest.raises(TypeError):                    # upstream lets TypeError through
        f({"n": None}, {"n": 1.0})


def test_are_dicts_close_sympy_symbols():
    sympy = pytest.importorskip("sympy")
    x = sympy.Symbol("x")
    assert shim_cmp.are_dicts_close({x: 1.0}, {"x": 1.0})
    assert shim_cmp.are_dicts_close({"k": x}, {"k": "x"})


def test_are_csc_matrix_close():
    a = sp.csc_matrix(np.array([[1.0, 0], [0, 2.0]]))
    assert shim_cmp.are_csc_matrix_close(a, a.copy())
    assert not shim_cmp.are_csc_matrix_close(a, a * 2)


def test_shim_matches_upstream_when_available():
    """Differential check against SciCode's own module when it is importable (dev machines)."""
    upstream = pytest.importorskip("scicode.compare.cmp")
    cases = [((1.0, 2.0), (1.0, 2.0)), ((1.0,), (1.0, 2.0)), ([True], [1]), ([[1, [2]]], [[1, [2]]]),
             ([{"a": 1.0}], [{"a": 1.0}]), ([np.ones(2)], [np.zeros(2)]),
             ([sp.csr_matrix(np.eye(2))], [sp.csr_matrix(np.eye(2))])]
    for a, b in cases:
        assert shim_cmp.cmp_tuple_or_list(a, b) == upstream.cmp_tuple_or_list(a, b)


def test_unprintable_exception_is_still_reported():
    code = "class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\n"
    rc, _, _, rep = run_direct(tjob(code, ["raise E()"]))
    assert rc == 1 and rep.completed and rep.tests[0].status == "error"
    assert "unprintable E" in rep.tests[0].error


def test_payload_chunks_equal_payload():
    import numpy as np

    from harness.sandbox import codec
    from harness.sandbox import Job
    from harness.sandbox.runner import payload, payload_chunks
    job = Job(code="x = 1\n", tests=["assert x == target"],
              targets=[codec.encode(np.arange(300_000.0)), codec.encode((1, "a\nb", 2.5))])
    chunks = list(payload_chunks(job, "M", size=1000))
    assert len(chunks) >= 2 and b"".join(chunks) == payload(job, "M")
    assert b"".join(payload_chunks(Job(code="print(1)"), "M")) == payload(Job(code="print(1)"), "M")
