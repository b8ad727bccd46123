"""A fake OpenAI-compatible chat-completions server for tests and benchmarks.

    with FakeEndpoint(lambda prompt, body: "```python\\nx = 1\\n```",
                      faults={1: "429:0.1", "some prompt": ["500", "broken_json"]},
                      latency=0.0) as ep:
        ... POST to ep.url ...
        assert ep.count == 3 and ep.max_in_flight == 1

* Listens on 127.0.0.1 with a free port (stdlib ThreadingHTTPServer, one thread
  per connection, HTTP/1.1 keep-alive). POST on any path is answered; ``ep.url``
  carries the path ``/v1/chat/completions`` but every request's path is
  recorded, so tests can check the client used the URL verbatim. GET answers
  405 (a reachable endpoint for ``check_endpoint``).
* ``responder(prompt, body)`` gives the reply content: a str, ``None`` (sent as
  ``"content": null``) or a dict (sent as the whole JSON response). ``prompt`` is
  the last user message.
* Faults, chosen per request:
    - ``faults={n: spec}`` -- the n-th POST (1-based, counted over all prompts);
    - ``faults={"prompt text": spec_or_list}`` -- requests with exactly that
      prompt: a single spec applies to every one of them, a list applies its
      items to that prompt's 1st, 2nd, ... request and then answers normally;
    - ``faults=callable(n, prompt, body) -> spec | None``.
  A spec is a :class:`Fault` or a string: ``"429"``, ``"429:2"`` (Retry-After:
  2), ``"500"``/any status, ``"broken_json"``, ``"no_choices"``, ``"null"``
  (content null), ``"slow:SECONDS"`` (reply after a delay), ``"reset"``
  (connection reset, no response), ``"ok"``.
* ``latency`` adds a fixed delay to every reply (benchmark mode).
* ``api_key="k"`` answers 401 unless ``Authorization: Bearer k`` is sent;
  ``models={"a", "b"}`` answers 404 ("The model `x` does not exist.") for any
  other model, as OpenAI, vLLM and NIM do. Both count as requests.
* A responder may return a :class:`Reply` to set ``finish_reason`` or add a
  ``reasoning_content`` field (as reasoning parsers of vLLM/SGLang do).
* Every request is recorded (``requests``: number, method, path, headers with
  lower-case names, parsed body, prompt, fault, timings); ``count``,
  ``max_in_flight`` and ``prompt_counts()`` summarise them.

Run standalone for manual or benchmark use:
    python tests/fake_endpoint.py --port 8000 --latency 0.5 --answer 'print(1)'
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Union

DEFAULT_PATH = "/v1/chat/completions"


@dataclass
class Fault:
    kind: str                     # status | broken_json | no_choices | null | slow | reset | ok
    status: int = 500
    retry_after: Optional[str] = None
    delay: float = 0.0
    body: Optional[str] = None    # body for status faults (default: an OpenAI-style error)

    @classmethod
    def parse(cls, spec: "FaultSpec") -> "Fault":
        if isinstance(spec, Fault):
            return spec
        if isinstance(spec, int):
            return cls("status", status=spec)
        s = str(spec).strip()
        head, _, arg = s.partition(":")
        if head.isdigit():
            return cls("status", status=int(head), retry_after=arg or None)
        if head == "slow":
            return cls("slow", delay=float(arg or 5.0))
        if head in ("broken_json", "no_choices", "null", "reset", "ok"):
            return cls(head)
        raise ValueError(f"unknown fault spec {spec!r}")


@dataclass
class Reply:
    content: Optional[str]
    finish_reason: str = "stop"
    reasoning_content: Optional[str] = None


FaultSpec = Union[Fault, str, int]
Faults = Union[None, dict, Callable[[int, str, dict], Optional[FaultSpec]]]
Responder = Callable[[str, dict], Union[str, None, dict, Reply]]


@dataclass
class Request:
    n: int                        # 1-based POST number (0 for GET)
    method: str
    path: str
    headers: dict
    body: Any
    prompt: Optional[str]
    fault: Optional[Fault]
    t_start: float
    t_end: float = 0.0


def default_responder(prompt: str, body: dict) -> str:
    return "```python\ndef answer():\n    return 42\n```"


def _last_user_message(body: Any) -> Optional[str]:
    if not isinstance(body, dict):
        return None
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else json.dumps(c)
    return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):  # quiet: clients hang up on purpose
        pass


class FakeEndpoint:
    def __init__(self, responder: Optional[Responder] = None, faults: Faults = None, *,
                 latency: float = 0.0, host: str = "127.0.0.1", port: int = 0,
                 path: str = DEFAULT_PATH, model_name: Optional[str] = None,
                 api_key: Optional[str] = None, models: Optional[set] = None):
        self.responder = responder or default_responder
        self.api_key = api_key
        self.models = models
        self.faults = faults
        self.latency = latency
        self.path = path
        self.model_name = model_name
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._requests: list[Request] = []
        self._gets: list[Request] = []
        self._prompt_seen: Counter = Counter()
        self._n = 0
        self._in_flight = 0
        self.max_in_flight = 0
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "FakeEndpoint":
        self._server = _Server((self._host, self._port), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeEndpoint":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------ addresses
    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + self.path

    # ------------------------------------------------------------ observations
    @property
    def requests(self) -> "list[Request]":
        with self._lock:
            return list(self._requests)

    @property
    def gets(self) -> "list[Request]":
        with self._lock:
            return list(self._gets)

    @property
    def bodies(self) -> "list[Any]":
        return [r.body for r in self.requests]

    @property
    def count(self) -> int:
        with self._lock:
            return self._n

    def prompt_counts(self) -> Counter:
        with self._lock:
            return Counter(self._prompt_seen)

    def reset_stats(self) -> None:
        with self._lock:
            self._requests.clear()
            self._gets.clear()
            self._prompt_seen.clear()
            self._n = 0
            self.max_in_flight = self._in_flight

    # ------------------------------------------------------------ internals
    def _choose_fault(self, n: int, prompt: Optional[str], body: Any, seen: int) -> Optional[Fault]:
        f = self.faults
        spec: Optional[FaultSpec] = None
        if f is None:
            return None
        if callable(f):
            spec = f(n, prompt or "", body)
        else:
            if n in f:
                spec = f[n]
            elif prompt is not None and prompt in f:
                spec = f[prompt]
                if isinstance(spec, (list, tuple)):
                    spec = spec[seen - 1] if seen - 1 < len(spec) else None
        return None if spec is None else Fault.parse(spec)

    def _reply_json(self, body: Any, prompt: str, content: Union[str, None, dict, Reply], n: int) -> dict:
        if isinstance(content, dict):
            return content
        reply = content if isinstance(content, Reply) else Reply(content)
        content = reply.content
        message: dict = {"role": "assistant", "content": content}
        if reply.reasoning_content is not None:
            message["reasoning_content"] = reply.reasoning_content
        model = self.model_name or (body.get("model") if isinstance(body, dict) else None) or "fake"
        p_tok = len(prompt.split())
        c_tok = len(content.split()) if isinstance(content, str) else 0
        return {
            "id": f"chatcmpl-fake-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
            "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok,
                      "total_tokens": p_tok + c_tok},
        }

    def _handler_class(self):
        ep = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                try:  # no Nagle/delayed-ACK stalls between header and body
                    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: bytes, headers: Optional[dict] = None,
                      ctype: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    # headers and body in one write
                    self._headers_buffer.append(b"\r\n" + payload)
                    self.flush_headers()
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

            def _reset(self) -> None:
                try:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
                    self.rfile.close()
                    self.connection.close()
                except OSError:
                    pass
                self.close_connection = True

            def do_GET(self) -> None:
                rec = Request(0, "GET", self.path, {k.lower(): v for k, v in self.headers.items()},
                              None, None, None, time.monotonic(), time.monotonic())
                with ep._lock:
                    ep._gets.append(rec)
                self._send(405, b'{"error": {"message": "use POST"}}', {"Allow": "POST"})

            def do_POST(self) -> None:
                t0 = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                prompt = _last_user_message(body)
                with ep._lock:
                    ep._n += 1
                    n = ep._n
                    if prompt is not None:
                        ep._prompt_seen[prompt] += 1
                    seen = ep._prompt_seen[prompt] if prompt is not None else 0
                    ep._in_flight += 1
                    ep.max_in_flight = max(ep.max_in_flight, ep._in_flight)
                rec = Request(n, "POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                              body, prompt, None, t0)
                with ep._lock:
                    ep._requests.append(rec)
                try:
                    fault = ep._choose_fault(n, prompt, body, seen)
                    rec.fault = fault
                    self._serve(n, body, prompt, fault)
                finally:
                    rec.t_end = time.monotonic()
                    with ep._lock:
                        ep._in_flight -= 1

            def _serve(self, n: int, body: Any, prompt: Optional[str], fault: Optional[Fault]) -> None:
                delay = ep.latency + (fault.delay if fault and fault.kind == "slow" else 0.0)
                if delay > 0 and ep._stop.wait(delay):
                    self._reset()
                    return
                if ep.api_key is not None and self.headers.get("Authorization") != f"Bearer {ep.api_key}":
                    self._send(401, json.dumps({"error": {"message": "Invalid API key", "code": 401}}).encode())
                    return
                model = body.get("model") if isinstance(body, dict) else None
                if ep.models is not None and model not in ep.models:
                    msg = f"The model `{model}` does not exist."
                    self._send(404, json.dumps({"error": {"message": msg, "code": 404}}).encode())
                    return
                if fault is not None:
                    if fault.kind == "reset":
                        self._reset()
                        return
                    if fault.kind == "status":
                        payload = (fault.body if fault.body is not None else json.dumps(
                            {"error": {"message": f"fake error {fault.status}", "code": fault.status}}))
                        headers = {"Retry-After": fault.retry_after} if fault.retry_after else None
                        self._send(fault.status, payload.encode(), headers)
                        return
                    if fault.kind == "broken_json":
                        self._send(200, b'{"choices": [{"message": {"content": "tru')
                        return
                    if fault.kind == "no_choices":
                        self._send(200, b'{"object": "chat.completion", "choices": []}')
                        return
                    if fault.kind == "null":
                        self._send(200, json.dumps(ep._reply_json(body, prompt or "", None, n)).encode())
                        return
                    # "ok" and "slow" fall through to a normal answer
                try:
                    content = ep.responder(prompt or "", body if isinstance(body, dict) else {})
                except Exception as e:  # a broken responder is a test bug: make it loud
                    self._send(500, json.dumps({"error": {"message": f"responder raised {e!r}"}}).encode())
                    return
                self._send(200, json.dumps(ep._reply_json(body, prompt or "", content, n)).encode())

        return Handler


def main(argv: Optional[list] = None) -> None:
    ap = argparse.ArgumentParser(description="Fake OpenAI chat-completions endpoint.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds added to every reply")
    ap.add_argument("--answer", default=None, help="fixed reply content (default: a small python block)")
    args = ap.parse_args(argv)
    responder = (lambda p, b: args.answer) if args.answer is not None else None
    ep = FakeEndpoint(responder, latency=args.latency, host=args.host, port=args.port).start()
    print(ep.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        ep.stop()


if __name__ == "__main__":
    main()
