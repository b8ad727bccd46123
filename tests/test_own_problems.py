"""Your own problems, end to end: `targets build --problems` then `scicode_eval --problems`."""
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

STEP = dict(function_header="", return_line="", background="", ground_truth_code="")
PROBLEMS = [{
    "problem_id": "901", "problem_name": "toy", "problem_description_main": "Toy problem.",
    "problem_background_main": "", "problem_io": "", "required_dependencies": "import numpy as np",
    "sub_steps": [
        {**STEP, "step_number": "901.1", "step_description_prompt": "Add two numbers.",
         "function_header": "def add(a, b):\n    '''Sum.'''", "return_line": "    return c",
         "ground_truth_code": "def add(a, b):\n    c = a + b\n    return c",
         "test_cases": ["assert np.allclose(add(1, 2), target)", "assert np.allclose(add(2, 5), target)"]},
        {**STEP, "step_number": "901.2", "step_description_prompt": "A value and its square.",
         "function_header": "def pair(x):\n    '''(x, x**2).'''", "return_line": "    return (x, y)",
         "ground_truth_code": "def pair(x):\n    y = add(x, 0) ** 2\n    return (x, y)",
         "test_cases": ["v, sq = pair(3)\na, b = target\nassert np.allclose(v, a) and np.allclose(sq, b)"]},
        {**STEP, "step_number": "901.3", "step_description_prompt": "Boom.",
         "function_header": "def boom(x):\n    '''Never works.'''", "return_line": "    return z",
         "ground_truth_code": "def boom(x):\n    raise RuntimeError('reference code crashes')",
         "test_cases": ["assert np.allclose(boom(1), target)"]},
        {**STEP, "step_number": "901.4", "step_description_prompt": "Bound states as (l, E) pairs.",
         "function_header": "def states(n):\n    '''[(l, E), ...].'''", "return_line": "    return out",
         "ground_truth_code": "def states(n):\n    out = [(k, -1.0 / (k + 1) ** 2) for k in range(n)]\n    return out",
         "test_cases": ["B = states(3)\nassert np.isclose(B[0], (0, -1)).any() == target.any()"]},  # SciCode 52.4's form
    ]}]


@pytest.mark.docker
def test_targets_build_then_eval_with_missing_targets(tmp_path, sandbox_image):
    from harness.data import h5targets
    from harness.reference import make_server
    pfile = tmp_path / "mine.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    tfile = tmp_path / "mine.h5"
    b = subprocess.run([str(BIN / "scicode-harness"), "targets", "build", "--problems", str(pfile),
                        "--out", str(tfile), "--backend", "docker"],
                       capture_output=True, text=True, timeout=600)
    assert b.returncode == 1, b.stdout + b.stderr                 # one step has no targets
    assert "--allow-missing-targets" in b.stderr
    got = h5targets.read_step_targets(tfile, "901.2", 1)
    assert [float(x) for x in got[0]] == [3.0, 9.0]                # the unpacked target, as a tuple
    assert h5targets.read_step_targets(tfile, "901.4", 1)[0].tolist() == [True]   # what target.any() must be
    assert h5targets.missing_steps(tfile, {"901.1": 2, "901.2": 1, "901.3": 1, "901.4": 1}) == ["901.3"]

    srv = make_server("127.0.0.1", 0, mode="gold", problems_path=pfile)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/v1/chat/completions"
    base = [str(BIN / "scicode_eval"), "--model", "ref", "--url", url, "--problems", str(pfile),
            "--test-data", str(tfile), "--sandbox", "docker", "--progress", "plain"]
    env = dict(os.environ, SCICODE_GEN_BACKOFF_BASE="0.05")
    try:
        refused = subprocess.run(base + ["--output-dir", str(tmp_path / "a")], capture_output=True,
                                 text=True, timeout=300, env=env)
        assert refused.returncode == 2 and "--allow-missing-targets" in refused.stderr
        ok = subprocess.run(base + ["--output-dir", str(tmp_path / "b"), "--allow-missing-targets"],
                            capture_output=True, text=True, timeout=600, env=env)
    finally:
        srv.shutdown()
        srv.server_close()
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    recs = {r["step_id"]: r for r in map(json.loads, (tmp_path / "b" / "records.jsonl").read_text().splitlines())}
    assert recs["901.1"]["status"] == "pass" and recs["901.2"]["status"] == "pass"
    assert recs["901.4"]["status"] == "pass"       # graded strictly: the verifier runs `... == target.any()`
    assert recs["901.3"]["status"] == "no_target"
    res = json.loads(next((tmp_path / "b" / "scicode_results").glob("*.json")).read_text())
    assert res["counts"]["no_target"] == 1 and res["steps_pass@1"] == pytest.approx(3 / 4)
