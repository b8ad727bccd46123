"""Real clients and real endpoints (issue 12): the README's command and --run_config without an
activated venv, the seed's YAML, the endpoint preflight, exit codes for generation failures,
and reasoning replies."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fake_endpoint import FakeEndpoint, Reply
from test_e2e import GOLD, PROBLEMS, answer, metrics, problem_set  # noqa: F401 (fixture)
from test_selftest import SMALL

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"   # no venv bin/: as a user's shell without `activate`


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=CLEAN_PATH, SCICODE_GEN_BACKOFF_BASE="0.05", **extra)
    return env


def results_json(out):
    return json.loads(next((Path(out) / "scicode_results").glob("*.json")).read_text())


def readme_block(path, start):
    """The fenced block of a README whose first line starts with `start`."""
    for block in re.findall(r"```(?:bash|yaml)?\n(.*?)```", Path(path).read_text(), re.S):
        if block.lstrip().startswith(start):
            return block
    raise AssertionError(f"no block starting {start!r} in {path}")


# ---------------------------------------------------------------- README command, --run_config, seed YAML

@pytest.mark.docker
def test_readme_command_as_written_without_activated_venv(problem_set, tmp_path, sandbox_image):
    """The README's "Running against a real endpoint" block, run by bash with a PATH that lacks
    the venv; only the model URL and the data paths in --overrides point at this test's fakes."""
    pfile, tfile = problem_set
    block = readme_block(ROOT / "README.md", "export MY_API_KEY=")
    assert "https://integrate.api.nvidia.com/v1/chat/completions" in block
    assert "config.params.extra.test_data=/path/to/test_data.h5" in block
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")   # the README runs from the checkout
    with FakeEndpoint(answer, api_key="secret-123", models={"meta/llama-3.1-8b-instruct"}) as ep:
        script = (block.replace("export MY_API_KEY=...", "export MY_API_KEY=secret-123")
                  .replace("https://integrate.api.nvidia.com/v1/chat/completions", ep.url)
                  .replace("test_data=/path/to/test_data.h5", f"test_data={tfile},config.params.extra.problems={pfile}"))
        p = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                           timeout=600, env=clean_env())
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert {r.headers["authorization"] for r in ep.requests} == {"Bearer secret-123"}
    assert "steps_pass@1" in p.stdout                    # the block ends with `cat results/results.yml`
    steps, probs = metrics(tmp_path / "results")
    assert (steps, probs) == (1.0, 1.0)


@pytest.mark.docker
def test_seed_yaml_with_api_key_name_via_run_config_from_elsewhere(problem_set, tmp_path, sandbox_image):
    """The seed README's YAML example, `api_key` renamed `api_key_name` (the one difference the
    README documents), run with --run_config from an unrelated directory and no venv on PATH.
    aa_scicode sets include_dev; the user's explicit `split: dev` wins."""
    pfile, tfile = problem_set
    seed = yaml.safe_load(readme_block(ROOT / "README.md", "config:\n  type: aa_scicode"))
    assert seed["target"]["api_endpoint"]["api_key_name"] == "NVIDIA_API_KEY"
    assert seed["config"]["params"] == {"parallelism": 50, "limit_samples": 20}
    with FakeEndpoint(answer, api_key="nv-key", models={"meta/llama-3.1-8b-instruct"}) as ep:
        seed["target"]["api_endpoint"]["url"] = ep.url
        seed["config"]["params"]["extra"] = {"split": "dev", "problems": str(pfile), "test_data": str(tfile),
                                             "n_samples": 1}
        (tmp_path / "cfg").mkdir()
        cfg = tmp_path / "cfg" / "seed.yaml"
        cfg.write_text(yaml.safe_dump(seed))
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        p = subprocess.run([str(BIN / "nemo-evaluator"), "run_eval", "--run_config", str(cfg),
                            "--output_dir", str(tmp_path / "out")], cwd=elsewhere, capture_output=True,
                           text=True, timeout=600, env=clean_env(NVIDIA_API_KEY="nv-key"))
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert metrics(tmp_path / "out") == (1.0, 1.0)
    data = results_json(tmp_path / "out")
    assert data["run"]["split"] == "dev" and data["run"]["with_background"] is True


# ---------------------------------------------------------------- preflight and exit codes

def scicode_eval(url, out, pfile, tfile, *extra, env=None):
    return subprocess.run([str(BIN / "scicode_eval"), "--model", "m", "--url", url, "--output-dir", str(out),
                           "--problems", str(pfile), "--test-data", str(tfile), "--quiet", *extra],
                          capture_output=True, text=True, timeout=300, env=env or clean_env())


def test_bad_endpoint_one_line_exit_2_before_any_sandbox(problem_set, tmp_path):
    pfile, tfile = problem_set
    with FakeEndpoint(answer, api_key="k1", models={"m"}) as ep:
        dead = ep.base_url.replace(str(ep.port), "9") + "/v1/chat/completions"
        cases = [
            (dead, {}, ["cannot reach endpoint", "connection refused", "--url"]),
            (ep.url, {"API_KEY": "wrong"}, ["rejected the API key", "HTTP 401", "api_key_name"]),
            (ep.url, {}, ["wants an API key", "api_key_name"]),
        ]
        for i, (url, env, needles) in enumerate(cases):
            out = tmp_path / f"o{i}"
            p = scicode_eval(url, out, pfile, tfile, env=clean_env(**env))
            lines = p.stderr.strip().splitlines()
            assert p.returncode == 2 and len(lines) == 1, p.stderr
            assert all(n in lines[0] for n in needles), lines[0]
            assert not (out / "records.jsonl").exists() and not (out / "scicode_cache").exists()
        p = scicode_eval(ep.url, tmp_path / "o9", pfile, tfile, "--model", "nope", env=clean_env(API_KEY="k1"))
        assert p.returncode == 2 and "does not serve model 'nope'" in p.stderr and "--model" in p.stderr
        assert all(r.body["max_tokens"] == 1 for r in ep.requests)   # only preflights were sent


def test_bad_key_through_nemo_evaluator_fails_the_run(problem_set, tmp_path):
    pfile, tfile = problem_set
    with FakeEndpoint(answer, api_key="k1") as ep:
        p = subprocess.run([str(BIN / "nemo-evaluator"), "run_eval", "--eval_type", "scicode",
                            "--model_id", "m", "--model_type", "chat", "--model_url", ep.url,
                            "--api_key_name", "MY_KEY", "--output_dir", str(tmp_path / "out"),
                            "--overrides", f"config.params.extra.problems={pfile},"
                                           f"config.params.extra.test_data={tfile}"],
                           capture_output=True, text=True, timeout=300, env=clean_env(MY_KEY="bad"))
        assert ep.count == 1
    assert p.returncode != 0
    assert "rejected the API key (HTTP 401" in p.stdout + p.stderr
    assert not (tmp_path / "out" / "results.yml").exists()


def test_generation_failures_exit_4_with_scores_written(problem_set, tmp_path):
    """The preflight passes, then every generation request fails: exit 4, scores written;
    --max-gen-errors raises the threshold."""
    pfile, tfile = problem_set
    fail = lambda n, prompt, body: None if body.get("max_tokens") == 1 else "500"  # noqa: E731
    with FakeEndpoint(answer, faults=fail) as ep:
        p = scicode_eval(ep.url, tmp_path / "o", pfile, tfile, "--sandbox", "process",
                         "--extra-params", "max_retries=1")
        assert p.returncode == 4, p.stderr
        assert "3 step(s) without a model answer" in p.stderr and "HTTP 500" in p.stderr
        data = results_json(tmp_path / "o")
        assert data["counts"]["gen_error"] == 3 and data["steps_pass@1"] == 0.0
        p = scicode_eval(ep.url, tmp_path / "o2", pfile, tfile, "--sandbox", "process",
                         "--extra-params", "max_retries=0", "--max-gen-errors", "3")
        assert p.returncode == 0, p.stderr


# ---------------------------------------------------------------- reasoning replies

def test_split_reasoning():
    from harness.run.prompts import extract_code, split_reasoning
    draft, final = "```python\ndraft()\n```", "```python\nfinal()\n```"
    text = f"<think>first {draft} then </think> more? </think>\nAnswer:\n{final}\n{draft}"
    answer_part, unended = split_reasoning(text)
    assert not unended and extract_code(answer_part).strip() == "final()"   # first block after the last end
    assert split_reasoning(f"<think>still thinking {draft}") == ("", True)
    assert split_reasoning(final) == (final, False)                           # no reasoning at all
    assert split_reasoning(f"<think>{draft}", "") == (f"<think>{draft}", False)  # stripping off
    assert split_reasoning(f"x [/R] {final}", "[/R]") == (f" {final}", False)


def think_wrapped(index, truncate=()):
    """Gold code after a <think> block holding a wrong draft (and a wrong draft in
    reasoning_content); steps in `truncate` never close their <think> or stop at the limit."""
    from harness.reference import wrong_code

    def responder(prompt, body):
        e = index.find(prompt)
        if e is None:
            return "OK"
        draft = f"```python\n{wrong_code(e.gold, e.name)}\n```"
        gold = f"```python\n{e.gold}\n```"
        if truncate and e.step_id == truncate[0]:
            return f"<think>\nLet me draft it:\n{draft}\nHmm, but"
        if e.step_id in truncate[1:]:
            return Reply(f"<think>{draft}</think>{gold}", finish_reason="length")
        return Reply(f"<think>\nA draft:\n{draft}\nNo, better:\n</think>\n\nFinal answer:\n{gold}\n",
                     reasoning_content=f"reasoning {draft}")
    return responder


@pytest.mark.docker
def test_reasoning_replies_on_dev(tmp_path, dev_targets):  # noqa: F811
    from harness.data import dataset
    from harness.reference import StepIndex
    probs = [p for p in dataset.load_problems("dev") if p["problem_id"] in SMALL]
    f = tmp_path / "small_dev.jsonl"
    f.write_text("".join(json.dumps(p) + "\n" for p in probs))
    n = sum(1 for p in probs for s in p["sub_steps"] if s["test_cases"])
    index = StepIndex(probs)
    with FakeEndpoint(think_wrapped(index)) as ep:
        p = scicode_eval(ep.url, tmp_path / "gold", f, dev_targets, "--with-background",
                         "--concurrent-requests", "4", "--sandbox", "docker", env=dict(os.environ))
        assert p.returncode == 0, p.stderr[-3000:]
    data = results_json(tmp_path / "gold")
    assert (data["steps_pass@1"], data["problems_pass@1"]) == (1.0, 1.0) and data["counts"]["pass"] == n

    # the last steps of two problems: one never ends its <think>, one stops at max_tokens
    lasts = [[s["step_number"] for s in p["sub_steps"] if s["test_cases"]][-1] for p in probs[:2]]
    with FakeEndpoint(think_wrapped(index, truncate=tuple(lasts))) as ep:
        p = scicode_eval(ep.url, tmp_path / "trunc", f, dev_targets, "--with-background",
                         "--concurrent-requests", "4", "--sandbox", "docker", env=dict(os.environ))
        assert p.returncode == 0, p.stderr[-3000:]
    data = results_json(tmp_path / "trunc")
    assert data["counts"]["truncated"] == 2 and data["counts"]["pass"] == n - 2
    assert data["counts"]["gen_error"] == 0
    assert data["problems_pass@1"] == pytest.approx((len(probs) - 2) / len(probs))
    recs = [json.loads(x) for x in (tmp_path / "trunc" / "records.jsonl").read_text().splitlines()]
    why = {r["step_id"]: r["error"] for r in recs if r["status"] == "truncated"}
    assert why == {lasts[0]: "reasoning never ended", lasts[1]: "reply cut off (finish_reason: length)"}
    assert data["nvidia_26_3_equivalent"]["steps_pass@1"] < 1.0   # truncated steps fail there too
