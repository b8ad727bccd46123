"""Tokens and cost: the endpoint's `usage` per step, its totals, per-status sums and a price.

A step's usage is that of the request that answered it (stored with the generation, so a resumed
run counts it too). The endpoint preflight's one-token request is not a step and is not counted.
"""
from __future__ import annotations

from typing import Any, Optional

FIELDS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_prompt_tokens", "total_tokens")
NOT_GENERATED = ("gen_error", "context_overflow")   # steps without a reply: no usage to expect


def _count(value: Any) -> Optional[int]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        return None
    return int(value)


def _detail(raw: dict, key: str, field: str) -> Optional[int]:
    details = raw.get(key)
    return _count(details.get(field)) if isinstance(details, dict) else None


def normalize(raw: Any) -> Optional[dict]:
    """OpenAI-style `usage` -> {FIELDS...: int} with what the server reported (None: nothing).
    Reasoning tokens come from completion_tokens_details.reasoning_tokens (or a top-level
    reasoning_tokens); cached prompt tokens from prompt_tokens_details.cached_tokens."""
    if not isinstance(raw, dict):
        return None
    found = {
        "prompt_tokens": _count(raw.get("prompt_tokens")),
        "completion_tokens": _count(raw.get("completion_tokens")),
        "reasoning_tokens": _detail(raw, "completion_tokens_details", "reasoning_tokens"),
        "cached_prompt_tokens": _detail(raw, "prompt_tokens_details", "cached_tokens"),
        "total_tokens": _count(raw.get("total_tokens")),
    }
    if found["reasoning_tokens"] is None:
        found["reasoning_tokens"] = _count(raw.get("reasoning_tokens"))
    out = {k: v for k, v in found.items() if v is not None}
    return out or None


def _add(into: dict, usage: dict) -> None:
    for f in FIELDS:
        if f in usage:
            into[f] = (into.get(f) or 0) + usage[f]


def _block() -> dict:
    return {**dict.fromkeys(FIELDS), "steps": 0}


def cost(block: dict, price_in: Optional[float], price_out: Optional[float]) -> Optional[dict]:
    """Cost of `block`'s tokens at per-million-token prices (a missing price counts as 0)."""
    if price_in is None and price_out is None:
        return None
    pin, pout = price_in or 0.0, price_out or 0.0
    prompt = (block.get("prompt_tokens") or 0) * pin / 1e6
    completion = (block.get("completion_tokens") or 0) * pout / 1e6
    return {"price_in": pin, "price_out": pout, "prompt": prompt, "completion": completion,
            "total": prompt + completion, "per": "1M tokens"}


def summarize(records: list[dict], price_in: Optional[float] = None,
              price_out: Optional[float] = None) -> dict:
    """Totals over the records' usage (a field none reported stays None), per-status sums,
    the steps that got a reply without usage, and the cost when a price is given."""
    total, by_status, missing = _block(), {}, 0
    for r in records:
        u = r.get("usage")
        if not u:
            missing += r["status"] not in NOT_GENERATED
            continue
        for block in (total, by_status.setdefault(r["status"], _block())):
            _add(block, u)
            block["steps"] += 1
    out = dict(total, steps_without_usage=missing, by_status=by_status)
    priced = cost(total, price_in, price_out)
    if priced is not None:
        out["cost"] = priced
    return out


def summary_line(block: dict) -> str:
    """One line for the run summary."""
    def n(field: str) -> str:
        v = block.get(field)
        return "n/a" if v is None else str(v)
    line = (f"tokens          prompt {n('prompt_tokens')} (cached {n('cached_prompt_tokens')}), completion "
            f"{n('completion_tokens')} (reasoning {n('reasoning_tokens')}), total {n('total_tokens')} "
            f"over {block['steps']} steps")
    if block.get("steps_without_usage"):
        line += f" ({block['steps_without_usage']} without usage)"
    if "cost" in block:
        c = block["cost"]
        line += f"; cost {c['total']:.4f} (at {c['price_in']:g} in / {c['price_out']:g} out per 1M tokens)"
    return line
