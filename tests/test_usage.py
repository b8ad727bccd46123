"""Tokens and cost (issue 21): the endpoint's `usage` per step (stored with the generation, so
resumed too), totals and per-status sums in the results JSON, results.yml and the summary line,
a cost from --price-in/--price-out; and --problem-ids."""
import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from fake_endpoint import FakeEndpoint
from harness.run import usage
from harness.run.generate import Client, GenConfig

BIN = Path(sys.executable).parent

OPENAI_USAGE = {"prompt_tokens": 1200, "completion_tokens": 900, "total_tokens": 2100,
                "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 640, "audio_tokens": 0}}


def test_normalize_reads_what_the_server_reports():
    assert usage.normalize(OPENAI_USAGE) == {"prompt_tokens": 1200, "completion_tokens": 900, "total_tokens": 2100,
                                             "cached_prompt_tokens": 1024, "reasoning_tokens": 640}
    # vLLM/SGLang: no details (or null); some servers put reasoning_tokens at the top
    assert usage.normalize({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                            "prompt_tokens_details": None}) == \
        {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert usage.normalize({"prompt_tokens": 5, "reasoning_tokens": 3})["reasoning_tokens"] == 3
    assert usage.normalize(None) is None and usage.normalize({}) is None and usage.normalize("x") is None
    assert usage.normalize({"prompt_tokens": -1, "completion_tokens": "7", "total_tokens": True}) is None


def test_summarize_totals_by_status_and_cost():
    records = [
        {"status": "pass", "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}},
        {"status": "truncated", "usage": {"prompt_tokens": 200, "completion_tokens": 2000, "total_tokens": 2200,
                                          "reasoning_tokens": 1990}},
        {"status": "pass", "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}},
        {"status": "fail"},                     # answered, but the server reported no usage
        {"status": "gen_error"}, {"status": "context_overflow"},   # no reply: nothing expected
    ]
    s = usage.summarize(records, price_in=0.5, price_out=2.0)
    assert (s["prompt_tokens"], s["completion_tokens"], s["total_tokens"], s["reasoning_tokens"]) == \
        (350, 2015, 2365, 1990)
    assert s["cached_prompt_tokens"] is None and s["steps"] == 3 and s["steps_without_usage"] == 1
    assert s["by_status"]["pass"] == {"prompt_tokens": 150, "completion_tokens": 15, "total_tokens": 165,
                                      "reasoning_tokens": None, "cached_prompt_tokens": None, "steps": 2}
    assert s["by_status"]["truncated"]["reasoning_tokens"] == 1990 and set(s["by_status"]) == {"pass", "truncated"}
    assert s["cost"]["total"] == pytest.approx((350 * 0.5 + 2015 * 2.0) / 1e6)
    assert "cost" not in usage.summarize(records)
    assert usage.summarize(records, price_out=1.0)["cost"]["prompt"] == 0.0
    line = usage.summary_line(s)
    assert line.startswith("tokens          prompt 350 (cached n/a), completion 2015 (reasoning 1990), total 2365")
    assert "over 3 steps (1 without usage)" in line and "cost 0.0042" in line


def test_results_yml_metrics_carry_tokens_and_cost(tmp_path):
    from core_evals.scicode.output import parse_output
    s = usage.summarize([{"status": "pass", "usage": usage.normalize(OPENAI_USAGE)}], 1.0, 4.0)
    (tmp_path / "scicode_results").mkdir()
    (tmp_path / "scicode_results" / "m.json").write_text(json.dumps(
        {"steps_pass@1": 1.0, "problems_pass@1": 1.0, "n_samples": 1, "usage": s}))
    m = parse_output(str(tmp_path)).tasks["scicode"].metrics
    assert m["tokens"].scores["completion_tokens"].value == 900 and m["tokens"].scores["reasoning_tokens"].value == 640
    assert m["tokens"].scores["cached_prompt_tokens"].stats.count == 1
    assert m["tokens_pass"].scores["prompt_tokens"].value == 1200
    assert m["cost"].scores["cost"].value == pytest.approx((1200 * 1.0 + 900 * 4.0) / 1e6)
    (tmp_path / "scicode_results" / "m.json").write_text(json.dumps(   # an old results file: no usage
        {"steps_pass@1": 1.0, "problems_pass@1": 1.0, "n_samples": 1}))
    assert set(parse_output(str(tmp_path)).tasks["scicode"].metrics) == {"steps_pass@1", "problems_pass@1"}


def test_the_client_keeps_the_reply_s_usage():
    def responder(prompt, body):
        return {"object": "chat.completion", "usage": OPENAI_USAGE,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]}

    async def go(url):
        async with Client(GenConfig(url=url, model="m")) as c:
            return await c.complete("p", 0)
    with FakeEndpoint(responder) as ep:
        res = asyncio.run(go(ep.url))
    assert res.ok and usage.normalize(res.usage)["reasoning_tokens"] == 640


# ---------------------------------------------------------------- a gold dev run

def counting_reference():
    """The gold reference endpoint, keeping each request's step and the usage it reported."""
    from harness.reference import make_server
    server = make_server("127.0.0.1", 0, mode="gold", split="dev")
    served, reply = [], server.reply

    def counted(body):
        resp, entry = reply(body)
        if body.get("max_tokens") != 1:   # not the preflight
            served.append((entry.step_id if entry else None, resp["usage"]))
        return resp, entry
    server.reply = counted
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, served


def run_eval(url, out, targets, ids, *extra):
    ov = ",".join(["config.params.extra.split=dev", f"config.params.extra.test_data={targets}",
                   f"config.params.extra.problem_ids='{ids}'", "config.params.parallelism=4",
                   "config.params.extra.price_in=0.5", "config.params.extra.price_out=2", *extra])
    return subprocess.run([str(BIN / "nemo-evaluator"), "run_eval", "--eval_type", "scicode_background",
                           "--model_id", "ref", "--model_type", "chat", "--model_url", url,
                           "--output_dir", str(out), "--overrides", ov],
                          capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"))


def expected(served, steps):
    per_step = {sid: u for sid, u in served}
    assert set(per_step) >= set(steps)
    p, c = (sum(per_step[s][k] for s in steps) for k in ("prompt_tokens", "completion_tokens"))
    return p, c


@pytest.mark.docker
def test_gold_dev_tokens_cost_problem_ids_and_resume(tmp_path, dev_targets):
    from harness.data import dataset
    dev = {p["problem_id"]: [s["step_number"] for s in p["sub_steps"] if s["test_cases"]]
           for p in dataset.load_problems("dev")}
    out = tmp_path / "out"
    server, served = counting_reference()
    try:
        p = run_eval(server.url, out, dev_targets, "1,3,4")
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        first = list(served)
        steps = dev["1"] + dev["3"] + dev["4"]
        assert sorted(s for s, _ in first) == sorted(steps)      # exactly those problems
        data = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
        assert data["problems"] == 3 and data["steps_pass@1"] == 1.0 and data["run"]["problem_ids"] == ["1", "3", "4"]
        prompt, completion = expected(first, steps)
        u = data["usage"]
        assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (prompt, completion, prompt + completion)
        assert u["steps"] == len(steps) and u["by_status"]["pass"]["completion_tokens"] == completion
        assert u["cost"]["total"] == pytest.approx((prompt * 0.5 + completion * 2) / 1e6)
        m = yaml.safe_load((out / "results.yml").read_text())["results"]["tasks"]["scicode"]["metrics"]
        assert m["tokens"]["scores"]["total_tokens"]["value"] == prompt + completion
        assert m["cost"]["scores"]["cost"]["value"] == pytest.approx(u["cost"]["total"])
        assert f"tokens          prompt {prompt} (cached n/a), completion {completion}" in p.stdout
        recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]
        assert all(r["usage"]["total_tokens"] > 0 for r in recs)
        gens = [json.loads(x)["record"] for x in (out / "scicode_cache" / "generations.jsonl").read_text().splitlines()]
        assert sum(g["usage"]["prompt_tokens"] for g in gens) == prompt

        served.clear()   # a changed selection: 3 and 4 resume, only 6 is asked
        p = run_eval(server.url, out, dev_targets, "3,4,6")
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        assert sorted(s for s, _ in served) == sorted(dev["6"])
        data = json.loads(next((out / "scicode_results").glob("*.json")).read_text())
        assert data["problems"] == 3 and data["steps_pass@1"] == 1.0
        prompt, completion = expected(first + served, dev["3"] + dev["4"] + dev["6"])
        assert (data["usage"]["prompt_tokens"], data["usage"]["completion_tokens"]) == (prompt, completion)
    finally:
        server.shutdown()


def test_unknown_problem_ids_stop_with_one_line(tmp_path):
    from test_e2e import PROBLEMS
    pfile = tmp_path / "p.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    p = subprocess.run([str(BIN / "scicode_eval"), "--model", "m", "--url", "http://127.0.0.1:9/v1/chat/completions",
                        "--problems", str(pfile), "--problem-ids", "902,77,1000,901", "--output-dir", str(tmp_path / "o"),
                        "--quiet"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == \
        [f"scicode_eval: error: --problem-ids: {pfile} has no problem 77, 1000"]
    p = subprocess.run([str(BIN / "scicode_eval"), "--model", "m", "--url", "u", "--problem-ids", "1,,2"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "expected ids separated by commas" in p.stderr


def test_problem_ids_select_for_any_split_and_verified(monkeypatch, tmp_path):
    """The selection happens after the problems are loaded, whatever loaded them (here a stand-in
    for SciCode-Verified's loader)."""
    import types
    import harness.data
    from harness import pipeline
    from harness.cli.evaluate import parser, run_config
    from harness.errors import HarnessError
    from test_e2e import PROBLEMS, TARGETS
    from harness.data import h5targets
    tfile = tmp_path / "t.h5"
    h5targets.write_targets(tfile, TARGETS)
    stub = types.SimpleNamespace(official_pin=lambda: "pin", load_pin=lambda p: "pin",
                                 load_problems=lambda pin: [dict(p) for p in PROBLEMS],
                                 test_data_path=lambda pin: tfile)
    monkeypatch.setitem(sys.modules, "harness.data.verified", stub)
    monkeypatch.setattr(harness.data, "verified", stub, raising=False)
    monkeypatch.setattr(pipeline, "verified", stub)

    def prepared(*flags):
        args = parser().parse_args(["--model", "m", "--url", "http://127.0.0.1:9/v1", *flags])
        return pipeline.prepare(run_config(args, {}))
    assert [p["problem_id"] for p in prepared("--benchmark", "verified", "--problem-ids", "902").problems] == ["902"]
    assert [p["problem_id"] for p in prepared("--benchmark", "verified", "--problem-ids", "902,901").problems] == \
        ["901", "902"]   # the data's order
    with pytest.raises(HarnessError, match="^--problem-ids: SciCode-Verified has no problem 5$"):
        prepared("--benchmark", "verified", "--problem-ids", "901,5")
    from harness.data import dataset
    dev = dataset.load_problems("dev")
    ids = [dev[-1]["problem_id"], dev[0]["problem_id"]]
    assert dataset.select(dev, ids, "the dev split") == [dev[0], dev[-1]]
    test = dataset.load_problems("test")
    with pytest.raises(HarnessError, match="^--problem-ids: the test split has no problem 1, 9999$"):
        dataset.select(test, [test[0]["problem_id"], "9999", "1"], "the test split")   # 1 is a dev problem
