"""Safe, pickle-free encoding of test values (targets and recorded results).

Encodes to plain JSON types: arrays, scalars, complex, bool, str, bytes, None,
tuples, lists, dicts (any hashable scalar keys) and scipy sparse matrices.
This file is also shipped verbatim into the sandbox runner and the verifier, so it may
import only the standard library, numpy and (lazily) scipy. Both also name exceptions
in their reports with `describe`.
"""
import base64
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
