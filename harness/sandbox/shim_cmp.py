"""Stand-in for SciCode's ``scicode.compare.cmp`` inside the sandbox.

Written for this harness from the documented behaviour of the upstream helpers
(``cmp_tuple_or_list``, ``are_dicts_close``, ``are_csc_matrix_close`` and the
symbol normalisation they use); the test snippets of the SciCode dataset import
these names, so the verdicts must match upstream's exactly, including its quirks:

* dict values that are sympy Symbols are compared as strings, and Symbol keys
  become string keys (a Symbol key keeps its *original* value);
* dict values: strings and Symbols by ``==``; the four scipy sparse *matrix*
  classes densified and compared with ``np.allclose(atol, rtol)``; anything else
  with ``np.allclose(atol, rtol)``, falling back to ``==`` only on ValueError
  (a TypeError propagates to the test);
* tuple/list items: dicts as above, csr/csc matrices densified with default
  tolerances, bools by ``==``, anything else ``np.allclose`` with the ValueError
  message printed and ``==`` as the fallback.

The runner ships this file verbatim and loads it only when a test imports
``scicode.compare.cmp``, so jobs that never compare pay nothing for sympy.
Module-level names (np, scipy, sympy) mirror upstream, for ``import *``.
"""
import numpy as np
import scipy.sparse
try:
    import sympy
except ImportError:  # hosts without sympy: no value can be a Symbol
    class _NoSympy:
        class Symbol:
            pass
    sympy = _NoSympy()

# the verifier swaps in its strict version (vacuous comparisons fail); same signature
_allclose = np.allclose

_DICT_SPARSE = (scipy.sparse.csr_matrix, scipy.sparse.csc_matrix,
                scipy.sparse.bsr_matrix, scipy.sparse.coo_matrix)
_LIST_SPARSE = (scipy.sparse.csr_matrix, scipy.sparse.csc_matrix)


def process_symbol_in_dict(d):
    """Copy of d with Symbol values stringified and Symbol keys turned into str keys."""
    out = {}
    for k, v in d.items():
        out[k] = str(v) if isinstance(v, sympy.Symbol) else v
        if isinstance(k, sympy.Symbol):
            # upstream re-inserts the untouched value under the string key
            out.pop(k)
            out[str(k)] = d[k]
    return out


def _values_close(a, b, atol, rtol):
    if isinstance(a, (sympy.Symbol, str)):
        return a == b
    if isinstance(a, _DICT_SPARSE):
        return bool(_allclose(a.toarray(), b.toarray(), atol=atol, rtol=rtol))
    try:
        return bool(_allclose(a, b, atol=atol, rtol=rtol))
    except ValueError:
        return bool(a == b)


def are_dicts_close(dict1, dict2, atol=1e-8, rtol=1e-5):
    """True when both dicts have the same keys and every pair of values is close."""
    left = process_symbol_in_dict(dict1)
    right = process_symbol_in_dict(dict2)
    if left.keys() != right.keys():
        return False
    return all(_values_close(left[k], right[k], atol, rtol) for k in left)


def are_csc_matrix_close(matrix1, matrix2):
    """Densify two sparse matrices and compare with np.allclose's default tolerances."""
    return bool(_allclose(matrix1.toarray(), matrix2.toarray()))


def _items_close(a, b):
    if isinstance(a, dict):
        return are_dicts_close(a, b)
    if isinstance(a, _LIST_SPARSE):
        return are_csc_matrix_close(a, b)
    if isinstance(a, bool):
        return a == b
    try:
        return bool(_allclose(a, b))
    except ValueError as exc:
        print(exc)
        return bool(a == b)


def cmp_tuple_or_list(var1, var2):
    """Element-wise closeness of two equally long sequences (see module docstring)."""
    if len(var1) != len(var2):
        return False
    return all(_items_close(a, b) for a, b in zip(var1, var2))
