"""End to end: nemo-evaluator run_eval -> scicode_eval -> fake endpoint with faults -> real
sandbox -> results.yml, on a small problem set this test writes itself. Scores are exact."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from fake_endpoint import FakeEndpoint

BIN = Path(sys.executable).parent

PROBLEMS = [
    {"problem_id": "901", "problem_name": "adder", "required_dependencies": "import numpy as np",
     "sub_steps": [
         {"step_number": "901.1", "step_description_prompt": "Write add.", "step_background": "Addition.",
          "function_header": "def add(a, b):\n    '''Sum of a and b.'''", "return_line": "    return c",
          "test_cases": ["assert add(1, 2) == target", "assert np.allclose(add(np.arange(3), 1), target)"],
          "gold": "def add(a, b):\n    c = a + b\n    return c"},
         {"step_number": "901.2", "step_description_prompt": "Write twice using add.",
          "step_background": "Doubling.",
          "function_header": "def twice(a):\n    '''Twice a.'''", "return_line": "    return d",
          "test_cases": ["assert np.allclose(twice(np.array([1.5, 2.0])), target)"],
          "gold": "def twice(a):\n    d = add(a, a)\n    return d"},
     ]},
    {"problem_id": "902", "problem_name": "pairs", "required_dependencies": "import numpy as np",
     "sub_steps": [
         {"step_number": "902.1", "step_description_prompt": "Write pair.", "step_background": "",
          "function_header": "def pair(x):\n    '''(x, x squared).'''", "return_line": "    return (x, y)",
          "test_cases": ["from scicode.compare.cmp import cmp_tuple_or_list\n"
                         "assert cmp_tuple_or_list(pair(3), target)"],
          "gold": "def pair(x):\n    y = x ** 2\n    return (x, y)"},
     ]},
]
TARGETS = {"901.1": [3, np.array([1, 2, 3])], "901.2": [np.array([3.0, 4.0])], "902.1": [(3, 9)]}
GOLD = {s["function_header"].split("(")[0]: s["gold"] for p in PROBLEMS for s in p["sub_steps"]}


def answer(prompt, body):
    """Gold code for the step after NEXT STEP; sample (seed) 1 gets a wrong `twice`."""
    nxt = prompt.split("NEXT STEP", 1)[-1]   # the preflight's prompt has none
    for header, code in GOLD.items():
        if header in nxt:
            if header == "def twice" and body.get("seed") == 1:
                code = code.replace("add(a, a)", "add(a, a) + 1")
            return f"Here you go.\n```python\nimport numpy as np\n{code}\n```\n"
    return "I do not know."


@pytest.fixture()
def problem_set(tmp_path):
    from harness.data import h5targets
    pfile = tmp_path / "problems.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    tfile = tmp_path / "targets.h5"
    h5targets.write_targets(tfile, TARGETS)
    return pfile, tfile


def run_eval(ep, out, pfile, tfile, *overrides, sandbox="docker"):
    ov = ",".join([f"config.params.extra.problems={pfile}", f"config.params.extra.test_data={tfile}",
                   f"config.params.extra.sandbox={sandbox}", "config.params.extra.n_samples=2",
                   "config.params.parallelism=3", "config.params.max_retries=3", "config.params.extra.eval_threads=2",
                   *overrides])
    env = dict(os.environ, SCICODE_GEN_BACKOFF_BASE="0.05", PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "nemo-evaluator"), "run_eval", "--eval_type", "scicode_background",
                           "--model_id", "fake/model", "--model_type", "chat", "--model_url", ep.url,
                           "--output_dir", str(out), "--overrides", ov],
                          capture_output=True, text=True, timeout=600, env=env)


def metrics(out):
    res = yaml.safe_load((out / "results.yml").read_text())["results"]
    m = res["tasks"]["scicode"]["metrics"]
    assert res["groups"]["scicode"]["metrics"] == m
    return (m["steps_pass@1"]["scores"]["steps_pass@1"]["value"],
            m["problems_pass@1"]["scores"]["problems_pass@1"]["value"])


@pytest.mark.docker
def test_run_eval_with_faults_scores_exactly(problem_set, tmp_path, sandbox_image):
    pfile, tfile = problem_set
    faults = {2: "429:0.1", 3: "500", 4: "reset", 6: "slow:0.3"}   # request 1 is the preflight
    toy = ("901.1", "901.2", "902.1")
    from harness.run.schedule import History
    assert not History().path.exists()     # this test's own history (conftest), empty
    with FakeEndpoint(answer, faults=faults) as ep:
        p = run_eval(ep, tmp_path / "out", pfile, tfile)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        seeds = {r.body.get("seed") for r in ep.requests[1:] if r.body}
        assert ep.requests[0].body["max_tokens"] == 1
    # sample 0: 3/3 steps, 2/2 problems; sample 1: wrong twice -> 2/3 steps, 1/2 problems
    steps, probs = metrics(tmp_path / "out")
    assert steps == pytest.approx((1 + 2 / 3) / 2) and probs == pytest.approx(0.75)
    assert seeds == {0, 1}
    data = json.loads(next((tmp_path / "out" / "scicode_results").glob("*.json")).read_text())
    assert data["counts"]["pass"] == 5 and data["counts"]["fail"] == 1 and data["scored_steps"] == 3
    recs = [json.loads(x) for x in (tmp_path / "out" / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 6 and {r["backend"] for r in recs} == {"docker"}
    assert all(History().expect(s) is not None for s in toy)   # the run taught the history


@pytest.mark.docker
def gens(ep):
    """Generation requests (each run also sends one max_tokens=1 preflight)."""
    return sum(1 for r in ep.requests if isinstance(r.body, dict) and r.body.get("max_tokens") != 1)


def test_resume_requests_nothing_twice(problem_set, tmp_path, sandbox_image):
    pfile, tfile = problem_set
    out = tmp_path / "out"
    args = [str(BIN / "scicode_eval"), "--model", "m", "--output-dir", str(out), "--problems", str(pfile),
            "--test-data", str(tfile), "--n-samples", "2", "--concurrent-requests", "1", "--quiet"]
    slow = lambda n, prompt, body: "slow:1.0"  # noqa: E731
    with FakeEndpoint(answer, faults=slow) as ep:
        proc = subprocess.Popen(args + ["--url", ep.url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        while gens(ep) < 3:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        first = gens(ep)
    with FakeEndpoint(answer) as ep2:
        p = subprocess.run(args + ["--url", ep2.url], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        second = gens(ep2)
    # every step of every chain was requested exactly once over both runs (6 prompts)...
    assert first + second <= 6 + 1  # +1: a request in flight at the interrupt may be repeated
    with FakeEndpoint(answer) as ep3:  # ...and a finished run requests nothing
        p = subprocess.run(args + ["--url", ep3.url, "--junit-xml", str(tmp_path / "junit.xml"),
                                   "--fail-under", "steps=0.9"], capture_output=True, text=True, timeout=300)
        assert p.returncode == 3 and gens(ep3) == 0 and ep3.count == 1, p.stderr  # 5/6 steps < 0.9
    assert (tmp_path / "junit.xml").read_text().count("<testcase") == 6
    data = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    assert data["steps_pass@1"] == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.docker
def test_direct_broken_json_retried_and_null_content_is_an_answer(problem_set, tmp_path, sandbox_image):
    """Without the caching proxy in between, a malformed 200 is retried; `content: null`
    is an empty answer (scored as a wrong answer, not as a generation error)."""
    pfile, tfile = problem_set
    out = tmp_path / "out"
    nulls = lambda n, prompt, body: "broken_json" if n == 2 else ("null" if "Write pair." in prompt else None)  # noqa: E731
    with FakeEndpoint(answer, faults=nulls) as ep:
        p = subprocess.run([str(BIN / "scicode_eval"), "--model", "m", "--url", ep.url, "--output-dir", str(out),
                            "--problems", str(pfile), "--test-data", str(tfile), "--quiet"],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, SCICODE_GEN_BACKOFF_BASE="0.05"))
        assert p.returncode == 0, p.stderr
    data = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    assert data["counts"]["pass"] == 2 and data["counts"]["gen_error"] == 0
    assert data["counts"]["error"] + data["counts"]["fail"] == 1
    assert data["steps_pass@1"] == pytest.approx(2 / 3) and data["problems_pass@1"] == pytest.approx(0.5)


def test_bad_input_fails_fast(problem_set, tmp_path):
    pfile, tfile = problem_set
    base = [str(BIN / "scicode_eval"), "--model", "m", "--output-dir", str(tmp_path / "o"),
            "--problems", str(pfile), "--quiet"]
    with FakeEndpoint(answer) as ep:
        cases = [
            (["--url", ep.url, "--test-data", str(tmp_path / "nope.h5")], "test data not found"),
            (["--url", "http://127.0.0.1:9/v1/chat/completions", "--test-data", str(tfile)], ""),
            (["--url", ep.url, "--test-data", str(tfile), "--sandbox", "bogus"], "invalid choice"),
            (["--url", ep.url, "--test-data", str(tfile), "--sandbox-runtime", "crun"], "invalid choice"),
            (["--url", ep.url, "--test-data", str(tfile), "--sandbox", "process",
              "--sandbox-runtime", "runsc"], "needs the docker sandbox"),
            (["--url", ep.url, "--test-data", str(tfile), "--fail-under", "steps"], "fail-under"),
        ]
        for extra, text in cases:
            p = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
            assert p.returncode != 0 and text in p.stderr, (extra, p.stderr)
            assert len(p.stderr.strip().splitlines()) <= 3, p.stderr
        p = subprocess.run(base + ["--url", ep.url, "--test-data", str(tfile)], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, SCICODE_API_KEY_NAME="MY_KEY", API_KEY=""))
        assert p.returncode != 0 and "MY_KEY" in p.stderr
        assert ep.count == 0  # nothing was generated


def test_test_split_without_test_data_fails_fast(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SCICODE_TEST_DATA"}
    with FakeEndpoint(answer) as ep:
        p = subprocess.run([str(BIN / "scicode_eval"), "--model", "m", "--url", ep.url, "--split", "test",
                            "--output-dir", str(tmp_path / "o"), "--quiet"],
                           capture_output=True, text=True, timeout=60, env=env)
        assert ep.count == 0
    from harness.data import testdata
    if testdata.resolve_test_data(None) is None:  # no official file on this machine
        assert p.returncode == 2 and "test data (test_data.h5) not found" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_a_job_cut_short_by_shutdown_is_no_verdict(problem_set, tmp_path):
    """Ctrl-C shuts the backend under running jobs: they end as an interruption
    (exit 130, rerun resumes), never as a stored verdict or a sandbox failure."""
    from harness.run import candidate
    from harness import pipeline
    from harness.cli.evaluate import parser, run_config
    from harness.util.progress import Progress
    from harness.sandbox import Backend, Outcome

    class ShutUnderJob(Backend):
        name = "fake"

        def run(self, job):
            self._closed = True   # as cleanup's signal handler quiesces the backend
            return Outcome(status="error", exit_code=137, duration=0.1, stdout="", stderr="killed",
                           truncated=False, timed_out=False, oom_killed=False, backend="fake", image=None)

    pfile, tfile = problem_set
    args = parser().parse_args(["--model", "m", "--url", "http://127.0.0.1:9/v1/chat/completions",
                                "--problems", str(pfile), "--test-data", str(tfile),
                                "--output-dir", str(tmp_path / "out"), "--quiet"])
    run = pipeline.prepare(run_config(args, {}))
    run.backend = ShutUnderJob()
    run.backends = {"2024": run.backend}
    engine = pipeline.Engine(run, 1, Progress(3, quiet=True))
    try:
        problem = run.problems[0]
        cand = candidate.Candidate(problem["problem_id"], "901.1", 0, 0, PROBLEMS[0]["sub_steps"][0]["gold"], [])
        with pytest.raises(pipeline.Interrupted):
            engine._run_sync(cand, problem, "2024")
        assert len(engine.verdicts) == 0
    finally:
        engine.queue.stop()
        engine.grader.shutdown()


def test_process_sandbox_uses_scicode_process_python(problem_set, tmp_path, monkeypatch):
    """SCICODE_PROCESS_PYTHON (README) chooses the process backend's interpreter: jobs and the
    verifier run it, so verdicts follow its numpy (make test points it at the sandbox lock's)."""
    pfile, tfile = problem_set
    py = os.environ.get("SCICODE_PROCESS_PYTHON") or sys.executable
    want = subprocess.run([py, "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()
    monkeypatch.setenv("SCICODE_PROCESS_PYTHON", py)
    with FakeEndpoint(answer) as ep:
        p = run_eval(ep, tmp_path / "out", pfile, tfile, sandbox="process")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads(next((tmp_path / "out" / "scicode_results").glob("*.json")).read_text())
    assert res["run"]["grading"]["verifier_versions"]["numpy"] == want
    # the candidate could read the targets file: the results JSON and the run's end say so
    assert res["run"]["sandbox_isolation"] == {"tier": "process", "why": "--sandbox process",
                                               "targets_readable": True}
    assert "the targets file included" in p.stdout + p.stderr


def test_verifier_that_cannot_start_ends_the_run_at_once(problem_set, tmp_path, monkeypatch):
    """The verifier starts beside the first jobs; when it cannot start (here: an interpreter
    without numpy) the run ends within seconds with exit 2 and one line, not after a job."""
    pfile, tfile = problem_set
    bare = "/usr/bin/python3"
    if subprocess.run([bare, "-c", "import numpy"], capture_output=True).returncode == 0:
        pytest.fail(f"{bare} has numpy: this test needs an interpreter without it")
    monkeypatch.setenv("SCICODE_PROCESS_PYTHON", bare)
    t0 = time.monotonic()
    with FakeEndpoint(answer) as ep:
        p = subprocess.run([str(BIN / "scicode_eval"), "--model", "m", "--url", ep.url, "--output-dir",
                            str(tmp_path / "out"), "--problems", str(pfile), "--test-data", str(tfile),
                            "--sandbox", "process", "--sandbox-timeout", "600", "--quiet"],
                           capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert "cannot start the verifier" in p.stderr and "Traceback" not in p.stderr
    assert time.monotonic() - t0 < 60
