"""Hostile output never stops, bloats or stalls a run (issue 23), end to end under Docker.

Six dev problems (11 steps) through `nemo-evaluator run_eval`, strict grading: once with gold
code for every step, once with one hostile answer on the last step of five problems and gold
code elsewhere. Each attack forges the runner's report at import time (it finds the report's
descriptors and marker in the runner's frame) or breaks its text:

  1.1   a raw NaN and infinity as recorded values (bare `NaN` / `Infinity` in the JSON)
  3.1   a lone surrogate in the import error (`raise ValueError('\\ud800')`)
  4.1   a text value with a huge declared item size (`<U250000000`, 1 GB per item)
  19.2  48 MB of nested empty lists in place of the first recorded value
  29.3  every test failing with a 4 MB error text, then exit 1

The attacked run must end with exit 0 and a results.yml, score the gold run minus the
attacked steps, keep the harness's peak RSS under 300 MB and its wall time within 1.2x of
the gold run's; a rerun over the stored hostile verdicts must finish the same way.
"""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from fake_endpoint import FakeEndpoint

BIN = Path(sys.executable).parent
PROBLEMS = ("1", "3", "4", "19", "29", "38")
RSS_LIMIT = 300 << 20

_FORGE = r'''
_sys = __import__("sys"); _os = __import__("os"); _json = __import__("json")
def _forge(body, code):
    f = _sys._getframe(0)
    while "marker" not in f.f_locals:
        f = f.f_back
    loc = f.f_locals
    n = len(loc["tests"])
    _os.write(loc["done_fd"], ("\n" + loc["marker"] + "\n").encode())
    view = memoryview(("\n" + loc["marker"]).encode() + body(n).encode() + b"\n")
    while view:
        view = view[_os.write(loc["report_fd"], view):]
    _os._exit(code)
def _value(v):
    return {"__t": "tuple", "items": [0, {"__t": "tuple", "items": [v]}]}
def _passed(n, records):
    return _json.dumps({"completed": True, "import_error": None,
                        "tests": [{"status": "pass", "error": None}] * n, "records": records})
'''
ATTACKS = {
    "1.1": _FORGE + "_forge(lambda n: _passed(n, [[_value(float('nan')), _value(float('inf'))]] * n), 0)\n",
    "3.1": "raise ValueError('\\ud800')\n",
    "4.1": _FORGE + ("_forge(lambda n: _passed(n, [[_value({'__t': 'strarr', 'dtype': '<U250000000', "
                     "'shape': [1], 'items': ['a']})]] * n), 0)\n"),
    # the JSON of [[]] * 16_000_000 written out directly (json.dumps of it costs seconds in the sandbox)
    "19.2": _FORGE + ("_forge(lambda n: _passed(n, [['NESTED']] + [[]] * (n - 1)).replace("
                      "'\"NESTED\"', '[' + '[],' * 15_999_999 + '[]]'), 0)\n"),
    "29.3": _FORGE + ("_forge(lambda n: _json.dumps({'completed': True, 'import_error': None, 'tests': "
                      "[{'status': 'fail', 'error': 'E' * (4 << 20)}] * n, 'records': [[]] * n}), 1)\n"),
}


def _peak_rss(root_pid: int, stop: threading.Event, peak: list) -> None:
    """Peak RSS of the scicode_eval process tree under nemo-evaluator (containers are the
    Docker daemon's children, not counted)."""
    import psutil
    root = psutil.Process(root_pid)
    while not stop.is_set():
        try:
            procs = [p for p in root.children(recursive=True)
                     if "scicode_eval" in " ".join(p.cmdline()[:2])]
            tree = set(procs)
            for p in procs:
                tree.update(p.children(recursive=True))
            peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass
        stop.wait(0.05)


def _run(ep_url, out: Path, pfile: Path, tfile: Path) -> dict:
    ov = ",".join([f"config.params.extra.problems={pfile}", f"config.params.extra.test_data={tfile}",
                   "config.params.extra.sandbox=docker", "config.params.extra.eval_threads=2",
                   "config.params.parallelism=4", "config.params.extra.sandbox_timeout=300"])
    env = dict(os.environ, SCICODE_GEN_BACKOFF_BASE="0.05", PATH=f"{BIN}:{os.environ['PATH']}")
    t0 = time.monotonic()
    p = subprocess.Popen([str(BIN / "nemo-evaluator"), "run_eval", "--eval_type", "scicode_background",
                          "--model_id", "fake/model", "--model_type", "chat", "--model_url", ep_url,
                          "--output_dir", str(out), "--overrides", ov],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    stop, peak = threading.Event(), [0]
    poller = threading.Thread(target=_peak_rss, args=(p.pid, stop, peak), daemon=True)
    poller.start()
    try:
        log, _ = p.communicate(timeout=900)
    finally:
        stop.set()
        poller.join()
    seconds = time.monotonic() - t0
    res = yaml.safe_load((out / "results.yml").read_text())["results"] if (out / "results.yml").exists() else None
    records = ([json.loads(ln) for ln in (out / "records.jsonl").read_text().splitlines()]
               if (out / "records.jsonl").exists() else [])
    data = json.loads(next((out / "scicode_results").glob("*.json")).read_text()) if records else {}
    return {"rc": p.returncode, "log": log, "seconds": seconds, "rss": peak[0], "results": res,
            "records": {r["step_id"]: r for r in records}, "data": data}


def _scores(r: dict) -> tuple:
    m = r["results"]["tasks"]["scicode"]["metrics"]
    return (m["steps_pass@1"]["scores"]["steps_pass@1"]["value"],
            m["problems_pass@1"]["scores"]["problems_pass@1"]["value"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dev_problems, dev_targets, sandbox_image):
    from harness.reference import StepIndex
    chosen = [p for p in dev_problems if p["problem_id"] in PROBLEMS]
    index = StepIndex(chosen)
    tmp = tmp_path_factory.mktemp("hostile")
    pfile = tmp / "problems.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in chosen))

    def responder(attacks):
        def respond(prompt, body):
            entry = index.find(prompt)
            if entry is None:
                return "```python\nx = 1\n```"
            return "```python\n" + attacks.get(entry.step_id, entry.gold) + "\n```"
        return respond

    out = {}
    for name, attacks in (("gold", {}), ("hostile", ATTACKS)):
        with FakeEndpoint(responder(attacks)) as ep:
            out[name] = _run(ep.url, tmp / name, pfile, dev_targets)
            if name == "hostile":   # the same run again: every verdict is read back from the store
                out["rerun"] = _run(ep.url, tmp / name, pfile, dev_targets)
    return out


@pytest.mark.docker
def test_gold_run_passes_every_step(runs):
    gold = runs["gold"]
    assert gold["rc"] == 0, gold["log"][-3000:]
    assert _scores(gold) == (1.0, 1.0) and len(gold["records"]) == 11


@pytest.mark.docker
@pytest.mark.parametrize("name", ["hostile", "rerun"])
def test_hostile_answers_fail_only_their_steps(runs, name):
    r, gold = runs[name], runs["gold"]
    print(f"\n{name}: exit {r['rc']}, scores {_scores(r) if r['results'] else None}, "
          f"peak RSS {r['rss'] / 2**20:.0f} MB (gold {gold['rss'] / 2**20:.0f} MB), "
          f"{r['seconds']:.1f} s (gold {gold['seconds']:.1f} s), "
          f"verifier restarts {r['data'].get('run', {}).get('grading', {}).get('verifier_restarts')}")
    assert r["rc"] == 0 and "Traceback" not in r["log"], r["log"][-3000:]
    assert r["results"] is not None
    failed = {sid for sid, rec in r["records"].items() if rec["status"] != "pass"}
    assert failed == set(ATTACKS)
    assert _scores(r) == pytest.approx((6 / 11, 1 / 6))
    assert r["rss"] < RSS_LIMIT
    assert r["seconds"] <= 1.2 * gold["seconds"]
    assert r["data"]["run"]["grading"]["verifier_restarts"] == 0
    recs = r["records"]
    assert "refused" in recs["4.1"]["error"] and "too large" in recs["4.1"]["error"]
    assert "JSON items" in recs["19.2"]["error"]
    assert recs["3.1"]["status"] == "error" and "\ufffd" in recs["3.1"]["error"]
    assert len(json.dumps(recs["29.3"])) < 64 << 10
