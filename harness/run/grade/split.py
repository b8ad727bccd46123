"""Split one SciCode test case into what the sandbox computes and what the verifier checks.

The candidate's sandbox must never see ``target`` and must never decide a verdict.
So every test case becomes two programs:

* **sandbox program**: the test as written, except that each ``assert`` is replaced by
  ``__scicode_record__((ID, (LEAF0, LEAF1, ...)))``: the *leaves* are the parts of the
  assertion that depend on model code (``EXPR`` in ``np.allclose(EXPR, target)``, both
  sides of ``a == b`` when both come from model code, ...). Statements that use
  ``target`` (``s, v = target``) are left out.
* **verifier program**: the test's trusted statements (imports, helpers, constants,
  target unpacking) and, for each ``assert``, ``__scicode_v__ = __scicode_values__(ID)``
  followed by the assertion with every leaf replaced by ``__scicode_v__[k]``. The
  verifier runs it outside the sandbox, against the real target.

A name is *trusted* when the verifier can compute it itself: bound by an import of the
test or of the problem's dependencies, by a helper ``def`` that only uses trusted names,
or assigned from trusted expressions (constants, numpy calls other than ``np.random``).
Anything else (model functions, values they returned, random numbers) is computed in
the sandbox and crosses as data. Control flow around an assert must be trusted, so a
forged value stream can never skip a check: the verifier decides how many asserts run.
A test this split refuses is tried statement by statement (harness.run.grade.split_stmt,
whose ``split_test`` is the entry point).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Optional

from harness.data.testast import (NUMPY_MODULES, RECORD, TARGET, bool_reduction, chain, comparator,
                                  mentions, param_names)

VALUES = "__scicode_values__"
V = "__scicode_v__"
STRICT = "__scicode_strict__"

SAFE_BUILTINS = frozenset({
    "abs", "all", "any", "bool", "complex", "dict", "divmod", "enumerate", "filter", "float",
    "frozenset", "int", "isinstance", "len", "list", "map", "max", "min", "pow", "range",
    "reversed", "round", "set", "slice", "sorted", "str", "sum", "tuple", "type", "zip",
    "print", "hasattr", "True", "False", "None", "ValueError", "TypeError", "Exception",
})
# attribute chains that give different values on every call: computed in the sandbox only
NONDETERMINISTIC = frozenset({"random", "time", "perf_counter", "datetime", "uuid", "secrets",
                              "os", "sys", "urandom", "default_rng", "seed"})
# calls that compare (testast.COMPARATORS): kept in the verifier, their untrusted arguments become leaves
# np.allclose & co. in the verifier: vacuous comparisons (sizes differ) fail
STRICT_NUMPY = frozenset({"allclose", "array_equal"})


class Unsupported(Exception):
    pass


@dataclass
class Split:
    sandbox: Optional[str]            # program the sandbox runs (None when unsupported)
    verifier: Optional[str]           # program the verifier runs
    asserts: int = 0                  # assert sites
    uses_target: bool = False
    kinds: list = field(default_factory=list)   # per assert: "target" | "test" (expected value in the test)
    error: Optional[str] = None

    @property
    def supported(self) -> bool:
        return self.error is None

    @property
    def kind(self) -> str:
        """target: compared with target; test: the expected values are written in the test."""
        if self.error:
            return "unsupported"
        return "target" if self.uses_target else "test"


def _bound(target: ast.AST) -> tuple[set[str], set[str]]:
    """(names bound, roots mutated) by an assignment target."""
    bound, mutated = set(), set()
    for n in ast.walk(target):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            bound.add(n.id)
    if isinstance(target, (ast.Subscript, ast.Attribute)):
        mutated |= {n.id for n in ast.walk(target.value) if isinstance(n, ast.Name)}
    elif isinstance(target, (ast.Tuple, ast.List)):
        for elt in target.elts:
            b, m = _bound(elt)
            mutated |= m
    elif isinstance(target, ast.Starred):
        return _bound(target.value)
    return bound, mutated


def _import_names(node) -> set[str]:
    out = set()
    for a in node.names:
        if a.name == "*":
            continue
        out.add((a.asname or a.name).split(".")[0])
    return out


def dependency_names(deps: str) -> set[str]:
    """Names bound by the problem's import lines (trusted library objects)."""
    try:
        tree = ast.parse(deps or "")
    except SyntaxError:
        return set()
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= _import_names(n)
    return out


class _Scope:
    def __init__(self, trusted: set[str], derived: set[str], helpers: set[str]):
        self.trusted = set(trusted)       # names the verifier can compute
        self.derived = set(derived)       # trusted names computed from target
        self.helpers = set(helpers)       # test-local functions with a trusted body

    def child(self, params: set[str]) -> "_Scope":
        return _Scope(self.trusted | params, self.derived - params, self.helpers - params)


class _Splitter:
    def __init__(self, deps_names: set[str]):
        self.base = (set(SAFE_BUILTINS) | deps_names) - {TARGET}
        self.modules = set(self.base)        # library names: calling their methods mutates nothing
        self.asserts = 0
        self.kinds: list[str] = []
        self.uses_target = False
        self.procedures: set[str] = set()    # test-local functions that contain asserts

    # ---- expressions -------------------------------------------------------------
    def trusted(self, node: ast.AST, sc: _Scope) -> bool:
        """The verifier can evaluate node (given the same trusted names)."""
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                if n.id != TARGET and n.id not in sc.trusted and n.id not in self._comp_vars(node):
                    return False
            if isinstance(n, (ast.Call, ast.Attribute)):
                if any(p in NONDETERMINISTIC for p in chain(n.func if isinstance(n, ast.Call) else n)[1:]):
                    return False
            if isinstance(n, (ast.Yield, ast.YieldFrom, ast.Await, ast.NamedExpr)):
                return False
        return True

    @staticmethod
    def _comp_vars(node: ast.AST) -> set[str]:
        """Names bound inside comprehensions/lambdas of node (local to them)."""
        out = set()
        for n in ast.walk(node):
            if isinstance(n, ast.comprehension):
                out |= {m.id for m in ast.walk(n.target) if isinstance(m, ast.Name)}
            elif isinstance(n, ast.Lambda):
                a = n.args
                out |= {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
        return out

    def has_target(self, node: ast.AST, sc: _Scope) -> bool:
        return mentions(node, {TARGET} | sc.derived)

    def comparison_layer(self, node: ast.AST, sc: _Scope) -> bool:
        if isinstance(node, (ast.Compare, ast.BoolOp)):
            return True
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return True
        if isinstance(node, ast.Call):
            if comparator(node.func) and self.trusted(node.func, sc):
                return True
            reduced = bool_reduction(node)    # np.isclose(...).any()
            if reduced and self.comparison_layer(reduced[0], sc):
                return True
        return False

    def split_expr(self, node: ast.AST, sc: _Scope, leaves: list) -> ast.AST:
        """The verifier's copy of node, with untrusted parts replaced by __scicode_v__[k]."""
        if self.trusted(node, sc):
            return self.strict(node)
        if not self.has_target(node, sc) and not self.comparison_layer(node, sc):
            leaves.append(node)
            return ast.Subscript(value=ast.Name(V, ast.Load()),
                                 slice=ast.Constant(len(leaves) - 1), ctx=ast.Load())
        if isinstance(node, (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp,
                             ast.DictComp, ast.NamedExpr)):
            raise Unsupported(f"target and model values meet inside {type(node).__name__}")
        if isinstance(node, ast.Call):
            f = node.func
            if self.trusted(f, sc):
                func = self.strict(f)
            elif isinstance(f, ast.Attribute):
                # a method of a compared value (np.isclose(...).any(), x.toarray()): the value
                # crosses as data and the method runs on that data in the verifier
                func = ast.Attribute(value=self.split_expr(f.value, sc, leaves), attr=f.attr,
                                     ctx=ast.Load())
            else:
                raise Unsupported("target is passed to model code: " + ast.unparse(node)[:120])
            call = ast.Call(func=func, args=[self.split_expr(a, sc, leaves) for a in node.args],
                            keywords=[ast.keyword(arg=k.arg, value=self.split_expr(k.value, sc, leaves))
                                      for k in node.keywords])
            return self.strict(call, shallow=True)
        new = _copy_shallow(node)
        for fname, value in ast.iter_fields(node):
            if isinstance(value, ast.expr):
                setattr(new, fname, self.split_expr(value, sc, leaves))
            elif isinstance(value, list):
                setattr(new, fname, [self.split_expr(v, sc, leaves) if isinstance(v, ast.expr) else v
                                     for v in value])
        return new

    @staticmethod
    def strict(node: ast.AST, shallow: bool = False) -> ast.AST:
        """np.allclose/np.array_equal calls -> the verifier's strict versions."""
        def fix(n):
            if isinstance(n, ast.Call):
                ch = chain(n.func)
                if len(ch) == 2 and ch[0] in NUMPY_MODULES and ch[1] in STRICT_NUMPY:
                    n.func = ast.Attribute(value=ast.Name(STRICT, ast.Load()), attr=ch[1], ctx=ast.Load())
        if shallow:
            fix(node)
            return node
        node = _deepcopy(node)
        for n in ast.walk(node):
            fix(n)
        return node

    # ---- statements --------------------------------------------------------------
    def block(self, body: list[ast.stmt], sc: _Scope) -> tuple[list, list]:
        s_out, v_out = [], []
        for stmt in body:
            s, v = self.stmt(stmt, sc)
            s_out += s
            v_out += v
        return s_out or [ast.Pass()], v_out or [ast.Pass()]

    def _contains_assert(self, node) -> bool:
        return any(isinstance(n, ast.Assert) for n in ast.walk(node))

    def stmt(self, st: ast.stmt, sc: _Scope) -> tuple[list, list]:
        if isinstance(st, ast.Assert):
            return self.assert_(st, sc)
        if isinstance(st, (ast.Import, ast.ImportFrom)):
            names = _import_names(st)
            self.modules |= names
            sc.trusted |= names
            sc.derived -= names
            return [st], [st]
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return self.funcdef(st, sc)
        if isinstance(st, (ast.Global, ast.Nonlocal)):
            raise Unsupported("global/nonlocal in a test")
        compound = isinstance(st, (ast.For, ast.While, ast.If, ast.With, ast.Try, ast.ClassDef,
                                   ast.AsyncFor, ast.AsyncWith))
        if compound and (self._contains_assert(st) or self.has_target(st, sc)):
            return self.control(st, sc)
        return self.simple(st, sc)

    def simple(self, st: ast.stmt, sc: _Scope) -> tuple[list, list]:
        """A statement without asserts: trusted -> both programs; else sandbox only."""
        bound, mutated = set(), set()
        for n in ast.walk(st):
            if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                bound.add(n.id)
            if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]):
                    mutated |= _bound(t)[1]
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.add(n.name)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
                mutated |= {m.id for m in ast.walk(n.func.value) if isinstance(m, ast.Name)}
        uses_target = self.has_target(st, sc)
        if isinstance(st, ast.AugAssign):
            root = chain(st.target.value if isinstance(st.target, (ast.Subscript, ast.Attribute))
                          else st.target)
            ok = self.trusted(st, sc) and bool(root) and root[0] in sc.trusted
        else:
            ok = self.trusted(st, sc)
        if ok:
            sc.trusted |= bound
            if uses_target:
                self.uses_target = True
                sc.derived |= bound
                return [], [st]
            sc.derived -= bound
            return [st], [st]
        if uses_target:
            raise Unsupported("target is used together with model values: " + ast.unparse(st)[:120])
        gone = bound | (mutated - self.modules)   # np.random.seed() does not make np untrusted
        sc.trusted -= gone
        sc.derived -= gone
        sc.helpers -= gone
        return [st], []

    def control(self, st: ast.stmt, sc: _Scope) -> tuple[list, list]:
        """if/for/while/with/try around asserts: the control parts must be trusted."""
        if isinstance(st, (ast.ClassDef, ast.AsyncFor, ast.AsyncWith, ast.While)):
            raise Unsupported(f"assert inside {type(st).__name__}")
        heads = []
        if isinstance(st, ast.For):
            heads = [st.iter]
        elif isinstance(st, ast.If):
            heads = [st.test]
        elif isinstance(st, ast.With):
            heads = [i.context_expr for i in st.items]
        for h in heads:
            if not self.trusted(h, sc) or self.has_target(h, sc):
                raise Unsupported("an assert depends on control flow the model decides: "
                                  + ast.unparse(h)[:120])
        if isinstance(st, ast.For):
            b, _ = _bound(st.target)
            sc.trusted |= b
            if st.orelse:
                raise Unsupported("for/else around an assert")
        if isinstance(st, ast.Try):
            raise Unsupported("assert inside try")
        s_node, v_node = _copy_shallow(st), _copy_shallow(st)
        for fname in ("body", "orelse"):
            if hasattr(st, fname) and getattr(st, fname):
                s_b, v_b = self.block(getattr(st, fname), sc)
                setattr(s_node, fname, s_b)
                setattr(v_node, fname, v_b)
        return [s_node], [v_node]

    def funcdef(self, st, sc: _Scope) -> tuple[list, list]:
        params = param_names(st.args)
        inner = sc.child(params)
        inner.trusted.add(st.name)     # recursion
        if st.decorator_list:
            raise Unsupported("decorated function in a test")
        if not self._contains_assert(st) and not self.has_target(st, sc):
            local = sc.child(params | _stored(st))
            if all(self.trusted(b, local) for b in st.body):
                sc.trusted.add(st.name)
                sc.helpers.add(st.name)
                return [st], [st]
            sc.trusted.discard(st.name)
            return [st], []
        if self.has_target(st, sc) and not self._contains_assert(st):
            raise Unsupported("target is used inside a function")
        s_body, v_body = self.block(st.body, inner)
        s_fn, v_fn = _copy_shallow(st), _copy_shallow(st)
        s_fn.body, v_fn.body = s_body, [self._no_untrusted_return(b, inner) for b in v_body]
        self.procedures.add(st.name)
        sc.trusted.add(st.name)       # calling it is control flow both programs share
        return [s_fn], [v_fn]

    def _no_untrusted_return(self, st, sc):
        if isinstance(st, ast.Return) and st.value is not None and not self.trusted(st.value, sc):
            return ast.Return(value=None)
        return st

    def assert_(self, st: ast.Assert, sc: _Scope) -> tuple[list, list]:
        ident = self.asserts
        self.asserts += 1
        leaves: list = []
        test = self.split_expr(st.test, sc, leaves)
        has_t = self.has_target(st.test, sc)
        self.uses_target |= has_t
        self.kinds.append("target" if has_t else "test")
        rec = ast.Expr(ast.Call(func=ast.Name(RECORD, ast.Load()), args=[ast.Tuple(
            elts=[ast.Constant(ident), ast.Tuple(elts=list(leaves), ctx=ast.Load())],
            ctx=ast.Load())], keywords=[]))
        take = ast.Assign(targets=[ast.Name(V, ast.Store())],
                          value=ast.Call(func=ast.Name(VALUES, ast.Load()),
                                         args=[ast.Constant(ident)], keywords=[]))
        return [rec], [take, ast.Assert(test=test, msg=None)]


def _stored(fn: ast.AST) -> set[str]:
    """Names a function binds locally (assignments, loop variables, nested defs)."""
    out = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    out |= {n.name for n in ast.walk(fn) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    return out


def _copy_shallow(node: ast.AST) -> ast.AST:
    new = type(node)()
    for fname, value in ast.iter_fields(node):
        setattr(new, fname, list(value) if isinstance(value, list) else value)
    for attr in ("lineno", "col_offset", "end_lineno", "end_col_offset"):
        if hasattr(node, attr):
            setattr(new, attr, getattr(node, attr))
    return new


def _deepcopy(node: ast.AST) -> ast.AST:
    import copy
    return copy.deepcopy(node)


def split_tree(tree: ast.Module, deps_names: set[str]) -> "_Splitter":
    """The expression-level split of a parsed test; raises Unsupported. The programs are
    in the result's `body` (sandbox statements, verifier statements)."""
    sp = _Splitter(deps_names)
    sp.body = sp.block(tree.body, _Scope(sp.base, set(), set()))
    _check_procedure_calls(tree, sp.procedures)
    return sp


def programs(sp: "_Splitter") -> Split:
    s_mod = ast.fix_missing_locations(ast.Module(body=sp.body[0], type_ignores=[]))
    v_mod = ast.fix_missing_locations(ast.Module(body=sp.body[1], type_ignores=[]))
    return Split(ast.unparse(s_mod) + "\n", ast.unparse(v_mod) + "\n", sp.asserts,
                 sp.uses_target, sp.kinds)


def _check_procedure_calls(tree: ast.Module, procedures: set[str]) -> None:
    """Functions holding asserts may only be called as plain statements without arguments,
    so the verifier runs their asserts exactly as often as the sandbox does."""
    if not procedures:
        return
    allowed = {id(st.value.func) for st in ast.walk(tree)
               if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call)
               and not st.value.args and not st.value.keywords}
    for n in ast.walk(tree):
        if (isinstance(n, ast.Name) and n.id in procedures and isinstance(n.ctx, ast.Load)
                and id(n) not in allowed):
            raise Unsupported(f"function {n.id} holds asserts and is used in an expression")
