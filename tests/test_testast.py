"""harness.data.testast: how both test rewrites (targets build, strict grading) read a test case."""
import ast

import pytest

from harness.data import testast


def _expr(src):
    return ast.parse(src, mode="eval").body


@pytest.mark.parametrize("src, loose, strict", [
    ("np.allclose", "allclose", "allclose"),
    ("numpy.array_equal", "array_equal", "array_equal"),
    ("isclose", "isclose", "isclose"),
    ("other.equal", "equal", None),              # numpy's names only bare or under np./numpy.
    ("np.linalg.allclose", "allclose", None),
    ("cmp.cmp_tuple_or_list", "cmp_tuple_or_list", "cmp_tuple_or_list"),   # upstream's: any prefix
    ("are_dicts_close", "are_dicts_close", "are_dicts_close"),
    ("np.sum", None, None),
    ("f().allclose", None, None),                # not a name chain
])
def test_comparator(src, loose, strict):
    assert testast.comparator(_expr(src)) == loose
    assert testast.comparator(_expr(src), numpy_prefix=True) == strict


def test_chain_bool_reduction_and_equality():
    assert testast.chain(_expr("np.random.randn")) == ["np", "random", "randn"]
    assert testast.chain(_expr("f().x")) == []
    r = testast.bool_reduction(_expr("target.any()"))
    assert r[1] == "any" and testast.is_target(r[0])
    assert testast.bool_reduction(_expr("np.isclose(a, b).all(axis=0)"))[1] == "all"
    assert testast.bool_reduction(_expr("x.any(0)")) is None
    assert testast.bool_reduction(_expr("x.sum()")) is None
    a, b = testast.equality(_expr("f(1) == target"))
    assert ast.unparse(a) == "f(1)" and testast.is_target(b)
    assert testast.equality(_expr("a == b == c")) is None and testast.equality(_expr("a < b")) is None


def test_mentions_and_params():
    assert testast.mentions(_expr("f(target[0])")) and not testast.mentions(_expr("f(targets)"))
    assert testast.mentions(_expr("s + 1"), {"s", "v"})
    fn = ast.parse("def f(a, /, b, *c, d, **e): pass").body[0]
    assert testast.param_names(fn.args) == {"a", "b", "c", "d", "e"}
