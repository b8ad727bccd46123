"""Endpoint preflight: one cheap, real request before anything is spent.

It proves the URL, the API key and the model name with a ``max_tokens=1`` chat completion
sent the way every generation request is sent (same URL verbatim, same headers, same
extra body parameters), and turns a failure into one line that names the config key to fix.
"""
from __future__ import annotations

import asyncio
import random
from typing import Optional

import httpx

from harness.errors import HarnessError
from harness.run.generate import (RETRY_STATUSES, GenConfig, _describe, _headers, _one_line,
                              _parse_completion, _Retryable, ssl_verify)


class EndpointError(HarnessError, RuntimeError):
    """The endpoint fails the preflight request (unreachable, bad key, unknown model, ...)."""


PREFLIGHT_PROMPT = "Reply with OK."
# where each problem is fixed, for nemo-evaluator users and for scicode_eval users
KEY_URL = "target.api_endpoint.url / --url"
KEY_MODEL = "target.api_endpoint.model_id / --model"
KEY_AUTH = "target.api_endpoint.api_key_name / $API_KEY"


def _preflight_problem(cfg: GenConfig, status: Optional[int], detail: str) -> str:
    """One line: what is wrong with the endpoint and which config key fixes it."""
    url, low = cfg.url, detail.lower()
    if status in (401, 403):
        if not cfg.api_key:
            return (f"endpoint {url} wants an API key (HTTP {status}) and none was sent: "
                    f"set {KEY_AUTH} (the variable holding the key)")
        return f"endpoint {url} rejected the API key (HTTP {status}: {detail}): check {KEY_AUTH}"
    if status in (400, 404, 422) and "model" in low:
        return f"endpoint {url} does not serve model {cfg.model!r} (HTTP {status}: {detail}): check {KEY_MODEL}"
    if status in (404, 405):
        return (f"no chat-completions API at {url} (HTTP {status}: {detail}): {KEY_URL} must be the full "
                "URL, e.g. https://HOST/v1/chat/completions")
    if status is not None and 400 <= status < 500:
        return (f"endpoint {url} rejected a minimal request (HTTP {status}: {detail}): check {KEY_MODEL} "
                "and the request parameters (config.params / --extra-params)")
    if status is not None and status >= 500:
        return f"endpoint {url} fails (HTTP {status}: {detail}): check {KEY_URL} and that the server is up"
    return f"cannot reach endpoint {url}: {detail}: check {KEY_URL}"


async def check_endpoint(cfg: GenConfig, timeout: float = 30.0, attempts: int = 3,
                         transport: Optional[httpx.AsyncBaseTransport] = None) -> None:
    """One real, cheap request proves URL, API key and model name before anything is spent:
    a chat completion of the configured model with ``max_tokens=1`` and the run's own extra
    body parameters. Raises EndpointError with one line naming the problem and the key to fix.

    Any 2xx reply with a ``choices`` list passes (a reasoning model cut off after one token
    included). Transient failures (429, 5xx, timeouts, resets) get ``attempts`` tries with
    backoff; a refused connection, an unknown host, a TLS failure or a 4xx fails at once. The body carries a random ``seed``, so the
    caching proxy of nemo-evaluator never answers it from an earlier run's cache.
    """
    url = cfg.url
    try:
        parsed = httpx.URL(url)
    except Exception as e:  # httpx.InvalidURL and friends
        raise EndpointError(f"invalid endpoint URL {url!r}: {_one_line(e, 120)}: check {KEY_URL}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise EndpointError(f"invalid endpoint URL {url!r}: expected http(s)://host[:port]/path: check {KEY_URL}")
    t = min(timeout, cfg.timeout) if cfg.timeout else timeout
    messages = [{"role": "user", "content": PREFLIGHT_PROMPT}]
    body = {**cfg.extra_body, "model": cfg.model, "messages": messages, "temperature": 0.0,
            "max_tokens": 1, "seed": random.randrange(1, 2 ** 31), "stream": False}
    kwargs: dict = dict(timeout=httpx.Timeout(t), headers=_headers(cfg))
    if transport is not None:
        kwargs["transport"] = transport
    else:
        kwargs["verify"] = ssl_verify()
    problem = ""
    async with httpx.AsyncClient(**kwargs) as http:
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(min(cfg.backoff_cap, cfg.backoff_base * 2 ** (attempt - 1)))
            try:
                resp = await asyncio.wait_for(http.post(url, json=body), t + 1.0)
            except (httpx.TimeoutException, asyncio.TimeoutError):
                problem = f"endpoint {url} did not answer within {t:g} s: check {KEY_URL}"
                continue
            except httpx.ConnectError as e:   # refused, unknown host, TLS: no use trying again
                raise EndpointError(_preflight_problem(cfg, None, _describe(e))) from None
            except (httpx.HTTPError, OSError) as e:  # reset, protocol error: maybe transient
                problem = _preflight_problem(cfg, None, _describe(e))
                continue
            status = resp.status_code
            if 200 <= status < 300:
                try:
                    _parse_completion(resp)
                except _Retryable as e:
                    raise EndpointError(f"endpoint {url} does not answer like an OpenAI chat-completions "
                                        f"API ({e}): check {KEY_URL}") from None
                return
            problem = _preflight_problem(cfg, status, _one_line(resp.text, 160) or resp.reason_phrase)
            if not (status in RETRY_STATUSES or status >= 500):
                break
    raise EndpointError(problem)
