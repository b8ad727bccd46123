"""Targets in the official SciCode test_data.h5 schema: reader, cheap completeness check, writer.

Schema (as upstream's ``process_hdf5_to_tuple`` reads it):

  /<step_id>/test<k>             one group per test case, k = 1..n
      one child                  -> that child's value
      several children           -> a tuple of the children's values, in h5py key
                                    order (lexicographic: var10 sorts before var2)
  a child that is a dataset      -> its value; a bytes scalar is decoded to str
  a child that is a group        -> dispatched on its *first* key:
      "list"                     -> list of the datasets under it, in key order
                                    (values as stored: bytes are NOT decoded)
      "sparse_matrix"            -> scipy sparse matrix from data + shape and
                                    row/col (COO), else blocksize (BSR), else CSR
      anything else              -> dict: a sub-group value is a sparse matrix
                                    (its "sparse_matrix" child); a bytes value is
                                    decoded (key kept as str); any other value is
                                    kept, its key turned into a float when
                                    float(key) succeeds
      empty group                -> None

The reader reproduces those semantics exactly (including the quirks), because
the tests compare against exactly what upstream would hand them.

The writer (`write_targets`) only writes values the reader gives back unchanged
(up to sequences coming back as numpy arrays, int dict keys as equal floats,
numpy scalars for Python scalars, and CSC/other sparse formats as CSR), and raises
ValueError for anything else rather than writing an ambiguous file:
  * a tuple is written as var1..varN; more than 9 elements would be read back in
    the wrong order (var10 < var2), and zero-padded names are not the official
    naming, so >9 raises (the official data's largest tuple is 7). A 1-tuple would
    read back as a bare value, so it raises too. The same 9-element limit applies
    to `list` groups.
  * a list/tuple nested inside a value is stored as an array when np.array() makes
    a numeric (or bytes) array of it, else as a `list` group whose elements must
    themselves be arrays or numbers (the reader reads list elements raw).
  * dict values may be numbers, numeric arrays/sequences, str or sparse matrices
    (a nested dict would be read back as a sparse matrix); keys must survive the
    float() conversion described above; "list"/"sparse_matrix" are reserved keys.
  * None, bytes, empty dicts and object/unicode arrays raise.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from harness.errors import HarnessError
from harness.util.paths import atomic_path

MAX_SEQ = 9   # var1..var9 sort correctly; var10 would sort before var2
RESERVED_KEYS = ("list", "sparse_matrix")


class TargetsError(HarnessError, OSError):
    """A one-line problem with a targets file (unreadable, missing step or test).
    An OSError, so callers that catch file errors catch it too."""


def _h5py():
    import h5py
    return h5py


def _open(path, mode="r"):
    h5py = _h5py()
    try:
        return h5py.File(path, mode)
    except FileNotFoundError:
        raise TargetsError(f"{path}: no such file") from None
    except OSError as e:
        raise TargetsError(f"{path}: not a readable HDF5 file ({str(e).splitlines()[0]})") from None


# ---------------------------------------------------------------- reader

def _sparse(group):
    import scipy.sparse as sp
    data = group["data"][()]
    shape = tuple(group["shape"][()])
    if "row" in group and "col" in group:
        return sp.coo_matrix((data, (group["row"][()], group["col"][()])), shape=shape)
    if "blocksize" in group:
        return sp.bsr_matrix((data, group["indices"][()], group["indptr"][()]), shape=shape,
                             blocksize=tuple(group["blocksize"][()]))
    return sp.csr_matrix((data, group["indices"][()], group["indptr"][()]), shape=shape)


def _list(group):
    h5py = _h5py()
    out = []
    for key in group.keys():
        obj = group[key]
        if not isinstance(obj, h5py.Dataset):
            raise TargetsError(f"{obj.name}: a list element that is not a dataset")
        out.append(obj[()])
    return out


def _dict(group):
    h5py = _h5py()
    out = {}
    for key, obj in group.items():
        if isinstance(obj, h5py.Group):
            if "sparse_matrix" not in obj:
                raise TargetsError(f"{obj.name}: a dict sub-group without sparse_matrix")
            out[key] = _sparse(obj["sparse_matrix"])
            continue
        value = obj[()]
        if isinstance(value, bytes):
            out[key] = value.decode("utf-8", errors="strict")
            continue
        try:
            out[float(key)] = value
        except ValueError:
            out[key] = value
    return out


def _datagroup(group):
    keys = list(group.keys())
    if not keys:
        return None
    if keys[0] == "list":
        return _list(group["list"])
    if keys[0] == "sparse_matrix":
        return _sparse(group["sparse_matrix"])
    return _dict(group)


def _value(obj):
    h5py = _h5py()
    if isinstance(obj, h5py.Dataset):
        value = obj[()]
        return value.decode("utf-8", errors="strict") if isinstance(value, bytes) else value
    if isinstance(obj, h5py.Group):
        return _datagroup(obj)
    raise TargetsError(f"{obj.name}: neither a dataset nor a group")


def _read_test(f, step_id: str, k: int):
    h5py = _h5py()
    path = f"{step_id}/test{k}"
    if path not in f:
        raise TargetsError(f"{f.filename}: no targets for step {step_id} test {k} (/{path} missing)")
    group = f[path]
    if not isinstance(group, h5py.Group):
        raise TargetsError(f"{f.filename}: /{path} is not a group")
    keys = list(group.keys())
    if len(keys) == 1:
        return _value(group[keys[0]])
    return tuple(_value(group[key]) for key in keys)


def read_step_targets(path, step_id: str, n: int) -> list:
    """Targets of tests 1..n of a step, as upstream's process_hdf5_to_tuple returns them."""
    with _open(path) as f:
        return [_read_test(f, str(step_id), k) for k in range(1, n + 1)]


def read_targets(path, steps: Mapping[str, int]) -> dict[str, list]:
    """{step_id: targets} for several steps, opening the file once."""
    with _open(path) as f:
        return {str(s): [_read_test(f, str(s), k) for k in range(1, n + 1)] for s, n in steps.items()}


def missing_entries(path, steps: Mapping[str, int]) -> list[str]:
    """Paths ("13.1" or "13.1/test3") a run needs but the file lacks; no value is decoded.
    A missing step is reported once, not per test."""
    h5py = _h5py()
    out = []
    with _open(path) as f:
        for step, n in steps.items():
            step = str(step)
            if n <= 0:
                continue
            if step not in f or not isinstance(f[step], h5py.Group):
                out.append(step)
                continue
            g = f[step]
            for k in range(1, n + 1):
                name = f"test{k}"
                if name not in g or not isinstance(g[name], h5py.Group):
                    out.append(f"{step}/{name}")
    return out


def missing_steps(path, steps: Mapping[str, int]) -> list[str]:
    """Step ids (in the given order) for which the file lacks the group or any of the
    tests 1..n the run needs. Cheap: only looks at names."""
    seen = []
    for entry in missing_entries(path, steps):
        step = entry.split("/", 1)[0]
        if step not in seen:
            seen.append(step)
    return seen


# ---------------------------------------------------------------- writer

def _is_sparse(v) -> bool:
    try:
        import scipy.sparse as sp
    except ImportError:   # pragma: no cover
        return False
    return sp.issparse(v)


def _numeric_array(value):
    """np.array(value) when that gives an array h5py stores and reads back as is
    (bool/int/uint/float/complex, or fixed bytes), else None."""
    try:
        arr = np.array(value)
    except (ValueError, TypeError):
        return None
    return arr if arr.dtype.kind in "biufc" or (arr.dtype.kind == "S" and arr.ndim > 0) else None


def _write_sparse(parent, name: str, m, where: str):
    fmt = m.format
    if fmt not in ("coo", "bsr", "csr"):
        m = m.tocsr()   # CSC (and others) would be misread as CSR from their own arrays
        fmt = "csr"
    g = parent.create_group(name).create_group("sparse_matrix")
    g.create_dataset("data", data=np.asarray(m.data))
    g.create_dataset("shape", data=np.asarray(m.shape, dtype=np.int64))
    if fmt == "coo":
        g.create_dataset("row", data=np.asarray(m.row))
        g.create_dataset("col", data=np.asarray(m.col))
    else:
        g.create_dataset("indices", data=np.asarray(m.indices))
        g.create_dataset("indptr", data=np.asarray(m.indptr))
        if fmt == "bsr":
            g.create_dataset("blocksize", data=np.asarray(m.blocksize, dtype=np.int64))


def _write_scalar_or_array(parent, name: str, value, where: str) -> bool:
    """Write value as a dataset if it is a number, bool, str or storable array; else False."""
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        raise ValueError(f"{where}: bytes are not supported (they would read back as str)")
    if isinstance(value, str):
        parent.create_dataset(name, data=str(value), dtype=_h5py().string_dtype("utf-8"))
        return True
    if isinstance(value, (bool, int, float, complex, np.bool_, np.number)):
        if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**63:
            raise ValueError(f"{where}: integer {value} does not fit in int64")
        parent.create_dataset(name, data=value)
        return True
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufcS" or (value.dtype.kind == "S" and value.ndim == 0):
            raise ValueError(f"{where}: arrays of dtype {value.dtype} (ndim {value.ndim}) are not supported")
        parent.create_dataset(name, data=value)
        return True
    return False


def _write_item(parent, name: str, value, where: str):
    """A value at a test's top level or as a tuple element."""
    if value is None:
        raise ValueError(f"{where}: None is not supported")
    if _write_scalar_or_array(parent, name, value, where):
        return
    if _is_sparse(value):
        _write_sparse(parent, name, value, where)
        return
    if isinstance(value, dict):
        if not value:
            raise ValueError(f"{where}: an empty dict would read back as None")
        _write_dict(parent.create_group(name), value, where)
        return
    if isinstance(value, (list, tuple)):
        arr = _numeric_array(value)
        if arr is not None:
            parent.create_dataset(name, data=arr)
            return
        if len(value) > MAX_SEQ:
            raise ValueError(f"{where}: a ragged/non-numeric sequence of {len(value)} elements "
                             f"(at most {MAX_SEQ}: var10 would sort before var2)")
        lst = parent.create_group(name).create_group("list")
        for i, item in enumerate(value, 1):
            w = f"{where}[{i - 1}]"
            if isinstance(item, str):
                raise ValueError(f"{w}: str inside a list group would read back as bytes")
            _write_leaf(lst, f"var{i}", item, w, "inside a list (elements must be numbers or arrays)")
        return
    raise ValueError(f"{where}: values of type {type(value).__module__}.{type(value).__name__} "
                     f"are not supported")


def _floatable(name: str) -> bool:
    try:
        float(name)
        return True
    except ValueError:
        return False


def _key_name(key, value_keeps_str_key: bool, where: str) -> str:
    if isinstance(key, (bool, np.bool_)):
        raise ValueError(f"{where}: bool dict key {key!r} is not supported")
    if isinstance(key, str):
        name = str(key)
        if not value_keeps_str_key and _floatable(name):
            raise ValueError(f"{where}: str key {key!r} would read back as a float")
    elif isinstance(key, (int, float, np.integer, np.floating)):
        if value_keeps_str_key:
            raise ValueError(f"{where}: numeric key {key!r} with a str/sparse value would read back as str")
        name = repr(float(key)) if isinstance(key, (float, np.floating)) else str(int(key))
        if float(name) != key:
            raise ValueError(f"{where}: key {key!r} does not survive float() (NaN or too large)")
    else:
        raise ValueError(f"{where}: dict key of type {type(key).__name__} is not supported")
    if not name or "/" in name or name == "." or name in RESERVED_KEYS:
        raise ValueError(f"{where}: dict key {key!r} is not a usable name")
    return name


def _write_dict(group, d: dict, where: str):
    names = set()
    for key, value in d.items():
        w = f"{where}[{key!r}]"
        keeps_str = isinstance(value, str) or _is_sparse(value)
        name = _key_name(key, keeps_str, w)
        if name in names:
            raise ValueError(f"{w}: two keys map to the same name {name!r}")
        names.add(name)
        if value is None:
            raise ValueError(f"{w}: None is not supported")
        if _is_sparse(value):
            _write_sparse(group, name, value, w)
        elif isinstance(value, dict):
            raise ValueError(f"{w}: nested dicts are not supported (read back as a sparse matrix)")
        else:
            _write_leaf(group, name, value, w, "in a dict")


def _write_leaf(group, name: str, value, where: str, context: str):
    """A numeric sequence, scalar or array as one dataset; else a ValueError naming `context`."""
    if isinstance(value, (list, tuple)):
        arr = _numeric_array(value)
        if arr is None:
            raise ValueError(f"{where}: ragged or non-numeric sequences are not supported {context}")
        group.create_dataset(name, data=arr)
    elif value is None or not _write_scalar_or_array(group, name, value, where):
        raise ValueError(f"{where}: values of type {type(value).__name__} are not supported {context}")


def _write_test(group, value, where: str):
    if isinstance(value, tuple):
        if len(value) == 1:
            raise ValueError(f"{where}: a 1-tuple would read back as its bare element")
        if len(value) > MAX_SEQ:
            raise ValueError(f"{where}: a tuple of {len(value)} elements (at most {MAX_SEQ}: "
                             f"var10 would sort before var2 in h5py key order)")
        for i, item in enumerate(value, 1):
            _write_item(group, f"var{i}", item, f"{where}[{i - 1}]")
    else:
        _write_item(group, "var1", value, where)


def write_targets(path, targets: Mapping[str, Iterable[Any]], *, merge: bool = False) -> Path:
    """Write {step_id: [target of test 1, test 2, ...]} in the official schema.

    The file is written to a temp file next to `path` and renamed into place. With
    merge=True, steps of an existing file at `path` that `targets` does not name are
    copied over. Raises ValueError (naming the step, test and element) for values the
    reader would not give back unchanged; see the module docstring.
    """
    h5py = _h5py()
    path = Path(path)
    with atomic_path(path, 0o644) as tmp, h5py.File(tmp, "w") as f:   # a sandbox user reads it
        for step_id, values in targets.items():
            step = str(step_id)
            if not step or "/" in step:
                raise ValueError(f"bad step id {step_id!r}")
            g = f.create_group(step)
            for k, value in enumerate(values, 1):
                _write_test(g.create_group(f"test{k}"), value, f"step {step} test {k}")
        if merge and path.exists():
            with _open(path) as old:
                for name in old.keys():
                    if name not in f:
                        old.copy(old[name], f, name)
    return path


def list_steps(path: Path) -> dict[str, int]:
    """{step_id: number of test<k> entries} in an h5 targets file."""
    import h5py
    out = {}
    with h5py.File(path, "r") as f:
        for sid in f.keys():
            g = f[sid]
            if isinstance(g, h5py.Group):
                out[sid] = sum(1 for k in g.keys() if k.startswith("test") and k[4:].isdigit())
    return out
