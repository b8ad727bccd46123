"""Generation stage: an async OpenAI-compatible chat client with retries.

The client POSTs to exactly the URL it is given (behind nemo-evaluator that is
the adapter proxy, which forwards any path to the real endpoint), sends
``Authorization: Bearer <api_key>`` when the config has a key, gives every sample
its own ``seed`` (the proxy's response cache is keyed by the request body, so two
samples of one prompt must differ in the body), retries transient failures with
exponential backoff and full jitter, and never raises for transport errors: a
final failure comes back as ``GenResult(ok=False, error=...)`` so the pipeline
can count it as a generation error instead of a wrong answer.
"""
from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import json
import logging
import math
import random
import re
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import httpx

from harness import __version__
from harness.run import overflow
from harness.run.params import RESERVED_BODY_KEYS, parse_extra_params, split_extra_params

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "You are a helpful assistant."


# HTTP statuses worth another attempt (besides every 5xx).
RETRY_STATUSES = frozenset({408, 429})


# --------------------------------------------------------------------------- config

@dataclass
class GenConfig:
    url: str
    model: str
    temperature: float = 0.0
    max_tokens: Optional[int] = 2048          # None: not sent
    top_p: Optional[float] = None             # None: not sent
    timeout: Optional[float] = 60.0           # seconds per attempt; None: no limit
    max_retries: int = 2                      # retries after the first attempt
    include_system_prompt: bool = True
    extra_body: dict = field(default_factory=dict)
    api_key: Optional[str] = None             # the command line reads $API_KEY
    concurrency: int = 1
    backoff_base: float = 1.0                 # first retry waits U(0, base)
    backoff_cap: float = 60.0                 # no backoff exceeds this
    max_retry_after: float = 600.0            # a longer Retry-After is clipped to this

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        bad = sorted(set(self.extra_body) & set(RESERVED_BODY_KEYS))
        if bad:
            raise ValueError(f"extra params may not set {', '.join(bad)} (the harness sets them)")

    @classmethod
    def from_params(cls, *, url: str, model: str, params: "dict | str | None" = None,
                    **kwargs: Any) -> "GenConfig":
        """Build a config from CLI values plus parsed ``--extra-params``.

        ``params`` is the dict from :func:`parse_extra_params` (or the raw string).
        Known keys become fields (a null value keeps the default); every other key
        goes into ``extra_body``. ``kwargs`` are further fields (temperature,
        concurrency, ...).
        """
        if isinstance(params, str):
            params = parse_extra_params(params)
        known, extra = split_extra_params(params or {})
        merged_extra = {**kwargs.pop("extra_body", {}), **extra}
        return cls(url=url, model=model, extra_body=merged_extra, **{**kwargs, **known})

    def public_dict(self) -> dict:
        """The config without the API key (for logs and result files)."""
        d = asdict(self)
        d["api_key"] = "***" if self.api_key else None
        return d

    def sampling_params(self) -> dict:
        """What changes the answer: the key material for resumable generations."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "include_system_prompt": self.include_system_prompt,
            "extra_body": self.extra_body,
        }


# --------------------------------------------------------------------------- --extra-params

# --------------------------------------------------------------------------- results

@dataclass
class GenResult:
    text: str = ""
    ok: bool = False
    error: Optional[str] = None
    attempts: int = 0
    latency: float = 0.0                  # seconds, first attempt to result (incl. backoff)
    usage: Optional[dict] = None
    finish_reason: Optional[str] = None
    status: Optional[int] = None          # HTTP status of the last attempt, if any
    context_overflow: bool = False        # the endpoint said the prompt exceeds the model's context

    def to_dict(self) -> dict:
        return asdict(self)


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: Optional[float] = None, status: Optional[int] = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class _Fatal(Exception):
    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        self.status = status


class _Overflow(_Fatal):
    """The prompt exceeds the model's context: never retried, the model's failure."""


def _one_line(text: str, limit: int = 300) -> str:
    t = " ".join(str(text).split())
    return t if len(t) <= limit else t[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    """A short reason for a transport error, digging through httpx's wrappers."""
    seen = 0
    x: Optional[BaseException] = exc
    while x is not None and seen < 8:
        if isinstance(x, ConnectionRefusedError):
            return "connection refused"
        if isinstance(x, ConnectionResetError):
            return "connection reset by peer"
        if isinstance(x, socket.gaierror):
            return f"unknown host ({x.strerror or x})"
        if isinstance(x, ssl.SSLError):
            return f"TLS error: {_one_line(x, 160)}"
        x = x.__cause__ or x.__context__
        seen += 1
    return f"{type(exc).__name__}: {_one_line(exc, 200) or 'transport error'}"


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    v = value.strip()
    if not v:
        return None
    try:
        secs = float(v)
        return max(0.0, secs) if math.isfinite(secs) else None
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, dt.timestamp() - now)


_SURROGATES = re.compile("[\ud800-\udfff]")


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}]
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    raise _Retryable(f"unexpected message content type {type(content).__name__}")


def _parse_completion(resp: httpx.Response) -> "tuple[str, Optional[dict], Optional[str]]":
    try:
        data = resp.json()
    except (ValueError, UnicodeDecodeError) as e:
        raise _Retryable(f"malformed JSON in response: {_one_line(e, 120)}: {_one_line(resp.text, 120)}")
    if not isinstance(data, dict):
        raise _Retryable(f"unexpected response: {_one_line(json.dumps(data), 200)}")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        detail = data.get("error", data)
        raise _Retryable(f"response has no choices: {_one_line(json.dumps(detail), 200)}")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise _Retryable(f"response choice has no message: {_one_line(json.dumps(choice), 200)}")
    # a lone surrogate (valid as a JSON escape) can be neither saved nor run: replaced
    text = _SURROGATES.sub("\ufffd", _content_text(message.get("content")))
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else None
    finish = choice.get("finish_reason")
    return text, usage, (finish if isinstance(finish, str) else None)


# --------------------------------------------------------------------------- client

def ssl_verify() -> "ssl.SSLContext | bool":
    """The system trust store (truststore) when available, else httpx's default."""
    try:
        import truststore
    except ImportError:
        return True
    return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _headers(cfg: GenConfig) -> dict:
    h = {"Accept": "application/json", "User-Agent": f"scicode-harness/{__version__}"}
    if cfg.api_key:
        h["Authorization"] = f"Bearer {cfg.api_key}"
    return h


class _Slots:
    """Request slots (each naming a connection pool); a freed slot goes to the waiter
    with the highest priority, ties first come first served."""

    def __init__(self, pools: list):
        self.free = list(pools)
        self.waiters: list = []
        self.seq = itertools.count()

    async def acquire(self, priority: float = 0.0):
        if self.free and not self.waiters:
            return self.free.pop()
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiters, (-priority, next(self.seq), fut))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())   # handed over just as we were cancelled
            raise

    def release(self, pool) -> None:
        while self.waiters:
            _, _, fut = heapq.heappop(self.waiters)
            if not fut.done():
                fut.set_result(pool)
                return
        self.free.append(pool)


class Client:
    """Async chat-completions client. Create and use it inside one event loop::

        async with Client(cfg) as client:
            res = await client.complete(prompt, seed=sample_index)
    """

    # httpcore's connection pool scans every connection for every request, which
    # costs O(concurrency^2) CPU at high --concurrent-requests (measured: 64 in
    # flight on one pool ran ~6x slower than 16 pools of 4 against a 100 ms
    # server). So requests are spread over small pools; a queue of slots, each
    # naming a pool, bounds the number in flight.
    CONNECTIONS_PER_POOL = 4

    def __init__(self, cfg: GenConfig, *, transport: Optional[httpx.AsyncBaseTransport] = None,
                 rng: Optional[random.Random] = None,
                 sleep: Callable[[float], Any] = asyncio.sleep):
        self.cfg = cfg
        self._rng = rng or random.Random()
        self._sleep = sleep
        per = self.CONNECTIONS_PER_POOL
        n_pools = max(1, -(-cfg.concurrency // per))
        kwargs: dict = dict(
            timeout=httpx.Timeout(cfg.timeout),
            headers=_headers(cfg),
            limits=httpx.Limits(max_connections=per, max_keepalive_connections=per),
        )
        if transport is not None:
            kwargs["transport"] = transport
        else:
            kwargs["verify"] = ssl_verify()  # one context shared by all pools
        self._pools = [httpx.AsyncClient(**kwargs) for _ in range(n_pools)]
        self._slots = _Slots([self._pools[i % n_pools] for i in range(cfg.concurrency)])
        self.stats = {"requests": 0, "retries": 0, "ok": 0, "failed": 0}

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    def request_body(self, prompt: str, seed: int) -> dict:
        cfg = self.cfg
        messages = [{"role": "user", "content": prompt}]
        if cfg.include_system_prompt:
            messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
        body: dict = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature}
        if cfg.top_p is not None:
            body["top_p"] = cfg.top_p
        if cfg.max_tokens is not None:
            body["max_tokens"] = cfg.max_tokens
        body["seed"] = int(seed)
        body.update(cfg.extra_body)
        return body

    def backoff(self, retry_index: int, retry_after: Optional[float] = None) -> float:
        """Delay before retry number ``retry_index`` (0-based): Retry-After when the
        server sent one (clipped to max_retry_after), else full jitter."""
        cfg = self.cfg
        if retry_after is not None:
            return min(retry_after, cfg.max_retry_after)
        ceiling = min(cfg.backoff_cap, cfg.backoff_base * (2 ** min(retry_index, 62)))
        return self._rng.uniform(0.0, ceiling)

    async def _attempt(self, http: httpx.AsyncClient, body: dict
                       ) -> "tuple[str, Optional[dict], Optional[str], int]":
        cfg = self.cfg
        try:
            coro = http.post(cfg.url, json=body)
            if cfg.timeout is not None:
                # httpx timeouts are per phase; bound the whole attempt as well.
                resp = await asyncio.wait_for(coro, cfg.timeout + 1.0)
            else:
                resp = await coro
        except (httpx.TimeoutException, asyncio.TimeoutError):
            raise _Retryable(f"timed out after {cfg.timeout:g} s" if cfg.timeout else "timed out")
        except (httpx.HTTPError, OSError) as e:  # refused/reset, protocol errors
            raise _Retryable(_describe(e))
        status = resp.status_code
        if 200 <= status < 300:
            try:
                text, usage, finish = _parse_completion(resp)
            except _Retryable as e:
                e.status = status
                raise
            return text, usage, finish, status
        detail = _one_line(resp.text, 200) or resp.reason_phrase or "empty body"
        message = f"HTTP {status}: {detail}"
        if overflow.matching_server(status, resp.text):   # the server's numbers are worth keeping whole
            raise _Overflow(f"HTTP {status}: {_one_line(resp.text, 600)}", status)
        if status in RETRY_STATUSES or status >= 500:
            raise _Retryable(message, parse_retry_after(resp.headers.get("retry-after")), status)
        raise _Fatal(message, status)

    async def complete(self, prompt: str, seed: int, priority: float = 0.0) -> GenResult:
        """One chat completion with retries. Never raises for transport or HTTP
        errors (cancellation still propagates). When all request slots are busy, the
        waiting request with the highest `priority` is sent next (the pipeline passes
        its chain's remaining steps, so the longest chains never wait behind short ones)."""
        body = self.request_body(prompt, seed)
        result = GenResult()
        start: Optional[float] = None
        total = self.cfg.max_retries + 1
        for attempt in range(total):
            result.attempts = attempt + 1
            http = await self._slots.acquire(priority)  # a slot is held only while on the wire
            if start is None:
                start = time.monotonic()  # latency excludes queueing for the first slot
            self.stats["requests"] += 1
            failure: "Optional[_Retryable | _Fatal]" = None
            try:
                text, usage, finish, status = await self._attempt(http, body)
            except (_Fatal, _Retryable) as e:
                failure = e
            finally:
                self._slots.release(http)
            if failure is None:
                result.text, result.usage, result.finish_reason = text, usage, finish
                result.ok, result.error, result.status = True, None, status
                break
            result.error, result.status = str(failure), failure.status
            result.context_overflow = isinstance(failure, _Overflow)
            if isinstance(failure, _Fatal) or attempt + 1 >= total:
                break
            delay = self.backoff(attempt, failure.retry_after)
            self.stats["retries"] += 1
            log.debug("attempt %d/%d failed (%s); retrying in %.2f s", attempt + 1, total, failure, delay)
            await self._sleep(delay)
        result.latency = time.monotonic() - start if start is not None else 0.0
        if result.ok:
            self.stats["ok"] += 1
        else:
            self.stats["failed"] += 1
            n = result.attempts
            if result.context_overflow:
                log.info("context overflow: %s", result.error)
            else:
                result.error = f"{result.error} (after {n} attempt{'s' if n != 1 else ''})"
                log.warning("generation failed: %s", result.error)
        return result


__all__ = [
    "GenConfig", "GenResult", "Client",
    "parse_retry_after", "ssl_verify", "SYSTEM_PROMPT",
]
