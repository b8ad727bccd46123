"""The one boundary for data that comes out of a candidate's sandbox.

The runner's report is written by a process that ran model code, so its bytes can be
anything: forged, huge, deeply nested, NaN, lone surrogates. `read_report` turns them into
a bounded `Report` and never raises:

* the report line is at most REPORT_LIMIT bytes (the capture drops a longer one) and holds
  at most MAX_NODES JSON containers and items, counted on the bytes before parsing;
* texts (import error, test errors) are cut to ERROR_LIMIT characters each and
  ERRORS_LIMIT per report, with a marker, and cleaned of code points no file or XML can
  hold (lone surrogates, control characters);
* recorded values must fit the codec's schema and bounds (`codec.checked`): huge declared
  item sizes, mismatched shapes, unknown types are refused; a raw NaN or infinity
  becomes a tagged float the verifier decodes;
* anything else makes the report `invalid` with a short reason: the candidate is an
  `error`, never a pass.

`text` cleans and caps any other text from the sandbox side (output tails, the verifier's
answers, which echo candidate values).
"""
from __future__ import annotations

import json
import re
from typing import Optional

from harness.sandbox import TEST_STATUSES, Report, TestResult, codec

REPORT_LIMIT = 256 << 20   # bytes of one report line (honest dev reports: 41 MB at most)
MAX_NODES = 1 << 20        # JSON containers and items in one report (honest dev: 8,230 at most)
MAX_TESTS = 256            # test entries in one report
ERROR_LIMIT = 8 << 10      # characters kept of one error text
ERRORS_LIMIT = 64 << 10    # characters of error text kept per report
CUT = "...[{n} characters cut]"

_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# lone surrogates, and control characters XML 1.0 cannot hold (tab, newline, return stay)
_UNFIT = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


class Rejected(ValueError):
    """A report outside the schema; its message is the short reason recorded."""


def text(value, limit: int = ERROR_LIMIT) -> Optional[str]:
    """A text from the sandbox side, safe to store, log and write as XML: at most `limit`
    characters (plus a marker), unfit code points replaced. None stays None; anything
    else that is not a str becomes None."""
    if not isinstance(value, str):
        return None
    cut = len(value) - limit
    if cut > 0:
        value = value[:limit]
    value = _UNFIT.sub("\ufffd", value)
    return value + CUT.format(n=cut) if cut > 0 else value


def tail(value: str, n: int = 2000) -> str:
    """The last `n` characters of a program's output, cleaned like `text`."""
    return _UNFIT.sub("\ufffd", (value or "")[-n:])


def count_nodes(raw: bytes) -> int:
    """JSON containers and items in `raw` (one per `[`, `{` and `,` outside strings; more
    than MAX_NODES may be counted as MAX_NODES + 1), without parsing or copying it."""
    n = raw.count(b"[") + raw.count(b"{") + raw.count(b",")
    if n <= MAX_NODES:
        return n
    inside = 0   # the same characters inside strings, which are no items
    for k, m in enumerate(_STRINGS.finditer(raw)):
        if k > MAX_NODES:   # each string is an item
            return k
        a, b = m.span()
        inside += raw.count(b"[", a, b) + raw.count(b"{", a, b) + raw.count(b",", a, b)
    return n - inside


def read_report(raw) -> Report:
    """The runner's report line (bytes after the marker) as a bounded Report. Never raises:
    a report outside the schema is returned `invalid`, with no tests and no values."""
    size = len(raw)
    try:
        return _read(raw, size)
    except Rejected as exc:
        return _invalid(str(exc), size)
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError, MemoryError) as exc:
        return _invalid("unreadable report: " + (text(codec.describe(exc), 200) or ""), size)


def _invalid(reason: str, size: int) -> Report:
    return Report(completed=False, import_error=None, tests=[], records=None, size=size,
                  invalid=reason)


def _read(raw, size: int) -> Report:
    if size > REPORT_LIMIT:
        raise Rejected(f"report of {size} bytes (limit {REPORT_LIMIT})")
    if count_nodes(raw) > MAX_NODES:
        raise Rejected(f"report with more than {MAX_NODES} JSON items")
    return from_obj(json.loads(raw), size)


def from_obj(obj, size: int = 0) -> Report:
    """`read_report` for an already decoded report; never raises."""
    try:
        return _from_obj(obj, size)
    except Rejected as exc:
        return _invalid(str(exc), size)


def _from_obj(obj, size: int) -> Report:
    if not isinstance(obj, dict) or not isinstance(obj.get("tests"), list):
        raise Rejected("report without a list of tests")
    if len(obj["tests"]) > MAX_TESTS:
        raise Rejected(f"report with {len(obj['tests'])} tests (limit {MAX_TESTS})")
    budget = [ERRORS_LIMIT]
    tests = [_test(t, budget) for t in obj["tests"]]
    err = obj.get("import_error")
    return Report(completed=obj.get("completed") is True, import_error=_capped(err if isinstance(err, str) else None, budget),
                  tests=tests, records=_records(obj.get("records")), size=size)


def _capped(value: Optional[str], budget: list) -> Optional[str]:
    if not value:
        return None
    out = text(value, max(min(ERROR_LIMIT, budget[0]), 200))
    budget[0] -= len(out)
    return out


def _test(t, budget: list) -> TestResult:
    """A malformed test entry becomes an error, never a pass."""
    if not isinstance(t, dict) or t.get("status") not in TEST_STATUSES:
        return TestResult("error", "bad report entry")
    err = t.get("error")
    return TestResult(t["status"], _capped(err if isinstance(err, str) else None, budget))


def _records(records) -> Optional[list]:
    """Per test, its recorded values, each checked (codec.checked)."""
    if records is None:
        return None
    if not isinstance(records, list) or len(records) > MAX_TESTS:
        raise Rejected("report with malformed recorded values")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, list):
            raise Rejected(f"report with malformed values for test {i + 1}")
        try:
            out.append([codec.checked(v) for v in rec])
        except ValueError as exc:
            raise Rejected(f"value of test {i + 1} not accepted: {text(str(exc), 200)}") from None
    return out


def verdicts(results, n: int) -> Optional[list[dict]]:
    """The verifier's per-test answers (it echoes candidate values in its errors), bounded;
    None unless there are `n` of them."""
    if not isinstance(results, list) or len(results) != n:
        return None
    out = []
    for r in results:
        r = r if isinstance(r, dict) else {}
        status = r.get("status")
        out.append({"status": status if status in TEST_STATUSES else "error",
                    "error": text(r.get("error")) if status in TEST_STATUSES else
                    "bad verifier answer"})
    return out
