"""Turn the assertion that compares a value with ``target`` into a call that records the value."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Optional

import numpy as np

from harness.data.testast import (BOOL_REDUCTIONS, RECORD, TARGET, bool_reduction, comparator, equality,
                                  is_target, mentions, param_names)

PLACEHOLDER_TEST = "pass  # unsupported test case: nothing is recorded\n"
# What a test without `target` gets in the file: an empty test group, which the
# official reader (and harness.data.h5targets) reads back as an empty tuple.
NO_TARGET = ()


# --------------------------------------------------------------------------- rewrite

@dataclass
class RewriteResult:
    """Outcome of rewriting one test case.

    kind: "none" (no target; source unchanged), a comparator's name ("allclose", "isclose",
    "array_equal", "cmp_tuple_or_list", "are_dicts_close", ...: testast.COMPARATORS),
    "helper:<name>", "eq", "tuple:<kind>,<kind>" (10.3 style), "unpack:<kind>" (the test
    unpacked the target first), "any:<kind>"/"all:<kind>" (it compares with ``target.any()``;
    see ``reduced_target``), or "unsupported".
    """
    source: Optional[str]          # test code to run in record mode; None when unsupported
    kind: str
    has_target: bool               # the test compares with `target`, so one value is recorded
    error: Optional[str] = None    # why it is unsupported

    @property
    def supported(self) -> bool:
        return self.error is None

    @property
    def reduced_by(self) -> Optional[str]:
        """"any"/"all" when the test compares with ``target.any()``/``target.all()``."""
        head = self.kind.split(":")[0]
        return head if head in BOOL_REDUCTIONS else None


def _target_index(node: ast.AST) -> Optional[int]:
    """k for ``target[k]`` with a literal non-negative int, else None."""
    if isinstance(node, ast.Subscript) and is_target(node.value):
        sl = node.slice
        if isinstance(sl, ast.Constant) and type(sl.value) is int and sl.value >= 0:
            return sl.value
    return None


def _target_method(node: ast.AST) -> Optional[str]:
    """"any"/"all" for ``target.any()``/``target.all()`` without arguments, else None."""
    reduced = bool_reduction(node)
    if reduced and is_target(reduced[0]) and not node.keywords:
        return reduced[1]
    return None


def _sides(node: ast.AST, helpers: set[str]) -> Optional[tuple[str, ast.expr, ast.expr]]:
    """(kind, a, b) when node compares two values: a comparator or a local helper called with
    two positional arguments (keywords such as tolerances may not use target), or ``a == b``."""
    eq = equality(node)
    if eq:
        return ("eq",) + eq
    if not isinstance(node, ast.Call):
        return None
    kind = comparator(node.func, numpy_prefix=True)
    if kind is None and isinstance(node.func, ast.Name) and node.func.id in helpers:
        kind = f"helper:{node.func.id}"
    if kind is None or len(node.args) != 2 or any(isinstance(a, ast.Starred) for a in node.args):
        return None
    if any(k.arg is None or mentions(k.value) for k in node.keywords):
        return None
    return kind, node.args[0], node.args[1]


def reduced_target(value, method: str):
    """The target to store for a test that compares a value c with ``target.any()``/``.all()``.

    Such a test sees its target only through the reduction, so the target it was written
    with cannot be recovered, and need not be: the rule is to store ``numpy.array([c])``, a
    one-element bool array b with b.any() == b.all() == c, so the original assertion,
    ``cmp(c, target.any())``, compares c with itself and passes for the reference code. An
    array, not a numpy bool: h5 reads a scalar back as ``numpy.bool_``, which the sandbox
    codec turns into a Python bool (no ``.any()``); an array stays an array on every path. A
    c that is no bool (a number, an array) has no such target: a reduction is one bool.
    Returns (target, None) or (None, why).
    """
    if isinstance(value, (bool, np.bool_)) or (
            isinstance(value, np.ndarray) and value.shape == () and value.dtype == np.bool_):
        return np.array([value], dtype=np.bool_), None
    shape = f" of shape {value.shape}" if isinstance(value, np.ndarray) else ""
    return None, (f"the test compares with target.{method}(), which is one bool, but the reference "
                  f"value is {type(value).__name__}{shape}: no target reduces to it")


def _match_comparison(node: ast.AST, helpers: set[str], indexed: bool):
    """Match one comparison with the target.

    Returns (kind, expr_node, index) where index is None for a bare ``target`` (or
    ``target.any()``: kind "any:<kind>") and k for ``target[k]`` (only when ``indexed``;
    then also ``cmp((target[1], target[2]), (E1, E2))`` -> (kind, [E1, E2], [1, 2]));
    None when it does not match.
    """
    sides = _sides(node, helpers)
    if sides is None:
        return None
    kind, a, b = sides
    for t, e in ((b, a), (a, b)):
        if mentions(e):
            continue
        if not indexed:
            if is_target(t):
                return kind, e, None
            if method := _target_method(t):
                return f"{method}:{kind}", e, None
        elif _target_index(t) is not None:
            return kind, e, _target_index(t)
    if indexed:
        for t, e in ((a, b), (b, a)):
            if (isinstance(t, ast.Tuple) and isinstance(e, ast.Tuple) and len(t.elts) == len(e.elts)
                    and all(_target_index(x) is not None for x in t.elts) and not mentions(e)):
                return kind, list(e.elts), [_target_index(x) for x in t.elts]
    return None


def _unpack_target(tree: ast.Module) -> Optional[tuple[ast.Module, int, int]]:
    """`a, b = target` then uses of a, b -> the same test with target[0], target[1] in their
    place (so the indexed matcher records the tuple). None when there is no such statement."""
    found = [st for st in tree.body if isinstance(st, ast.Assign) and len(st.targets) == 1
             and isinstance(st.targets[0], (ast.Tuple, ast.List)) and is_target(st.value)
             and all(isinstance(e, ast.Name) for e in st.targets[0].elts)]
    if len(found) != 1:
        return None
    names = {e.id: k for k, e in enumerate(found[0].targets[0].elts)}
    stores = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id in names
              and isinstance(n.ctx, ast.Store) and n not in found[0].targets[0].elts]
    if stores:
        return None

    class _Sub(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in names and isinstance(node.ctx, ast.Load):
                return ast.copy_location(ast.Subscript(value=ast.Name(TARGET, ast.Load()),
                                                       slice=ast.Constant(names[node.id]),
                                                       ctx=ast.Load()), node)
            return node

    body = [st for st in tree.body if st is not found[0]]
    new = ast.fix_missing_locations(_Sub().visit(ast.Module(body=body, type_ignores=[])))
    return new, len(names), found[0].lineno


def _match_assert(test: ast.AST, helpers: set[str], arity: Optional[int] = None):
    """(kind, expr_node_or_list) for an assertion test comparing with target; with
    `arity` (the test unpacked the target into that many names) every part is needed."""
    m = _match_comparison(test, helpers, indexed=False)
    if m:
        return m[0], m[1]
    # 10.3: `cmp(E0, target[0]) and cmp(E1, target[1])` -> record (E0, E1)
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        parts = {}
        kinds = []
        for v in test.values:
            m = _match_comparison(v, helpers, indexed=True)
            if not m:
                return None
            exprs, idxs = (m[1], m[2]) if isinstance(m[2], list) else ([m[1]], [m[2]])
            for e, k in zip(exprs, idxs):
                if k is None or k in parts:
                    return None
                parts[k] = e
            kinds.append(m[0])
        if sorted(parts) != list(range(len(parts))) or (arity is not None and len(parts) != arity):
            return None
        return "tuple:" + ",".join(kinds), [parts[i] for i in range(len(parts))]
    return None


def _local_functions(tree: ast.Module) -> set[str]:
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _free_target_refs(tree: ast.AST) -> list[ast.Name]:
    """`target` names not shadowed by a parameter of an enclosing function."""
    found = []

    def visit(node, shadowed):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = node.args
            params = param_names(a)
            for d in a.defaults + [d for d in a.kw_defaults if d is not None]:
                visit(d, shadowed)
            if not isinstance(node, ast.Lambda):
                for d in node.decorator_list:
                    visit(d, shadowed)
            body = node.body if isinstance(node.body, list) else [node.body]
            for b in body:
                visit(b, shadowed or TARGET in params)
            return
        if is_target(node) and not shadowed:
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child, shadowed)

    visit(tree, False)
    return found


def _record_stmt(expr, like: ast.stmt) -> ast.Expr:
    arg = ast.Tuple(elts=list(expr), ctx=ast.Load()) if isinstance(expr, list) else expr
    call = ast.Call(func=ast.Name(id=RECORD, ctx=ast.Load()), args=[arg], keywords=[])
    return ast.copy_location(ast.Expr(value=call), like)


def _line_offsets(src: str) -> list[int]:
    """Byte offset of each line start in the UTF-8 encoding (1-based lines)."""
    offs = [0, 0]
    for line in src.encode("utf-8").splitlines(keepends=True):
        offs.append(offs[-1] + len(line))
    return offs


def _splice(src: str, replacements: list[tuple[ast.stmt, str]]) -> str:
    """Replace each statement's exact source span with new text (keeps every other byte)."""
    data = src.encode("utf-8")
    offs = _line_offsets(src)
    spans = []
    for node, text in replacements:
        start = offs[node.lineno] + node.col_offset
        end = offs[node.end_lineno] + node.end_col_offset
        spans.append((start, end, text.encode("utf-8")))
    for start, end, text in sorted(spans, reverse=True):
        data = data[:start] + text + data[end:]
    return data.decode("utf-8")


def _segment(src: str, node: ast.AST) -> str:
    seg = ast.get_source_segment(src, node)
    return seg if seg is not None else ast.unparse(node)


def rewrite_test(test_src: str, label: str = "", _arity: Optional[int] = None) -> RewriteResult:
    """Rewrite one SciCode test case for record mode.

    The assertion comparing EXPR with ``target`` becomes ``__scicode_record__(EXPR)``
    (for 10.3's ``target[0]``/``target[1]`` joined by ``and``: the tuple of the
    compared expressions); every other statement is kept byte for byte.  A test
    without ``target`` is returned unchanged.  Any other use of ``target`` is
    reported as unsupported (``error`` names ``label``), never guessed.
    """
    where = f"{label}: " if label else ""
    try:
        tree = ast.parse(test_src)
    except SyntaxError as e:
        return RewriteResult(None, "unsupported", True, f"{where}syntax error: {e}")
    unpacked = _unpack_target(tree)
    if unpacked is not None:
        res = rewrite_test(ast.unparse(unpacked[0]) + "\n", label, unpacked[1])
        if res.supported:
            res.kind = "unpack:" + res.kind
            return res
        line = next(ln.strip() for ln in test_src.splitlines() if TARGET in ln)
        return RewriteResult(None, "unsupported", True,
                             f"{where}unsupported use of target: line {unpacked[2]}: {line[:120]} "
                             f"(one assertion must compare each of the {unpacked[1]} names once)")
    free_nodes = _free_target_refs(tree)
    free = {id(n) for n in free_nodes}
    if not free:
        return RewriteResult(test_src, "none", False)
    helpers = _local_functions(tree)
    replacements: list[tuple[ast.Assert, ast.Expr, str]] = []
    kinds = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Assert) or not any(id(n) in free for n in ast.walk(node)):
            continue
        m = _match_assert(node.test, helpers, _arity)
        if m is None or (node.msg is not None and mentions(node.msg)):
            return RewriteResult(None, "unsupported", True,
                                 f"{where}unsupported use of target: {ast.unparse(node)[:200]}")
        kind, expr = m
        kinds.append(kind)
        if isinstance(expr, list):
            text = f"{RECORD}((" + ", ".join(_segment(test_src, e) for e in expr) + ",))"
        else:
            text = f"{RECORD}({_segment(test_src, expr)})"
        replacements.append((node, _record_stmt(expr, node), text))
    if not replacements:
        first = min(free_nodes, key=lambda n: (n.lineno, n.col_offset))
        line = test_src.splitlines()[first.lineno - 1].strip()
        return RewriteResult(None, "unsupported", True,
                             f"{where}unsupported use of target: no assertion compares with it "
                             f"(line {first.lineno}: {line[:160]})")
    if len(replacements) > 1:
        return RewriteResult(None, "unsupported", True,
                             f"{where}unsupported use of target: {len(replacements)} assertions compare "
                             f"with it (one value per test case)")

    class _Swap(ast.NodeTransformer):
        def visit_Assert(self, node):
            for old, new, _ in replacements:
                if node is old:
                    return new
            return node

    new_tree = _Swap().visit(tree)
    ast.fix_missing_locations(new_tree)
    leftover = _free_target_refs(new_tree)
    if leftover:
        return RewriteResult(None, "unsupported", True,
                             f"{where}unsupported use of target: used outside the compared assertion "
                             f"(line {leftover[0].lineno})")
    spliced = _splice(test_src, [(old, text) for old, _, text in replacements])
    try:
        same = ast.dump(ast.parse(spliced)) == ast.dump(new_tree)
    except SyntaxError:
        same = False
    source = spliced if same else ast.unparse(new_tree) + "\n"
    return RewriteResult(source, kinds[0], True)

