"""Safe, pickle-free encoding of test values (targets and recorded results).

Encodes to plain JSON types: arrays, scalars, complex, bool, str, bytes, None,
tuples, lists, dicts (any hashable scalar keys) and scipy sparse matrices.
This file is also shipped verbatim into the sandbox runner and the verifier, so it may
import only the standard library, numpy and (lazily) scipy. Both also name exceptions
in their reports with `describe`.
"""
import base64
import math
import traceback

import numpy as np


def _arr(a):
    a = np.asarray(a, order="C")
    if a.dtype == object:
        return {"__t": "objarr", "shape": list(a.shape), "items": [encode(x) for x in a.ravel().tolist()]}
    if a.dtype.kind in "US":
        return {"__t": "strarr", "dtype": a.dtype.str, "shape": list(a.shape), "items": a.ravel().tolist()
                if a.dtype.kind == "U" else [base64.b64encode(x).decode() for x in a.ravel().tolist()]}
    return {"__t": "nd", "dtype": a.dtype.str, "shape": list(a.shape),
            "b64": base64.b64encode(a.tobytes()).decode()}


def encode(v):
    """Return a JSON-compatible structure for v; raises TypeError if unsupported."""
    if v is None or type(v) in (str, int):
        return v
    if type(v) is float:
        return v if np.isfinite(v) else {"__t": "float", "v": repr(v)}
    if isinstance(v, (bool, np.bool_)):
        return {"__t": "bool", "v": bool(v)}
    if isinstance(v, complex):
        return {"__t": "complex", "re": encode(v.real), "im": encode(v.imag)}
    if isinstance(v, np.generic):
        return {"__t": "np", "v": _arr(np.asarray(v))}
    if isinstance(v, np.ndarray):
        return _arr(v)
    if isinstance(v, (bytes, bytearray)):
        return {"__t": "bytes", "b64": base64.b64encode(bytes(v)).decode()}
    if isinstance(v, int):  # int subclasses (e.g. IntEnum)
        return int(v)
    if isinstance(v, float):
        return encode(float(v))
    if isinstance(v, tuple):
        return {"__t": "tuple", "items": [encode(x) for x in v]}
    if isinstance(v, list):
        return {"__t": "list", "items": [encode(x) for x in v]}
    if isinstance(v, dict):
        return {"__t": "dict", "items": [[encode(k), encode(x)] for k, x in v.items()]}
    sparse = _sparse_format(v)
    if sparse:
        return _encode_sparse(v, sparse)
    name = type(v).__module__ + "." + type(v).__name__
    if name.startswith("sympy."):
        return {"__t": "sympy", "v": str(v)}
    raise TypeError(f"cannot encode value of type {name}")


def _sparse_format(v):
    mod = type(v).__module__ or ""
    if not mod.startswith("scipy.sparse"):
        return None
    return getattr(v, "format", None)


def _encode_sparse(v, fmt):
    out = {"__t": "sparse", "format": fmt, "shape": list(v.shape), "data": _arr(v.data)}
    if fmt == "coo":
        out.update(row=_arr(v.row), col=_arr(v.col))
    elif fmt in ("csr", "csc", "bsr"):
        out.update(indices=_arr(v.indices), indptr=_arr(v.indptr))
        if fmt == "bsr":
            out["blocksize"] = list(v.blocksize)
    else:
        c = v.tocsr()
        return _encode_sparse(c, "csr")
    return out


def _dec_arr(o, safe=False):
    t = o["__t"]
    if t == "objarr":
        a = np.empty(len(o["items"]), dtype=object)
        for i, x in enumerate(o["items"]):
            a[i] = decode(x, safe)
        return a.reshape(o["shape"])
    if t == "strarr":
        items = o["items"] if np.dtype(o["dtype"]).kind == "U" else [base64.b64decode(x) for x in o["items"]]
        return np.array(items, dtype=o["dtype"]).reshape(o["shape"])
    return np.frombuffer(base64.b64decode(o["b64"]), dtype=np.dtype(o["dtype"])).reshape(o["shape"]).copy()


def decode(o, sympy_symbols_only=False):
    """Inverse of encode. sympy_symbols_only: for untrusted input, sympy values are plain
    Symbols made from their name (sympify would evaluate the text)."""
    safe = sympy_symbols_only
    if not isinstance(o, dict):
        return o
    t = o.get("__t")
    if t in ("nd", "objarr", "strarr"):
        return _dec_arr(o, safe)
    if t == "float":
        return float(o["v"])
    if t == "bool":
        return bool(o["v"])
    if t == "complex":
        return complex(decode(o["re"], safe), decode(o["im"], safe))
    if t == "np":
        return _dec_arr(o["v"], safe)[()]
    if t == "bytes":
        return base64.b64decode(o["b64"])
    if t == "tuple":
        return tuple(decode(x, safe) for x in o["items"])
    if t == "list":
        return [decode(x, safe) for x in o["items"]]
    if t == "dict":
        return {_key(decode(k, safe)): decode(x, safe) for k, x in o["items"]}
    if t == "sympy":
        import sympy
        if safe:
            if not (isinstance(o["v"], str) and o["v"].isidentifier()):
                raise ValueError("only plain sympy symbols are accepted")
            return sympy.Symbol(o["v"])
        return sympy.sympify(o["v"])
    if t == "sparse":
        return _decode_sparse(o)
    raise ValueError(f"unknown encoded type {t!r}")


def _key(k):
    return k.item() if isinstance(k, np.generic) else k


def _decode_sparse(o):
    import scipy.sparse as sp
    shape = tuple(o["shape"])
    data = _dec_arr(o["data"])
    fmt = o["format"]
    if fmt == "coo":
        return sp.coo_matrix((data, (_dec_arr(o["row"]), _dec_arr(o["col"]))), shape=shape)
    ind, ptr = _dec_arr(o["indices"]), _dec_arr(o["indptr"])
    if fmt == "bsr":
        return sp.bsr_matrix((data, ind, ptr), shape=shape, blocksize=tuple(o["blocksize"]))
    cls = sp.csc_matrix if fmt == "csc" else sp.csr_matrix
    return cls((data, ind, ptr), shape=shape)


# bounds of a value from an untrusted side (checked before anything is allocated for it)
MAX_DEPTH = 64              # nesting of encoded values
MAX_DIMS = 32
MAX_ITEM_BYTES = 32         # numeric arrays: complex256 at most
MAX_TEXT_BYTES = 16 << 20   # a text array as numpy would allocate it
MAX_SHORT = 64              # dtype names, float texts
_TAGS = ("nd", "objarr", "strarr", "float", "bool", "complex", "np", "bytes", "tuple", "list",
         "dict", "sympy", "sparse")
_SPARSE = {"coo": ("row", "col"), "csr": ("indices", "indptr"), "csc": ("indices", "indptr"),
           "bsr": ("indices", "indptr")}


def checked(o):
    """An untrusted encoded value, checked against the schema of `encode` and its bounds, and
    rebuilt from the schema's fields only; bare non-finite floats (a raw NaN or 1e999 in JSON)
    become tagged floats. Raises
    ValueError for anything else, before decode could allocate for it."""
    try:
        return _checked(o, 0)
    except (TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise ValueError("malformed encoded value (%s)" % type(exc).__name__) from None


def _checked(o, depth):
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if o is None or type(o) in (str, int, bool):
        return o
    if type(o) is float:
        return o if math.isfinite(o) else {"__t": "float", "v": repr(o)}
    if type(o) is not dict:
        raise ValueError("not an encoded value: %s" % type(o).__name__)
    t = o.get("__t")
    if t not in _TAGS:
        raise ValueError("unknown encoded type %r" % (str(t)[:MAX_SHORT],))
    if t in ("nd", "objarr", "strarr"):
        return _checked_arr(o, depth)
    if t == "float":
        float(_short(o.get("v")))
        return {"__t": t, "v": o["v"]}
    if t == "bool":
        _need(type(o.get("v")) is bool, "bool")
        return {"__t": t, "v": o["v"]}
    if t == "complex":
        return {"__t": t, "re": _checked(o.get("re"), depth + 1), "im": _checked(o.get("im"), depth + 1)}
    if t == "np":
        v = o.get("v")
        _need(type(v) is dict and v.get("__t") in ("nd", "objarr", "strarr") and v.get("shape") == [],
              "numpy scalar")
        return {"__t": t, "v": _checked_arr(v, depth + 1)}
    if t in ("bytes", "sympy"):
        k = "b64" if t == "bytes" else "v"
        _need(type(o.get(k)) is str, t)
        return {"__t": t, k: o[k]}
    if t == "sparse":
        return _checked_sparse(o, depth)
    items = o.get("items")
    _need(type(items) is list, t)
    if t == "dict":
        _need(all(type(kv) is list and len(kv) == 2 for kv in items), "dict")
        return {"__t": t, "items": [[_checked(k, depth + 1), _checked(v, depth + 1)] for k, v in items]}
    return {"__t": t, "items": [_checked(x, depth + 1) for x in items]}


def _need(ok, what):
    if not ok:
        raise ValueError("malformed encoded %s" % what)


def _short(v):
    _need(type(v) is str and len(v) <= MAX_SHORT, "text field")
    return v


def _shape(o):
    shape = o.get("shape")
    _need(type(shape) is list and len(shape) <= MAX_DIMS
          and all(type(n) is int and n >= 0 for n in shape), "array shape")
    n = 1
    for d in shape:
        n *= d
    return n


def _dtype(o):
    try:
        return np.dtype(_short(o.get("dtype")))
    except Exception:
        raise ValueError("not a dtype: %r" % o.get("dtype")) from None


def _checked_arr(o, depth):
    t, n = o["__t"], _shape(o)
    if t == "objarr":
        items = o.get("items")
        _need(type(items) is list and len(items) == n, "object array")
        return {"__t": t, "shape": o["shape"], "items": [_checked(x, depth + 1) for x in items]}
    dt = _dtype(o)
    if t == "strarr":
        items = o.get("items")
        _need(dt.kind in "US" and type(items) is list and len(items) == n
              and all(type(x) is str for x in items), "text array")
        if dt.itemsize * n > MAX_TEXT_BYTES:
            raise ValueError("text array of %d x %d bytes too large" % (n, dt.itemsize))
        return {"__t": t, "dtype": o["dtype"], "shape": o["shape"], "items": items}
    b64 = o.get("b64")
    _need(type(b64) is str and len(b64) % 4 == 0, "array data")
    if dt.kind not in "biufc" or dt.itemsize > MAX_ITEM_BYTES:
        raise ValueError("array of dtype %r not accepted" % o["dtype"])
    size = len(b64) // 4 * 3 - (len(b64) - len(b64.rstrip("=")))
    if size != n * dt.itemsize:
        raise ValueError("array data does not match its shape and dtype")
    return {"__t": t, "dtype": o["dtype"], "shape": o["shape"], "b64": b64}


def _checked_sparse(o, depth):
    fmt = o.get("format")
    _need(type(fmt) is str and fmt in _SPARSE, "sparse format")
    _need(type(o.get("shape")) is list and len(o["shape"]) == 2, "sparse shape")
    _shape(o)
    out = {"__t": "sparse", "format": fmt, "shape": o["shape"]}
    for k in ("data",) + _SPARSE[fmt]:
        v = o.get(k)
        _need(type(v) is dict and v.get("__t") == "nd", "sparse part")
        out[k] = _checked_arr(v, depth + 1)
    if fmt == "bsr":
        bs = o.get("blocksize")
        _need(type(bs) is list and len(bs) == 2 and all(type(n) is int and n > 0 for n in bs), "blocksize")
        out["blocksize"] = bs
    return out


def describe(exc, limit=2000):
    """`Type: message` of an exception for a report, at most `limit` characters; when the
    message is empty, the line of the test or solution that raised it."""
    try:
        text = str(exc)
    except BaseException:
        text = "<unprintable %s>" % type(exc).__name__
    msg = "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__
    if not text:
        for fr in reversed(traceback.extract_tb(exc.__traceback__)):
            if fr.filename.startswith("test_") or fr.filename == "solution.py":
                msg += " at %s:%s: %s" % (fr.filename, fr.lineno, (fr.line or "").strip())
                break
    return msg[:limit]
