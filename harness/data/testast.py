"""A SciCode test case read as an AST: the names and shapes that say how it compares with ``target``.

Two programs rewrite test cases and must read them the same way: ``targets build``
(harness.targets.rewrite records the value ``target`` should hold) and strict grading
(harness.run.grade.split splits a test into a sandbox half and a verifier half). This
module is what they share: which calls compare two values, how a called name is spelt,
which methods reduce a value to one bool (``target.any()``), and where ``target`` (or a
name derived from it) occurs. Nothing here runs or imports a test.
"""
from __future__ import annotations

import ast
from typing import Iterable, Optional

TARGET = "target"
RECORD = "__scicode_record__"      # the call through which a test hands a value out of the sandbox

NUMPY_MODULES = ("np", "numpy")
# comparison functions of two values, (EXPR, target) in either order; numpy's and upstream's
NUMPY_COMPARATORS = frozenset({"allclose", "isclose", "array_equal", "array_equiv", "equal"})
SCICODE_COMPARATORS = frozenset({"cmp_tuple_or_list", "are_dicts_close", "are_csc_matrix_close"})
COMPARATORS = NUMPY_COMPARATORS | SCICODE_COMPARATORS
# methods that reduce a value to one bool (`np.isclose(a, b).any()`, `target.any()`)
BOOL_REDUCTIONS = frozenset({"all", "any"})


def chain(node: ast.AST) -> list[str]:
    """np.random.randn -> ["np", "random", "randn"]; [] for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts[::-1]
    return []


def comparator(func: ast.AST, numpy_prefix: bool = False) -> Optional[str]:
    """The comparison function a call names (``np.allclose`` -> "allclose"), else None.

    numpy_prefix: numpy's names count only bare or as ``np.``/``numpy.`` attributes (so
    ``other.equal`` is no comparator); upstream's names count under any prefix.
    """
    ch = chain(func)
    if not ch or ch[-1] not in COMPARATORS:
        return None
    prefix = ch[:-1]
    if numpy_prefix and ch[-1] in NUMPY_COMPARATORS and prefix and (len(prefix) > 1 or prefix[0] not in NUMPY_MODULES):
        return None
    return ch[-1]


def bool_reduction(node: ast.AST) -> Optional[tuple[ast.expr, str]]:
    """(R, method) for ``R.any()`` / ``R.all()`` called without positional arguments, else None."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in BOOL_REDUCTIONS and not node.args):
        return node.func.value, node.func.attr
    return None


def equality(node: ast.AST) -> Optional[tuple[ast.expr, ast.expr]]:
    """(a, b) for the single comparison ``a == b``, else None."""
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        return node.left, node.comparators[0]
    return None


def is_target(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == TARGET


def mentions(node: ast.AST, names: Iterable[str] = (TARGET,)) -> bool:
    """Whether node names any of `names` (default: ``target``) anywhere inside."""
    names = names if isinstance(names, (set, frozenset)) else set(names)
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(node))


def param_names(args: ast.arguments) -> set[str]:
    """Every name a function's parameters bind (``*args`` and ``**kw`` included)."""
    out = {x.arg for x in args.posonlyargs + args.args + args.kwonlyargs}
    out |= {x.arg for x in (args.vararg, args.kwarg) if x is not None}
    return out
