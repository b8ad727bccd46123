"""The boundary for sandbox output, fuzzed (Hypothesis) and on the issue's hostile reports.

Arbitrary report lines (JSON and not, NaN/inf, lone surrogates, control characters, deep and
wide structures, forged codec values with huge declared sizes, wrong types at every field)
must give a bounded Report and never an exception; texts must be storable; recorded values
must cross to the verifier; and a verdict is `pass` only when the value matches its target.

Profiles: `ci` (default: a fixed number of examples per test, derandomized, so CI sees the
same cases every time) and `long` (HYPOTHESIS_PROFILE=long: many more, random). The number
of cases tried is printed at the end of the module.
"""
import json
import math
import os
import re
import time
import tracemalloc
import uuid
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from harness.run import grade
from harness.run.grade import split_test
from harness.run.grade.verifier import Verifier
from harness.sandbox import Outcome, Report, boundary, codec

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=200, derandomize=True, deadline=None,
                          suppress_health_check=_QUIET)
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=_QUIET)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
CASES: Counter = Counter()
DEPS = "import numpy as np"
UNFIT = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

# ---------------------------------------------------------------- strategies
chars = st.one_of(st.characters(exclude_categories=()),
                  st.sampled_from(["\ud800", "\udfff", "\x00", "\x1b", "\ufffe", ",", "[", "{", '"']))
texts = st.text(chars, max_size=40) | st.sampled_from(["x" * 20000, "\ud800" * 9000])
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([math.nan, math.inf, -math.inf, 1e308])
scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | floats | texts
json_any = st.recursive(scalars, lambda c: st.lists(c, max_size=6) | st.dictionaries(texts, c, max_size=6),
                        max_leaves=40)
dtypes = st.sampled_from(["<f8", "<i4", "<c16", "|b1", "<U3", "|S2", "<U250000000", "|S2000000000",
                          "|O", "(1000000000,)f8", "f8,f8", "<M8[s]", "<f16", "V8", "garbage", ""])
shapes = st.lists(st.integers(0, 4) | st.sampled_from([10**9, 2**62, -1]), max_size=4) | json_any
FIELDS = {"dtype": dtypes | json_any, "shape": shapes, "items": st.lists(json_any, max_size=4) | json_any,
          "b64": st.sampled_from(["", "AAAAAAAAAAA=", "AAAAAAAAAAAAAAAA", "!!"]) | json_any,
          "v": json_any, "re": floats | json_any, "im": floats | json_any,
          "format": st.sampled_from(["coo", "csr", "bsr", "dok"]) | json_any,
          "blocksize": json_any}
tags = st.sampled_from(list(codec._TAGS) + ["pickle", None])


@st.composite
def forged(draw):
    """A codec-shaped value with arbitrary fields (forged by model code)."""
    out = {"__t": draw(tags)}
    for k in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=4, unique=True)):
        out[k] = draw(FIELDS[k])
    return out


def honest():
    """Values the in-sandbox encoder makes from real results."""
    arrays = st.builds(lambda xs, dt: np.asarray(xs).astype(dt),
                       st.lists(st.floats(-1e6, 1e6), min_size=0, max_size=6),
                       st.sampled_from(["f8", "i4", "c16", "bool", "U4"]))
    numpy_scalars = st.builds(lambda x, t: t(x), st.floats(-1e6, 1e6),
                              st.sampled_from([np.float64, np.float32, np.complex128, np.int64, np.bool_, complex]))
    plain = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 10) | st.text(chars, max_size=5)
             | numpy_scalars | st.complex_numbers(allow_nan=True) | st.binary(max_size=5))
    return st.recursive(plain | arrays, lambda c: st.tuples(c, c) | st.lists(c, max_size=3)
                        | st.dictionaries(st.integers(0, 3), c, max_size=3), max_leaves=8).map(codec.encode)


values = st.one_of(honest(), forged(), json_any,
                   st.recursive(forged(), lambda c: st.fixed_dictionaries(
                       {"__t": st.sampled_from(["tuple", "list", "objarr"]), "items": st.lists(c, max_size=3),
                        "shape": st.just([1])}), max_leaves=6))
entries = st.lists(st.tuples(st.integers(-1, 2), st.lists(values, max_size=3)).map(
    lambda e: {"__t": "tuple", "items": [e[0], {"__t": "tuple", "items": e[1]}]}) | values, max_size=3)
tests = st.lists(st.fixed_dictionaries({"status": st.sampled_from(["pass", "fail", "error", "PASS"]) | json_any,
                                        "error": texts | json_any}) | json_any, max_size=5)
reports = st.fixed_dictionaries({}, optional={"completed": st.booleans() | json_any,
                                              "import_error": texts | json_any,
                                              "tests": tests | json_any,
                                              "records": st.lists(entries, max_size=4) | json_any})


def encoded(obj, how):
    if how == "ascii":
        return json.dumps(obj).encode()
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")  # raw surrogates


raw_reports = st.one_of(st.builds(encoded, reports, st.sampled_from(["ascii", "utf8"])),
                        st.binary(max_size=300),
                        st.builds(lambda o: json.dumps(o).encode(), json_any))


# ---------------------------------------------------------------- properties
def _bounded(rep: Report) -> None:
    assert isinstance(rep, Report)
    texts_ = [rep.import_error, rep.invalid] + [t.error for t in rep.tests]
    for t in filter(None, texts_):
        assert not UNFIT.search(t) and len(t) <= boundary.ERROR_LIMIT + 40
        t.encode("utf-8")
    assert len(rep.tests) <= boundary.MAX_TESTS
    assert all(t.status in ("pass", "fail", "error") for t in rep.tests)
    if rep.invalid:
        assert rep.tests == [] and rep.records is None and not rep.all_passed
    json.dumps({"tests": [t.to_dict() for t in rep.tests], "error": rep.import_error},
               ensure_ascii=False).encode("utf-8")          # what the store writes
    if rep.records is not None:
        json.dumps(rep.records, allow_nan=False)             # what the verifier channel sends


@PROFILE
@given(raw_reports)
def test_any_report_line_gives_a_bounded_report(raw):
    CASES["report lines"] += 1
    tracemalloc.start()
    try:
        rep = boundary.read_report(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _bounded(rep)
    assert peak <= 40 * len(raw) + (4 << 20)


@PROFILE
@given(values)
def test_checked_values_are_schema_values_or_refused(value):
    CASES["values"] += 1
    try:
        ok = codec.checked(value)
    except ValueError:
        return
    json.dumps(ok, allow_nan=False)
    try:
        codec.decode(ok, sympy_symbols_only=True)
    except (ValueError, TypeError, KeyError, OverflowError, MemoryError):
        pass   # refused by the verifier (its test fails), never a crash of the harness


@PROFILE
@given(honest())
def test_honest_values_are_never_refused(value):
    CASES["honest values"] += 1
    assert codec.checked(value) == value   # accepted exactly as the encoder made it


@pytest.fixture(scope="module")
def verifier():
    from harness.sandbox.process_backend import ProcessBackend
    v = Verifier(ProcessBackend(isolate=False), memory=1 << 30)
    v.start()
    yield v
    v.close()


TARGET = np.array([1.0, 2.0, 3.0])
SPLIT = split_test("assert np.allclose(f(1), target)\n", DEPS)


def _matches(entries) -> bool:
    """The oracle: one entry, for assert 0, whose one value is TARGET within tolerance."""
    if len(entries) != 1:
        return False
    try:
        e = codec.decode(codec.checked(entries[0]))
        v = np.asarray(e[1][0], dtype=float)
    except Exception:
        return False
    return e[0] == 0 and len(e[1]) == 1 and v.shape == TARGET.shape and bool(np.allclose(v, TARGET))


def _grade(verifier, raw: bytes):
    """(status, results, whether the verifier was restarted) of a one-test step from a report line."""
    rep = boundary.read_report(raw)
    out = Outcome("ok" if rep.all_passed else "error", 0, 0.1, "", "", False, False, False, "process", None, rep)
    restarts = verifier.restarts
    status, results = grade.grade(out, [SPLIT], DEPS, lambda: [TARGET], verifier, uuid.uuid4().hex)
    return status, results, verifier.restarts != restarts


near = st.builds(lambda d, i: codec.encode((i, (TARGET + d,))),
                 st.sampled_from([0.0, 1e-9, 1e-3, np.nan, np.inf]), st.sampled_from([0, 1]))


@PROFILE
@given(st.lists(near, min_size=1, max_size=1) | st.lists(near | values | entries.map(lambda x: x[0] if x else None),
                                                         max_size=2),
       st.sampled_from(["ascii", "utf8"]), st.sampled_from([True, True, False]))
def test_a_pass_needs_every_value_to_match(verifier, records, how, completed):
    CASES["verdicts"] += 1
    raw = encoded({"completed": completed, "import_error": None, "tests": [{"status": "pass", "error": None}],
                   "records": [records]}, how)
    status, results, died = _grade(verifier, raw)
    if died:   # once more on a fresh verifier: an input that kills it kills it again
        CASES["verifier restarts (retried)"] += 1
        status, results, died = _grade(verifier, raw)
        assert not died, (records, results)   # the verifier survives its inputs
    assert status in ("pass", "fail", "error")
    CASES[f"verdicts: {status}"] += 1
    if status == "pass":
        assert completed and _matches(records), records


def test_cases_tried(capsys):
    """After the properties: how many cases each tried (printed even under capture)."""
    with capsys.disabled():
        print("\nboundary fuzz (%s profile): " % os.environ.get("HYPOTHESIS_PROFILE", "ci")
              + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())))
    if CASES["verdicts"]:   # the oracle is not vacuous: honest values pass, others do not
        assert CASES["verdicts: pass"] and CASES["verdicts: fail"] + CASES["verdicts: error"]


# ---------------------------------------------------------------- the reports, at the boundary
def _line(records=None, tests=None, **extra):
    return dict({"completed": True, "import_error": None,
                 "tests": tests or [{"status": "pass", "error": None}], "records": records}, **extra)


def test_raw_nan_and_infinity_become_tagged_floats():
    raw = b'{"completed": true, "tests": [{"status": "pass"}], "records": [[NaN, 1e999, -Infinity]]}'
    rep = boundary.read_report(raw)
    assert rep.invalid is None
    assert rep.records == [[{"__t": "float", "v": "nan"}, {"__t": "float", "v": "inf"},
                            {"__t": "float", "v": "-inf"}]]
    json.dumps(rep.records, allow_nan=False)


def test_lone_surrogates_and_control_characters_are_replaced():
    rep = boundary.read_report(json.dumps(_line(import_error="ValueError: \ud800\x00")).encode())
    assert rep.import_error == "ValueError: \ufffd\ufffd"
    rep = boundary.read_report(b'{"tests": [], "import_error": "\xed\xa0\x80"}')   # a surrogate in UTF-8
    assert rep.import_error == "\ufffd"
    assert boundary.read_report(b'{"tests": [], "import_error": "\xff"}').invalid.startswith("unreadable")


def test_huge_declared_item_size_is_refused_before_allocating():
    big = {"__t": "strarr", "dtype": "<U250000000", "shape": [1], "items": ["a"]}
    tracemalloc.start()
    rep = boundary.read_report(json.dumps(_line([[big]])).encode())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "text array of 1 x 1000000000 bytes too large" in rep.invalid and peak < 1 << 20


def test_48_mb_of_nested_empty_lists_is_refused_fast_and_small():
    k = 16_000_000
    raw = b'{"completed": true, "tests": [{"status": "pass"}], "records": [[[]' + b",[]" * k + b"]]}"
    t0 = time.monotonic()
    tracemalloc.start()
    rep = boundary.read_report(raw)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rep.invalid == f"report with more than {boundary.MAX_NODES} JSON items"
    assert peak < 1 << 20 and time.monotonic() - t0 < 5


def test_megabyte_error_strings_are_cut():
    tests_ = [{"status": "fail", "error": "E" * (4 << 20)} for _ in range(20)]
    rep = boundary.read_report(json.dumps(_line(tests=tests_, import_error="I" * (4 << 20))).encode())
    kept = [len(rep.import_error)] + [len(t.error) for t in rep.tests]
    assert max(kept) <= boundary.ERROR_LIMIT + 40 and sum(kept) <= boundary.ERRORS_LIMIT + 21 * 240
    assert rep.tests[0].error.endswith("characters cut]")


def test_store_and_junit_take_any_text(tmp_path):
    from harness.run.report import write_junit
    from harness.run.store import Store
    st_ = Store(tmp_path / "s.jsonl")
    st_.put("k", {"error": "\ud800"})            # escaped: reads back as it was
    st_.close()
    assert Store(tmp_path / "s.jsonl").get("k") == {"error": "\ud800"}
    write_junit(tmp_path / "j.xml", [{"problem_id": "1", "step_id": "1.1", "sample": 0, "status": "error",
                                      "error": "\ud800\x01", "stderr_tail": "\x1b[0m"}])
    import xml.etree.ElementTree as ET
    assert ET.parse(tmp_path / "j.xml").getroot().get("errors") == "1"


# ---------------------------------------------------------------- the verifier survives its inputs
def _run(v, program, timeout=60):
    return v.check(DEPS, [{"program": program, "t": None, "records": []}], "none", lambda: [],
                   timeout=timeout)[0]


def test_verifier_memory_cap_time_cap_and_restart():
    from harness.sandbox.process_backend import ProcessBackend
    v = Verifier(ProcessBackend(isolate=False), memory=1 << 30, check_seconds=1)
    v.start()
    try:
        r = _run(v, "x = np.ones(10**9)\nassert x.sum() > 0\n")       # 8 GB: MemoryError, no death
        assert r == {"status": "error", "error": "the comparison needs more memory than the verifier has"}
        assert _run(v, "while True:\n    pass\n")["error"] == "the comparison took over 1 s"
        assert v.restarts == 0
        os.kill(v._svc.proc.pid, 9)                                       # dies: restarted, counted
        assert _run(v, "assert 1 == 1\n")["status"] == "pass" and v.restarts == 1
    finally:
        v.close()
