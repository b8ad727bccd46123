"""On one real gold dev run (module-scoped) and copies of its outputs with steps made to fail:
`scicode-harness compare` outcomes and exit codes, `scicode_eval --baseline`, and the report
page opened in headless Chromium (screenshot, one grid cell per step, a failed step's error
text, no console errors)."""
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
MADE_TO_FAIL = "AssertionError: made to fail by the test"


@pytest.fixture(scope="module")
def gold_run(tmp_path_factory, dev_problems, dev_targets, sandbox_image):
    from harness import reference
    srv = reference.make_server("127.0.0.1", 0, mode="gold", index=reference.StepIndex(dev_problems))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    out = tmp_path_factory.mktemp("gold") / "out"
    try:
        p = subprocess.run([str(BIN / "scicode_eval"), "--model", "gold", "--url", srv.url, "--split", "dev",
                            "--test-data", str(dev_targets), "--output-dir", str(out), "--quiet"],
                           capture_output=True, text=True, timeout=900)
    finally:
        srv.shutdown()
        srv.server_close()
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return out, p.stdout


def failing_copy(gold: Path, dst: Path, n_fail: int, dev_problems) -> tuple[Path, list[str]]:
    """A copy of the run with n_fail steps (spread over problems) turned into failures, its
    results JSON rescored and its page rendered again."""
    from harness.run import report, score
    shutil.copytree(gold, dst)
    records = [json.loads(x) for x in (dst / "records.jsonl").read_text().splitlines()]
    chosen = [r["step_id"] for r in records[::5][:n_fail]]
    for r in records:
        if r["step_id"] in chosen:
            r.update(status="fail", error=MADE_TO_FAIL, tests=[{"status": "fail", "error": MADE_TO_FAIL}])
    report.write_records(dst / "records.jsonl", records)
    path = next((dst / "scicode_results").glob("*.json"))
    old = json.loads(path.read_text())
    sc = score.score(dev_problems, {(r["sample"], r["step_id"]): r["status"] for r in records}, 1)
    report.write_results(path, sc, old["run"], old.get("usage"))
    p = subprocess.run([str(BIN / "scicode-harness"), "report", str(dst)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return dst, chosen


def compare(*args):
    return subprocess.run([str(BIN / "scicode-harness"), "compare", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.docker
def test_gold_run_writes_intervals_pass_at_k_and_its_page(gold_run):
    out, stdout = gold_run
    res = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    assert res["interval"]["steps_pass@1"] == [1.0, 1.0] and res["pass@k"]["steps_pass@1"] == 1.0
    assert len(res["run"]["test_data_sha256"]) == 64
    assert (out / "scicode_results" / "gold_without_background.html").is_file()
    assert "95% CI [1.0000, 1.0000]" in stdout and "report page:" in stdout


@pytest.mark.docker
def test_compare_outcomes(gold_run, tmp_path, dev_problems):
    gold = gold_run[0]
    ten, chosen = failing_copy(gold, tmp_path / "ten", 10, dev_problems)
    two, _ = failing_copy(gold, tmp_path / "two", 2, dev_problems)
    p = compare(gold, ten, "--fail-if-worse", "--html", tmp_path / "cmp.html", "--json", tmp_path / "cmp.json")
    assert p.returncode == 3 and "verdict: worse" in p.stdout, p.stdout + p.stderr
    result = json.loads((tmp_path / "cmp.json").read_text())
    assert sorted(f["step_id"] for f in result["flips"]["worse"]) == sorted(chosen) and not result["flips"]["better"]
    assert all(sid in p.stdout for sid in chosen) and result["steps"]["p_value"] < 0.01
    assert result["steps"]["interval"][1] < 0   # the paired interval excludes no change
    html = (tmp_path / "cmp.html").read_text()
    assert html.count('flip-worse"') == 10 and html.count('class="flip-row"') == 10
    p = compare(gold, ten)   # without the gate: said, exit 0
    assert p.returncode == 0 and "verdict: worse" in p.stdout
    p = compare(ten, gold, "--fail-if-worse")
    assert p.returncode == 0 and "verdict: better" in p.stdout
    p = compare(gold, two, "--fail-if-worse")   # two flips cannot be significant (p = 0.5)
    assert p.returncode == 0 and "verdict: no significant difference" in p.stdout, p.stdout
    assert "flips 2 worse, 0 better of 50" in p.stdout
    p = compare(gold, gold, "--fail-if-worse")
    assert p.returncode == 0 and "verdict: no significant difference" in p.stdout
    assert "flips 0 worse, 0 better" in p.stdout
    other = tmp_path / "other"
    shutil.copytree(gold, other)
    path = next((other / "scicode_results").glob("*.json"))
    res = json.loads(path.read_text())
    res["run"]["split"] = "test"
    path.write_text(json.dumps(res))
    p = compare(gold, other, "--fail-if-worse")
    assert p.returncode == 2 and p.stdout == "", p.stdout
    assert p.stderr.count("\n") == 1 and "split differs (baseline dev, candidate test)" in p.stderr


@pytest.mark.docker
def test_baseline_gate_of_scicode_eval(gold_run, tmp_path, dev_problems, dev_targets):
    """--baseline: a refusal before anything is generated (exit 2, one line); a finished run's
    rerun against the gold baseline (no significant difference, exit 0); the exit-3 rule on a
    candidate ten steps worse."""
    from harness.run import finish
    from harness.run.config import Output
    gold = gold_run[0]
    rerun = tmp_path / "rerun"
    shutil.copytree(gold, rerun)
    base = [str(BIN / "scicode_eval"), "--model", "gold", "--split", "dev", "--test-data", str(dev_targets),
            "--output-dir", str(rerun), "--quiet", "--url"]
    p = subprocess.run(base + ["http://127.0.0.1:9/v1/chat/completions", "--baseline", str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "does not exist" in p.stderr and p.stderr.count("\n") == 1, p.stderr
    from harness import reference
    srv = reference.make_server("127.0.0.1", 0, mode="gold", index=reference.StepIndex(dev_problems))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:   # every generation and verdict is stored: the rerun only finishes again
        p = subprocess.run(base + [srv.url, "--baseline", str(gold)], capture_output=True, text=True, timeout=300)
    finally:
        srv.shutdown()
        srv.server_close()
    assert p.returncode == 0 and "verdict: no significant difference" in p.stdout, p.stdout + p.stderr
    ten, _ = failing_copy(gold, tmp_path / "ten", 10, dev_problems)
    out = Output(baseline=gold)
    assert finish.baseline_worse(out, next((ten / "scicode_results").glob("*.json"))) is True
    from harness.run import score
    records = [json.loads(x) for x in (ten / "records.jsonl").read_text().splitlines()]
    sc = score.score(dev_problems, {(r["sample"], r["step_id"]): r["status"] for r in records}, 1)
    path = next((ten / "scicode_results").glob("*.json"))
    assert finish.exit_code(sc, records, out, path) == 3
    assert finish.exit_code(sc, records, Output(baseline=ten), path) == 0          # same run: no difference
    assert finish.exit_code(sc, records, Output(baseline=gold, max_gen_errors=-1), path) == 4   # checked first


# ---------------------------------------------------------------- the page in a browser

def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium not found: `make setup` installs it (Debian: apt-get install chromium)")
    return exe


def browse(path: Path, *flags: str) -> subprocess.CompletedProcess:
    """Headless Chromium on a local file, its console on stderr (bounded: 120 s)."""
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", "--no-first-run", *flags, path.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)


def console(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]


def test_the_console_check_sees_errors(tmp_path):
    """The control: a page that logs an error is caught by console()."""
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('control-error'); nope();</script></body></html>")
    p = browse(bad, "--dump-dom")
    assert any("control-error" in ln for ln in console(p.stderr)), p.stderr[-2000:]


@pytest.mark.docker
def test_report_page_in_chromium(gold_run, tmp_path, dev_problems):
    gold = gold_run[0]
    failing, chosen = failing_copy(gold, tmp_path / "ten", 10, dev_problems)
    for run, failed in ((gold, []), (failing, chosen)):
        page = next((run / "scicode_results").glob("*.html"))
        shot = tmp_path / f"{run.name}.png"
        p = browse(page, f"--screenshot={shot}", "--window-size=1280,1600")
        assert p.returncode == 0 and shot.stat().st_size > 10_000, p.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not console(p.stderr), console(p.stderr)
        dom = browse(page, "--dump-dom")
        assert dom.returncode == 0 and not console(dom.stderr), console(dom.stderr)
        assert dom.stdout.count("data-step=") == 50                         # one cell per scored step
        assert dom.stdout.count('class="fail"') == len(failed)
        if failed:
            assert MADE_TO_FAIL in dom.stdout and f'id="s-{failed[0]}"' in dom.stdout
            assert "test 1 of 1: fail" in dom.stdout and "generated code" in dom.stdout
