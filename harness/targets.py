"""Reference targets regenerated from gold solutions.

SciCode compares each test case's result with a stored ``target`` value (the
official ``test_data.h5``).  For problems that ship gold code (the dev split,
user-written problems) the targets can be made locally:

1. ``rewrite_test`` turns the one assertion that compares something with
   ``target`` into ``__scicode_record__(EXPR)`` so running the test records the
   value the assertion would compare against ``target``;
2. ``build`` runs every step's gold code (all previous steps' gold code + this
   step's) with the rewritten tests in the sandbox, twice by default, decodes
   the recorded values (``harness.sandbox.codec``, never pickle), compares the runs and
   writes the values with ``harness.data.h5targets.write_targets``;
3. ``check`` compares such a file with an official one.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

from harness.run.schedule import History, PriorityPool

RECORD = "__scicode_record__"
TARGET = "target"
PLACEHOLDER_TEST = "pass  # unsupported test case: nothing is recorded\n"
# What a test without `target` gets in the file: an empty test group, which the
# official reader (and harness.data.h5targets) reads back as an empty tuple.
NO_TARGET = ()

# comparison functions whose two positional arguments are (EXPR, target) in either order
_NUMPY_COMPARATORS = {"allclose", "isclose", "array_equal"}
_SCICODE_COMPARATORS = {"cmp_tuple_or_list", "are_dicts_close", "are_csc_matrix_close"}


# --------------------------------------------------------------------------- rewrite

@dataclass
class RewriteResult:
    """Outcome of rewriting one test case.

    kind: "none" (no target; source unchanged), "allclose"/"isclose"/"array_equal",
    "cmp_tuple_or_list", "are_dicts_close", "are_csc_matrix_close", "helper:<name>",
    "eq", "tuple:<kind>,<kind>" (10.3 style), or "unsupported".
    """
    source: Optional[str]          # test code to run in record mode; None when unsupported
    kind: str
    has_target: bool               # the test compares with `target`, so one value is recorded
    error: Optional[str] = None    # why it is unsupported

    @property
    def supported(self) -> bool:
        return self.error is None


def _is_target(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == TARGET


def _target_index(node: ast.AST) -> Optional[int]:
    """k for ``target[k]`` with a literal non-negative int, else None."""
    if isinstance(node, ast.Subscript) and _is_target(node.value):
        sl = node.slice
        if isinstance(sl, ast.Constant) and type(sl.value) is int and sl.value >= 0:
            return sl.value
    return None


def _mentions_target(node: ast.AST) -> bool:
    return any(_is_target(n) for n in ast.walk(node))


def _func_name(func: ast.AST) -> tuple[Optional[str], Optional[str]]:
    """(module-ish prefix, name) of a called function: np.allclose -> ("np", "allclose")."""
    if isinstance(func, ast.Name):
        return None, func.id
    if isinstance(func, ast.Attribute):
        base = func.value
        prefix = base.id if isinstance(base, ast.Name) else ast.unparse(base)
        return prefix, func.attr
    return None, None


def _match_comparison(node: ast.AST, helpers: set[str], indexed: bool):
    """Match one comparison with the target.

    Returns (kind, expr_node, index) where index is None for a bare ``target``
    and k for ``target[k]`` (only when ``indexed``); None when it does not match.
    """
    def is_tgt(n):
        if indexed:
            return _target_index(n) is not None
        return _is_target(n)

    def idx(n):
        return _target_index(n) if indexed else None

    if indexed:
        pair = _match_tuple_pair(node, helpers)
        if pair:
            return pair
    if isinstance(node, ast.Call):
        prefix, name = _func_name(node.func)
        if name is None:
            return None
        if name in _NUMPY_COMPARATORS and prefix in ("np", "numpy", None):
            kind = name
        elif name in _SCICODE_COMPARATORS:
            kind = name
        elif isinstance(node.func, ast.Name) and name in helpers:
            kind = f"helper:{name}"
        else:
            return None
        if len(node.args) != 2 or any(isinstance(a, ast.Starred) for a in node.args):
            return None
        if any(k.arg is None or _mentions_target(k.value) for k in node.keywords):
            return None
        a, b = node.args
        if is_tgt(b) and not _mentions_target(a):
            return kind, a, idx(b)
        if is_tgt(a) and not _mentions_target(b):
            return kind, b, idx(a)
        return None
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        a, b = node.left, node.comparators[0]
        if is_tgt(b) and not _mentions_target(a):
            return "eq", a, idx(b)
        if is_tgt(a) and not _mentions_target(b):
            return "eq", b, idx(a)
    return None


def _match_tuple_pair(node: ast.AST, helpers: set[str]):
    """cmp((target[1], target[2]), (E1, E2)) -> (kind, [E1, E2], [1, 2])."""
    if isinstance(node, ast.Call):
        prefix, name = _func_name(node.func)
        ok = (name in _NUMPY_COMPARATORS and prefix in ("np", "numpy", None)) or name in _SCICODE_COMPARATORS
        if not ok or len(node.args) != 2 or node.keywords:
            return None
        a, b, kind = node.args[0], node.args[1], name
    elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        a, b, kind = node.left, node.comparators[0], "eq"
    else:
        return None
    for t, e in ((a, b), (b, a)):
        if (isinstance(t, ast.Tuple) and isinstance(e, ast.Tuple) and len(t.elts) == len(e.elts)
                and all(_target_index(x) is not None for x in t.elts)
                and not _mentions_target(e)):
            return kind, list(e.elts), [_target_index(x) for x in t.elts]
    return None


def _unpack_target(tree: ast.Module) -> Optional[tuple[ast.Module, int, int]]:
    """`a, b = target` then uses of a, b -> the same test with target[0], target[1] in their
    place (so the indexed matcher records the tuple). None when there is no such statement."""
    found = [st for st in tree.body if isinstance(st, ast.Assign) and len(st.targets) == 1
             and isinstance(st.targets[0], (ast.Tuple, ast.List)) and _is_target(st.value)
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
            params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
            params |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
            for d in a.defaults + [d for d in a.kw_defaults if d is not None]:
                visit(d, shadowed)
            if not isinstance(node, ast.Lambda):
                for d in node.decorator_list:
                    visit(d, shadowed)
            body = node.body if isinstance(node.body, list) else [node.body]
            for b in body:
                visit(b, shadowed or TARGET in params)
            return
        if _is_target(node) and not shadowed:
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
        if m is None or (node.msg is not None and _mentions_target(node.msg)):
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


# --------------------------------------------------------------------------- values

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


# --------------------------------------------------------------------------- build

@dataclass
class Issue:
    step: str
    test: Optional[int]          # 1-based (h5 "test<k>"); None = the whole step
    message: str
    run: Optional[int] = None    # 1-based run number where relevant

    def __str__(self):
        where = self.step + (f" test{self.test}" if self.test is not None else "")
        run = f" (run {self.run})" if self.run is not None else ""
        return f"{where}{run}: {self.message}"


@dataclass
class BuildReport:
    out: Optional[str]
    split: str
    runs: int
    backend: str = ""
    memory: str = ""                     # the jobs' memory limit
    steps: int = 0                       # steps with test cases
    tests: int = 0                       # their test cases
    tests_with_target: int = 0
    tests_without_target: int = 0
    steps_written: list = field(default_factory=list)
    steps_missing: list = field(default_factory=list)    # steps left without targets
    unsupported: list = field(default_factory=list)      # Issue
    flaky: list = field(default_factory=list)            # Issue
    failed: list = field(default_factory=list)           # Issue
    skipped_steps: list = field(default_factory=list)    # steps with no tests (prefilled)
    duration: float = 0.0
    # the values written, {step_id: [value per test]} (not part of to_dict)
    targets: dict = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not self.steps_missing

    def to_dict(self) -> dict:
        d = asdict(dataclasses.replace(self, targets={}))
        d.pop("targets")
        for k in ("unsupported", "flaky", "failed"):
            d[k] = [asdict(i) for i in getattr(self, k)]
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        lines = [
            f"targets: {len(self.steps_written)}/{self.steps} steps written, "
            f"{self.tests} tests ({self.tests_with_target} with target, {self.tests_without_target} without), "
            f"{self.runs} run(s) each on {self.backend or '?'} (memory {self.memory or '?'}) "
            f"in {self.duration:.1f}s",
            f"  unsupported: {len(self.unsupported)}  flaky: {len(self.flaky)}  failed: {len(self.failed)}"
            f"  steps without targets: {len(self.steps_missing)}",
        ]
        for title, items in (("unsupported", self.unsupported), ("flaky", self.flaky), ("failed", self.failed)):
            for it in items:
                lines.append(f"  {title}: {it}")
        if self.steps_missing:
            lines.append("  steps without targets: " + ", ".join(self.steps_missing))
        oom = sorted({f.step for f in self.failed if "out of memory" in f.message}, key=_step_key)
        if oom:
            lines.append(f"  hint: {', '.join(oom)} ran out of memory at the {self.memory or 'default'} limit; "
                         f"gold code may need more (e.g. --memory {_more_memory(self.memory)})")
        if self.out:
            lines.append(f"  written to {self.out}")
        return "\n".join(lines)


@dataclass
class StepPlan:
    step_id: str
    problem_id: str
    code: str
    tests: list[str]                 # original test cases
    rewrites: list[RewriteResult]

    def job_tests(self) -> list[str]:
        return [r.source if r.supported else PLACEHOLDER_TEST for r in self.rewrites]


def load_problem_file(path: Path) -> list[dict]:
    """Problems in SciCode's JSONL format (one problem object per line)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
    for p in out:
        if "problem_id" not in p or "sub_steps" not in p:
            raise ValueError(f"{path}: every problem needs problem_id and sub_steps")
    return out


def load_problems(split: str = "dev", problems_path: Optional[Path] = None) -> list[dict]:
    """The split's problems, or the problems of a SciCode-format JSONL file."""
    if problems_path is not None:
        return load_problem_file(Path(problems_path))
    from harness.data import dataset
    return dataset.load_problems(split)


def _prefilled(step_id: str) -> Optional[str]:
    try:
        from harness.data.dataset import SKIPPED_STEPS, prefilled_code
    except ImportError:
        return None
    if step_id in SKIPPED_STEPS:
        return prefilled_code(step_id)
    return None


def has_gold(problem: dict) -> bool:
    """Whether any step of the problem ships gold code (the test split ships none)."""
    return any(s.get("ground_truth_code") for s in problem.get("sub_steps", []))


def plan_steps(problems: Iterable[dict], skipped: Optional[list] = None) -> list[StepPlan]:
    """One plan per step with tests: code = deps + previous gold (or prefilled) + this gold.

    Problems without any gold code are left out (so split "all" plans the dev part);
    a step with tests but no gold code in a problem that has some is an error.
    """
    from harness.run import candidate
    problems = list(problems)
    with_gold = [p for p in problems if has_gold(p)]
    if problems and not with_gold:
        raise ValueError("none of these problems ships gold code (ground_truth_code); the test split has "
                         "none -- build targets for --split dev or for --problems FILE with gold code")
    plans = []
    for prob in with_gold:
        deps = prob.get("required_dependencies") or ""
        prev: list[str] = []
        for step in prob["sub_steps"]:
            sid = str(step["step_number"])
            tests = list(step.get("test_cases") or [])
            gold = step.get("ground_truth_code")
            if not tests:
                code = _prefilled(sid) or gold or ""
                prev.append(code)
                if skipped is not None:
                    skipped.append(sid)
                continue
            if not gold:
                raise ValueError(f"step {sid} has no ground_truth_code (gold code is needed for targets)")
            code = candidate.program(deps, prev, gold)  # the pipeline's order and joins
            prev.append(gold)
            rewrites = [rewrite_test(t, f"{sid} test{i + 1}") for i, t in enumerate(tests)]
            plans.append(StepPlan(sid, str(prob["problem_id"]), code, tests, rewrites))
    return plans


def _tail(s: str, n: int = 300) -> str:
    s = (s or "").strip()
    return s if len(s) <= n else "..." + s[-n:]


def _interpret(plan: StepPlan, outcome) -> tuple[list, Optional[str]]:
    """(per test: ("ok", value) | ("ok", None) for no target | ("fail", message) |
    ("unsupported", None); a message when the whole step failed, else None)."""
    from harness.sandbox import codec
    n = len(plan.tests)
    rep = getattr(outcome, "report", None)
    if not rep:
        msg = f"no runner report (status {outcome.status}, exit {outcome.exit_code}"
        msg += ", timed out" if outcome.timed_out else ""
        msg += ", out of memory" if outcome.oom_killed else ""
        msg += f"): {_tail(outcome.stderr)}"
        return [("fail", msg)] * n, msg
    if rep.get("import_error"):
        msg = f"gold code failed before the tests: {_tail(rep['import_error'])}"
        return [("fail", msg)] * n, msg
    statuses = rep.get("tests") or []
    records = rep.get("records") or []
    results = []
    for i in range(n):
        rw = plan.rewrites[i]
        if not rw.supported:
            results.append(("unsupported", None))
            continue
        if i >= len(statuses):
            why = "run stopped before this test" if not rep.get("completed") else "no status reported"
            results.append(("fail", why + (f" (status {outcome.status})" if outcome.status != "ok" else "")))
            continue
        st = statuses[i]
        if st.get("status") != "pass":
            results.append(("fail", f"{st.get('status')}: {_tail(st.get('error') or '')}"))
            continue
        recs = records[i] if i < len(records) and records[i] is not None else []
        if not rw.has_target:
            results.append(("ok", None))
            continue
        if len(recs) != 1:
            results.append(("fail", f"recorded {len(recs)} values (expected 1)"))
            continue
        try:
            results.append(("ok", codec.decode(recs[0])))
        except Exception as e:
            results.append(("fail", f"cannot decode recorded value: {e}"))
    return results, None


def _get_backend(backend, workers: int):
    """(backend, owned) from a Backend object, a kind name or None (auto)."""
    if backend is not None and not isinstance(backend, str):
        return backend, False
    from harness.sandbox.select import get_backend
    return get_backend(backend or "auto", workers=workers), True


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def build(split: str = "dev", out: Optional[Path] = None, problems_path: Optional[Path] = None,
          backend=None, runs: int = 2, progress: Optional[Callable[[str], None]] = print,
          workers: Optional[int] = None, timeout: Optional[float] = None,
          memory: Optional[str] = None, steps: Optional[Iterable[str]] = None,
          problems: Optional[list] = None) -> BuildReport:
    """Regenerate targets by running gold code; write them to ``out`` (h5, official schema).

    backend: a Backend instance (used, not closed), a kind ("docker"/"process"/"auto") or None.
    steps: optional subset of step ids (for debugging).
    problems: already loaded problems (instead of loading `split` / `problems_path`).
    """
    from harness.sandbox import Job, Limits

    if runs < 1:
        raise ValueError("runs must be >= 1")
    say = progress or (lambda s: None)
    t0 = time.monotonic()
    if problems is None:
        problems = load_problems(split, problems_path)
    skipped: list = []
    plans = plan_steps(problems, skipped)
    if steps is not None:
        wanted = {str(s) for s in steps}
        plans = [p for p in plans if p.step_id in wanted]
    label = "problems " + str(problems_path) if problems_path else split
    report = BuildReport(out=str(out) if out else None, split=label, runs=runs, skipped_steps=skipped)
    report.steps = len(plans)
    for p in plans:
        report.tests += len(p.tests)
        for i, rw in enumerate(p.rewrites):
            if not rw.supported:
                msg = (rw.error or "unsupported").removeprefix(f"{p.step_id} test{i + 1}: ")
                report.unsupported.append(Issue(p.step_id, i + 1, msg))
            elif rw.has_target:
                report.tests_with_target += 1
            else:
                report.tests_without_target += 1

    nworkers = workers or default_workers()
    be, owned = _get_backend(backend, nworkers)
    report.backend = getattr(be, "name", type(be).__name__)
    nworkers = max(1, int(getattr(be, "workers", None) or nworkers))
    limits = getattr(be, "limits", None) or Limits()   # the backend's limits keep its warm pool usable
    if timeout:
        limits = dataclasses.replace(limits, timeout=float(timeout))
    if memory:
        limits = dataclasses.replace(limits, memory=str(memory))
    report.memory = str(limits.memory)
    say(f"targets: {len(plans)} steps x {runs} run(s) on {report.backend} with {nworkers} worker(s)")

    results: dict[tuple[str, int], tuple[list, Optional[str]]] = {}
    lock = threading.Lock()
    done = [0]
    total = len(plans) * runs

    history = History()   # longest expected step first; gold-code times seed later runs
    left = [total]
    be.jobs_left(total)

    def run_one(plan: StepPlan, run: int):
        job = Job(code=plan.code, tests=plan.job_tests(), targets=None, record=True, limits=limits)
        start = time.monotonic()
        with lock:
            left[0] -= 1
            be.jobs_left(left[0])
        try:
            outcome = be.run(job)
            res = _interpret(plan, outcome)
            if not res[1]:
                history.record(plan.step_id, outcome.duration)
        except Exception as e:  # infrastructure problem: report, do not hide
            msg = f"sandbox error: {type(e).__name__}: {e}"
            res = ([("fail", msg)] * len(plan.tests), msg)
        with lock:
            results[(plan.step_id, run)] = res
            done[0] += 1
            nfail = sum(1 for r in res[0] if r[0] == "fail")
            say(f"  [{done[0]}/{total}] {plan.step_id} run {run + 1}: "
                f"{'ok' if not nfail else f'{nfail} failed'} ({time.monotonic() - start:.1f}s)")

    pool = PriorityPool(nworkers, name="targets")
    try:
        futs = [pool.submit(history.priority(p.step_id), run_one, p, r) for r in range(runs) for p in plans]
        for f in futs:
            f.result()
    finally:   # on success every job is done; on Ctrl-C or an error, do not wait for running ones
        pool.shutdown(wait=False, cancel_futures=True)
        history.save()
        if owned:
            be.close()

    targets: dict[str, list] = {}
    for plan in plans:
        values = []
        complete = True
        for r in range(runs):
            step_error = results[(plan.step_id, r)][1]
            if step_error:   # one entry for the step, not one per test
                report.failed.append(Issue(plan.step_id, None, step_error, run=r + 1))
        for i in range(len(plan.tests)):
            rw = plan.rewrites[i]
            if not rw.supported:
                complete = False
                values.append(None)
                continue
            got = []
            for r in range(runs):
                kind, val = results[(plan.step_id, r)][0][i]
                if kind == "fail" and results[(plan.step_id, r)][1]:
                    continue      # already reported for the whole step
                if kind == "fail":
                    report.failed.append(Issue(plan.step_id, i + 1,
                                               val + ("" if rw.has_target else " (test without target)"),
                                               run=r + 1))
                elif kind == "ok":
                    got.append((r, val))
            if not rw.has_target:
                values.append(NO_TARGET)
                continue
            if not got:
                complete = False
                values.append(None)
                continue
            first_run, first = got[0]
            for r, v in got[1:]:
                if not values_equal(first, v):
                    report.flaky.append(Issue(plan.step_id, i + 1,
                                              f"value differs between run {first_run + 1} and run {r + 1} "
                                              f"(kept run {first_run + 1}'s): {_describe_diff(first, v)}",
                                              run=r + 1))
            values.append(first)
        if complete:
            targets[plan.step_id] = values
            report.steps_written.append(plan.step_id)
        else:
            report.steps_missing.append(plan.step_id)

    if out is not None:
        _drop_unstorable(targets, report)
    report.targets = targets
    if out is not None:
        from harness.data.h5targets import write_targets
        write_targets(Path(out), targets)
    report.duration = time.monotonic() - t0
    return report


def _more_memory(limit: str) -> str:
    """A limit twice the given one, in GiB (the hint must name more than what failed)."""
    from harness.sandbox.runner import parse_size
    try:
        gib = parse_size(limit or "4g") / (1 << 30)
    except ValueError:
        gib = 4
    return f"{max(int(gib * 2), 1)}g"


def _describe_diff(a, b) -> str:
    ok, d = values_close(a, b)
    return ("close (allclose) but not identical" if ok else f"not close: {d}")


def _drop_unstorable(targets: dict, report: BuildReport) -> None:
    """Steps whose values the h5 schema cannot hold unchanged are reported and left out."""
    from harness.data.h5targets import write_targets
    with tempfile.TemporaryDirectory(prefix="scicode-targets-") as tmp:
        probe = Path(tmp) / "probe.h5"
        for sid in list(targets):
            try:
                write_targets(probe, {sid: targets[sid]})
            except ValueError as e:
                del targets[sid]
                report.steps_written.remove(sid)
                report.steps_missing.append(sid)
                report.failed.append(Issue(sid, None, f"value cannot be stored in the h5 schema: {e}"))


# --------------------------------------------------------------------------- check

@dataclass
class CheckReport:
    ours: str
    official: str
    steps_compared: int = 0
    tests_compared: int = 0
    tests_matching: int = 0
    tests_without_target: int = 0                          # empty in ours: not compared
    mismatches: list = field(default_factory=list)        # Issue
    missing_in_ours: list = field(default_factory=list)   # step ids only in the official file
    extra_in_ours: list = field(default_factory=list)     # step ids only in ours
    count_mismatch: list = field(default_factory=list)    # Issue (different number of tests)

    @property
    def ok(self) -> bool:
        return not (self.mismatches or self.missing_in_ours or self.count_mismatch)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mismatches"] = [asdict(i) for i in self.mismatches]
        d["count_mismatch"] = [asdict(i) for i in self.count_mismatch]
        d["ok"] = self.ok
        return d

    def summary(self) -> str:
        lines = [f"check {self.ours} against {self.official}: {self.tests_matching}/{self.tests_compared} "
                 f"tests match over {self.steps_compared} common steps "
                 f"({self.tests_without_target} without target not compared); {len(self.mismatches)} mismatches, "
                 f"{len(self.missing_in_ours)} steps missing, {len(self.extra_in_ours)} extra"]
        lines += [f"  mismatch: {m}" for m in self.mismatches]
        lines += [f"  test count: {m}" for m in self.count_mismatch]
        if self.missing_in_ours:
            lines.append("  missing in ours: " + ", ".join(self.missing_in_ours))
        if self.extra_in_ours:
            lines.append("  only in ours: " + ", ".join(self.extra_in_ours))
        return "\n".join(lines)


def _step_key(s: str):
    out = []
    for part in s.split("."):
        out.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return out


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


def check(ours: Path, official: Path, steps: Optional[Iterable[str]] = None,
          rtol: float = 1e-5, atol: float = 1e-8) -> CheckReport:
    """Compare regenerated targets with an official file, per step and test (np.allclose-style)."""
    from harness.data.h5targets import TargetsError, read_step_targets
    ours, official = Path(ours), Path(official)
    rep = CheckReport(ours=str(ours), official=str(official))
    a, b = list_steps(ours), list_steps(official)
    if steps is not None:
        keep = {str(s) for s in steps}
        a = {k: v for k, v in a.items() if k in keep}
        b = {k: v for k, v in b.items() if k in keep}
    rep.missing_in_ours = sorted(set(b) - set(a), key=_step_key)
    rep.extra_in_ours = sorted(set(a) - set(b), key=_step_key)
    for sid in sorted(set(a) & set(b), key=_step_key):
        rep.steps_compared += 1
        if a[sid] != b[sid]:
            rep.count_mismatch.append(Issue(sid, None, f"{a[sid]} tests in ours, {b[sid]} in the official file"))
        n = min(a[sid], b[sid])
        try:
            va, vb = read_step_targets(ours, sid, n), read_step_targets(official, sid, n)
        except TargetsError as e:
            rep.mismatches.append(Issue(sid, None, f"unreadable: {e}"))
            continue
        for i in range(n):
            if isinstance(va[i], tuple) and va[i] == NO_TARGET:
                rep.tests_without_target += 1   # our empty group: the test uses no target
                continue
            rep.tests_compared += 1
            ok, detail = values_close(va[i], vb[i], rtol=rtol, atol=atol)
            if ok:
                rep.tests_matching += 1
            else:
                rep.mismatches.append(Issue(sid, i + 1, detail))
    return rep
