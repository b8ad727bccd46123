"""The official test_data.h5 schema: reader semantics, completeness check, round-trip writer."""
import math

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from harness.data import h5targets as H
from harness.data.h5targets import TargetsError, missing_entries, missing_steps, read_step_targets, write_targets


def same(a, b):
    """Structural equality: sequences may come back as arrays, Python scalars as numpy scalars."""
    if sp.issparse(a) or sp.issparse(b):
        assert sp.issparse(a) and sp.issparse(b)
        assert a.shape == b.shape
        return (abs(a.tocsr() - b.tocsr())).sum() == 0
    if isinstance(a, dict):
        assert isinstance(b, dict) and len(a) == len(b), (a, b)
        return all(k in b and same(v, b[k]) for k, v in a.items())
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), (a, b)
        return all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, str):
        assert isinstance(b, str), (a, b)
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    assert a_arr.shape == b_arr.shape, (a, b)
    return bool(np.array_equal(a_arr, b_arr))


CASES = {
    "float": 1.5,
    "int": -7,
    "complex": 1 + 2j,
    "bool": True,
    "np_bool": np.bool_(False),
    "np_float32": np.float32(0.25),
    "str": "héllo, wörld",
    "array_f": np.linspace(0, 1, 5),
    "array_2d_i": np.arange(12).reshape(3, 4),
    "array_c": np.array([1j, 2 + 0.5j]),
    "array_bool": np.array([True, False, True]),
    "array_empty": np.array([]),
    "list_numbers": [1.0, 2.0, 3.5],
    "list_nested": [[1, 2], [3, 4]],
    "list_ragged": [np.arange(2), np.arange(3), 4.0],
    "dict_str_keys": {"alpha": 1.0, "beta": np.arange(3), "gamma": [1, 2]},
    "dict_num_keys": {1: 0.5, 2.5: np.array([1.0, 2.0]), -3: 7},
    "dict_str_values": {"a": "x", "1": "numeric key kept as str with a str value"},
    "dict_sparse": {"m": sp.csr_matrix(np.eye(3))},
    "sparse_coo": sp.coo_matrix(np.array([[0, 1.5], [2.0, 0]])),
    "sparse_csr": sp.csr_matrix(np.array([[0, 0, 3.0], [4.0, 0, 0]])),
    "sparse_csc": sp.csc_matrix(np.array([[0, 0, 3.0], [4.0, 0, 5.0]])),
    "sparse_bsr": sp.bsr_matrix(np.arange(16.0).reshape(4, 4), blocksize=(2, 2)),
    "sparse_array": sp.coo_array(np.array([[1.0, 0], [0, 2.0]])),
    "tuple_2": (np.arange(3), "s"),
    "tuple_7": (1.0, 2, 3 + 1j, "four", np.arange(5), {"k": 6.0}, [7, 8]),
    "tuple_9": tuple(float(i) for i in range(9)),
    "tuple_mixed": (sp.coo_matrix(np.eye(2)), [np.arange(2), np.arange(3)], True),
    "tuple_empty": (),
}


def test_round_trip_every_supported_type(tmp_path):
    path = tmp_path / "t.h5"
    steps = {f"1.{i}": [v] for i, v in enumerate(CASES.values(), 1)}
    steps["99.1"] = list(CASES.values())   # many tests in one step
    write_targets(path, steps)
    for (name, value), sid in zip(CASES.items(), [f"1.{i}" for i in range(1, len(CASES) + 1)]):
        (got,) = read_step_targets(path, sid, 1)
        assert same(value, got), name
    got_all = read_step_targets(path, "99.1", len(CASES))
    for (name, value), got in zip(CASES.items(), got_all):
        assert same(value, got), name


def test_round_trip_types_precisely(tmp_path):
    path = tmp_path / "t.h5"
    write_targets(path, {"2.1": [CASES["str"], CASES["dict_num_keys"], CASES["list_ragged"],
                                 CASES["sparse_csc"], CASES["sparse_bsr"], CASES["sparse_coo"],
                                 CASES["tuple_7"], CASES["complex"], CASES["bool"]]})
    s, d, rag, csc, bsr, coo, t7, c, b = read_step_targets(path, "2.1", 9)
    assert type(s) is str
    assert set(d) == {1.0, 2.5, -3.0} and all(type(k) is float for k in d)
    assert isinstance(rag, list) and [np.asarray(x).shape for x in rag] == [(2,), (3,), ()]
    assert csc.format == "csr" and (csc != CASES["sparse_csc"]).nnz == 0   # CSC is stored as CSR
    assert bsr.format == "bsr" and bsr.blocksize == (2, 2)
    assert coo.format == "coo"
    assert isinstance(t7, tuple) and len(t7) == 7 and t7[3] == "four" and t7[5] == {"k": 6.0}
    assert isinstance(c, np.complexfloating) and c == 1 + 2j
    assert isinstance(b, np.bool_) and b


def test_tuple_order_up_to_nine(tmp_path):
    path = tmp_path / "t.h5"
    write_targets(path, {"3.1": [tuple(range(9))]})
    (got,) = read_step_targets(path, "3.1", 1)
    assert [int(x) for x in got] == list(range(9))


@pytest.mark.parametrize("value, words", [
    (tuple(range(10)), "var10"),
    ((1.0,), "1-tuple"),
    (None, "None"),
    (b"raw", "bytes"),
    ({"a": {"b": 1}}, "nested dict"),
    ({}, "empty dict"),
    ([np.arange(2), "s"], "read back as bytes"),
    ([np.arange(i + 1) for i in range(10)], "at most 9"),
    ({"list": 1.0}, "usable name"),
    ({"sparse_matrix": 1.0}, "usable name"),
    ({"1.5": 2.0}, "read back as a float"),
    ({1: "x"}, "read back as str"),
    ({math.nan: 1.0}, "survive float"),
    ({True: 1.0}, "bool dict key"),
    ({"a/b": 1.0}, "usable name"),
    (np.array(["a", "b"]), "not supported"),
    (np.array([object(), 1], dtype=object), "not supported"),
    (object(), "not supported"),
    (2 ** 70, "int64"),
])
def test_writer_rejects_what_would_not_round_trip(tmp_path, value, words):
    path = tmp_path / "t.h5"
    with pytest.raises(ValueError) as e:
        write_targets(path, {"4.1": [1.0, value]})
    assert words in str(e.value)
    assert "step 4.1 test 2" in str(e.value)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []   # temp file cleaned up


def test_failed_write_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "t.h5"
    write_targets(path, {"5.1": [1.0]})
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_targets(path, {"5.1": [None]})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.h5"]


def test_merge_keeps_other_steps(tmp_path):
    path = tmp_path / "t.h5"
    write_targets(path, {"6.1": [1.0], "6.2": [2.0]})
    write_targets(path, {"6.2": [20.0], "6.3": [3.0]}, merge=True)
    assert read_step_targets(path, "6.1", 1) == [1.0]
    assert read_step_targets(path, "6.2", 1) == [20.0]
    assert read_step_targets(path, "6.3", 1) == [3.0]
    write_targets(path, {"6.3": [3.0]})
    assert missing_steps(path, {"6.1": 1, "6.3": 1}) == ["6.1"]


def test_written_file_is_world_readable(tmp_path):
    path = tmp_path / "t.h5"
    write_targets(path, {"6.1": [1.0]})
    assert path.stat().st_mode & 0o044 == 0o044


# ----------------------------------------------------------- official semantics, hand-written files

def test_reader_follows_h5py_key_order_like_upstream(tmp_path):
    """Ten children read back in h5py (lexicographic) order: var10 before var2, as upstream does."""
    path = tmp_path / "o.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("7.1/test1")
        for i in range(1, 11):
            g.create_dataset(f"var{i}", data=i)
    (got,) = read_step_targets(path, "7.1", 1)
    assert [int(x) for x in got] == [1, 10, 2, 3, 4, 5, 6, 7, 8, 9]


def test_reader_quirks_match_upstream(tmp_path):
    path = tmp_path / "o.h5"
    s = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        # list group: elements read raw, so strings stay bytes
        lst = f.create_group("8.1/test1/var1/list")
        lst.create_dataset("var1", data="abc", dtype=s)
        lst.create_dataset("var2", data=np.arange(3))
        # dict: a str value keeps a numeric-looking key as str; other values get float keys
        d = f.create_group("8.1/test2/var1")
        d.create_dataset("1", data="one", dtype=s)
        d.create_dataset("2", data=2.0)
        d.create_dataset("x", data=3.0)
        # empty data group -> None
        f.create_group("8.1/test3/var1")
        # a single string dataset is decoded
        f.create_group("8.1/test4").create_dataset("whatever", data="héllo", dtype=s)
        # several children -> tuple; a string child is decoded
        g = f.create_group("8.1/test5")
        g.create_dataset("var1", data="a", dtype=s)
        g.create_dataset("var2", data=np.arange(2))
        # dict whose sub-group holds a sparse matrix
        sm = f.create_group("8.1/test6/var1/m/sparse_matrix")
        sm.create_dataset("data", data=[1.0, 2.0])
        sm.create_dataset("shape", data=[2, 2])
        sm.create_dataset("row", data=[0, 1])
        sm.create_dataset("col", data=[1, 0])
    t1, t2, t3, t4, t5, t6 = read_step_targets(path, "8.1", 6)
    assert t1[0] == b"abc" and np.array_equal(t1[1], np.arange(3))
    assert t2 == {"1": "one", 2.0: 2.0, "x": 3.0}
    assert t3 is None
    assert t4 == "héllo"
    assert t5[0] == "a" and np.array_equal(t5[1], np.arange(2))
    assert t6["m"].format == "coo" and t6["m"].toarray().tolist() == [[0, 1.0], [2.0, 0]]


# ----------------------------------------------------------- completeness and errors

def test_missing_steps_and_entries(tmp_path):
    path = tmp_path / "t.h5"
    write_targets(path, {"9.1": [1.0, 2.0], "9.2": [1.0]})
    need = {"9.1": 2, "9.2": 3, "9.3": 1, "13.6": 0}
    assert missing_steps(path, need) == ["9.2", "9.3"]
    assert missing_entries(path, need) == ["9.2/test2", "9.2/test3", "9.3"]
    assert missing_steps(path, {"9.1": 2}) == []


def test_missing_test_raises_with_names(tmp_path):
    path = tmp_path / "t.h5"
    write_targets(path, {"10.1": [1.0]})
    with pytest.raises(TargetsError, match=r"step 10.1 test 2"):
        read_step_targets(path, "10.1", 2)
    with pytest.raises(TargetsError, match=r"step 10.9 test 1"):
        read_step_targets(path, "10.9", 1)


def test_bad_files(tmp_path):
    with pytest.raises(TargetsError, match="no such file"):
        missing_steps(tmp_path / "nope.h5", {"1.1": 1})
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(TargetsError, match="not a readable HDF5 file") as e:
        read_step_targets(junk, "1.1", 1)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, OSError)


def test_read_targets_many_steps(tmp_path):
    path = tmp_path / "t.h5"
    write_targets(path, {"11.1": [1.0, 2.0], "11.2": [(1.0, "x")]})
    got = H.read_targets(path, {"11.1": 2, "11.2": 1})
    assert got["11.1"] == [1.0, 2.0] and got["11.2"][0][1] == "x"
