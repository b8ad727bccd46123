"""Context overflow: a prompt longer than the model's context is the model's failure, not the endpoint's.

An endpoint says so with an HTTP 400/413/422 whose body matches one of `PATTERNS` (one row per
server and message; tests/test_overflow.py holds each server's real body). `precheck` catches a
prompt that would not fit a known `--max-context-tokens` before it is sent.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterator, Optional

STATUSES = frozenset({400, 413, 422})

# (server, what its context-length error says); matched case-insensitively against the body
# and the strings inside it when it is JSON
PATTERNS: tuple[tuple[str, re.Pattern], ...] = tuple((server, re.compile(rx, re.I)) for server, rx in (
    ("OpenAI", r"context_length_exceeded"),                                        # error.code
    ("OpenAI, vLLM, NIM", r"maximum context length"),                               # "This model's maximum context length is N tokens. ..."
    ("vLLM (max_tokens unset)", r"max_tokens must be at least 1, got -\d+"),        # prompt alone over the window
    ("SGLang", r"is longer than the model's context length"),                       # "The input (N tokens) is longer than ..."
    ("SGLang", r"exceeds the model's maximum context length"),                      # "Requested token count exceeds ..."
    ("TGI", r"`inputs` tokens \+ `max_new_tokens` must be <="),
    ("TGI", r"`inputs` must have less than \d+ tokens"),
))

BYTES_PER_TOKEN = 4   # the estimate of --max-context-tokens: UTF-8 bytes per token (no tokenizer)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def matching_server(status: int, body: str) -> Optional[str]:
    """The server whose context-length error `body` is, or None (any other error)."""
    if status not in STATUSES or not body:
        return None
    try:
        text = "\n".join([body, *_strings(json.loads(body))])
    except ValueError:
        text = body
    return next((server for server, rx in PATTERNS if rx.search(text)), None)


def estimate_tokens(body: dict) -> int:
    """Tokens of a chat request's messages, estimated as UTF-8 bytes / BYTES_PER_TOKEN."""
    size = sum(len(str(m.get("content") or "").encode("utf-8")) for m in body.get("messages") or [])
    return math.ceil(size / BYTES_PER_TOKEN)


def check_budget(limit: Optional[int], max_tokens: Optional[int]) -> Optional[str]:
    """Why `limit` cannot hold any reply (max_tokens alone fills it), or None."""
    if limit is not None and max_tokens is not None and max_tokens >= limit:
        return (f"--max-context-tokens {limit} leaves no room for the prompt: max_tokens is {max_tokens} "
                "(lower max_tokens in --extra-params or raise the limit)")
    return None


def precheck(body: dict, limit: Optional[int]) -> Optional[str]:
    """Why a request would not fit `limit` tokens (prompt estimate + max_tokens), or None."""
    if limit is None:
        return None
    prompt = estimate_tokens(body)
    reply = body.get("max_tokens") or 0
    if prompt + reply <= limit:
        return None
    return (f"not sent: the prompt is about {prompt} tokens (UTF-8 bytes / {BYTES_PER_TOKEN}) and "
            f"max_tokens {reply}, over --max-context-tokens {limit}")


def later(step_id: str) -> str:
    """The error of a chain's step after the one that overflowed (its prompt is only longer)."""
    return f"not sent: step {step_id} of this chain already exceeded the model's context"
