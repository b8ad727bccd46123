"""The dependency rules of harness/, read from its import graph (ast; nothing is imported).

Layers, bottom up: errors, util/ -> sandbox/ -> data/ -> run/, targets/ -> pipeline, reference
-> cli/; build/ stands beside them and only cli/ (and tests) may import it. README's
ARCHITECTURE section draws the same picture.
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "harness"

MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# Who may read os.environ outside the command lines (cli/) and the build tooling (build/),
# and what for. A run's own settings come down in harness.run.config.RunConfig, built in cli/.
ENVIRON_READERS = {
    "harness.util.paths": "where things are: the cache, the step history, the sandbox image recipe",
    "harness.util.faultpoint": "SCICODE_FAULT_PAUSE: the fault suite's test seam",
    "harness.sandbox.runtime": "SCICODE_SANDBOX_START_TIMEOUT",
    "harness.data.testdata": "SCICODE_TEST_DATA, SSL_CERT_FILE/SSL_CERT_DIR",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


@lru_cache(maxsize=None)
def modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(HARNESS.rglob("*.py"))}


@lru_cache(maxsize=None)
def tree(name: str) -> ast.Module:
    return ast.parse(modules()[name].read_text(encoding="utf-8"))


def _type_checking_only(tree_: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (annotations only, never run)."""
    out = set()
    for node in ast.walk(tree_):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


@lru_cache(maxsize=None)
def imports(name: str) -> frozenset[str]:
    """Every module `name` imports (top level or inside functions), harness's and others'."""
    t = tree(name)
    skip = _type_checking_only(t)
    out = set()
    for node in ast.walk(t):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules()}
    return frozenset(out)


def harness_imports(name: str) -> set[str]:
    return {m for m in imports(name) if m in modules() and m != name}


def _under(name: str, *packages: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


# Each layer may import only from its own rank and below.
RANKS = [("harness.errors", 0), ("harness.util", 0), ("harness.sandbox", 1), ("harness.data", 2),
         ("harness.run", 3), ("harness.targets", 4), ("harness.reference", 5), ("harness.pipeline", 5),
         ("harness.build", 5), ("harness.cli", 6), ("harness", 0)]


def rank(name: str) -> int:
    return next(r for p, r in RANKS if _under(name, p))


def test_the_graph_is_read():
    assert "harness.pipeline" in modules() and "harness.sandbox.docker_backend" in modules()
    assert "harness.sandbox" in harness_imports("harness.sandbox.docker_backend")


def test_no_import_cycles():
    graph = {m: harness_imports(m) for m in modules()}
    # a package's __init__ is what `from pkg import mod` also touches: it may not import its modules
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_layer_imports_only_its_own_rank_and_below():
    bad = [f"{m} (rank {rank(m)}) imports {i} (rank {rank(i)})"
           for m in modules() for i in sorted(harness_imports(m)) if rank(i) > rank(m)]
    assert not bad, bad


@pytest.mark.parametrize("package, may_import", [
    ("harness.errors", ("harness.errors",)),
    ("harness.util", ("harness.util", "harness.errors")),                        # the bottom
    ("harness.sandbox", ("harness.sandbox", "harness.util", "harness.errors")),  # nothing above it
    ("harness.data", ("harness.data", "harness.util", "harness.errors")),        # no sandbox, no run
])
def test_a_package_imports_only_what_it_may(package, may_import):
    for m in modules():
        if _under(m, package):
            other = {i for i in harness_imports(m) if not _under(i, *may_import)}
            assert not other, f"{m} imports {sorted(other)}"


def test_build_is_imported_only_by_the_command_lines():
    for m in modules():
        if _under(m, "harness.build", "harness.cli"):
            continue
        build = {i for i in harness_imports(m) if _under(i, "harness.build")}
        assert not build, f"{m} (run-time code) imports the build tooling {sorted(build)}"


def test_only_the_command_lines_see_argparse_or_typer():
    for m in modules():
        if _under(m, "harness.cli"):
            continue
        seen = {i for i in imports(m) if i.split(".")[0] in ("argparse", "typer", "click")}
        assert not seen, f"{m} imports {sorted(seen)}: parse arguments in harness/cli"


def _reads_environ(t: ast.Module) -> bool:
    for node in ast.walk(t):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "getenv") for a in node.names):
            return True
    return False


def test_the_environment_is_read_only_where_listed():
    readers = {m for m in modules() if _reads_environ(tree(m))}
    edges = {m for m in readers if _under(m, "harness.cli", "harness.build")}
    assert readers - edges == set(ENVIRON_READERS), \
        f"unlisted: {sorted(readers - edges - set(ENVIRON_READERS))}; " \
        f"listed but no longer reading: {sorted(set(ENVIRON_READERS) - readers)}"


def test_no_module_is_too_long():
    long = [f"{m} ({n} lines)" for m, p in modules().items()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES]
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long():
    long = []
    for m in modules():
        for node in ast.walk(tree(m)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{m}.{node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_no_module_shadows_the_standard_library():
    import sys
    for m in modules():
        leaf = m.rsplit(".", 1)[-1]
        assert leaf not in sys.stdlib_module_names or leaf == "harness", m
