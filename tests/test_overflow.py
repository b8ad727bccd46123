"""Context overflow (issue 21): each server's real context-length error is the model's failure
(`context_overflow`: counted, scored as failed, never retried, the rest of the chain not sent,
exit code unaffected); any other 400 stays `gen_error`; --max-context-tokens catches a prompt before
it is sent."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from fake_endpoint import Fault, FakeEndpoint
from harness.run import overflow
from harness.run.generate import Client, GenConfig
from test_e2e import answer, problem_set, run_eval  # noqa: F401 (fixture)

BIN = sys.executable.rsplit("/", 1)[0]

# Real context-length error bodies, as each server sends them (numbers from the cited reports).
BODIES = {
    # vLLM <= 0.6 (flat ErrorResponse): llama-stack discussion #981, migrated as ogx-ai/ogx#4534
    "vllm-0.6": (400, {"object": "error", "message": "This model's maximum context length is 6048 tokens. "
                       "However, you requested 6616 tokens (568 in the messages, 6048 in the completion). "
                       "Please reduce the length of the messages or completion.",
                       "type": "BadRequestError", "param": None, "code": 400}),
    # vLLM >= 0.10 (nested ErrorResponse; text of vllm/entrypoints/openai/serving_engine.py _validate_input)
    "vllm-max-tokens": (400, {"error": {"message": "'max_tokens' or 'max_completion_tokens' is too large: 4096. "
                                        "This model's maximum context length is 32768 tokens and your request "
                                        "has 29000 input tokens (4096 > 32768 - 29000).",
                                        "type": "BadRequestError", "param": "max_tokens", "code": 400}}),
    "vllm-input": (400, {"error": {"message": "This model's maximum context length is 32768 tokens. However, your "
                                   "request has 40000 input tokens. Please reduce the length of the input messages.",
                                   "type": "BadRequestError", "param": "input_tokens", "code": 400}}),
    # vLLM without max_tokens, prompt alone over the window: vllm-project/vllm#4667
    "vllm-negative": (400, {"object": "error", "message": "max_tokens must be at least 1, got -186.",
                            "type": "BadRequestError", "param": None, "code": 400}),
    # SGLang: QwenLM/Qwen3#1321 (input alone), sglang tokenizer_manager.py (input + max_new_tokens)
    "sglang-input": (400, {"object": "error", "message": "The input (61709 tokens) is longer than the model's "
                           "context length (40960 tokens).", "type": "BadRequestError", "param": None,
                           "code": 400}),
    "sglang-total": (400, {"object": "error", "message": "Requested token count exceeds the model's maximum "
                           "context length of 64000 tokens. You requested a total of 71897 tokens: 7897 tokens "
                           "from the input messages and 64000 tokens for the completion. Please reduce the number "
                           "of tokens in the input messages or the completion to fit within the limit.",
                           "type": "BadRequestError", "param": None, "code": 400}),
    # TGI (HTTP 422, ErrorResponse {error, error_type}): huggingface/text-generation-inference#628 and
    # #695; texts of router/src/validation.rs MaxTotalTokens / InputLength
    "tgi-total": (422, {"error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 2048. "
                        "Given: 1244 `inputs` tokens and 1000 `max_new_tokens`", "error_type": "validation"}),
    "tgi-input": (422, {"error": "Input validation error: `inputs` must have less than 1024 tokens. Given: 1168",
                        "error_type": "validation"}),
    # OpenAI: mckaywrigley/chatbot-ui#102 (chat completions); the newer wording with the same code
    "openai": (400, {"error": {"message": "This model's maximum context length is 4097 tokens. However, you "
                               "requested 4120 tokens (3120 in the messages, 1000 in the completion). Please reduce "
                               "the length of the messages or completion.", "type": "invalid_request_error",
                               "param": "messages", "code": "context_length_exceeded"}}),
    "openai-new": (400, {"error": {"message": "Your input exceeds the context window of this model. Please adjust "
                                   "your input and try again.", "type": "invalid_request_error", "param": "input",
                                   "code": "context_length_exceeded"}}),
    # NVIDIA NIM (integrate.api.nvidia.com): Alishahryar1/free-claude-code#391
    "nim": (400, {"error": {"message": "This model's maximum context length is 196608 tokens. However, your "
                            "messages resulted in 199906 tokens. Please reduce the length of the messages.",
                            "type": "Bad Request", "code": 400}}),
}

# 400s that are not about the context: they stay gen_error
OTHER_400 = {
    "vllm-extra-field": {"object": "error", "message": "[{'type': 'extra_forbidden', 'loc': ('body', 'foo'), "
                         "'msg': 'Extra inputs are not permitted', 'input': 1}]", "type": "BadRequestError",
                         "param": None, "code": 400},
    "openai-argument": {"error": {"message": "Unrecognized request argument supplied: foo",
                                  "type": "invalid_request_error", "param": None, "code": None}},
    "vllm-max-tokens-zero": {"object": "error", "message": "max_tokens must be at least 1, got 0.",
                             "type": "BadRequestError", "param": None, "code": 400},
}


def fault(name):
    status, body = BODIES[name]
    return Fault("status", status=status, body=json.dumps(body))


async def complete(url, prompt="p"):
    async with Client(GenConfig(url=url, model="m", backoff_base=0.01, max_retries=3)) as c:
        return await c.complete(prompt, 0)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_each_servers_context_error_is_an_overflow_never_retried(name):
    import asyncio
    with FakeEndpoint(faults=lambda n, p, b: fault(name)) as ep:
        res = asyncio.run(complete(ep.url))
        assert ep.count == 1   # not retried
    assert res.context_overflow and not res.ok and res.status == BODIES[name][0]
    assert res.error.startswith(f"HTTP {BODIES[name][0]}: ") and "attempt" not in res.error
    assert overflow.matching_server(BODIES[name][0], json.dumps(BODIES[name][1])) is not None


@pytest.mark.parametrize("name", sorted(OTHER_400))
def test_other_400s_are_no_overflow(name):
    import asyncio
    body = json.dumps(OTHER_400[name])
    with FakeEndpoint(faults=lambda n, p, b: Fault("status", status=400, body=body)) as ep:
        res = asyncio.run(complete(ep.url))
    assert not res.context_overflow and not res.ok and res.status == 400


def test_the_table_and_its_statuses():
    body = json.dumps(BODIES["vllm-0.6"][1])
    assert overflow.matching_server(400, body) == "OpenAI, vLLM, NIM"
    assert overflow.matching_server(413, body) and overflow.matching_server(422, body)
    assert overflow.matching_server(500, body) is None      # a 5xx is retried as before
    assert overflow.matching_server(400, "") is None
    assert overflow.matching_server(400, "maximum context length exceeded (plain text)")   # not JSON
    assert overflow.matching_server(422, json.dumps(BODIES["tgi-total"][1])) == "TGI"
    assert overflow.matching_server(400, json.dumps(BODIES["sglang-input"][1])) == "SGLang"


def test_precheck_estimates_bytes_over_four_plus_max_tokens():
    body = {"messages": [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "é" * 30}],
            "max_tokens": 100}
    assert overflow.estimate_tokens(body) == 25          # (40 + 60 bytes) / 4
    assert overflow.precheck(body, None) is None
    assert overflow.precheck(body, 125) is None
    why = overflow.precheck(body, 124)
    assert why.startswith("not sent:") and "about 25 tokens" in why and "124" in why
    assert overflow.precheck({"messages": body["messages"]}, 25) is None   # no max_tokens sent
    assert overflow.check_budget(2048, 2048) and overflow.check_budget(None, 2048) is None
    assert overflow.check_budget(4096, 2048) is None and overflow.check_budget(4096, None) is None


# ---------------------------------------------------------------- whole runs

def asked_for(prompt):
    nxt = prompt.split("NEXT STEP", 1)[-1]
    return next(name for name in ("add", "twice", "pair") if f"def {name}(" in nxt)


def by_chain(n, prompt, body):
    """Sample 0: 901.1 overflows (vLLM), 902.1 overflows (TGI 422). Sample 1: 901.1 answers, 901.2
    overflows (SGLang), 902.1 overflows (OpenAI's code). The preflight (max_tokens 1) answers."""
    if body.get("max_tokens") == 1:
        return None
    step, seed = asked_for(prompt), body.get("seed")
    if step == "add":
        return fault("vllm-0.6") if seed == 0 else None
    if step == "twice":
        return fault("sglang-total")
    return fault("tgi-total") if seed == 0 else fault("openai")


@pytest.mark.docker
def test_overflowing_chains_through_run_eval(problem_set, tmp_path, sandbox_image):  # noqa: F811
    pfile, tfile = problem_set
    out = tmp_path / "out"
    with FakeEndpoint(answer, faults=by_chain) as ep:
        p = run_eval(ep, out, pfile, tfile, "config.params.extra.junit_xml=" + str(tmp_path / "j.xml"))
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        asked = sorted((r.body["seed"], asked_for(r.prompt)) for r in ep.requests if r.body.get("max_tokens") != 1)
    # 901.2 of sample 0 was never sent: 901.1 had already overflowed
    assert asked == [(0, "add"), (0, "pair"), (1, "add"), (1, "pair"), (1, "twice")]
    res = yaml.safe_load((out / "results.yml").read_text())["results"]["tasks"]["scicode"]["metrics"]
    assert res["steps_pass@1"]["scores"]["steps_pass@1"]["value"] == pytest.approx((0 + 1 / 3) / 2)
    data = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
    assert data["counts"]["context_overflow"] == 5 and data["counts"]["pass"] == 1
    assert data["counts"]["gen_error"] == 0
    assert data["nvidia_26_3_equivalent"]["steps_pass@1"] == pytest.approx(1 / 6)   # failed there too
    recs = {(r["sample"], r["step_id"]): r for r in map(json.loads, (out / "records.jsonl").read_text().splitlines())}
    assert "maximum context length" in recs[(0, "901.1")]["error"]
    assert recs[(0, "901.2")]["error"] == overflow.later("901.1")
    assert "must be <= 2048" in recs[(0, "902.1")]["error"] and "context_length_exceeded" in recs[(1, "902.1")]["error"]
    assert recs[(1, "901.1")]["status"] == "pass" and recs[(1, "901.2")]["status"] == "context_overflow"
    junit = (tmp_path / "j.xml").read_text()
    assert junit.count('type="context_overflow"') == 5
    assert "5 step(s) exceeded the model's context" in p.stdout + p.stderr


def scicode_eval(url, out, pfile, tfile, *extra):
    env = dict(os.environ, SCICODE_GEN_BACKOFF_BASE="0.05")
    return subprocess.run([f"{BIN}/scicode_eval", "--model", "m", "--url", url, "--output-dir", str(out),
                           "--problems", str(pfile), "--test-data", str(tfile), "--quiet", "--sandbox", "process",
                           *extra], capture_output=True, text=True, timeout=300, env=env)


def test_a_plain_400_stays_gen_error(problem_set, tmp_path):  # noqa: F811
    pfile, tfile = problem_set
    body = json.dumps(OTHER_400["vllm-extra-field"])
    plain = lambda n, p, b: None if b.get("max_tokens") == 1 else Fault("status", status=400, body=body)  # noqa: E731
    with FakeEndpoint(answer, faults=plain) as ep:
        p = scicode_eval(ep.url, tmp_path / "o", pfile, tfile)
    assert p.returncode == 4, p.stderr
    data = json.loads(next((tmp_path / "o" / "scicode_results").glob("*.json")).read_text())
    assert data["counts"]["gen_error"] == 3 and data["counts"]["context_overflow"] == 0


def test_max_context_tokens_catches_prompts_before_sending(problem_set, tmp_path):  # noqa: F811
    pfile, tfile = problem_set
    with FakeEndpoint(answer) as ep:
        p = scicode_eval(ep.url, tmp_path / "o", pfile, tfile, "--max-context-tokens", "2100")
        assert p.returncode == 0, p.stderr
        assert ep.count == 1   # the preflight only: every prompt + max_tokens 2048 is over 2100
        data = json.loads(next((tmp_path / "o" / "scicode_results").glob("*.json")).read_text())
        assert data["counts"]["context_overflow"] == 3 and data["run"]["max_context_tokens"] == 2100
        recs = [json.loads(x) for x in (tmp_path / "o" / "records.jsonl").read_text().splitlines()]
        assert {r["error"].split(" tokens")[0].rsplit(" ", 1)[0] for r in recs if r["step_id"] != "901.2"} == \
            {"not sent: the prompt is about"}
        ep.reset_stats()
        p = scicode_eval(ep.url, tmp_path / "o2", pfile, tfile, "--max-context-tokens", "100000")
        assert p.returncode == 0 and ep.count == 4, p.stderr   # preflight + 3 steps: all fit
        p = scicode_eval(ep.url, tmp_path / "o3", pfile, tfile, "--max-context-tokens", "1000")
        assert p.returncode == 2 and "leaves no room for the prompt: max_tokens is 2048" in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
