"""Statement-level split: the fallback for tests the expression-level split refuses.

Some tests mix ``target`` and model values outside an ``assert`` (``G = Ut.T @ Um``), loop
over both (``for a, b in zip(rk, sorted(target))``) or check with a test-defined function
that holds asserts (``assert match(f(x), target)``). Here each statement that reads
``target`` (or a name computed from it) runs in the verifier only, in the test's order.
The model values it reads cross as data, recorded by the sandbox at that statement:

* a model *name* (``rk``) is recorded once and then bound in the verifier; every later
  verifier statement reads that one binding, so the test's own checks on it (``len(rk) ==
  len(tk)`` before the loop) guard whatever the verifier does with it;
* a model *call* (``f(x)``) or an attribute of a model object (``block.length``) is recorded
  as its value, like a leaf of the expression-level split.

So the verifier runs only the test's code, on target and on decoded data: a forged stream
is no stronger than a model that returned those values. A value that is not data fails
its test in the sandbox (the codec refuses it), never passes.
"""
from __future__ import annotations

import ast

from harness.data.testast import RECORD, TARGET, chain, mentions, param_names
from harness.run.grade.split import (V, VALUES, Split, Unsupported, _Scope, _Splitter, _bound,
                                     _check_procedure_calls, _stored, dependency_names, programs,
                                     split_tree)


class Rebind(Exception):
    """A model name that crossed inside a leaf must be bound instead: split again."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class StmtSplitter(_Splitter):
    def __init__(self, deps_names: set[str], force_bind: set[str]):
        super().__init__(deps_names)
        self.force_bind = set(force_bind)   # model names the verifier reads as bound data
        self.pending: list[str] = []        # names the current statement binds
        self.leafed: set[str] = set()       # model names that crossed inside leaves
        self.in_local = 0                   # > 0 inside a lambda or comprehension
        self.depth = 0                      # > 0 inside if/for/with/def: no binding there
        self.n_stmts = 0

    # ---- names -------------------------------------------------------------------
    def model_name(self, node: ast.AST, sc: _Scope) -> bool:
        return (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
                and node.id != TARGET and node.id not in sc.trusted)

    def bind(self, name: str, sc: _Scope) -> None:
        if self.depth:
            raise Unsupported(f"model value {name} is needed as a whole inside a block")
        if name in self.leafed:
            raise Rebind(name)
        self.pending.append(name)
        sc.trusted.add(name)

    def needs_sandbox(self, node: ast.AST, sc: _Scope) -> bool:
        """node calls model code or reads an attribute of a model object (or, inside a
        block, reads a model value at all)."""
        for n in ast.walk(node):
            if isinstance(n, ast.Call) and not self.trusted(n.func, sc):
                ch = chain(n.func)
                if len(ch) < 2 or ch[0] not in self.force_bind:
                    return True
            ch = chain(n) if isinstance(n, ast.Attribute) else []
            if ch and ch[0] not in self.force_bind and self.model_name(ast.Name(ch[0], ast.Load()), sc):
                return True
            if self.depth and self.model_name(n, sc) and n.id not in self.force_bind:
                return True
        return False

    # ---- expressions -------------------------------------------------------------
    def split_expr(self, node: ast.AST, sc: _Scope, leaves: list) -> ast.AST:
        if self.trusted(node, sc):
            return self.strict(node)
        if not self.has_target(node, sc) and not self.comparison_layer(node, sc) \
                and self.needs_sandbox(node, sc):
            return self.leaf(node, sc, leaves)
        if self.model_name(node, sc):
            self.bind(node.id, sc)
            return self.strict(node)
        if isinstance(node, ast.Call) and not self.trusted(node.func, sc) and \
                not isinstance(node.func, ast.Attribute):
            raise Unsupported("target is passed to model code: " + ast.unparse(node)[:120])
        if isinstance(node, (ast.Lambda, ast.GeneratorExp, ast.ListComp, ast.SetComp, ast.DictComp)):
            return self.local_expr(node, sc, leaves)
        if isinstance(node, ast.NamedExpr):
            raise Unsupported("assignment expression with target")
        return self.descend(node, sc, leaves)

    def leaf(self, node: ast.AST, sc: _Scope, leaves: list) -> ast.AST:
        if self.in_local:
            raise Unsupported("model code runs inside a lambda or comprehension with target: "
                              + ast.unparse(node)[:120])
        for n in ast.walk(node):    # x.a or (in a block) x crossed: x cannot be bound later
            root = chain(n)[:1] if isinstance(n, ast.Attribute) or self.depth else []
            if root and root[0] not in self.force_bind and self.model_name(ast.Name(root[0], ast.Load()), sc):
                self.leafed.add(root[0])
        leaves.append(node)
        return ast.Subscript(value=ast.Name(V, ast.Load()), slice=ast.Constant(len(leaves) - 1),
                             ctx=ast.Load())

    def local_expr(self, node: ast.AST, sc: _Scope, leaves: list) -> ast.AST:
        """A lambda or comprehension: its own names are local; model names it reads are bound."""
        local = self._comp_vars(node) - sc.trusted
        sc.trusted |= local
        self.in_local += 1
        try:
            return self.descend(node, sc, leaves)
        finally:
            self.in_local -= 1
            sc.trusted -= local

    def descend(self, node: ast.AST, sc: _Scope, leaves: list) -> ast.AST:
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and not self.trusted(func, sc):
                # a method of a value that crosses as data runs on that data in the verifier
                func = ast.Attribute(value=self.split_expr(func.value, sc, leaves), attr=func.attr,
                                     ctx=ast.Load())
            else:
                func = self.split_expr(func, sc, leaves)
            new = ast.Call(func=func, args=[self.split_expr(a, sc, leaves) for a in node.args],
                           keywords=[ast.keyword(arg=k.arg, value=self.split_expr(k.value, sc, leaves))
                                     for k in node.keywords])
            return self.strict(new, shallow=True)
        new = type(node)()
        for fname, value in ast.iter_fields(node):
            if isinstance(value, list):
                value = [self.descend_any(v, sc, leaves) for v in value]
            else:
                value = self.descend_any(value, sc, leaves)
            setattr(new, fname, value)
        return new

    def descend_any(self, value, sc: _Scope, leaves: list):
        if isinstance(value, ast.expr) and not isinstance(getattr(value, "ctx", None), (ast.Store, ast.Del)):
            return self.split_expr(value, sc, leaves)
        if isinstance(value, (ast.comprehension, ast.arguments)):
            return self.descend(value, sc, leaves)
        return value

    # ---- statements --------------------------------------------------------------
    def stmt(self, st: ast.stmt, sc: _Scope) -> tuple[list, list]:
        if isinstance(st, ast.Assert):
            self.asserts += 1
            self.kinds.append("target" if self.has_target(st.test, sc) else "test")
            return self.checked(st, sc, self.asserts - 1)
        return super().stmt(st, sc)

    def simple(self, st: ast.stmt, sc: _Scope) -> tuple[list, list]:
        names = self.derivation(st, sc)
        if names:
            return self.derive(st, sc, names)
        if not self.has_target(st, sc) or self.trusted(st, sc):
            s, v = super().simple(st, sc)
            if not v:                   # the sandbox's only: a new value, to be bound afresh
                self.leafed -= _bound_names(st)
            elif not s:                 # the verifier's only: what it changes is its own
                sc.derived |= _mutated(st)
            return s, v
        if not isinstance(st, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Expr)):
            raise Unsupported("target is used together with model values: " + ast.unparse(st)[:120])
        self.n_stmts += 1
        return self.checked(st, sc, -self.n_stmts)

    def derivation(self, st: ast.stmt, sc: _Scope) -> list:
        """The model names st reads, when st only computes from them (`rk = sorted(res)`):
        those are bound and both programs run st, so every later use reads one copy."""
        if self.depth or self.has_target(st, sc) or self.trusted(st, sc) or \
                not isinstance(st, (ast.Assign, ast.AugAssign, ast.AnnAssign)) or self.needs_sandbox(st, sc):
            return []
        local = self._comp_vars(st)
        names = {n.id for n in ast.walk(st) if self.model_name(n, sc) and n.id not in local}
        if isinstance(st, ast.AugAssign) and isinstance(st.target, ast.Name) and st.target.id not in sc.trusted:
            names.add(st.target.id)
        if not names or not self.trusted(st, _Scope(sc.trusted | names, sc.derived, sc.helpers)):
            return []
        return sorted(names)

    def derive(self, st: ast.stmt, sc: _Scope, names: list) -> tuple[list, list]:
        for n in names:
            self.bind(n, sc)
        self.pending = []
        self.n_stmts += 1
        rec, take = self.record_and_take(-self.n_stmts, [], names)
        s, v = super().simple(st, sc)
        return rec + s, take + v

    def checked(self, st: ast.stmt, sc: _Scope, ident) -> tuple[list, list]:
        """A statement the verifier runs: the model values it reads are recorded just before."""
        leaves: list = []
        self.pending = []
        new = type(st)()
        for fname, value in ast.iter_fields(st):
            if fname in ("targets", "target"):   # x[i] = ..., x += ...: x must be in the verifier
                for t in (value if isinstance(value, list) else [value]):
                    for n in ast.walk(t):
                        if self.model_name(n, sc):
                            self.bind(n.id, sc)
                    if isinstance(st, ast.AugAssign) and isinstance(t, ast.Name) and t.id not in sc.trusted:
                        self.bind(t.id, sc)
            elif isinstance(value, ast.expr):
                value = self.split_expr(value, sc, leaves)
            setattr(new, fname, value)
        names, self.pending = self.pending, []
        made = _bound_names(st) | _mutated(st)
        sc.trusted |= made
        sc.derived |= made
        self.uses_target = True
        rec, take = self.record_and_take(ident, leaves, names)
        return rec, take + [new]

    @staticmethod
    def record_and_take(ident, leaves: list, names: list) -> tuple[list, list]:
        """Sandbox: record (ident, (leaf values..., bound names' values...)). Verifier: take
        them (leaf k is __scicode_v__[k]) and bind the names. ident: the assert's number, or
        -k for the k-th other statement."""
        values = list(leaves) + [ast.Name(n, ast.Load()) for n in names]
        rec = ast.Expr(ast.Call(func=ast.Name(RECORD, ast.Load()), args=[ast.Tuple(
            elts=[ast.Constant(ident), ast.Tuple(elts=values, ctx=ast.Load())],
            ctx=ast.Load())], keywords=[]))
        take = [ast.Assign(targets=[ast.Name(V, ast.Store())],
                           value=ast.Call(func=ast.Name(VALUES, ast.Load()),
                                          args=[ast.Constant(ident)], keywords=[]))]
        take += [ast.Assign(targets=[ast.Name(n, ast.Store())],
                            value=ast.Subscript(value=ast.Name(V, ast.Load()),
                                                slice=ast.Constant(len(leaves) + i), ctx=ast.Load()))
                 for i, n in enumerate(names)]
        return [rec], take

    def control(self, st: ast.stmt, sc: _Scope) -> tuple[list, list]:
        """if/for/with whose heads the verifier can compute without target: the
        expression-level way (per-iteration leaves); otherwise the whole statement runs in
        the verifier, on bound model names."""
        heads = _heads(st)
        if self.depth or all(self.trusted(h, sc) and not self.has_target(h, sc) for h in heads):
            self.depth += 1
            try:
                return super().control(st, sc)
            finally:
                self.depth -= 1
        if not isinstance(st, (ast.For, ast.If, ast.With)) or getattr(st, "orelse", None) \
                and isinstance(st, ast.For):
            return super().control(st, sc)    # refuses it
        return self.verifier_block(st, sc)

    def verifier_block(self, st: ast.stmt, sc: _Scope) -> tuple[list, list]:
        local = (_stored(st) | self._comp_vars(st)) - sc.trusted
        inner = _Scope(sc.trusted | local, sc.derived, sc.helpers)
        self.pending = []
        if self.needs_sandbox(st, inner):
            raise Unsupported("model code runs in a block with target: " + ast.unparse(st)[:120])
        for n in ast.walk(st):
            if self.model_name(n, inner) and n.id not in self.pending:
                self.bind(n.id, inner)
        if not self.trusted(st, inner) or mentions(st, self.procedures) or any(
                isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.While)) for n in ast.walk(st)):
            raise Unsupported("an assert depends on control flow the model decides: "
                              + ast.unparse(st)[:120])
        for n in ast.walk(st):
            if isinstance(n, ast.Assert):
                self.asserts += 1
                self.kinds.append("target")
        self.n_stmts += 1
        names, self.pending = self.pending, []
        sc.trusted |= set(names) | local | _mutated(st)
        sc.derived |= local | _mutated(st)
        self.uses_target = True
        rec, take = self.record_and_take(-self.n_stmts, [], names)
        return rec, take + [self.strict(st)]

    def funcdef(self, st, sc: _Scope) -> tuple[list, list]:
        """A function that holds asserts and reads only trusted names is a check the verifier
        runs (on data): it goes to the verifier only, and so does every statement calling it."""
        if self._contains_assert(st) and not st.decorator_list and not self.has_target(st, sc):
            local = sc.child(param_names(st.args) | _stored(st))
            local.trusted.add(st.name)
            defaults = st.args.defaults + [d for d in st.args.kw_defaults if d is not None]
            if all(self.trusted(b, local) for b in st.body) and all(self.trusted(d, sc) for d in defaults):
                sc.trusted.add(st.name)
                sc.derived.add(st.name)     # like target: whatever calls it runs in the verifier
                n = sum(isinstance(a, ast.Assert) for a in ast.walk(st))
                self.asserts += n
                self.kinds += ["target"] * n
                return [], [self.strict(st)]
        self.depth += 1
        try:
            return super().funcdef(st, sc)
        finally:
            self.depth -= 1


def _heads(st: ast.stmt) -> list:
    if isinstance(st, ast.For):
        return [st.iter]
    if isinstance(st, ast.If):
        return [st.test]
    if isinstance(st, ast.With):
        return [i.context_expr for i in st.items]
    return []


def _bound_names(st: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(st) if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del))}


def _mutated(st: ast.AST) -> set[str]:
    """Roots of x[i] = ... / x.a = ... / x += ... targets."""
    out = set()
    for n in ast.walk(st):
        if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]):
                out |= _bound(t)[1]
    return out


def split_statements(tree: ast.Module, deps_names: set[str]) -> StmtSplitter:
    """The statement-level split of a parsed test; raises Unsupported."""
    force: set[str] = set()
    for _ in range(32):
        sp = StmtSplitter(deps_names, force)
        try:
            sp.body = sp.block(tree.body, _Scope(sp.base, set(), set()))
        except Rebind as e:
            force.add(e.name)
            continue
        _check_procedure_calls(tree, sp.procedures)
        sp.uses_target = mentions(tree, {TARGET})
        return sp
    raise Unsupported("too many model values to bind")


def split_test(source: str, deps: str = "", label: str = "") -> Split:
    """Split one test case: the expression-level way (harness.run.grade.split), else the
    statement-level way. Never raises: unsupported -> error."""
    where = f"{label}: " if label else ""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        return Split(None, None, error=f"{where}syntax error: {e}")
    names = dependency_names(deps)
    try:
        try:
            sp = split_tree(tree, names)
        except Unsupported:
            sp = split_statements(tree, names)
    except Unsupported as e:
        return Split(None, None, error=f"{where}{e}")
    except RecursionError:
        return Split(None, None, error=f"{where}test too deeply nested")
    if sp.asserts == 0:
        return Split(None, None, error=f"{where}no assert: nothing to check")
    return programs(sp)
