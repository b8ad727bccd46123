"""Compare recorded target values: exactly (values_equal) and np.allclose-style (values_close)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def values_equal(a: Any, b: Any) -> bool:
    """Exact, NaN-aware equality of decoded values (same types, shapes, dtypes)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype == object:
            return all(values_equal(x, y) for x, y in zip(a.ravel().tolist(), b.ravel().tolist()))
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        return bool(np.array_equal(a, b))
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and values_equal(np.asarray(a), np.asarray(b))
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, complex):
        return values_equal(a.real, b.real) and values_equal(a.imag, b.imag)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        for k, v in a.items():
            if k not in b or not values_equal(v, b[k]):
                return False
        return True
    if _is_sparse(a):
        return (a.format == b.format and a.shape == b.shape
                and values_equal(np.asarray(a.toarray()), np.asarray(b.toarray())))
    try:
        return bool(a == b)
    except Exception:
        return False


def _is_sparse(v) -> bool:
    return (type(v).__module__ or "").startswith("scipy.sparse") and hasattr(v, "toarray")


def values_close(a: Any, b: Any, rtol: float = 1e-5, atol: float = 1e-8) -> tuple[bool, str]:
    """np.allclose-style comparison for `check`: (ok, detail)."""
    if a is None or b is None:
        return (a is None and b is None), ("" if a is None and b is None else f"{_short(a)} vs {_short(b)}")
    if isinstance(a, bytes):
        a = a.decode("utf-8", "replace")
    if isinstance(b, bytes):
        b = b.decode("utf-8", "replace")
    if _is_sparse(a):
        a = a.toarray()
    if _is_sparse(b):
        b = b.toarray()
    if isinstance(a, str) or isinstance(b, str):
        return (a == b), ("" if a == b else f"{_short(a)!r} vs {_short(b)!r}")
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)):
            return False, f"dict vs {type(b if isinstance(a, dict) else a).__name__}"
        na, nb = {_norm_key(k): v for k, v in a.items()}, {_norm_key(k): v for k, v in b.items()}
        if set(na) != set(nb):
            return False, f"dict keys differ: {sorted(map(str, set(na) ^ set(nb)))[:5]}"
        for k in na:
            ok, d = values_close(na[k], nb[k], rtol, atol)
            if not ok:
                return False, f"[{k!r}] {d}"
        return True, ""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        if len(a) != len(b):
            return False, f"length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            ok, d = values_close(x, y, rtol, atol)
            if not ok:
                return False, f"[{i}] {d}"
        return True, ""
    try:
        xa, xb = np.asarray(a), np.asarray(b)
        if xa.dtype == object or xb.dtype == object:
            if xa.shape != xb.shape:
                return False, f"shape {xa.shape} vs {xb.shape}"
            for i, (x, y) in enumerate(zip(xa.ravel().tolist(), xb.ravel().tolist())):
                ok, d = values_close(x, y, rtol, atol)
                if not ok:
                    return False, f"[{i}] {d}"
            return True, ""
        if xa.shape != xb.shape:
            return False, f"shape {xa.shape} vs {xb.shape}"
        if xa.dtype.kind in "biufc" and xb.dtype.kind in "biufc":
            if np.allclose(xa, xb, rtol=rtol, atol=atol, equal_nan=True):
                return True, ""
            diff = np.max(np.abs(xa.astype(complex) - xb.astype(complex))) if xa.size else 0
            return False, f"max abs diff {diff:.3g}"
        ok = bool(np.array_equal(xa, xb))
        return ok, "" if ok else f"{_short(a)} vs {_short(b)}"
    except Exception as e:  # pragma: no cover - exotic values
        return False, f"cannot compare: {type(e).__name__}: {e}"


def _norm_key(k):
    if isinstance(k, bytes):
        k = k.decode()
    if isinstance(k, str):
        try:
            return float(k)
        except ValueError:
            return k
    if isinstance(k, (int, float, np.number)):
        return float(k)
    return k


def _short(v, n=80) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n] + "..."

