"""test_data.h5 downloader against a local HTTP server: resume, wrong hash, server errors, fallback."""
import hashlib
import http.server
import os
import threading

import pytest
from typer.testing import CliRunner

from harness.data import testdata as T

CONTENT = os.urandom(3 * (1 << 20) + 12345)   # a fake "test_data.h5", ~3 MB
SHA = hashlib.sha256(CONTENT).hexdigest()


class Server:
    """ThreadingHTTPServer on 127.0.0.1 with per-path behaviours; records every request."""

    def __init__(self):
        self.requests = []      # (path, Range header or None)
        self.cut_once = set()   # paths whose first full response is cut halfway
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                outer.requests.append((path, rng))
                body, ctype = CONTENT, "application/octet-stream"
                if path == "/err":
                    return self._send(500, b"oops")
                if path == "/404":
                    return self._send(404, b"nope")
                if path == "/html":
                    return self._send(200, b"<html>quota exceeded</html>", "text/html; charset=utf-8")
                if path == "/wrong":
                    body = CONTENT[:-1] + b"\0"
                start = 0
                if rng and path != "/norange":
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if path in outer.cut_once and start == 0:
                    outer.cut_once.discard(path)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(2)   # cut the connection mid-body
                    return
                self.wfile.write(body[start:])

            def _send(self, code, body, ctype="text/plain"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, path):
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _env(tmp_path, monkeypatch):
    monkeypatch.setenv("SCICODE_HARNESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SCICODE_TEST_DATA", raising=False)
    for v in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(v, raising=False)


def pull(urls, dest, **kw):
    kw.setdefault("expected_sha256", SHA)
    kw.setdefault("backoff", 0.01)
    kw.setdefault("retries", 2)
    msgs = kw.pop("msgs", [])
    return T.pull_test_data(dest=dest, urls=urls, progress=msgs.append, **kw)


def test_plain_download_with_progress(server, tmp_path):
    dest = tmp_path / "d" / "test_data.h5"
    msgs = []
    assert pull([server.url("/ok")], dest, msgs=msgs) == dest
    assert dest.read_bytes() == CONTENT
    assert not (tmp_path / "d" / "test_data.h5.part").exists()
    assert any("(100%)" in m for m in msgs) and any("%)" in m and "(100%)" not in m for m in msgs)
    # second call: verified from the stamp, no request
    n = len(server.requests)
    assert pull([server.url("/ok")], dest) == dest
    assert len(server.requests) == n


def test_resume_after_a_cut_connection(server, tmp_path):
    server.cut_once.add("/ok")
    dest = tmp_path / "test_data.h5"
    msgs = []
    pull([server.url("/ok")], dest, msgs=msgs)
    assert dest.read_bytes() == CONTENT
    assert server.requests[0] == ("/ok", None)
    resumed_at = int(server.requests[1][1].split("=")[1].rstrip("-"))   # resumed, not restarted
    assert 0 < resumed_at <= len(CONTENT) // 2
    assert len(server.requests) == 2
    assert any("resuming" in m for m in msgs)


def test_resume_of_an_interrupted_run(server, tmp_path):
    dest = tmp_path / "test_data.h5"
    (tmp_path / "test_data.h5.part").write_bytes(CONTENT[:1000])
    pull([server.url("/ok")], dest)
    assert dest.read_bytes() == CONTENT
    assert server.requests == [("/ok", "bytes=1000-")]


def test_part_already_complete_gets_416(server, tmp_path):
    dest = tmp_path / "test_data.h5"
    (tmp_path / "test_data.h5.part").write_bytes(CONTENT)
    pull([server.url("/ok")], dest)
    assert dest.read_bytes() == CONTENT and len(server.requests) == 1


def test_bad_partial_prefix_restarts_from_scratch(server, tmp_path):
    dest = tmp_path / "test_data.h5"
    (tmp_path / "test_data.h5.part").write_bytes(b"\xff" * 5000)
    msgs = []
    pull([server.url("/ok")], dest, msgs=msgs)
    assert dest.read_bytes() == CONTENT
    assert server.requests == [("/ok", "bytes=5000-"), ("/ok", None)]
    assert any("starting over" in m for m in msgs)


def test_server_ignoring_range_rewrites_the_file(server, tmp_path):
    dest = tmp_path / "test_data.h5"
    (tmp_path / "test_data.h5.part").write_bytes(CONTENT[:777])
    pull([server.url("/norange")], dest)
    assert dest.read_bytes() == CONTENT


def test_wrong_hash_is_rejected(server, tmp_path):
    dest = tmp_path / "test_data.h5"
    with pytest.raises(T.TestDataError) as e:
        pull([server.url("/wrong")], dest)
    msg = str(e.value)
    assert "\n" not in msg
    assert SHA in msg and hashlib.sha256(CONTENT[:-1] + b"\0").hexdigest() in msg
    assert not dest.exists() and not (tmp_path / "test_data.h5.part").exists()


def test_server_error_then_fallback_url(server, tmp_path):
    dest = tmp_path / "test_data.h5"
    msgs = []
    pull([server.url("/err"), server.url("/ok")], dest, msgs=msgs, retries=2)
    assert dest.read_bytes() == CONTENT
    paths = [p for p, _ in server.requests]
    assert paths == ["/err"] * 3 + ["/ok"]   # 1 try + 2 retries, then the fallback


def test_every_url_failing_is_one_line(server, tmp_path):
    dest = tmp_path / "test_data.h5"
    with pytest.raises(T.TestDataError) as e:
        pull([server.url("/404"), server.url("/html"), server.url("/err")], dest, retries=0)
    msg = str(e.value)
    assert "\n" not in msg
    assert "/404: HTTP 404" in msg and "HTML page" in msg and "HTTP 500" in msg
    assert "--test-data" in msg
    assert [p for p, _ in server.requests] == ["/404", "/html", "/err"]   # 404 and HTML are not retried


def test_unreachable_host_is_one_line(tmp_path):
    dest = tmp_path / "test_data.h5"
    with pytest.raises(T.TestDataError) as e:
        pull(["http://127.0.0.1:9/x"], dest, retries=1)
    assert "\n" not in str(e.value) and "ConnectError" in str(e.value)


def test_defaults_point_at_the_pinned_mirror_and_drive():
    assert T.DEFAULT_URLS[0] == ("https://huggingface.co/datasets/xantheocracy/scicode-mirror/resolve/"
                                 "2f903a64a1c4eb62c7c649b0caf7ecb2c0217590/test_data.h5")
    assert "17G_k65N_6yFFZ2O-jQH00Lh6iaw3z-AW" in T.DEFAULT_URLS[1]
    assert T.TEST_DATA_SHA256 == "48b0272a88b17dbd29777c217e1b4fb2b019b92e11cc2add847409db9541b890"


def test_resolve_order_and_cached_verification(server, tmp_path, monkeypatch):
    assert T.resolve_test_data() is None
    monkeypatch.setattr(T, "TEST_DATA_SHA256", SHA)
    cached = T.pull_test_data(urls=[server.url("/ok")], progress=None, backoff=0.01)
    assert cached == T.default_path()
    assert T.resolve_test_data() == cached
    monkeypatch.setenv("SCICODE_TEST_DATA", str(tmp_path / "env.h5"))
    assert T.resolve_test_data() == tmp_path / "env.h5"
    assert T.resolve_test_data(tmp_path / "explicit.h5") == tmp_path / "explicit.h5"
    monkeypatch.delenv("SCICODE_TEST_DATA")
    # tamper with the cached file: the stamp no longer matches, the hash is rechecked
    data = bytearray(cached.read_bytes())
    data[10] ^= 1
    cached.write_bytes(bytes(data))
    with pytest.raises(T.TestDataError) as e:
        T.resolve_test_data()
    assert SHA in str(e.value) and hashlib.sha256(bytes(data)).hexdigest() in str(e.value)
    assert not T.is_official(cached)


def test_cli_pull_test_data(server, tmp_path, monkeypatch):
    from harness.cli.commands.data import app
    monkeypatch.setattr(T, "TEST_DATA_SHA256", SHA)
    monkeypatch.setattr(T.time, "sleep", lambda s: None)   # the CLI uses the default backoff
    r = CliRunner().invoke(app, ["pull-test-data", "--url", server.url("/err"), "--url", server.url("/404")])
    assert r.exit_code == 1 and "HTTP 404" in r.output
    r = CliRunner().invoke(app, ["pull-test-data", "--url", server.url("/ok")])
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == str(T.default_path())
    r = CliRunner().invoke(app, ["path", "--test-data"])
    assert r.exit_code == 0 and r.output.strip() == str(T.default_path())
