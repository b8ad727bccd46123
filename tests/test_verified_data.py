"""SciCode-Verified data (harness.data.verified): pinned, verified, cached. Synthetic fixtures
made here (three tiny problems, a manifest, a tiny h5) are served by a local HTTP server on
127.0.0.1; nothing real is fetched."""
import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from harness.data import testdata as T
from harness.data import verified as V

H5_PATH = "/releases/download/data/test_data_cleaned.h5"
SCRIPT = Path(sys.executable).with_name("scicode-harness")


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _step(sid, code=None, tests=1):
    return {"step_number": sid, "step_description_prompt": f"do {sid}",
            "function_header": f"def f_{sid.replace('.', '_')}():", "ground_truth_code": code,
            "return_line": "    return 0",
            "test_cases": [f"assert f() == target  # {i}" for i in range(tests)]}


def make_problems(unscored_code="class Maxwell:\n    pass\n", unscored=True):
    return [{"problem_id": "1", "required_dependencies": "import numpy as np",
             "sub_steps": [_step("1.1"), _step("1.2", tests=2)]},
            {"problem_id": "13", "required_dependencies": "",   # 13.6: unscored, prefilled
             "sub_steps": [_step("13.1")] + ([_step("13.6", unscored_code, 0)] if unscored else [])},
            {"problem_id": "2", "required_dependencies": "", "sub_steps": [_step("2.1")]}]


def make_h5(path: Path) -> bytes:
    with h5py.File(path, "w") as f:
        for sid, n in (("1.1", 1), ("1.2", 2), ("13.1", 1), ("2.1", 1)):
            for i in range(1, n + 1):
                f.create_dataset(f"{sid}/test{i}/var1", data=np.arange(4) * i)
        f.create_dataset("13.1/test1/var2", data=np.arange(40000, dtype=float))   # > one 64 KB read
    return path.read_bytes()


def make_files(tmp: Path, problems=None, order=("1", "13", "2"), **manifest_over) -> dict[str, bytes]:
    """{name: bytes} of a consistent synthetic SciCode-Verified release."""
    jsonl = "".join(json.dumps(p) + "\n" for p in (problems or make_problems())).encode()
    h5 = make_h5(tmp / "fixture.h5")
    manifest = {"version": "v2", "n_problems": len(order), "problem_order": list(order),
                "problems_test_jsonl_md5": md5(jsonl), "targets_md5": {"1.1": "x"}, "targets_set_md5": "y",
                "h5_md5": md5(h5), **manifest_over}
    return {V.PROBLEMS: jsonl, V.MANIFEST: json.dumps(manifest, indent=1).encode(), V.H5: h5}


def pin_dict(base: str, files: dict, **over) -> dict:
    d = {"commit": "0123456789abcdef0123456789abcdef01234567", "source": "synthetic test pin",
         "urls": {"problems": [f"{base}/scicode_verified/{V.PROBLEMS}"],
                  "manifest": f"{base}/scicode_verified/{V.MANIFEST}", "h5": [base + H5_PATH]},
         "md5": {"problems": md5(files[V.PROBLEMS]), "h5": md5(files[V.H5])},
         "sha256": {"problems": None, "manifest": None, "h5": None},
         "version": "v2", "n_problems": 3, "unscored_steps": ["13.6"]}
    d.update(over)
    return d


class _Files(http.server.BaseHTTPRequestHandler):
    """Answers GET from self.server.owner (a Server): its files, Range requests, cuts."""
    protocol_version = "HTTP/1.0"

    def log_message(self, *a):
        pass

    def _reply(self, code: int, body: bytes = b"", **headers):
        self.send_response(code)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k.replace("_", "-"), v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        owner, rng = self.server.owner, self.headers.get("Range")
        owner.requests.append((self.path, rng))
        body = owner.files.get(self.path)
        if body is None:
            return self._reply(404)
        if not rng:
            if self.path in owner.cut_once:   # announce it all, send half, cut the connection
                owner.cut_once.discard(self.path)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                return self.connection.shutdown(2)
            return self._reply(200, body, Content_Type="application/octet-stream")
        start = int(rng.split("=")[1].split("-")[0])
        if start >= len(body):
            return self._reply(416, Content_Range=f"bytes */{len(body)}")
        self._reply(206, body[start:], Content_Range=f"bytes {start}-{len(body) - 1}/{len(body)}")


class Server:
    """ThreadingHTTPServer on 127.0.0.1 serving `files` (path -> bytes); records every request;
    paths in cut_once have their first full response cut halfway."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_once: set[str] = set()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
        self.httpd.owner = self
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def serve(self, files: dict):
        self.files = {f"/scicode_verified/{V.PROBLEMS}": files[V.PROBLEMS],
                      f"/scicode_verified/{V.MANIFEST}": files[V.MANIFEST], H5_PATH: files[V.H5]}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.delenv("SCICODE_VERIFIED_PIN", raising=False)
    monkeypatch.setattr(T.time, "sleep", lambda s: None)   # the downloader's backoff


@pytest.fixture
def files(tmp_path):
    return make_files(tmp_path)


@pytest.fixture
def server(files):
    s = Server()
    s.serve(files)
    yield s
    s.close()


def write_pin(tmp_path, d) -> Path:
    p = tmp_path / "pin.json"
    p.write_text(json.dumps(d))
    return p


@pytest.fixture
def pin(tmp_path, server, files):
    return V.load_pin(write_pin(tmp_path, pin_dict(server.base, files)))


def one_line(e) -> str:
    assert "\n" not in str(e)
    return str(e)


def cache_files(pin) -> list[str]:
    d = V.cache_path(pin)
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


# ---------------------------------------------------------------- the pin

def test_official_pin():
    p = V.official_pin()
    assert p.official and p.commit == "3dfa277b3cee817083a7079148b95f029c6b4293"
    assert p.problems_urls == ("https://raw.githubusercontent.com/flyingwagner/scicode-verified/"
                               "3dfa277b3cee817083a7079148b95f029c6b4293/scicode_verified/problems_test.jsonl",)
    assert p.manifest_urls[0].endswith("/3dfa277b3cee817083a7079148b95f029c6b4293/scicode_verified/manifest.json")
    assert p.h5_urls == ("https://github.com/flyingwagner/scicode-verified/releases/download/data/"
                         "test_data_cleaned.h5",
                         "https://huggingface.co/datasets/shhu2001/SciCode-Verified/resolve/"
                         "eea11a866be6860725258702b39ef8651ed26abd/test_data_cleaned.h5")
    assert (p.problems_md5, p.h5_md5) == ("07c4cd521ea60a166c05737ddfa51ac0", "2b41a7df40ddc23ce651ec05b8ecb6f8")
    assert (p.problems_sha256, p.manifest_sha256, p.h5_sha256) == (
        "24e5e32a77c5504a7d79f7a28b705dfdd7175975cf417bed48caf68f1610ea1a",
        "28a4663f1c911661c9895431a1f840fb7b3f7f7992cbef2120d14c379361045f",
        "8fb6e575b7b6dda5e48b04dea338fc6af4fe185774b8f19221c96945df9b4142")
    assert (p.version, p.n_problems, p.unscored_steps) == ("v2", 64, ("13.6", "62.1", "76.3"))
    assert V.pin_id(p) == "3ba7df6c297d" == V.pin_id(V.official_pin())   # names users' cache dirs


def test_load_pin_and_its_errors(tmp_path, files):
    p = V.load_pin(write_pin(tmp_path, pin_dict("http://127.0.0.1:1", files)))
    assert not p.official and p.source == "synthetic test pin" and p.n_problems == 3
    assert p.manifest_urls == ("http://127.0.0.1:1/scicode_verified/manifest.json",)   # a bare URL is a list of one
    # where a pin fetches from does not change its id; what it verifies does
    other = pin_dict("http://127.0.0.1:2", files)
    assert V.pin_id(V.load_pin(write_pin(tmp_path, other))) == V.pin_id(p)
    other["md5"]["h5"] = "0" * 32
    assert V.pin_id(V.load_pin(write_pin(tmp_path, other))) != V.pin_id(p)
    bad = [("{not json", "pin file"), ("[]", "not a JSON object"),
           (json.dumps({**pin_dict("x", files), "commit": ""}), "commit"),
           (json.dumps({**pin_dict("x", files), "md5": {"problems": "xyz", "h5": "0" * 32}}), "md5.problems"),
           (json.dumps({**pin_dict("x", files), "sha256": {"h5": "abc"}}), "sha256.h5"),
           (json.dumps({**pin_dict("x", files), "urls": {"problems": [], "manifest": "m", "h5": "h"}}),
            "urls.problems"),
           (json.dumps({**pin_dict("x", files), "n_problems": "3"}), "n_problems")]
    for text, needle in bad:
        f = tmp_path / "bad.json"
        f.write_text(text)
        with pytest.raises(V.DataError) as e:
            V.load_pin(f)
        assert needle in one_line(e.value) and str(f) in str(e.value)
    with pytest.raises(V.DataError, match="pin file"):
        V.load_pin(tmp_path / "missing.json")


# ---------------------------------------------------------------- pulling

def test_pull_over_http_then_quick_noop(tmp_cache, pin, server, files):
    msgs = []
    d = V.pull(pin, progress=msgs.append)
    assert d == tmp_cache / "verified" / V.pin_id(pin)
    for name in (V.PROBLEMS, V.MANIFEST, V.H5):
        assert (d / name).read_bytes() == files[name]
    assert cache_files(pin) == sorted([V.PROBLEMS, V.MANIFEST, V.H5, V.H5 + ".sha256"])   # no temp files
    assert any("test_data_cleaned.h5" in m and "verified" in m for m in msgs)
    assert [ok for _, ok, _ in V.verify_report(pin)] == [True, True, True]
    n = len(server.requests)
    msgs = []
    assert V.pull(pin, progress=msgs.append) == d
    assert len(server.requests) == n and msgs == [f"SciCode-Verified data already present and verified in {d}"]
    V.pull(pin, force=True, progress=None)   # force fetches again
    assert len(server.requests) == n + 3


def test_a_pin_that_adds_the_h5_sha256_reuses_the_verified_h5(tmp_cache, pin, server, files):
    import dataclasses
    before = dataclasses.replace(pin, h5_sha256=None)   # pinned by md5 only, then its sha256 added
    after = dataclasses.replace(pin, h5_sha256=sha256(files[V.H5]))
    V.pull(before, progress=None)
    assert V.cache_path(before) != V.cache_path(after)
    n = len(server.requests)
    msgs = []
    V.pull(after, progress=msgs.append)
    assert not [p for p, _ in server.requests[n:] if p.endswith(V.H5)], server.requests[n:]
    assert (V.cache_path(after) / V.H5).read_bytes() == files[V.H5]
    assert [ok for _, ok, _ in V.verify_report(after)] == [True, True, True]
    assert any("copying" in m for m in msgs), msgs
    bad = dataclasses.replace(pin, h5_sha256="0" * 64)   # a sha256 the old file does not have
    with pytest.raises(V.DataError, match="sha256"):
        V.pull(bad, progress=None)


def test_loading_prefilled_describe(tmp_cache, pin):
    V.pull(pin, progress=None)
    problems = V.load_problems(pin)
    assert [p["problem_id"] for p in problems] == ["1", "13", "2"]
    assert V.load_problems(pin) == problems   # the second load comes from the stat-keyed cache
    assert V.load_manifest(pin)["problem_order"] == ["1", "13", "2"]
    assert V.prefilled_code(problems[1], "13.6") == "class Maxwell:\n    pass\n"
    with pytest.raises(V.DataError, match="no prefilled code for step '13.1'"):
        V.prefilled_code(problems[1], "13.1")
    with pytest.raises(V.DataError, match="'9.9'"):
        V.prefilled_code(problems[1], "9.9")
    h5 = V.test_data_path(pin)
    assert h5 == V.cache_path(pin) / V.H5
    with h5py.File(h5) as f:
        assert list(f["1.2/test2/var1"][()]) == [0, 2, 4, 6]
    assert V.data_dir(pin) == V.cache_path(pin)
    desc = V.describe(pin)
    assert desc["benchmark"] == "verified" and desc["official"] is False and desc["commit"] == pin.commit
    assert desc["md5"] == {V.PROBLEMS: pin.problems_md5, V.H5: pin.h5_md5}
    assert desc["sha256"] == {V.PROBLEMS: None, V.MANIFEST: None, V.H5: None}
    assert desc["source"] == "synthetic test pin" and desc["pin_id"] == V.pin_id(pin)
    json.dumps(desc)
    assert V.describe(V.official_pin())["official"] is True


def test_nothing_pulled_gives_the_fix(tmp_cache, pin):
    with pytest.raises(V.DataError) as e:
        V.load_problems(pin)
    assert "problems_test.jsonl is missing" in one_line(e.value) and V.PULL_HINT in str(e.value)
    with pytest.raises(V.DataError) as e:
        V.test_data_path(pin)
    assert "not found" in one_line(e.value) and "data pull --benchmark verified" in str(e.value)
    assert [ok for _, ok, _ in V.verify_report(pin)] == [False, False, False]


def test_tampered_cache_is_caught_and_repaired(tmp_cache, pin, files):
    V.pull(pin, progress=None)
    V.load_problems(pin)
    f = V.cache_path(pin) / V.PROBLEMS
    data = bytearray(f.read_bytes())
    data[5] ^= 1
    f.write_bytes(bytes(data))
    with pytest.raises(V.DataError) as e:
        V.load_problems(pin)
    msg = one_line(e.value)
    assert V.PROBLEMS in msg and pin.problems_md5 in msg and md5(bytes(data)) in msg and "--force" in msg
    h5 = V.cache_path(pin) / V.H5
    h5.write_bytes(files[V.H5][:-1] + b"\1")
    report = {n: (ok, err) for n, ok, err in V.verify_report(pin)}
    assert not report[V.PROBLEMS][0] and report[V.MANIFEST][0] and not report[V.H5][0]
    assert pin.h5_md5 in report[V.H5][1] and md5(files[V.H5][:-1] + b"\1") in report[V.H5][1]
    V.pull(pin, progress=None)   # not everything verifies: fetches again without --force
    assert all(ok for _, ok, _ in V.verify_report(pin))


def test_tampered_problems_over_http_writes_nothing(tmp_cache, pin, server, files):
    bad = files[V.PROBLEMS].replace(b"do 1.1", b"do 1.X")
    server.files[f"/scicode_verified/{V.PROBLEMS}"] = bad
    with pytest.raises(V.DataError) as e:
        V.pull(pin, progress=None)
    msg = one_line(e.value)
    assert msg.startswith(f"{V.PROBLEMS} from http://127.0.0.1:")
    assert f"md5 mismatch (expected {pin.problems_md5}, actual {md5(bad)})" in msg
    assert cache_files(pin) == []
    assert all(path != H5_PATH for path, _ in server.requests)   # the h5 is not even fetched


def test_tampered_h5_over_http_writes_nothing(tmp_cache, pin, server, files):
    bad = files[V.H5][:-1] + b"\1"
    server.files[H5_PATH] = bad
    with pytest.raises(V.DataError) as e:
        V.pull(pin, progress=None)
    msg = one_line(e.value)
    assert V.H5 in msg and pin.h5_md5 in msg and md5(bad) in msg and "--from DIR" in msg
    assert cache_files(pin) == []


@pytest.mark.parametrize("over, needle", [
    ({"version": "v1"}, "version is 'v1', the pin expects 'v2'"),
    ({"n_problems": 64}, "n_problems is 64, the pin expects 3"),
    ({"h5_md5": "0" * 32}, "h5_md5 is '" + "0" * 32),
    ({"problems_test_jsonl_md5": "f" * 32}, "problems_test_jsonl_md5"),
    ({"problem_order": "1,13,2"}, "problem_order is not a list"),
])
def test_manifest_content_mismatch(tmp_cache, pin, server, files, over, needle):
    manifest = {**json.loads(files[V.MANIFEST]), **over}
    server.files[f"/scicode_verified/{V.MANIFEST}"] = json.dumps(manifest).encode()
    with pytest.raises(V.DataError) as e:
        V.pull(pin, progress=None)
    assert one_line(e.value).startswith(f"{V.MANIFEST} from ") and needle in str(e.value)
    assert cache_files(pin) == []


def test_manifest_not_json(tmp_cache, pin, server):
    server.files[f"/scicode_verified/{V.MANIFEST}"] = b"<html>rate limited</html>"
    with pytest.raises(V.DataError, match="manifest.json from .*not valid JSON"):
        V.pull(pin, progress=None)


@pytest.mark.parametrize("kind, needle", [
    ("count", "2 problems, the pin expects 3"),
    ("order", "problem ids differ from the manifest's problem_order (in one only: ['2', '3'])"),
    ("unscored", "unscored step(s) 13.6 missing"),
])
def test_jsonl_structure(tmp_path, tmp_cache, kind, needle):
    """Consistent hashes, but content the pin does not describe."""
    if kind == "count":
        files = make_files(tmp_path, problems=make_problems()[:2], order=("1", "13"), n_problems=3)
    elif kind == "order":
        files = make_files(tmp_path, order=("1", "13", "3"))
    else:
        files = make_files(tmp_path, problems=make_problems(unscored=False))
    src = tmp_path / "src"
    src.mkdir()
    for name, data in files.items():
        (src / name).write_bytes(data)
    pin = V.load_pin(write_pin(tmp_path, pin_dict("http://127.0.0.1:1", files)))
    with pytest.raises(V.DataError) as e:
        V.pull(pin, source=src, progress=None)
    assert one_line(e.value).startswith(f"{V.PROBLEMS} from {src / V.PROBLEMS}: {needle}")
    assert cache_files(pin) == []


def test_pinned_sha256_is_checked_too(tmp_path, tmp_cache, server, files):
    good = pin_dict(server.base, files, sha256={"problems": sha256(files[V.PROBLEMS]),
                                                "manifest": sha256(files[V.MANIFEST]), "h5": sha256(files[V.H5])})
    pin = V.load_pin(write_pin(tmp_path, good))
    V.pull(pin, progress=None)
    assert V.describe(pin)["sha256"][V.H5] == sha256(files[V.H5])
    assert all(ok for _, ok, _ in V.verify_report(pin))
    for name, key in ((V.MANIFEST, "manifest"), (V.H5, "h5")):
        d = pin_dict(server.base, files, sha256={key: "a" * 64})
        other = V.load_pin(write_pin(tmp_path, d))
        with pytest.raises(V.DataError) as e:
            V.pull(other, progress=None)
        assert name in one_line(e.value) and f"sha256 mismatch (expected {'a' * 64}, actual " in str(e.value)
        assert cache_files(other) in ([], [V.MANIFEST, V.PROBLEMS])[:1]


def test_no_h5(tmp_cache, pin, server):
    msgs = []
    V.pull(pin, with_h5=False, progress=msgs.append)
    assert all(path != H5_PATH for path, _ in server.requests)
    assert "--no-h5" in msgs[-1]
    assert cache_files(pin) == [V.MANIFEST, V.PROBLEMS]
    assert [n for n, ok, _ in V.verify_report(pin, with_h5=False) if ok] == [V.PROBLEMS, V.MANIFEST]
    with pytest.raises(V.DataError, match="data pull --benchmark verified"):
        V.test_data_path(pin)
    n = len(server.requests)
    V.pull(pin, with_h5=False, progress=None)   # no-op
    assert len(server.requests) == n
    V.pull(pin, progress=None)   # now the h5 as well
    assert V.test_data_path(pin).is_file()


def test_resumed_h5_download(tmp_cache, pin, server, files):
    # an interrupted earlier run left a partial file: resumed with a Range request
    part = V.cache_path(pin) / (V.H5 + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(files[V.H5][:1000])
    V.pull(pin, progress=None)
    assert (H5_PATH, "bytes=1000-") in server.requests
    assert V.test_data_path(pin).read_bytes() == files[V.H5]
    # a connection cut halfway: resumed, not restarted
    server.requests.clear()
    server.cut_once.add(H5_PATH)
    msgs = []
    V.pull(pin, force=True, progress=msgs.append)
    h5_requests = [r for p, r in server.requests if p == H5_PATH]
    assert h5_requests[0] is None and h5_requests[1].startswith("bytes=") and h5_requests[1] != "bytes=0-"
    assert any("resuming" in m for m in msgs)
    assert V.test_data_path(pin, fresh=True).read_bytes() == files[V.H5]


def test_unreachable_is_one_line(tmp_path, tmp_cache, files):
    pin = V.load_pin(write_pin(tmp_path, pin_dict("http://127.0.0.1:9", files)))
    with pytest.raises(V.DataError) as e:
        V.pull(pin, progress=None)
    assert "cannot fetch manifest.json" in one_line(e.value) and "--from DIR" in str(e.value)


# ---------------------------------------------------------------- --from DIR

@pytest.mark.parametrize("layout", ["flat", "checkout"])
def test_from_dir(tmp_path, tmp_cache, pin, server, files, layout):
    src = tmp_path / "src"
    small = src / "scicode_verified" if layout == "checkout" else src
    small.mkdir(parents=True)
    (small / V.PROBLEMS).write_bytes(files[V.PROBLEMS])
    (small / V.MANIFEST).write_bytes(files[V.MANIFEST])
    (src / V.H5).write_bytes(files[V.H5])
    msgs = []
    d = V.pull(pin, source=src, progress=msgs.append)
    assert server.requests == []   # nothing fetched
    assert all(ok for _, ok, _ in V.verify_report(pin))
    assert (d / V.H5).stat().st_mode & 0o777 == 0o644
    assert V.pull(pin, source=src, progress=None) == d   # no-op
    V.pull(pin, source=src, force=True, progress=None)
    assert server.requests == []


def test_from_dir_errors_write_nothing(tmp_path, tmp_cache, pin, files):
    with pytest.raises(V.DataError, match="no such directory"):
        V.pull(pin, source=tmp_path / "nowhere", progress=None)
    src = tmp_path / "src"
    src.mkdir()
    (src / V.MANIFEST).write_bytes(files[V.MANIFEST])
    with pytest.raises(V.DataError) as e:
        V.pull(pin, source=src, progress=None)
    assert f"{V.PROBLEMS} not found" in one_line(e.value)
    (src / V.PROBLEMS).write_bytes(files[V.PROBLEMS])
    with pytest.raises(V.DataError) as e:
        V.pull(pin, source=src, progress=None)
    assert f"{V.H5} not found" in one_line(e.value) and "--no-h5" in str(e.value)
    bad = files[V.H5][:-1] + b"\1"
    (src / V.H5).write_bytes(bad)
    with pytest.raises(V.DataError) as e:
        V.pull(pin, source=src, progress=None)
    msg = one_line(e.value)
    assert V.H5 in msg and pin.h5_md5 in msg and md5(bad) in msg
    assert cache_files(pin) == []   # not even a temp file
    V.pull(pin, source=src, with_h5=False, progress=None)
    assert cache_files(pin) == [V.MANIFEST, V.PROBLEMS]


def test_downloader_checks_md5_under_the_files_name(tmp_path, server, files):
    """The generalized testdata downloader: md5 only, another file name in its messages."""
    msgs = []
    dest = T.pull_test_data(tmp_path, [server.base + H5_PATH], msgs.append, expected_md5=md5(files[V.H5]),
                            name=V.H5, backoff=0.01)
    assert dest == tmp_path / V.H5 and dest.read_bytes() == files[V.H5]
    assert any(m.startswith(f"downloading {V.H5} from") for m in msgs)
    T.verify_test_data(dest, expected_md5=md5(files[V.H5]))
    with pytest.raises(T.TestDataError, match="sha256 mismatch"):   # a stamp is per expectation
        T.verify_test_data(dest, expected_sha256="b" * 64, expected_md5=md5(files[V.H5]))
    with pytest.raises(T.TestDataError) as e:
        T.pull_test_data(tmp_path / "x", [server.base + H5_PATH], None, expected_md5="c" * 32, name=V.H5,
                         fallback="or else", backoff=0.01)
    assert f"could not download {V.H5}: " in one_line(e.value) and "md5 mismatch" in str(e.value)
    assert str(e.value).endswith("; or else")


# ---------------------------------------------------------------- the command line

def _cli():
    from harness.cli.commands.data import app
    return app


def test_cli_pull_verify_path(tmp_path, tmp_cache, pin, server, files, monkeypatch):
    pin_file = tmp_path / "pin.json"
    monkeypatch.setenv("SCICODE_VERIFIED_PIN", str(pin_file))
    r = CliRunner().invoke(_cli(), ["pull", "--benchmark", "verified", "--no-h5"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(_cli(), ["verify", "--benchmark", "verified"])
    assert r.exit_code == 1 and f"BAD  {V.H5}" in r.output
    r = CliRunner().invoke(_cli(), ["pull", "--benchmark", "verified"])
    assert r.exit_code == 0, r.output
    assert any("%" in line for line in r.output.splitlines())   # progress lines for the h5
    r = CliRunner().invoke(_cli(), ["verify", "--benchmark", "verified"])
    assert r.exit_code == 0 and "all 3 files verified" in r.output
    r = CliRunner().invoke(_cli(), ["path", "--benchmark", "verified"])
    assert r.exit_code == 0 and r.output.strip() == str(V.cache_path(pin))
    r = CliRunner().invoke(_cli(), ["path", "--benchmark", "verified", "--test-data"])
    assert r.exit_code == 0 and r.output.strip() == str(V.cache_path(pin) / V.H5)
    (V.cache_path(pin) / V.MANIFEST).write_text("{}")
    r = CliRunner().invoke(_cli(), ["path", "--benchmark", "verified"])
    assert r.exit_code == 1 and "manifest.json" in r.output
    # --pin wins over the environment
    monkeypatch.setenv("SCICODE_VERIFIED_PIN", str(tmp_path / "missing.json"))
    r = CliRunner().invoke(_cli(), ["verify", "--benchmark", "verified", "--pin", str(pin_file)])
    assert r.exit_code == 1 and f"BAD  {V.MANIFEST}" in r.output
    r = CliRunner().invoke(_cli(), ["verify", "--benchmark", "verified"])
    assert r.exit_code == 1 and "pin file" in r.output and r.output.strip().count("\n") == 0


def test_cli_flag_errors(tmp_cache):
    for args, needle in ((["pull", "--benchmark", "nope"], "unknown --benchmark"),
                         (["pull", "--no-h5"], "--benchmark verified"),
                         (["verify", "--pin", "x.json"], "--benchmark verified"),
                         (["pull", "--benchmark", "verified", "--source", "github"], "--source is for --benchmark scicode")):
        r = CliRunner().invoke(_cli(), args)
        assert r.exit_code == 1 and needle in r.output and r.output.strip().count("\n") == 0, (args, r.output)


def test_cli_subprocess_exit_codes(tmp_path, tmp_cache, pin, server, files):
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(SCICODE_HARNESS_CACHE=str(tmp_cache), SCICODE_VERIFIED_PIN=str(tmp_path / "pin.json"))
    cmd = [str(SCRIPT), "data", "pull", "--benchmark", "verified"]
    server.files[f"/scicode_verified/{V.PROBLEMS}"] = b"{}\n"
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0, r.stderr
    assert V.PROBLEMS in r.stderr and pin.problems_md5 in r.stderr and "Traceback" not in r.stderr
    server.serve(files)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "verified" in r.stdout
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "already present and verified" in r.stdout


def test_unscored_step_without_code_takes_upstreams_prefilled_code(dev_problems):
    """The released v2 JSONL carries no code for 13.6, 62.1 and 76.3 (ground_truth_code null):
    the cumulative program gets upstream's pinned prefilled code, as for the original split."""
    from harness.data import dataset
    problem = make_problems(unscored_code=None)[1]
    assert V.prefilled_code(problem, "13.6") == dataset.prefilled_code("13.6")
    assert "class Maxwell" in V.prefilled_code(problem, "13.6")
