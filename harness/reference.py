"""A built-in OpenAI-compatible reference endpoint that answers SciCode prompts.

It finds the step a prompt asks for from the function header after the
prompt's last "NEXT STEP" marker and answers with that step's gold code (the
dev split ships gold code; user problems in SciCode's JSONL format can too).
Other modes give answers that must score 0 -- a wrong return value, code that
exits the interpreter, code that sleeps -- to test the harness end to end.

Standard library only (http.server); binds 127.0.0.1 by default.
"""
from __future__ import annotations

import ast
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable, Optional

MODES = ("gold", "wrong", "exit", "sleep")
MARKER = "NEXT STEP"
UNKNOWN_ANSWER = "I could not identify which SciCode step this prompt asks for, so I have no code for it."
DEFAULT_MODEL = "scicode-reference"

# exit mode rotates over these calls (no import lines: the harness strips them from answers)
EXIT_CALLS = ("exit(0)", "raise SystemExit(0)", "__import__('os')._exit(0)")
SLEEP_CALL = "__import__('time').sleep(10**6)"

_WRONG_HELPER = "__scicode_wrong__"
_WRONG_SRC = f'''
def {_WRONG_HELPER}(v):
    """Perturb a return value so that every comparison with the gold value fails."""
    if isinstance(v, bool):
        return not v
    if getattr(getattr(v, "dtype", None), "kind", None) == "b":
        return ~v
    if isinstance(v, (tuple, list)):
        items = [{_WRONG_HELPER}(x) for x in v]
        try:
            return type(v)(items)
        except TypeError:
            return tuple(items)
    if isinstance(v, dict):
        return {{k: {_WRONG_HELPER}(x) for k, x in v.items()}}
    try:
        return v + (1 + abs(v))
    except Exception:
        return None
'''


def _norm(s: str) -> str:
    return " ".join((s or "").split())


def defined_name(header: str) -> Optional[str]:
    m = re.search(r"\b(?:def|class)\s+(\w+)", header or "")
    return m.group(1) if m else None


@dataclass
class StepEntry:
    step_id: str
    name: Optional[str]
    first_line: str       # normalized first non-empty line of the function header
    header: str           # normalized whole header
    description: str      # normalized step_description_prompt
    gold: str


class StepIndex:
    """Known steps with gold code, found from the text after a prompt's NEXT STEP marker."""

    def __init__(self, problems: Iterable[dict]):
        self.entries: list[StepEntry] = []
        for prob in problems:
            for step in prob.get("sub_steps", []):
                gold = step.get("ground_truth_code")
                header = step.get("function_header") or ""
                lines = [ln for ln in header.splitlines() if ln.strip()]
                if not gold or not lines:
                    continue
                self.entries.append(StepEntry(
                    step_id=str(step["step_number"]), name=defined_name(header),
                    first_line=_norm(lines[0]), header=_norm(header),
                    description=_norm(step.get("step_description_prompt", "")), gold=gold.strip("\n")))
        self.by_id = {e.step_id: e for e in self.entries}

    def __len__(self):
        return len(self.entries)

    def find(self, prompt: str) -> Optional[StepEntry]:
        i = prompt.rfind(MARKER)
        tail = _norm(prompt[i:] if i >= 0 else prompt)
        cands = [e for e in self.entries if e.first_line in tail]
        if not cands:
            return None
        if len(cands) == 1:
            return cands[0]
        # disambiguate: the whole header, then the description, then the longest first line
        return max(cands, key=lambda e: (e.header in tail, bool(e.description) and e.description in tail,
                                         len(e.header) if e.header in tail else len(e.first_line)))


# ----------------------------------------------------------------------------- answers

class _PerturbReturns(ast.NodeTransformer):
    """return X -> return __scicode_wrong__(X) in one function (not in nested defs)."""

    def visit_FunctionDef(self, node):
        return node  # nested function: leave alone

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node):
        return node

    def visit_Lambda(self, node):
        return node

    def visit_Return(self, node):
        value = node.value if node.value is not None else ast.Constant(None)
        call = ast.Call(func=ast.Name(_WRONG_HELPER, ast.Load()), args=[value], keywords=[])
        return ast.copy_location(ast.Return(value=call), node)


def _perturb_function(fn: ast.FunctionDef) -> None:
    helper = ast.parse(_WRONG_SRC).body[0]
    t = _PerturbReturns()
    fn.body = [t.visit(s) for s in fn.body]
    has_doc = (fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant)
               and isinstance(fn.body[0].value.value, str))
    at = 1 if has_doc else 0
    fn.body.insert(at, helper)


def wrong_code(gold: str, name: Optional[str]) -> str:
    """Gold code whose step function returns perturbed values (numbers/arrays v -> v + 1 + |v|,
    bools negated, other values -> None). The helper lives inside the function so the
    perturbation survives extraction of the named function."""
    try:
        tree = ast.parse(gold)
    except SyntaxError:
        return gold + f"\n{name} = None\n" if name else gold
    targets = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
               and n.name == name]
    if not targets:
        return gold + (f"\n{name} = None\n" if name else "\nNone\n")
    node = targets[-1]
    if isinstance(node, ast.ClassDef):
        for item in node.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                _perturb_function(item)
    else:
        _perturb_function(node)
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def _fence(code: str) -> str:
    return f"```python\n{code.rstrip()}\n```"


def answer_for(entry: Optional[StepEntry], mode: str, variant: int = 0) -> str:
    """Reply text for a step in a mode (variant picks the exit call)."""
    if entry is None:
        return UNKNOWN_ANSWER
    if mode == "gold":
        return _fence(entry.gold)
    if mode == "wrong":
        return _fence(wrong_code(entry.gold, entry.name))
    if mode == "exit":
        return _fence(entry.gold + "\n\n" + EXIT_CALLS[variant % len(EXIT_CALLS)])
    if mode == "sleep":
        return _fence(entry.gold + "\n\n" + SLEEP_CALL)
    raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")


# ----------------------------------------------------------------------------- HTTP

def _message_text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_of(body: dict) -> str:
    """The last user message (chat), else all messages, else a completions `prompt`."""
    msgs = body.get("messages")
    if isinstance(msgs, list) and msgs:
        users = [m for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        pick = users[-1:] if users else msgs
        return "\n".join(_message_text(m.get("content")) for m in pick if isinstance(m, dict))
    p = body.get("prompt")
    if isinstance(p, list):
        return "\n".join(str(x) for x in p)
    return p if isinstance(p, str) else ""


def _tokens(s: str) -> int:
    return max(1, len(s) // 4) if s else 0


class ReferenceServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, index: StepIndex, mode: str, quiet: bool = True):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: expected one of {', '.join(MODES)}")
        self.index = index
        self.mode = mode
        self.quiet = quiet
        self._counter = itertools.count()
        self._lock = threading.Lock()
        self.requests_served = 0
        super().__init__(addr, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1/chat/completions"

    def next_variant(self) -> int:
        with self._lock:
            self.requests_served += 1
            return next(self._counter)

    def reply(self, body: dict) -> tuple[dict, Optional[StepEntry]]:
        prompt = prompt_of(body)
        entry = self.index.find(prompt)
        content = answer_for(entry, self.mode, self.next_variant())
        n = body.get("n") if isinstance(body.get("n"), int) and body.get("n", 1) > 0 else 1
        model = body.get("model") if isinstance(body.get("model"), str) else DEFAULT_MODEL
        pt, ct = _tokens(prompt), _tokens(content)
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": content},
                         "logprobs": None, "finish_reason": "stop"} for i in range(n)],
            "usage": {"prompt_tokens": pt, "completion_tokens": ct * n, "total_tokens": pt + ct * n},
        }, entry


class _Handler(BaseHTTPRequestHandler):
    server: ReferenceServer
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            super().log_message(fmt, *args)

    def _send(self, code: int, obj, ctype="application/json"):
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._send(200, {"object": "list", "data": [
                {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "scicode-harness"}]})
        else:
            self._send(200, {"status": "ok", "mode": self.server.mode, "steps": len(self.server.index)})

    def do_POST(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n > 0 else b""
            body = json.loads(raw.decode("utf-8") or "{}")
            if not isinstance(body, dict):
                raise ValueError("request body must be a JSON object")
        except (ValueError, UnicodeDecodeError) as e:
            self._send(400, {"error": {"message": f"bad request: {e}", "type": "invalid_request_error"}})
            return
        resp, entry = self.server.reply(body)
        if not self.server.quiet:
            print(f"reference: {self.path} -> {entry.step_id if entry else 'unknown step'} ({self.server.mode})",
                  flush=True)
        if body.get("stream"):
            self._stream(resp)
        else:
            self._send(200, resp)

    def _stream(self, resp: dict):
        chunks = []
        base = {k: resp[k] for k in ("id", "created", "model")}
        for ch in resp["choices"]:
            delta = {"role": "assistant", "content": ch["message"]["content"]}
            chunks.append({**base, "object": "chat.completion.chunk",
                           "choices": [{"index": ch["index"], "delta": delta, "finish_reason": None}]})
            chunks.append({**base, "object": "chat.completion.chunk",
                           "choices": [{"index": ch["index"], "delta": {}, "finish_reason": "stop"}]})
        chunks.append({**base, "object": "chat.completion.chunk", "choices": [], "usage": resp["usage"]})
        data = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        self._send(200, data, ctype="text/event-stream")


def load_index(split: str = "dev", problems_path: Optional[Path] = None) -> StepIndex:
    from harness.targets.build import load_problems
    problems = load_problems(split, problems_path)
    index = StepIndex(problems)
    if not len(index):
        src = str(problems_path) if problems_path else f"the {split} split"
        raise ValueError(f"{src} has no steps with gold code (ground_truth_code); "
                         f"the test split ships none -- use --split dev or --problems FILE")
    return index


def make_server(host: str = "127.0.0.1", port: int = 8011, mode: str = "gold", split: str = "dev",
                problems_path: Optional[Path] = None, quiet: bool = True,
                index: Optional[StepIndex] = None) -> ReferenceServer:
    """A ThreadingHTTPServer (not started): run ``serve_forever()`` in a thread; port 0 picks one."""
    index = index or load_index(split, problems_path)
    return ReferenceServer((host, port), index, mode, quiet=quiet)
