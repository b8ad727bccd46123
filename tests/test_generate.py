"""Generation client: request shape, retries and their limits, fault handling."""
import asyncio
import dataclasses
import email.utils
import random
import socket
import time

import pytest

from fake_endpoint import Fault, FakeEndpoint
from harness.run.preflight import EndpointError, check_endpoint
from harness.run.generate import SYSTEM_PROMPT, Client, GenConfig, parse_retry_after
from harness.run.params import parse_extra_params, split_extra_params

FAST = dict(backoff_base=0.01, backoff_cap=0.05)


def cfg_for(url, **kw):
    kw = {**FAST, **kw}
    kw.setdefault("api_key", None)
    kw.setdefault("model", "test-model")
    return GenConfig(url=url, **kw)


def run(coro):
    return asyncio.run(coro)


async def complete_one(cfg, prompt="p", seed=0):
    async with Client(cfg) as c:
        return await c.complete(prompt, seed)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ --extra-params

def test_parse_extra_params_nvidia_command_line():
    s = "top_p=0.00001,timeout=60,max_tokens=2048,max_retries=2,include_system_prompt=True"
    assert parse_extra_params(s) == {"top_p": 1e-05, "timeout": 60, "max_tokens": 2048,
                                     "max_retries": 2, "include_system_prompt": True}


def test_parse_extra_params_typing_and_nesting():
    d = parse_extra_params(" a=1 , b=2.5,c=1e-3,d=false,e=null,f=None,g=hello,h='7',i=-3,"
                           "chat_template_kwargs.enable_thinking=false,j=,")
    assert d == {"a": 1, "b": 2.5, "c": 0.001, "d": False, "e": None, "f": None, "g": "hello",
                 "h": "7", "i": -3, "chat_template_kwargs": {"enable_thinking": False}, "j": None}
    assert isinstance(d["a"], int) and isinstance(d["c"], float)
    assert parse_extra_params("") == {} and parse_extra_params(None) == {}
    assert parse_extra_params("x=1,x=2") == {"x": 2}


@pytest.mark.parametrize("bad", ["top_p", "=1", "a=1,b", "a b=1", "a..b=1", ".a=1"])
def test_parse_extra_params_bad_syntax(bad):
    with pytest.raises(ValueError) as ei:
        parse_extra_params(bad)
    assert "\n" not in str(ei.value)


def test_split_extra_params_known_and_body():
    known, extra = split_extra_params(parse_extra_params(
        "top_p=1,timeout=30,max_tokens=100.0,max_retries=0,include_system_prompt=false,"
        "repetition_penalty=1.1,stop_token=x,unset=null"))
    assert known == {"top_p": 1.0, "timeout": 30.0, "max_tokens": 100, "max_retries": 0,
                     "include_system_prompt": False}
    assert isinstance(known["top_p"], float) and isinstance(known["max_tokens"], int)
    assert extra == {"repetition_penalty": 1.1, "stop_token": "x"}
    # null known values keep the defaults (jinja renders an unset value as None)
    known, _ = split_extra_params(parse_extra_params("top_p=None,timeout=None"))
    assert known == {}


@pytest.mark.parametrize("bad", ["max_tokens=abc", "max_tokens=1.5", "max_tokens=0", "timeout=0",
                                 "timeout=-1", "max_retries=-1", "include_system_prompt=maybe",
                                 "top_p=true", "temperature=0.5", "seed=3", "model=x", "messages=x",
                                 "stream=true"])
def test_split_extra_params_rejects(bad):
    with pytest.raises(ValueError) as ei:
        split_extra_params(parse_extra_params(bad))
    assert "\n" not in str(ei.value)


def test_genconfig_from_params():
    cfg = GenConfig.from_params(url="http://x/y", model="m", api_key=None, temperature=0.2,
                                concurrency=4,
                                params="top_p=0.9,max_retries=5,include_system_prompt=false,foo=1")
    assert (cfg.top_p, cfg.max_retries, cfg.include_system_prompt, cfg.concurrency) == (0.9, 5, False, 4)
    assert cfg.temperature == 0.2 and cfg.extra_body == {"foo": 1}
    assert cfg.timeout == 60.0 and cfg.max_tokens == 2048  # defaults untouched
    assert cfg.public_dict()["api_key"] is None
    assert GenConfig(url="u", model="m", api_key="s").public_dict()["api_key"] == "***"
    with pytest.raises(ValueError):
        GenConfig(url="u", model="m", concurrency=0)


# ------------------------------------------------------------------ request shape

def test_request_body_and_system_prompt():
    with FakeEndpoint() as ep:
        cfg = cfg_for(ep.url, temperature=0.3, top_p=0.5, max_tokens=77, extra_body={"foo": {"bar": 1}})
        res = run(complete_one(cfg, "the prompt", seed=11))
        assert res.ok and res.attempts == 1
        body = ep.bodies[0]
        assert body == {"model": "test-model",
                        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                                     {"role": "user", "content": "the prompt"}],
                        "temperature": 0.3, "top_p": 0.5, "max_tokens": 77, "seed": 11,
                        "foo": {"bar": 1}}
        run(complete_one(cfg_for(ep.url, include_system_prompt=False, max_tokens=None), "q", seed=0))
        body = ep.bodies[1]
        assert body["messages"] == [{"role": "user", "content": "q"}]
        assert "top_p" not in body and "max_tokens" not in body


def test_result_fields():
    with FakeEndpoint(lambda p, b: "one two three") as ep:
        res = run(complete_one(cfg_for(ep.url), "a b"))
    assert res.ok and res.text == "one two three" and res.error is None
    assert res.finish_reason == "stop" and res.status == 200
    assert res.usage == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert res.latency > 0 and set(res.to_dict()) >= {"text", "ok", "error", "attempts", "latency"}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/some/odd/path", "/v1/chat/completions?api-version=2"])
def test_exact_url_is_used(path):
    with FakeEndpoint() as ep:
        run(complete_one(cfg_for(ep.base_url + path)))
        assert [r.path for r in ep.requests] == [path]


def test_base_url_without_path_is_not_extended():
    # Behind nemo-evaluator the URL is the adapter proxy, http://localhost:<port> with no path.
    with FakeEndpoint() as ep:
        run(complete_one(cfg_for(ep.base_url)))
        assert [r.path for r in ep.requests] == ["/"]


def test_distinct_seeds_per_sample():
    async def go(url):
        async with Client(cfg_for(url, concurrency=4)) as c:
            return await asyncio.gather(*(c.complete("same prompt", seed=i) for i in range(6)))

    with FakeEndpoint() as ep:
        results = run(go(ep.url))
        assert all(r.ok for r in results)
        seeds = [b["seed"] for b in ep.bodies]
        assert sorted(seeds) == list(range(6))
        # the adapter cache keys on the whole body: every sample's body differs
        import json
        assert len({json.dumps(b, sort_keys=True) for b in ep.bodies}) == 6


def test_authorization_header_only_when_api_key_set():
    """$API_KEY is read once by the command line (cli.evaluate.run_config) into the run config."""
    from harness.cli.evaluate import parser, run_config
    from harness.pipeline import gen_config

    def cfg_from_env(env):
        args = parser().parse_args(["--model", "m", "--url", ep.url])
        return gen_config(dataclasses.replace(run_config(args, env).generation, backoff_base=0.01))

    with FakeEndpoint() as ep:
        cfg = cfg_from_env({"API_KEY": "secret123"})
        assert cfg.api_key == "secret123"
        run(complete_one(cfg))
        run(complete_one(cfg_from_env({"API_KEY": ""})))  # `API_KEY=$UNSET_VAR` renders as empty
        run(complete_one(cfg_from_env({})))
        heads = [r.headers for r in ep.requests]
        assert heads[0]["authorization"] == "Bearer secret123"
        assert "authorization" not in heads[1] and "authorization" not in heads[2]
        assert all(h["content-type"] == "application/json" for h in heads)


def test_concurrency_limit_respected():
    async def go(url):
        async with Client(cfg_for(url, concurrency=3)) as c:
            return await asyncio.gather(*(c.complete(f"p{i}", seed=i) for i in range(12)))

    with FakeEndpoint(latency=0.15) as ep:
        t = time.monotonic()
        results = run(go(ep.url))
        elapsed = time.monotonic() - t
        assert all(r.ok for r in results) and ep.count == 12
        assert ep.max_in_flight == 3
        assert elapsed >= 4 * 0.15 * 0.9  # 12 requests, 3 at a time


def test_concurrency_one_is_sequential():
    async def go(url):
        async with Client(cfg_for(url, concurrency=1)) as c:
            return await asyncio.gather(*(c.complete(f"p{i}", seed=i) for i in range(4)))

    with FakeEndpoint(latency=0.05) as ep:
        run(go(ep.url))
        assert ep.max_in_flight == 1


# ------------------------------------------------------------------ retries

def test_retries_then_success():
    with FakeEndpoint(faults={1: "500", 2: "503"}) as ep:
        res = run(complete_one(cfg_for(ep.url, max_retries=2)))
        assert res.ok and res.attempts == 3 and ep.count == 3 and res.status == 200


@pytest.mark.parametrize("max_retries", [0, 1, 2, 4])
def test_retry_limit(max_retries):
    with FakeEndpoint(faults={"p": "500"}) as ep:
        res = run(complete_one(cfg_for(ep.url, max_retries=max_retries)))
        assert not res.ok and res.text == ""
        assert res.attempts == max_retries + 1 and ep.count == max_retries + 1
        assert res.status == 500 and "HTTP 500" in res.error
        assert f"after {max_retries + 1} attempt" in res.error and "\n" not in res.error


@pytest.mark.parametrize("fault", ["500", "502", "503", "504", "429", "408", "broken_json",
                                   "no_choices", "reset"])
def test_retryable_faults(fault):
    with FakeEndpoint(faults={"p": [fault]}) as ep:
        res = run(complete_one(cfg_for(ep.url, max_retries=1)))
        assert res.ok and res.attempts == 2 and ep.count == 2
        assert res.text.startswith("```python")


def test_200_with_error_payload_is_retried():
    body = '{"error": {"message": "overloaded"}}'
    with FakeEndpoint(faults={1: Fault("status", status=200, body=body)}) as ep:
        res = run(complete_one(cfg_for(ep.url, max_retries=1)))
        assert res.ok and res.attempts == 2
    with FakeEndpoint(faults={"p": Fault("status", status=200, body=body)}) as ep:
        res = run(complete_one(cfg_for(ep.url, max_retries=1)))
        assert not res.ok and "no choices" in res.error and "overloaded" in res.error


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_non_retryable_4xx_fails_once(status):
    with FakeEndpoint(faults={"p": str(status)}) as ep:
        res = run(complete_one(cfg_for(ep.url, max_retries=5)))
        assert not res.ok and res.attempts == 1 and ep.count == 1
        assert res.status == status and f"HTTP {status}" in res.error


def test_retry_after_seconds_honoured():
    with FakeEndpoint(faults={1: "429:0.5"}) as ep:
        res = run(complete_one(cfg_for(ep.url, max_retries=2, backoff_base=0.001, backoff_cap=0.001)))
        assert res.ok and res.attempts == 2
        r1, r2 = ep.requests
        gap = r2.t_start - r1.t_end
        assert gap >= 0.45, gap


def test_retry_after_http_date_honoured():
    date = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1-2 s away
    with FakeEndpoint(faults={1: Fault("status", status=503, retry_after=date)}) as ep:
        res = run(complete_one(cfg_for(ep.url, backoff_base=0.001, backoff_cap=0.001)))
        assert res.ok and res.attempts == 2
        r1, r2 = ep.requests
        assert r2.t_start - r1.t_end >= 0.8


def test_retry_after_is_clipped():
    with FakeEndpoint(faults={1: "429:1000"}) as ep:
        t = time.monotonic()
        res = run(complete_one(cfg_for(ep.url, max_retry_after=0.1)))
        assert res.ok and time.monotonic() - t < 5


def test_parse_retry_after():
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 0.5 ", now) == 0.5
    assert parse_retry_after("-2", now) == 0.0
    assert parse_retry_after(None, now) is None and parse_retry_after("", now) is None
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == pytest.approx(30, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0


def test_timeouts_are_retried():
    with FakeEndpoint(faults={1: "slow:3"}) as ep:
        t = time.monotonic()
        res = run(complete_one(cfg_for(ep.url, timeout=0.3, max_retries=1)))
        assert res.ok and res.attempts == 2
        assert time.monotonic() - t < 2.5


def test_timeout_final_failure():
    with FakeEndpoint(faults={"p": "slow:3"}) as ep:
        res = run(complete_one(cfg_for(ep.url, timeout=0.2, max_retries=1)))
        assert not res.ok and res.attempts == 2 and "timed out" in res.error
        assert res.status is None


def test_content_null_is_empty_answer():
    with FakeEndpoint(faults={1: "null"}) as ep:
        res = run(complete_one(cfg_for(ep.url)))
        assert res.ok and res.text == "" and res.attempts == 1
    with FakeEndpoint(lambda p, b: None) as ep:  # responder returning None
        res = run(complete_one(cfg_for(ep.url)))
        assert res.ok and res.text == ""


def test_content_parts_are_joined():
    def responder(prompt, body):
        return {"choices": [{"message": {"role": "assistant",
                                         "content": [{"type": "text", "text": "a"},
                                                     {"type": "text", "text": "b"}]}}]}
    with FakeEndpoint(responder) as ep:
        res = run(complete_one(cfg_for(ep.url)))
        assert res.ok and res.text == "ab" and res.usage is None and res.finish_reason is None


def test_lone_surrogates_in_an_answer_are_replaced():
    # "\ud800" is a valid JSON escape, but no file can hold it: the answer could be neither saved nor run
    with FakeEndpoint(lambda p, b: "x = '\ud800'") as ep:
        res = run(complete_one(cfg_for(ep.url)))
        assert res.ok and res.text == "x = '\ufffd'"


def test_connection_refused_never_raises():
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    res = run(complete_one(cfg_for(url, max_retries=2)))
    assert not res.ok and res.attempts == 3 and "connection refused" in res.error


def test_backoff_full_jitter_bounds():
    cfg = GenConfig(url="http://x", model="m", api_key=None, backoff_base=1.0, backoff_cap=60.0,
                    max_retry_after=120.0)
    c = Client(cfg, rng=random.Random(0))
    try:
        for i in range(12):
            ceiling = min(60.0, 2.0 ** i)
            delays = [c.backoff(i) for _ in range(50)]
            assert all(0.0 <= d <= ceiling for d in delays)
        assert max(c.backoff(3) for _ in range(200)) > 4.0  # grows exponentially
        assert c.backoff(0, retry_after=30.0) == 30.0
        assert c.backoff(0, retry_after=500.0) == 120.0
    finally:
        run(c.aclose())


def test_sleeps_follow_backoff_and_stats():
    slept = []

    async def fake_sleep(d):
        slept.append(d)

    async def go(url):
        cfg = cfg_for(url, max_retries=3, backoff_base=1.0, backoff_cap=60.0)
        async with Client(cfg, sleep=fake_sleep, rng=random.Random(1)) as c:
            r = await c.complete("p", 0)
            return r, dict(c.stats)

    with FakeEndpoint(faults={"p": ["500", "500", "429:7"]}) as ep:
        res, stats = run(go(ep.url))
    assert res.ok and res.attempts == 4
    assert len(slept) == 3 and slept[0] <= 1.0 and slept[1] <= 2.0 and slept[2] == 7.0
    assert stats == {"requests": 4, "retries": 3, "ok": 1, "failed": 0}


def test_mixed_faults_many_prompts():
    faults = {"p0": ["429:0.05", "500"], "p1": ["broken_json"], "p2": ["reset", "null"],
              "p3": "400", "p4": ["slow:2"]}

    async def go(url):
        async with Client(cfg_for(url, concurrency=3, timeout=0.4, max_retries=2)) as c:
            return await asyncio.gather(*(c.complete(f"p{i}", seed=i) for i in range(6)))

    with FakeEndpoint(faults=faults) as ep:
        r = run(go(ep.url))
        assert [x.ok for x in r] == [True, True, True, False, True, True]
        assert [x.attempts for x in r] == [3, 2, 2, 1, 2, 1]
        assert r[2].text == ""
        assert ep.prompt_counts() == {"p0": 3, "p1": 2, "p2": 2, "p3": 1, "p4": 2, "p5": 1}
        assert ep.max_in_flight <= 3


# ------------------------------------------------------------------ preflight

def test_preflight_is_one_cheap_real_request():
    with FakeEndpoint(api_key="k1", models={"m"}) as ep:
        run(check_endpoint(cfg_for(ep.url, model="m", api_key="k1", extra_body={"top_k": 5})))
        assert ep.count == 1
        req = ep.requests[0]
        assert req.path == "/v1/chat/completions" and req.headers["authorization"] == "Bearer k1"
        assert req.body["max_tokens"] == 1 and req.body["model"] == "m" and req.body["top_k"] == 5
        run(check_endpoint(cfg_for(ep.url, model="m", api_key="k1")))
        assert ep.requests[1].body["seed"] != req.body["seed"]  # never answered from a proxy cache


@pytest.mark.parametrize("kw, needles", [
    (dict(api_key=None), ["wants an API key", "HTTP 401", "api_key_name"]),
    (dict(api_key="wrong"), ["rejected the API key", "HTTP 401", "api_key_name"]),
    (dict(model="nope"), ["does not serve model 'nope'", "HTTP 404", "model_id / --model"]),
])
def test_preflight_names_the_problem_and_the_key(kw, needles):
    with FakeEndpoint(api_key="k1", models={"m"}) as ep:
        cfg = cfg_for(ep.url, **{"model": "m", "api_key": "k1", **kw})
        with pytest.raises(EndpointError) as ei:
            run(check_endpoint(cfg))
        msg = str(ei.value)
        assert "\n" not in msg and all(n in msg for n in needles), msg
        assert ep.count == 1   # a 4xx is not retried


def test_preflight_wrong_path_and_not_an_api():
    with FakeEndpoint(faults=lambda n, p, b: "404") as ep:
        with pytest.raises(EndpointError) as ei:
            run(check_endpoint(cfg_for(ep.base_url + "/v1")))
        assert "no chat-completions API" in str(ei.value) and "--url" in str(ei.value)
    with FakeEndpoint(faults=lambda n, p, b: "no_choices") as ep:
        with pytest.raises(EndpointError) as ei:
            run(check_endpoint(cfg_for(ep.url)))
        assert "does not answer like an OpenAI" in str(ei.value)


def test_preflight_retries_transient_failures():
    with FakeEndpoint(faults={1: "503", 2: "reset"}) as ep:
        run(check_endpoint(cfg_for(ep.url, backoff_base=0.01)))
        assert ep.count == 3
    with FakeEndpoint(faults=lambda n, p, b: "500") as ep:
        with pytest.raises(EndpointError) as ei:
            run(check_endpoint(cfg_for(ep.url, backoff_base=0.01)))
        assert ep.count == 3 and "HTTP 500" in str(ei.value) and "\n" not in str(ei.value)


def test_check_endpoint_refused():
    url = f"http://127.0.0.1:{free_port()}/v1/chat/completions"
    with pytest.raises(EndpointError) as ei:
        run(check_endpoint(cfg_for(url)))
    msg = str(ei.value)
    assert "connection refused" in msg and url in msg and "\n" not in msg and "--url" in msg


def test_check_endpoint_unknown_host():
    with pytest.raises(EndpointError) as ei:
        run(check_endpoint(cfg_for("http://no-such-host.invalid/v1/chat/completions")))
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://host/x", "not a url", "http:///x"])
def test_check_endpoint_bad_url(url):
    with pytest.raises(EndpointError) as ei:
        run(check_endpoint(cfg_for(url)))
    assert "\n" not in str(ei.value)


def test_slot_is_released_during_backoff():
    async def go(url):
        async with Client(cfg_for(url, concurrency=1, backoff_base=0.001, backoff_cap=0.001)) as c:
            a = asyncio.create_task(c.complete("A", 0))
            await asyncio.sleep(0.05)  # A holds the only slot first
            b = asyncio.create_task(c.complete("B", 1))
            return await a, await b

    with FakeEndpoint(faults={"A": ["429:0.4"]}) as ep:
        ra, rb = run(go(ep.url))
        assert ra.ok and rb.ok and ra.attempts == 2
        order = [r.prompt for r in ep.requests]
        assert order == ["A", "B", "A"]  # B went out while A was waiting to retry
        assert ep.max_in_flight == 1


def test_cancellation_returns_the_slot():
    async def go(url):
        async with Client(cfg_for(url, concurrency=1, timeout=5)) as c:
            t = asyncio.create_task(c.complete("slow", 0))
            await asyncio.sleep(0.2)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            return await asyncio.wait_for(c.complete("fast", 1), 3)

    with FakeEndpoint(faults={"slow": "slow:3"}) as ep:
        res = run(go(ep.url))
        assert res.ok


def test_many_in_flight_across_pools():
    async def go(url):
        async with Client(cfg_for(url, concurrency=10)) as c:
            return await asyncio.gather(*(c.complete(f"p{i}", seed=i) for i in range(30)))

    with FakeEndpoint(latency=0.1) as ep:
        results = run(go(ep.url))
        assert all(r.ok for r in results) and ep.count == 30
        assert ep.max_in_flight == 10


def test_request_slots_go_to_the_highest_priority_waiter():
    from harness.run.generate import _Slots

    async def scenario():
        slots = _Slots(["pool"])
        held = await slots.acquire(0)
        order = []

        async def want(name, prio):
            pool = await slots.acquire(prio)
            order.append(name)
            await asyncio.sleep(0)
            slots.release(pool)

        tasks = [asyncio.create_task(want(n, p)) for n, p in
                 [("short", 1), ("long", 11), ("mid", 5), ("mid2", 5)]]
        doomed = asyncio.create_task(want("cancelled", 99))
        await asyncio.sleep(0)
        doomed.cancel()
        await asyncio.sleep(0)
        slots.release(held)
        await asyncio.gather(*tasks)
        assert order == ["long", "mid", "mid2", "short"]
        assert slots.free == ["pool"] and not [w for w in slots.waiters if not w[2].done()]

    asyncio.run(scenario())
