"""Resumable JSONL store: round trip, crash tolerance, key sensitivity, concurrency."""
import asyncio
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.run.store import Store, make_key

BASE = dict(model="m", prompt="write f", sample=0,
            params={"temperature": 0.0, "top_p": None, "max_tokens": 2048},
            code="def f(): pass", image="sha256:abc")


def test_round_trip_and_reopen(tmp_path):
    p = tmp_path / "sub" / "generations.jsonl"
    with Store(p) as s:
        assert len(s) == 0 and s.get("nope") is None
        s.put("k1", {"text": "a", "n": 1})
        s.put("k2", {"text": "ünïcode ✓", "nested": {"x": [1, 2.5, None, True]}})
        assert s.get("k1") == {"text": "a", "n": 1} and "k2" in s and len(s) == 2
    s = Store(p)
    assert s.get("k2") == {"text": "ünïcode ✓", "nested": {"x": [1, 2.5, None, True]}}
    assert sorted(s.keys()) == ["k1", "k2"] and dict(s.items())["k1"]["n"] == 1
    s.put("k1", {"text": "b"})  # a later put supersedes
    s.close()
    s = Store(p)
    assert s.get("k1") == {"text": "b"} and len(s) == 2
    s.close()
    lines = p.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and all(json.loads(x)["key"] for x in lines)


def test_torn_last_line_is_ignored_and_cut(tmp_path):
    p = tmp_path / "records.jsonl"
    with Store(p) as s:
        s.put("a", {"v": 1})
        s.put("b", {"v": 2})
    good = p.read_bytes()
    p.write_bytes(good + b'{"key":"c","record":{"v"')  # crash mid-write
    s = Store(p)
    assert s.get("c") is None and s.get("a") == {"v": 1} and len(s) == 2
    assert p.read_bytes() == good  # the torn tail was cut before appending
    s.put("d", {"v": 4})
    s.close()
    s = Store(p)
    assert s.get("d") == {"v": 4} and len(s) == 3 and s.skipped_lines == 0
    s.close()


def test_complete_last_line_without_newline_is_kept(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"key":"a","record":{"v":1}}\n{"key":"b","record":{"v":2}}', encoding="utf-8")
    with Store(p) as s:
        assert s.get("b") == {"v": 2}
        s.put("c", {"v": 3})
    with Store(p) as s:
        assert [s.get(k) for k in "abc"] == [{"v": 1}, {"v": 2}, {"v": 3}]


def test_garbage_lines_are_skipped(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"key":"a","record":{"v":1}}\nnot json\n[1,2]\n\n{"no":"key"}\n'
                 '{"key":"b","record":{"v":2}}\n', encoding="utf-8")
    with Store(p) as s:
        assert len(s) == 2 and s.skipped_lines == 3


def test_torn_line_from_killed_process(tmp_path):
    """A writer killed mid-stream leaves a file that loads cleanly."""
    p = tmp_path / "g.jsonl"
    script = (
        "import os, sys\n"
        "from harness.run.store import Store\n"
        "s = Store(sys.argv[1])\n"
        "for i in range(50):\n"
        "    s.put(f'k{i}', {'text': 'x' * 1000, 'i': i})\n"
        "os.write(s._fd, b'{\"key\":\"k50\",\"record\":{\"text\":\"xx')\n"
        "os._exit(9)\n"
    )
    r = subprocess.run([sys.executable, "-c", script, str(p)], cwd=Path(__file__).parents[1])
    assert r.returncode == 9
    with Store(p) as s:
        assert len(s) == 50 and s.get("k49")["i"] == 49 and s.get("k50") is None


def test_key_is_deterministic_and_order_free():
    k = make_key(**BASE)
    assert k == make_key(**dict(reversed(list(BASE.items()))))
    assert len(k) == 64 and int(k, 16) >= 0
    assert Store.key(**BASE) == k
    # numerically equal settings give one key: 0 == 0.0, tuples == lists, dict order irrelevant
    assert make_key(t=0, v=(1, 2), d={"a": 1, "b": 2}) == make_key(t=0.0, v=[1, 2], d={"b": 2, "a": 1})


@pytest.mark.parametrize("part,new", [
    ("model", "m2"), ("prompt", "write g"), ("sample", 1), ("code", "def f(): return 1"),
    ("image", "sha256:abd"), ("params", {"temperature": 0.7, "top_p": None, "max_tokens": 2048}),
    ("params", {"temperature": 0.0, "top_p": 0.9, "max_tokens": 2048}),
    ("params", {"temperature": 0.0, "top_p": None, "max_tokens": 4096}),
    ("params", {"temperature": 0.0, "top_p": None, "max_tokens": 2048, "extra": 1}),
])
def test_key_changes_with_every_part(part, new):
    assert make_key(**{**BASE, part: new}) != make_key(**BASE)


def test_key_distinguishes_types_and_missing_parts():
    assert make_key(a=1) != make_key(a="1")
    assert make_key(a=True) != make_key(a=1)
    assert make_key(a=None) != make_key()
    assert make_key(a=b"x") != make_key(a="x")
    assert make_key(a=float("nan")) == make_key(a=float("nan"))
    assert make_key(a=float("inf")) != make_key(a=float("-inf"))
    assert make_key(prompt="ab", code="c") != make_key(prompt="a", code="bc")
    with pytest.raises(TypeError):
        make_key(a=object())
    with pytest.raises(TypeError):
        make_key(a={1: 2})


def test_numpy_scalars_in_key():
    np = pytest.importorskip("numpy")
    assert make_key(n=np.int64(3), x=np.float64(0.5)) == make_key(n=3, x=0.5)


def test_thread_safety(tmp_path):
    p = tmp_path / "t.jsonl"
    s = Store(p)

    def worker(t):
        for i in range(200):
            s.put(f"{t}-{i}", {"t": t, "i": i, "pad": "y" * (i % 50)})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(s) == 1600
    s.close()
    lines = p.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1600 and all(json.loads(x) for x in lines)
    with Store(p) as s2:
        assert len(s2) == 1600 and s2.get("7-199")["i"] == 199


def test_asyncio_use(tmp_path):
    p = tmp_path / "a.jsonl"

    async def go(store):
        async def one(i):
            await asyncio.sleep(0)
            key = make_key(sample=i)
            if store.get(key) is None:
                store.put(key, {"i": i})
        await asyncio.gather(*(one(i) for i in range(100)))

    with Store(p) as s:
        asyncio.run(go(s))
        assert len(s) == 100
    with Store(p) as s:
        asyncio.run(go(s))  # everything reused, nothing appended
    assert len(p.read_text().splitlines()) == 100


def test_durable_mode_and_closed_store(tmp_path):
    p = tmp_path / "d.jsonl"
    s = Store(p, durable=True)
    s.put("k", {"v": 1})
    s.flush()
    s.close()
    s.close()  # idempotent
    with pytest.raises(ValueError):
        s.put("k2", {"v": 2})
    with Store(p) as s2:
        assert s2.get("k") == {"v": 1}


def test_file_is_created_empty_and_permissions(tmp_path):
    p = tmp_path / "deep" / "dir" / "x.jsonl"
    with Store(p):
        pass
    assert p.exists() and p.read_bytes() == b""
    assert oct(os.stat(p).st_mode & 0o777) in ("0o644", "0o640", "0o600", "0o604")


def test_atomic_writes_keep_the_umask_unless_told(tmp_path):
    from harness.util import paths
    old = os.umask(0o077)
    try:
        paths.write_text_atomic(tmp_path / "r.json", "{}")
        paths.write_bytes_atomic(tmp_path / "d.bin", b"x", 0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d.bin").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "r.json").read_text() == "{}" and not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(RuntimeError):
        with paths.atomic_path(tmp_path / "r.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("stop")
    assert (tmp_path / "r.json").read_text() == "{}" and not list(tmp_path.glob(".*.tmp"))
