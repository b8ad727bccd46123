"""The built-in reference endpoint: step lookup from real dev prompts, the HTTP surface,
and the wrong / exit / sleep answers."""
import ast
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from harness import reference as R


@pytest.fixture(scope="session")
def dev_index(dev_problems):
    return R.StepIndex(dev_problems)


def _prompts(problems, template, with_background):
    """(step, prompt) for every dev step, built like the pipeline does (gold earlier steps)."""
    from harness.run import prompts
    for prob in problems:
        chain = []
        for i, step in enumerate(prob["sub_steps"]):
            yield step, prompts.build_prompt(prob, i, chain, template, with_background)
            chain.append(step["ground_truth_code"])


@pytest.fixture()
def server_factory(dev_index):
    servers = []

    def make(mode="gold"):
        srv = R.make_server("127.0.0.1", 0, mode=mode, index=dev_index)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def _post(url, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _chat(url, prompt, model="my/model", **extra):
    status, data = _post(url, {"model": model, "messages": [
        {"role": "system", "content": "You are a scientist."}, {"role": "user", "content": prompt}], **extra})
    assert status == 200
    return json.loads(data)


# ------------------------------------------------------------------ lookup

@pytest.mark.parametrize("tname", ["multistep_template.txt", "background_comment_template.txt"])
@pytest.mark.parametrize("with_background", [True, False])
def test_index_finds_every_dev_step(dev_problems, dev_index, tname, with_background):
    from harness.data import dataset
    template = dataset.template(tname)
    seen = 0
    for step, prompt in _prompts(dev_problems, template, with_background):
        entry = dev_index.find(prompt)
        assert entry is not None and entry.step_id == step["step_number"]
        seen += 1
    assert seen == 50 and len(dev_index) == 50


def test_index_uses_the_text_after_next_step_and_disambiguates():
    probs = [{"problem_id": "1", "sub_steps": [
        {"step_number": "1.1", "function_header": "def f(x):\n    '''first'''", "step_description_prompt": "Add one.",
         "ground_truth_code": "def f(x):\n    return x + 1"},
        {"step_number": "1.2", "function_header": "def g(x):", "step_description_prompt": "Use f.",
         "ground_truth_code": "def g(x):\n    return f(x) * 2"}]},
        {"problem_id": "2", "sub_steps": [
            {"step_number": "2.1", "function_header": "def f(x):\n    '''second'''",
             "step_description_prompt": "Subtract one.", "ground_truth_code": "def f(x):\n    return x - 1"},
            {"step_number": "2.2", "function_header": "def h():", "step_description_prompt": "No gold.",
             "ground_truth_code": None}]}]
    idx = R.StepIndex(probs)
    assert len(idx) == 3
    # headers before the marker (earlier steps) are ignored
    assert idx.find("def g(x):\n NEXT STEP - PROBLEM\nAdd one.\n\ndef f(x):\n    '''first'''").step_id == "1.1"
    assert idx.find("NEXT STEP\nSubtract one.\n\ndef   f(x):\n    '''second'''").step_id == "2.1"
    assert idx.find("NEXT STEP\nSubtract one.\n\ndef f(x):").step_id == "2.1"   # by description
    assert idx.find("NEXT STEP\nAdd one.\ndef f(x):").step_id == "1.1"
    assert idx.find("NEXT STEP\nUse f.\n\ndef g(x):").step_id == "1.2"
    assert idx.find("NEXT STEP\ndef h():") is None          # no gold code
    assert idx.find("nothing here") is None
    assert idx.find("no marker at all: def g(x):").step_id == "1.2"


def test_load_index_needs_gold_code(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"problem_id": "5", "sub_steps": [
        {"step_number": "5.1", "function_header": "def f():", "test_cases": []}]}) + "\n")
    with pytest.raises(ValueError, match="no steps with gold code"):
        R.load_index(problems_path=p)


# ------------------------------------------------------------------ HTTP

def test_endpoint_answers_every_dev_step_with_gold(dev_problems, server_factory):
    from harness.data import dataset
    from harness.run import prompts
    srv = server_factory("gold")
    assert srv.server_address[0] == "127.0.0.1"
    template = dataset.template("multistep_template.txt")
    for step, prompt in _prompts(dev_problems, template, True):
        resp = _chat(srv.url, prompt)
        assert resp["object"] == "chat.completion" and resp["model"] == "my/model"
        content = resp["choices"][0]["message"]["content"]
        assert content == "```python\n" + step["ground_truth_code"].strip("\n").rstrip() + "\n```"
        assert prompts.extract_code(content).strip() == step["ground_truth_code"].strip()
        u = resp["usage"]
        assert u["prompt_tokens"] > 0 and u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        assert resp["choices"][0]["finish_reason"] == "stop"


def test_endpoint_other_paths_unknown_steps_and_errors(server_factory):
    srv = server_factory("gold")
    base = srv.url.rsplit("/v1/", 1)[0]
    r = _chat(base + "/anything/else", "Tell me a joke.", model=None)
    assert r["model"] == R.DEFAULT_MODEL
    assert r["choices"][0]["message"]["content"] == R.UNKNOWN_ANSWER and "```" not in R.UNKNOWN_ANSWER
    status, data = _post(srv.url, None, raw=b"{not json")
    assert status == 400 and "bad request" in json.loads(data)["error"]["message"]
    status, data = _post(srv.url, None, raw=b"[1, 2]")
    assert status == 400
    # legacy completions body and multi-part content
    status, data = _post(base + "/v1/completions", {"prompt": "NEXT STEP\ndef cross(a, b):"})
    assert status == 200 and "def cross" in json.loads(data)["choices"][0]["message"]["content"]
    status, data = _post(srv.url, {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "NEXT STEP"}, {"type": "text", "text": "def cross(a, b):"}]}], "n": 2})
    body = json.loads(data)
    assert len(body["choices"]) == 2 and "def cross" in body["choices"][1]["message"]["content"]
    with urllib.request.urlopen(base + "/v1/models", timeout=10) as r:
        assert json.loads(r.read())["data"][0]["id"] == R.DEFAULT_MODEL


def test_endpoint_streams_when_asked(server_factory):
    srv = server_factory("gold")
    status, data = _post(srv.url, {"messages": [{"role": "user", "content": "NEXT STEP def cross(a, b):"}],
                                   "stream": True})
    assert status == 200
    events = [ln[6:] for ln in data.decode().split("\n\n") if ln.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "")
                   for e in events[:-1] if json.loads(e)["choices"])
    assert text.startswith("```python\ndef cross(a, b):")


def test_make_server_rejects_unknown_mode(dev_index):
    with pytest.raises(ValueError, match="unknown mode"):
        R.make_server("127.0.0.1", 0, mode="bogus", index=dev_index)


def test_serve_reference_command_is_registered():
    from typer.testing import CliRunner
    from harness.cli.admin import app
    r = CliRunner().invoke(app, ["serve-reference", "--help"])
    assert r.exit_code == 0
    for opt in ("--host", "--port", "--mode", "--split", "--problems"):
        assert opt in r.output
    r = CliRunner().invoke(app, ["serve-reference", "--mode", "bogus"])
    assert r.exit_code == 2


# ------------------------------------------------------------------ bad answers

def _code(content):
    from harness.run import prompts
    return prompts.extract_code(content)


def test_wrong_mode_perturbs_every_dev_step(dev_problems, dev_index):
    """Each dev step's wrong answer parses and still defines the step's function (the
    Docker target test runs them against the gold targets)."""
    for prob in dev_problems:
        for step in prob["sub_steps"]:
            e = dev_index.by_id[step["step_number"]]
            code = _code(R.answer_for(e, "wrong"))
            tree = ast.parse(code)
            names = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            assert e.name in names
            assert R._WRONG_HELPER in code


def _run(code, name, *args):
    ns = {"np": np}
    exec(code, ns)
    return ns[name](*args)


def test_wrong_values_never_match():
    gold = ("def f(x, kind):\n"
            "    '''doc'''\n"
            "    def inner():\n"
            "        return 5\n"
            "    if kind == 'arr':\n"
            "        return np.array([x, -1.0, 0.0, 1e30]) + inner() - 5\n"
            "    if kind == 'bool':\n"
            "        return x > 0\n"
            "    if kind == 'tuple':\n"
            "        return (np.array([x]), [(0, 1)], {'k': x})\n"
            "    if kind == 'str':\n"
            "        return 'abc'\n"
            "    return x\n")
    wrong = R.wrong_code(gold, "f")
    for kind in ("arr", "bool", "tuple", "num", "str"):
        g, w = _run(gold, "f", -1.0, kind), _run(wrong, "f", -1.0, kind)
        from harness.targets.compare import values_close
        assert not values_close(w, g)[0], kind
    assert _run(wrong, "f", 2, "bool") is False or _run(wrong, "f", 2, "bool") == np.False_
    # a class: every method's returns are perturbed
    cls = "class A:\n    def __init__(self):\n        self.v = 1\n    def get(self):\n        return self.v\n"
    ns = {}
    exec(R.wrong_code(cls, "A"), ns)
    assert ns["A"]().get() == 3
    # unparsable gold or missing function: the name is rebound to None
    assert R.wrong_code("def f(:", "f").endswith("f = None\n")
    assert R.wrong_code("def g():\n    return 1", "f").endswith("f = None\n")


def test_exit_mode_rotates_and_sleep_mode_sleeps(dev_index):
    e = dev_index.by_id["29.1"]
    seen = [_code(R.answer_for(e, "exit", i)).strip().splitlines()[-1] for i in range(6)]
    assert seen[:3] == ["exit(0)", "raise SystemExit(0)", "__import__('os')._exit(0)"] and seen[3:] == seen[:3]
    s = _code(R.answer_for(e, "sleep"))
    assert s.strip().endswith("__import__('time').sleep(10**6)") and e.gold.strip() in s
    for mode in R.MODES:
        assert R.answer_for(None, mode) == R.UNKNOWN_ANSWER
    with pytest.raises(ValueError):
        R.answer_for(e, "bogus")


def test_endpoint_rotates_exit_calls(server_factory):
    srv = server_factory("exit")
    lasts = {_code(_chat(srv.url, "NEXT STEP def cross(a, b):")["choices"][0]["message"]["content"])
             .strip().splitlines()[-1] for _ in range(3)}
    assert lasts == set(R.EXIT_CALLS)


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_exit_answers_never_report_a_pass(dev_problems, dev_index, variant):
    """Through the real runner program (as a local process): the program exits before any
    test runs, so no complete report is produced."""
    from harness.run import candidate
    from harness.sandbox import Job, runner
    prob = next(p for p in dev_problems if p["problem_id"] == "29")
    step = prob["sub_steps"][0]
    code = _code(R.answer_for(dev_index.by_id["29.1"], "exit", variant))
    job = Job(code=candidate.program(prob["required_dependencies"], [], code), tests=step["test_cases"],
              targets=None)
    marker = runner.new_marker()
    p = subprocess.run([sys.executable, "-c", runner.RUNNER_SOURCE], input=runner.payload(job, marker),
                       capture_output=True, timeout=60)
    rep = runner.parse_report(p.stdout.decode(), marker)
    assert rep is None or not rep.completed
