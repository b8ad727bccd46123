"""The test splitter and the verifier, without Docker (the verifier runs as a process)."""
import ast
import time
import uuid

import numpy as np
import pytest

from harness.sandbox import codec
from harness.data import dataset
from harness.run.grade import split_test
from harness.run.grade.verifier import Verifier

DEPS = "import numpy as np"


def _names(src):
    return {n.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name)}


@pytest.fixture(scope="module")
def all_problems(dev_problems):
    try:
        test = dataset.load_problems("test")
    except dataset.DataError:
        dataset.pull()
        test = dataset.load_problems("test")
    return test + dev_problems


def test_every_scicode_test_splits_and_no_sandbox_half_sees_target(all_problems):
    n = kinds = 0
    kinds = {}
    for p in all_problems:
        for s in p["sub_steps"]:
            for i, t in enumerate(s.get("test_cases") or []):
                sp = split_test(t, p["required_dependencies"], f"{s['step_number']} test{i + 1}")
                assert sp.supported, sp.error
                assert "target" not in _names(sp.sandbox), (s["step_number"], i)
                assert sp.asserts >= 1
                kinds[sp.kind] = kinds.get(sp.kind, 0) + 1
                n += 1
    assert n == 915 + 167
    assert kinds == {"target": 913 + 161, "test": 2 + 6}


def test_unpacking_and_method_on_target_stay_in_the_verifier():
    sp = split_test("a, b = target\nx = f(1)\nassert np.allclose(x, a) and g(2) == b\n", DEPS)
    assert "a, b = target" in sp.verifier and "target" not in _names(sp.sandbox)
    assert "__scicode_record__((0, (x, g(2))))" in sp.sandbox
    sp = split_test("B = h()\nassert np.isclose(B[0], (0, -1)).any() == target.any()\n", DEPS)
    assert "target.any()" in sp.verifier and "(B[0],)" in sp.sandbox


def test_constants_and_tolerances_are_the_verifiers():
    sp = split_test("tol = 1e-3\nassert np.allclose(f(1), target, atol=tol)\n", DEPS)
    assert "atol=tol" in sp.verifier and "tol = 0.001" in sp.verifier
    assert "(f(1),)" in sp.sandbox


def test_model_decided_control_flow_and_target_into_model_code_are_refused():
    assert not split_test("for x in f():\n    assert x == target\n", DEPS).supported
    assert not split_test("assert f(target) == 1\n", DEPS).supported
    assert not split_test("y = f(target)\nassert y\n", DEPS).supported
    assert not split_test("x = 1\n", DEPS).supported      # nothing to check


def test_random_values_are_computed_in_the_sandbox():
    sp = split_test("np.random.seed(0)\nx = np.random.randn(3)\nassert np.allclose(f(x), x)\n", DEPS)
    assert "(f(x), x)" in sp.sandbox and "np.random" not in sp.verifier


@pytest.fixture(scope="module")
def verifier():
    from harness.sandbox.process_backend import ProcessBackend
    v = Verifier(ProcessBackend(isolate=False))
    v.start()
    yield v
    v.close()


def _check(verifier, test, target, entries):
    sp = split_test(test, DEPS)
    return verifier.check(DEPS, [{"program": sp.verifier, "t": 0,
                                  "records": [codec.encode(e) for e in entries]}],
                          uuid.uuid4().hex, lambda: [codec.encode(target)])[0]


def test_verifier_pass_fail_and_vacuous(verifier):
    t = "assert np.allclose(f(1), target)\n"
    assert _check(verifier, t, np.arange(3.0), [(0, (np.arange(3.0),))])["status"] == "pass"
    assert _check(verifier, t, np.arange(3.0), [(0, (np.arange(3.0) + 1,))])["status"] == "fail"
    assert _check(verifier, t, 5.0, [(0, (np.array([]),))])["status"] == "fail"        # empty vs scalar
    assert _check(verifier, t, np.full(3, 2.0), [(0, (2.0,))])["status"] == "fail"     # broadcast
    assert _check(verifier, t, np.nan, [(0, (np.nan,))])["status"] == "fail"
    c = "from scicode.compare.cmp import cmp_tuple_or_list\nassert cmp_tuple_or_list(f(1), target)\n"
    assert _check(verifier, c, (1.0, np.ones(2)), [(0, ((1.0, np.array([])),))])["status"] == "fail"
    assert _check(verifier, c, (1.0, np.ones(2)), [(0, ((1.0, np.ones(2)),))])["status"] == "pass"


def test_verifier_stream_must_match(verifier):
    t = "assert np.allclose(f(1), target)\n"
    assert _check(verifier, t, 1.0, [])["status"] == "fail"
    assert _check(verifier, t, 1.0, [(0, (1.0,)), (0, (1.0,))])["status"] == "fail"
    assert _check(verifier, t, 1.0, [(7, (1.0,))])["status"] == "fail"
    assert _check(verifier, t, 1.0, [1.0])["status"] == "fail"


def test_verifier_decodes_data_only(verifier, tmp_path):
    sp = split_test("assert f(1) == target\n", DEPS)
    flag = tmp_path / "pwned"
    evil = [{"__t": "tuple", "items": [0, {"__t": "tuple", "items": [
        {"__t": "sympy", "v": f"__import__('os').system('touch {flag}')"}]}]}]
    res = verifier.check(DEPS, [{"program": sp.verifier, "t": 0, "records": evil}], "one",
                         lambda: [codec.encode(1.0)])[0]
    assert res["status"] == "fail" and "not accepted" in res["error"] and not flag.exists()
    obj = [{"__t": "tuple", "items": [0, {"__t": "tuple", "items": [
        {"__t": "nd", "dtype": "|O", "shape": [1], "b64": "AAAAAAAAAAA="}]}]}]
    res = verifier.check(DEPS, [{"program": sp.verifier, "t": 0, "records": obj}], "one",
                         lambda: pytest.fail("the verifier holds the targets of key 'one' already"))[0]
    assert res["status"] == "fail"


class _SlowStartBackend:
    """A backend whose service takes `delay` seconds to appear (a slow container start)."""

    def __init__(self, delay: float):
        self.delay, self.services = delay, []

    def service(self, source, name, args=None):
        time.sleep(self.delay)
        from harness.sandbox.process_backend import ProcessBackend
        svc = ProcessBackend(isolate=False).service(source, name, args)
        self.services.append(svc)
        return svc


def test_background_start_then_check_and_close_during_start():
    be = _SlowStartBackend(0.5)
    v = Verifier(be)
    v.start_background()
    sp = split_test("assert np.allclose(f(1), target)\n", DEPS)
    res = v.check(DEPS, [{"program": sp.verifier, "t": 0, "records": [codec.encode((0, (1.0,)))]}],
                  "k", lambda: [codec.encode(1.0)])   # waits for the start under way
    assert res[0]["status"] == "pass" and v.started.is_set() and v.start_error is None
    assert len(be.services) == 1                       # the check did not start a second one
    v.close()

    be = _SlowStartBackend(1.0)
    v = Verifier(be)
    v.start_background()
    v.close()                                          # Ctrl-C while it starts: waits for it
    assert v.started.is_set() and v._svc is None
    assert be.services[0].proc.wait(10) is not None    # and stops it

    be = _SlowStartBackend(1.5)
    v = Verifier(be)
    v.start_background()
    t0 = time.monotonic()
    v.close(wait=0.2)                                  # a start that hangs: close does not
    assert time.monotonic() - t0 < 1.0
    assert v.started.wait(60) and v._svc is None       # what it started, the start stopped
    assert be.services[0].proc.wait(10) is not None


# ---- the statement-level split (tests that mix target and model values outside an assert) ----

CHECKER_TEST = """def match(S, T, thr=0.99):
    assert S.shape == T.shape
    for r in range(S.shape[0]):
        assert abs(np.corrcoef(S[r], T[r])[0, 1]) >= thr
    return True
np.random.seed(0)
X = np.random.rand(2, 50)
assert match(unmix(X), target)
"""
LOOP_TEST = """res = rings(3)
rk = sorted(res); tk = sorted(target)
assert len(rk) == len(tk) and np.allclose(rk, tk)
for a, b in zip(rk, tk):
    assert set(map(tuple, res[a])) == set(map(tuple, target[b]))
"""
MATRIX_TEST = """r = orient(1)
Um = np.array(r[0]); Ut = np.array(target[0])
G = Ut.T @ Um
assert np.allclose(G, np.round(G), atol=1e-6)
assert all(tuple(np.ravel(r[k])) == tuple(np.ravel(target[k])) for k in (1, 2))
"""
OBJECT_TEST = """blk, e = grow(2)
a, b = target
n = blk.length - a
assert n == 0 and np.isclose(e, b)
"""
MODELS = {
    "checker": ("def unmix(X):\n    return X[::-1] * 3.0\n", "def unmix(X):\n    return X * 3.0\n"),
    "loop": ("def rings(n):\n    return {1.0: [(1, 0)], 2.0: [(1, 1), (0, 2)]}\n",
             "def rings(n):\n    return {1.0: [(1, 0)], 2.0: [(1, 1)]}\n"),
    "matrix": ("def orient(k):\n    return (np.array([[0., 1.], [1., 0.]]), (1, 0), (0, 1))\n",
               "def orient(k):\n    return (np.array([[0.6, 0.8], [-0.8, 0.6]]), (1, 0), (0, 1))\n"),
    "object": ("class B:\n    length = 2\ndef grow(n):\n    return B(), -1.5\n",
               "class B:\n    length = 3\ndef grow(n):\n    return B(), -1.5\n"),
}
TESTS = {"checker": CHECKER_TEST, "loop": LOOP_TEST, "matrix": MATRIX_TEST, "object": OBJECT_TEST}
TARGETS = {"checker": lambda: (np.random.seed(0), np.random.rand(2, 50))[1][::-1],
           "loop": lambda: {1.0: [(1, 0)], 2.0: [(0, 2), (1, 1)]},
           "matrix": lambda: (np.eye(2), (1, 0), (0, 1)),
           "object": lambda: (2, -1.5)}


def _run_original(test, model, target):
    ns = {"np": np}
    exec(model, ns)
    ns["target"] = target
    try:
        exec(test, ns)
    except AssertionError:
        return "fail"
    return "pass"


def _sandbox(sp, model):
    """The sandbox half run on `model`: its encoded records (raises what the test raises)."""
    ns, recs = {"np": np}, []
    exec(model, ns)
    ns["__scicode_record__"] = lambda v: recs.append(codec.encode(v)) or v
    exec(sp.sandbox, ns)
    return recs


def _verify(verifier, sp, target, recs):
    return verifier.check(DEPS, [{"program": sp.verifier, "t": 0, "records": recs}],
                          uuid.uuid4().hex, lambda: [codec.encode(target)])[0]["status"]


@pytest.mark.parametrize("shape", sorted(TESTS))
def test_statement_split_agrees_with_the_original_test(verifier, shape):
    test, target = TESTS[shape], TARGETS[shape]()
    sp = split_test(test, DEPS)
    assert sp.supported, sp.error
    assert "target" not in _names(sp.sandbox)
    model_funcs = {"unmix", "rings", "orient", "grow"}
    assert not model_funcs & _names(sp.verifier)         # the verifier never calls model code
    good, bad = MODELS[shape]
    assert _run_original(test, good, target) == "pass"
    assert _verify(verifier, sp, target, _sandbox(sp, good)) == "pass"
    assert _run_original(test, bad, target) == "fail"
    assert _verify(verifier, sp, target, _sandbox(sp, bad)) == "fail"


def test_statement_split_binds_each_model_value_once(verifier):
    sp = split_test(LOOP_TEST, DEPS)
    # res crosses once; rk is computed from it by the verifier, so the length check and
    # the loop read the same list
    assert "rk = sorted(res)" in sp.verifier and sp.sandbox.count("res,") == 1
    target = TARGETS["loop"]()
    honest = _sandbox(sp, MODELS["loop"][0])
    assert _verify(verifier, sp, target, honest) == "pass"
    short = [codec.encode((-1, ({1.0: [(1, 0)]},)))] + honest[1:]      # a forged shorter dict
    assert _verify(verifier, sp, target, short) == "fail"
    empty = [codec.encode((-1, ({},)))] + honest[1:]
    assert _verify(verifier, sp, target, empty) == "fail"
    assert _verify(verifier, sp, target, honest[:-1]) == "fail"        # the loop's record left out
    assert _verify(verifier, sp, target, honest + honest[-1:]) == "fail"


def test_statement_split_refuses_forged_nan_and_objects(verifier):
    sp = split_test(MATRIX_TEST, DEPS)
    target = TARGETS["matrix"]()
    nan = [codec.encode((-1, ((np.full((2, 2), np.nan), (1, 0), (0, 1)),)))]
    nan += _sandbox(sp, MODELS["matrix"][0])[1:]
    assert _verify(verifier, sp, target, nan) == "fail"
    obj = [{"__t": "tuple", "items": [-1, {"__t": "tuple", "items": [
        {"__t": "nd", "dtype": "|O", "shape": [1], "b64": "AAAAAAAAAAA="}]}]}]
    assert _verify(verifier, sp, target, obj) == "fail"
    cheat = ("class Yes:\n    def __eq__(self, o): return True\n    def __getitem__(self, k): return self\n"
             "def orient(k):\n    return Yes()\n")
    with pytest.raises(TypeError):                       # not data: the sandbox cannot record it
        _sandbox(sp, cheat)
    sp = split_test(OBJECT_TEST, DEPS)
    assert "blk.length" in sp.sandbox and "blk" not in _names(sp.verifier)   # the value, not the object


def test_statement_split_still_refuses_model_code_on_target():
    for t in ("assert all(f(k) == target[k] for k in range(3))\n",
              "x = f(1)\nfor a in target:\n    assert g(a) == x\n",
              "for x in f():\n    assert x == target\n",
              "y = target\nz = f(y)\nassert z\n"):
        assert not split_test(t, DEPS).supported, t


def test_a_step_without_tests_passes_when_its_program_runs_to_the_end():
    from harness.run import grade
    from harness.sandbox import Outcome, boundary

    def out(status, report):
        return Outcome(status, 0 if status == "ok" else 1, 0.1, "", "", False, False, False,
                       "process", None, None if report is None else boundary.from_obj(report))
    never = lambda: pytest.fail("no targets are read for a step without tests")   # noqa: E731
    ran = {"completed": True, "import_error": None, "tests": [], "records": []}
    assert grade.grade(out("ok", ran), [], DEPS, never, None)[0] == "pass"
    broken = dict(ran, import_error="NameError: name 'x' is not defined")
    assert grade.grade(out("error", broken), [], DEPS, never, None)[0] == "error"
    assert grade.grade(out("error", ran), [], DEPS, never, None)[0] == "error"
    assert grade.grade(out("ok", None), [], DEPS, never, None)[0] == "error"
    assert grade.grade(out("ok", dict(ran, completed=False)), [], DEPS, never, None)[0] == "error"
