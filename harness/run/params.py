"""--extra-params: NVIDIA's "k=v,k2=v2" string -> a typed dict, split into client settings
(KNOWN_PARAMS: top_p, timeout, max_tokens, max_retries, include_system_prompt) and request-body keys."""
from __future__ import annotations

import math
import re
from typing import Any, Optional

# Keys of --extra-params that configure the client rather than the request body.
KNOWN_PARAMS = ("top_p", "timeout", "max_tokens", "max_retries", "include_system_prompt")
# Body keys the client owns; --extra-params may not override them.
RESERVED_BODY_KEYS = ("model", "messages", "seed", "temperature", "stream")

_INT_RE = re.compile(r"[-+]?(0|[1-9][0-9_]*)$")
_FLOAT_RE = re.compile(r"[-+]?(\d[\d_]*\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*$")


def _scalar(text: str) -> Any:
    """YAML-ish typing of one value: null, booleans, ints, floats, else a string."""
    v = text.strip()
    low = v.lower()
    if low in ("", "null", "none", "~"):
        return None
    if low == "true":
        return True
    if low == "false":
        return False
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    if _INT_RE.match(v):
        return int(v.replace("_", ""))
    if _FLOAT_RE.match(v) and any(c.isdigit() for c in v):
        return float(v.replace("_", ""))
    if low in ("inf", "+inf", ".inf", "+.inf"):
        return math.inf
    if low in ("-inf", "-.inf"):
        return -math.inf
    if low in ("nan", ".nan"):
        return math.nan
    return v


def parse_extra_params(s: Optional[str]) -> dict:
    """Parse ``k=v,k2=v2`` (NVIDIA's ``--extra-params``) into a dict.

    Values are typed YAML-style (``0.5`` float, ``2048`` int, ``true``/``False``,
    ``null``/``None``); quotes keep a value a string. Dotted keys nest, so
    ``chat_template_kwargs.enable_thinking=false`` becomes
    ``{"chat_template_kwargs": {"enable_thinking": False}}``. A later duplicate
    wins. Values cannot contain commas. Bad syntax raises ValueError.
    """
    out: dict = {}
    if s is None or not s.strip():
        return out
    for item in s.split(","):
        item = item.strip()
        if not item:
            continue  # tolerate a trailing comma
        if "=" not in item:
            raise ValueError(f"--extra-params: expected key=value, got {item!r}")
        key, _, value = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not key or not all(_KEY_RE.match(p) for p in parts):
            raise ValueError(f"--extra-params: bad key {key!r} in {item!r}")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        node[parts[-1]] = _scalar(value)
    return out


def _as_bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.lower() in ("yes", "on", "y", "no", "off", "n"):
        return v.lower() in ("yes", "on", "y")
    raise ValueError(f"--extra-params: {key} must be true or false, got {v!r}")


def _as_number(key: str, v: Any, kind: type, minimum: float, strict: bool) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
        raise ValueError(f"--extra-params: {key} must be a number, got {v!r}")
    if kind is int:
        if isinstance(v, float) and not v.is_integer():
            raise ValueError(f"--extra-params: {key} must be an integer, got {v!r}")
        v = int(v)
    else:
        v = float(v)
    if v < minimum or (strict and v == minimum):
        op = ">" if strict else ">="
        raise ValueError(f"--extra-params: {key} must be {op} {minimum:g}, got {v!r}")
    return v


def split_extra_params(params: dict) -> "tuple[dict, dict]":
    """Split parsed params into (GenConfig fields, request-body extras), typed and
    validated. Known keys with a null value are dropped (the default applies)."""
    known: dict = {}
    extra: dict = {}
    for k, v in params.items():
        if k not in KNOWN_PARAMS:
            if k in RESERVED_BODY_KEYS:
                hint = " (use --temperature)" if k == "temperature" else ""
                raise ValueError(f"--extra-params: {k} is set by the harness and cannot be overridden{hint}")
            if v is not None:  # `key=null` means "not set": nothing is sent
                extra[k] = v
            continue
        if v is None:
            continue
        if k == "include_system_prompt":
            known[k] = _as_bool(k, v)
        elif k == "top_p":
            known[k] = _as_number(k, v, float, 0.0, strict=False)
        elif k == "timeout":
            known[k] = _as_number(k, v, float, 0.0, strict=True)
        elif k == "max_tokens":
            known[k] = _as_number(k, v, int, 1, strict=False)
        elif k == "max_retries":
            known[k] = _as_number(k, v, int, 0, strict=False)
    return known, extra
