"""Sandbox environments (library eras) in real scicode_eval runs on dev problems.

Two probes, each gold code whose return value also goes through a computation that works in
only one era and leaves the value unchanged where it works:

* fidelity (19.2): the fidelity of a density matrix with itself, (tr |sqrtm(rho) sqrtm(rho)|)^2
  = 1.0 through `scipy.linalg.sqrtm` of a complex matrix and `np.linalg.svd`. In 2024 sqrtm
  returns complex256, which numpy 1.26's linalg rejects: the tests raise TypeError there (the
  program completes: `fail`), pass in 2025.
* simps (4.1): round(simps([1, 1, 1], dx=0.5)) = 1 with `from scipy.integrate import simps` in
  the problem's dependencies (as SciCode problems have it; the harness strips import lines from
  answers): pass in 2024; in 2025 the program stops at the import (`error`: simps is gone
  from scipy 1.14).

Every other step is answered with gold code. Four small runs (problems 1, 4, 19, 38: seven
steps; `2024`, `2025`, `2024,2025`, `2024,2025 --full-envs`) and one gold run of the whole dev
split under `2024,2025` start together once for the module.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fake_endpoint import FakeEndpoint

BIN = Path(sys.executable).parent
SUBSET = ("1", "4", "19", "38")
FIDELITY, SIMPS = "19.2", "4.1"
PROBES = {FIDELITY, SIMPS}

FIDELITY_RETURN = (
    "    rho = np.array([[0.6, 0.2j], [-0.2j, 0.4]])\n"
    "    root = sqrtm(rho)\n"
    "    fidelity = np.linalg.svd(root @ root, compute_uv=False).sum() ** 2\n"
    "    return tangle * round(float(fidelity), 6)")
SIMPS_RETURN = "    return A * round(simps([1, 1, 1], dx=0.5))"

# run name -> scicode_eval flags
RUNS = {"2024": ["--sandbox-envs", "2024"], "2025": ["--sandbox-envs", "2025"],
        "2024,2025": ["--sandbox-envs", "2024,2025"],
        "full": ["--sandbox-envs", "2024,2025", "--full-envs"]}
# run name -> {probe step: (status, {env: status} in records, deciding env)}; other steps pass
EXPECT = {
    "2024": {FIDELITY: ("fail", None, None), SIMPS: ("pass", None, None)},
    "2025": {FIDELITY: ("pass", None, None), SIMPS: ("error", None, None)},
    "2024,2025": {FIDELITY: ("pass", {"2024": "fail", "2025": "pass"}, "2025"),
                  SIMPS: ("pass", {"2024": "pass"}, "2024")},
    "full": {FIDELITY: ("pass", {"2024": "fail", "2025": "pass"}, "2025"),
             SIMPS: ("pass", {"2024": "pass", "2025": "error"}, "2024")},
}
OTHERS = {"2024": (None, None), "2025": (None, None), "2024,2025": ({"2024": "pass"}, "2024"),
          "full": ({"2024": "pass", "2025": "pass"}, "2024")}


def probe_answers(problems):
    """(problems with the simps import in 4's dependencies, responder): gold code, probes changed."""
    from harness import reference
    problems = json.loads(json.dumps(problems))
    code = {}
    for p in problems:
        for s in p["sub_steps"]:
            code[s["step_number"]] = s.get("ground_truth_code")
        if p["problem_id"] == SIMPS.split(".")[0]:
            p["required_dependencies"] += "\nfrom scipy.integrate import simps"
    for sid, old, new in ((FIDELITY, "    return tangle", FIDELITY_RETURN),
                          (SIMPS, "    return A", SIMPS_RETURN)):
        assert code[sid].rstrip().endswith(old), code[sid]
        code[sid] = code[sid].rstrip()[: -len(old)] + new + "\n"
    index = reference.StepIndex(problems)

    def respond(prompt, body):
        e = index.find(prompt)
        return reference.answer_for(e, "gold") if e is None else f"```python\n{code[e.step_id]}\n```"
    return problems, respond


class Runs:
    """scicode_eval processes started together; `get(name)` waits for one and reads its output."""

    def __init__(self, base, tmp):
        self.base, self.tmp, self.procs, self.done = base, tmp, {}, {}

    def start(self, name, url, *flags):
        out = self.tmp / name.replace(",", "_")
        argv = [*self.base, "--url", url, "--output-dir", str(out), *flags]
        self.procs[name] = (out, subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, SCICODE_GEN_BACKOFF_BASE="0.05")))

    def get(self, name):
        if name not in self.done:
            out, p = self.procs[name]
            stdout, stderr = p.communicate(timeout=1500)
            assert p.returncode == 0, (name, stdout[-2000:], stderr[-3000:])
            recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
            res = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
            self.done[name] = ({r["step_id"]: r for r in recs}, res)
        return self.done[name]

    def stop(self):
        for _, p in self.procs.values():
            if p.poll() is None:
                p.terminate()
                try:
                    p.communicate(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.communicate()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, dev_problems, dev_targets, sandbox_image, sandbox_image_2025):
    from harness import reference
    tmp = tmp_path_factory.mktemp("envs")
    subset, respond = probe_answers([p for p in dev_problems if p["problem_id"] in SUBSET])
    assert len(subset) == len(SUBSET)
    pfile = tmp / "subset.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in subset))
    gold_index = reference.StepIndex(dev_problems)

    def answer(prompt, body):   # the subset's runs get the probes, the whole split's gold code
        if body.get("model") == "probe":
            return respond(prompt, body)
        return reference.answer_for(gold_index.find(prompt), "gold")

    base = [str(BIN / "scicode_eval"), "--with-background", "--test-data", str(dev_targets), "--quiet",
            "--eval-threads", "2", "--concurrent-requests", "4"]
    runs = Runs(base, tmp)
    with FakeEndpoint(answer) as ep:
        try:
            for name, flags in RUNS.items():
                runs.start(name, ep.url, "--problems", str(pfile), "--model", "probe", *flags)
            runs.start("gold", ep.url, "--split", "dev", "--model", "gold", "--sandbox-envs", "2024,2025")
            for name in [*RUNS, "gold"]:
                runs.get(name)
        finally:
            runs.stop()
    runs.images = {"2024": sandbox_image.id, "2025": sandbox_image_2025.id}
    return runs


# ---------------------------------------------------------------- the probes
@pytest.mark.docker
@pytest.mark.parametrize("name", list(RUNS))
def test_probe_verdicts_per_environment(runs, name):
    recs, res = runs.get(name)
    assert len(recs) == 7
    for sid, r in recs.items():
        status, per_env, env = EXPECT[name].get(sid, ("pass", *OTHERS[name]))
        assert r["status"] == status, (sid, r["status"], r.get("error"), r.get("stderr_tail", "")[-500:])
        if per_env is None:   # one environment: records as before, no per-env block
            assert "env" not in r and "envs" not in r, r
            assert r["image"] == runs.images[name], (sid, r["image"])
        else:
            assert r["env"] == env and {e: v["status"] for e, v in r["envs"].items()} == per_env, (sid, r)
            assert r["image"] == runs.images[env] and all(
                v["image"] == runs.images[e] for e, v in r["envs"].items()), r
            assert set(r["envs"][env]) == {"status", "error", "exit_code", "duration", "image",
                                           "stderr_tail"}
    want = (1.0, 1.0) if name in ("2024,2025", "full") else (6 / 7, 3 / 4)
    assert (res["steps_pass@1"], res["problems_pass@1"]) == pytest.approx(want)


@pytest.mark.docker
def test_probes_fail_for_the_eras_reason(runs):
    """The failing era's own error: complex256 in 2024's linalg, the missing simps in 2025."""
    r24 = runs.get("full")[0][FIDELITY]["envs"]["2024"]
    r25 = runs.get("full")[0][SIMPS]["envs"]["2025"]
    one24, one25 = runs.get("2024")[0][FIDELITY], runs.get("2025")[0][SIMPS]
    for r in (r24, one24):
        assert "complex256" in json.dumps(r), r
    for r in (r25, one25):
        assert "simps" in json.dumps(r), r
    assert one24["error"] == r24["error"] and one25["error"] == r25["error"]


@pytest.mark.docker
@pytest.mark.parametrize("name", list(RUNS))
def test_results_sandbox_envs_block(runs, name):
    _, res = runs.get(name)
    block = res["run"]["sandbox_envs"]
    envs = ["2024", "2025"] if "," in RUNS[name][1] else [name]
    assert block["envs"] == envs and block["full"] == (name == "full")
    assert block["images"] == {e: runs.images[e] for e in envs}
    counts = {"2024": {"pass": 6, "fail": 1}, "2025": {"pass": 6, "error": 1}}
    if name == "2024,2025":   # only the step that failed in 2024 ran in 2025
        counts["2025"] = {"pass": 1}
    assert block["counts"] == {e: counts[e] for e in envs}
    assert block["passed"] == {e: sum(v for k, v in counts[e].items() if k == "pass") for e in envs}
    rescued = [{"step_id": FIDELITY, "sample": 0, "env": "2025", "2024": "fail"}] if len(envs) > 1 else []
    assert block["rescued"] == len(rescued) and block["rescued_steps"] == rescued
    only = {"2024": [], "2025": [FIDELITY]} if len(envs) > 1 else {name: []}
    if name == "full":   # every env ran every step: what passed only in 2024 is known too
        only["2024"] = [SIMPS]
    assert block["passed_only_in"] == only
    assert res["run"]["grading"]["verifier_versions"]["numpy"].startswith("1.26")   # pinned to 2024


# ---------------------------------------------------------------- gold dev, two envs
@pytest.mark.docker
def test_gold_dev_under_two_envs_never_runs_2025(runs, dev_problems):
    recs, res = runs.get("gold")
    n = sum(1 for p in dev_problems for s in p["sub_steps"] if s["test_cases"])
    assert len(recs) == n == 50
    assert (res["steps_pass@1"], res["problems_pass@1"]) == (1.0, 1.0)
    block = res["run"]["sandbox_envs"]
    assert block["counts"] == {"2024": {"pass": n}, "2025": {}}
    assert block["passed"] == {"2024": n, "2025": 0} and block["rescued"] == 0
    assert block["passed_only_in"] == {"2024": [], "2025": []}
    assert all(r["env"] == "2024" and list(r["envs"]) == ["2024"] for r in recs.values())


def test_unknown_sandbox_env_is_one_line(tmp_path):
    with FakeEndpoint() as ep:
        p = subprocess.run([str(BIN / "scicode_eval"), "--model", "m", "--url", ep.url, "--split", "dev",
                            "--output-dir", str(tmp_path / "o"), "--sandbox-envs", "2023"],
                           capture_output=True, text=True, timeout=120)
        assert ep.count == 0
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "2023" in lines[0] and "2024" in lines[0], p.stderr
    assert not (tmp_path / "o" / "records.jsonl").exists()
