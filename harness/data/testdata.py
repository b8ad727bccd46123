"""test_data.h5: the official SciCode test targets, downloaded, resumable, verified.

Primary source: the Hugging Face mirror xantheocracy/scicode-mirror at a pinned
revision (the same file and sha256 inspect_evals pins); fallback: the upstream
Google Drive file. Downloads stream into ``<dest>.part`` and resume with an HTTP
Range request after a cut connection or an interrupted run; the finished file
is checked against the pinned sha256 and only then renamed into place. The same
downloader serves other pinned files (pull_test_data's name, expected_md5 and
expected_sha256), e.g. SciCode-Verified's test_data_cleaned.h5.

Selection order for a run (`resolve_test_data`): an explicit path, else
$SCICODE_TEST_DATA, else the cached download.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Callable, Iterable

from harness.errors import HarnessError, UserError
from harness.util.paths import atomic_path, cache_dir, targets_path

TEST_DATA_NAME = "test_data.h5"
TEST_DATA_SHA256 = "48b0272a88b17dbd29777c217e1b4fb2b019b92e11cc2add847409db9541b890"
HF_REPO = "xantheocracy/scicode-mirror"
HF_REVISION = "2f903a64a1c4eb62c7c649b0caf7ecb2c0217590"   # short form 2f903a6
HF_URL = f"https://huggingface.co/datasets/{HF_REPO}/resolve/{HF_REVISION}/{TEST_DATA_NAME}"
GDRIVE_FILE_ID = "17G_k65N_6yFFZ2O-jQH00Lh6iaw3z-AW"
GDRIVE_URL = f"https://drive.usercontent.google.com/download?id={GDRIVE_FILE_ID}&confirm=y"
DEFAULT_URLS = (HF_URL, GDRIVE_URL)
ENV_TEST_DATA = "SCICODE_TEST_DATA"
PULL_HINT = "scicode-harness data pull-test-data"

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class TestDataError(HarnessError):
    """A one-line, user-facing problem with test_data.h5."""
    __test__ = False   # not a pytest test class


def default_path() -> Path:
    """Where pull_test_data() stores the file by default."""
    return cache_dir() / "test_data" / TEST_DATA_NAME


def ssl_context() -> ssl.SSLContext:
    """The system trust store (so TLS-intercepting proxies with a system CA work):
    truststore when available, else OpenSSL's defaults plus $SSL_CERT_FILE/$SSL_CERT_DIR."""
    try:
        import truststore
        return truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    except Exception:
        ctx = ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or None,
                                         capath=os.environ.get("SSL_CERT_DIR") or None)
        return ctx


def http_client(timeout: float = 60.0, **kwargs):
    """An httpx.Client on the system trust store, following redirects."""
    import httpx
    kwargs.setdefault("verify", ssl_context())
    kwargs.setdefault("follow_redirects", True)
    kwargs.setdefault("headers", {"User-Agent": "scicode-harness"})
    return httpx.Client(timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)), **kwargs)


# ---------------------------------------------------------------- hashes and the verified-stamp

def _expected(sha256: str | None, md5: str | None) -> dict[str, str]:
    """{algorithm: hex digest} to check; neither given means the pinned TEST_DATA_SHA256."""
    if not sha256 and not md5:
        sha256 = TEST_DATA_SHA256
    return {a: d for a, d in (("sha256", sha256), ("md5", md5)) if d}


def file_digests(path: Path, algorithms: Iterable[str]) -> dict[str, str]:
    """Hex digests of a file, every algorithm in one pass."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def hash_mismatch(expected: dict[str, str], actual: dict[str, str]) -> str | None:
    """"md5 mismatch (expected X, actual Y)" for the first digest that differs, else None."""
    for a, want in expected.items():
        if actual.get(a) != want:
            return f"{a} mismatch (expected {want}, actual {actual.get(a)})"
    return None


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")   # the name predates md5 checks


def _stamp_key(expected: dict[str, str]) -> str:
    # a sha256 alone is written bare, as stamps were before md5 checks existed
    if set(expected) == {"sha256"}:
        return expected["sha256"]
    return ",".join(f"{a}:{expected[a]}" for a in sorted(expected))


def _sig(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns}"


def _write_stamp(path: Path, expected: dict[str, str]):
    try:
        _stamp_path(path).write_text(f"{_stamp_key(expected)} {_sig(path)}\n")
    except OSError:
        pass


def _stamped_key(path: Path) -> str | None:
    """The key of `path`'s stamp while its size and mtime are unchanged, else None."""
    try:
        key, sig = _stamp_path(path).read_text().strip().split(" ", 1)
        return key if sig == _sig(path) else None
    except (OSError, ValueError):
        return None


def _stamp_ok(path: Path, expected: dict[str, str]) -> bool:
    return _stamped_key(path) == _stamp_key(expected)


def stamped_md5(path: Path) -> str | None:
    """The md5 a still-valid stamp says `path` was verified against, if any."""
    key = _stamped_key(path) or ""
    return dict(part.split(":", 1) for part in key.split(",") if ":" in part).get("md5")


def verify_test_data(path: Path, expected_sha256: str | None = None, *, expected_md5: str | None = None,
                     fresh: bool = False, pull_hint: str = PULL_HINT) -> None:
    """Raise TestDataError unless path hashes to expected_sha256 and/or expected_md5 (neither:
    the pinned TEST_DATA_SHA256). A stamp file written next to a verified download skips
    re-hashing while size and mtime are unchanged (fresh=True hashes anyway)."""
    expected = _expected(expected_sha256, expected_md5)
    path = Path(path)
    if not path.is_file():
        raise TestDataError(f"{path} not found: run `{pull_hint}`")
    if not fresh and _stamp_ok(path, expected):
        return
    bad = hash_mismatch(expected, file_digests(path, expected))
    if bad:
        _stamp_path(path).unlink(missing_ok=True)
        raise TestDataError(f"{path}: {bad}; the file is tampered or truncated: run `{pull_hint} --force`")
    _write_stamp(path, expected)


def resolve_test_data(explicit_path: str | os.PathLike | None = None) -> Path | None:
    """The test-data file a run should use: explicit_path, else $SCICODE_TEST_DATA,
    else the cached download (verified, cheaply; TestDataError if it does not verify),
    else None.

    An explicit or environment path is returned as given (expanded): the caller checks
    that it exists and holds what the run needs (h5targets.missing_steps). It is not
    required to be the official file (it may hold regenerated or cleaned targets);
    `is_official()` tells.
    """
    for value in (explicit_path, os.environ.get(ENV_TEST_DATA)):
        if value:
            return Path(value).expanduser()
    cached = default_path()
    if cached.is_file():
        verify_test_data(cached)
        return cached
    return None


def is_official(path: Path) -> bool:
    try:
        verify_test_data(Path(path))
        return True
    except TestDataError:
        return False


# ---------------------------------------------------------------- download

class _Transient(Exception):
    pass


class _Fatal(Exception):
    pass


def _fmt_mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class _Progress:
    def __init__(self, progress, label: str, every_s: float = 10.0):
        self.progress, self.label, self.every_s = progress, label, every_s
        self.last_t = time.monotonic()
        self.last_pct = -1

    def update(self, done: int, total: int | None, final: bool = False):
        now = time.monotonic()
        pct = int(done * 100 / total) if total else None
        step = pct is not None and pct // 10 > self.last_pct // 10
        if not (final or step or now - self.last_t >= self.every_s):
            return
        self.last_t = now
        if pct is not None:
            self.last_pct = pct
            self.progress(f"{self.label}: {_fmt_mb(done)} / {_fmt_mb(total)} ({pct}%)")
        else:
            self.progress(f"{self.label}: {_fmt_mb(done)}")


def _fetch_once(client, url: str, part: Path, progress: _Progress) -> None:
    """One HTTP request: resume `part` from its current size (Range) or start afresh.
    Returns when the body is complete; raises _Transient / _Fatal."""
    import httpx

    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with client.stream("GET", url, headers=headers) as r:
            if r.status_code == 416 and have:
                # nothing left to send: the part is (claimed) complete; the hash decides
                return
            if r.status_code in _TRANSIENT_STATUS:
                raise _Transient(f"HTTP {r.status_code}")
            if r.status_code not in (200, 206):
                raise _Fatal(f"HTTP {r.status_code}")
            ctype = r.headers.get("content-type", "")
            if ctype.startswith("text/html"):
                raise _Fatal("got an HTML page instead of the file (quota or confirmation page?)")
            total = None
            if r.status_code == 206:
                crange = r.headers.get("content-range", "")   # bytes START-END/TOTAL
                try:
                    start = int(crange.split()[1].split("-")[0])
                    tail = crange.rsplit("/", 1)[1]
                    total = int(tail) if tail != "*" else None
                except (IndexError, ValueError):
                    raise _Fatal(f"bad Content-Range {crange!r}") from None
                if start != have:
                    raise _Fatal(f"server resumed at byte {start}, expected {have}")
                mode = "ab"
            else:
                have = 0
                mode = "wb"
                length = r.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            done = have
            with open(part, mode) as f:
                for chunk in r.iter_bytes(1 << 16):
                    f.write(chunk)
                    done += len(chunk)
                    progress.update(done, total)
                f.flush()
                os.fsync(f.fileno())
            progress.update(done, total, final=True)
    except httpx.HTTPError as e:   # cut connection, timeout, DNS, TLS, ...
        raise _Transient(f"{type(e).__name__}: {e}".split("\n")[0]) from None


def _fetch_url(client, url, part, progress, retries, backoff) -> bool:
    """Fetch url into part, resuming after transient failures. Attempts that make
    progress do not count against `retries`. Returns whether it resumed midway."""
    failures = 0
    resumed = False
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _fetch_once(client, url, part, progress)
            return resumed
        except _Transient as e:
            resumed = True
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures > retries:
                raise _Fatal(f"{e} (after {retries} retries)") from None
            progress.progress(f"{progress.label}: {e}; resuming at {_fmt_mb(after)}")
            time.sleep(min(backoff * (2 ** max(failures - 1, 0)), 30.0))


def _download(client, urls: list[str], part: Path, dest: Path, expected: dict[str, str], name: str,
              progress, retries: int, backoff: float) -> list[str]:
    """Try urls in order into `part`; on the first that verifies, rename it to dest and return [].
    Else the errors, one per url."""
    errors = []
    for url in urls:
        for attempt in (1, 2):
            resumed = part.exists() and part.stat().st_size > 0
            progress(f"downloading {name} from {url}"
                     + (f" (resuming at {_fmt_mb(part.stat().st_size)})" if resumed else ""))
            try:
                if _fetch_url(client, url, part, _Progress(progress, name), retries, backoff):
                    resumed = True
            except _Fatal as e:
                errors.append(f"{url}: {e}")
                break
            bad = hash_mismatch(expected, file_digests(part, expected))
            if bad is None:
                os.replace(part, dest)
                _write_stamp(dest, expected)
                shown = ", ".join(f"{a} {d[:12]}..." for a, d in expected.items())
                progress(f"{dest} verified ({shown})")
                return []
            part.unlink(missing_ok=True)
            if resumed and attempt == 1:
                progress("the resumed download does not verify; starting over")
                continue
            errors.append(f"{url}: {bad}")
            break
    return errors


def pull_test_data(dest: str | os.PathLike | None = None, urls: Iterable[str] | None = None,
                   progress: Callable[[str], None] | None = print, *,
                   expected_sha256: str | None = None, expected_md5: str | None = None,
                   name: str = TEST_DATA_NAME, fallback: str | None = None, force: bool = False,
                   retries: int = 4, backoff: float = 1.0, client=None) -> Path:
    """Download test_data.h5 (or another pinned file: `name`) to dest (default: the cache),
    trying urls in order (default: the Hugging Face mirror, then Google Drive). Resumable;
    verified against expected_sha256 and/or expected_md5 (neither: the pinned TEST_DATA_SHA256);
    atomic. Raises TestDataError with one line, ending with `fallback` (default: --test-data)."""
    progress = progress or (lambda msg: None)
    expected = _expected(expected_sha256, expected_md5)
    dest = Path(dest).expanduser() if dest else default_path().with_name(name)
    urls = list(urls) if urls else list(DEFAULT_URLS)
    if dest.is_dir():
        dest = dest / name
    if not force and dest.is_file():
        try:
            verify_test_data(dest, expected_sha256, expected_md5=expected_md5)
            progress(f"{dest} already present and verified")
            return dest
        except TestDataError:
            progress(f"{dest} does not verify; downloading again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if force and part.exists():
        part.unlink()

    own = client is None
    client = client or http_client(timeout=60.0)
    try:
        errors = _download(client, urls, part, dest, expected, name, progress, retries, backoff)
    finally:
        if own:
            client.close()
    if not errors:
        return dest
    fallback = fallback or f"or fetch it elsewhere and pass --test-data PATH / ${ENV_TEST_DATA}"
    raise TestDataError(f"could not download {name}: " + "; ".join(errors) + f"; {fallback}")


def copy_test_data(src: Path, dest: Path, progress: Callable[[str], None] | None = print, *,
                   expected_sha256: str | None = None, expected_md5: str | None = None) -> Path:
    """Copy a local file to dest, verified before it is renamed into place (atomic) and stamped."""
    progress = progress or (lambda msg: None)
    expected = _expected(expected_sha256, expected_md5)
    progress(f"copying {src} to {dest}")
    with atomic_path(dest, 0o644) as tmp:
        shutil.copyfile(src, tmp)
        bad = hash_mismatch(expected, file_digests(tmp, expected))
        if bad:
            raise TestDataError(f"{dest.name} from {src}: {bad}")
    _write_stamp(dest, expected)
    progress(f"{dest} verified")
    return dest


# ---------------------------------------------------------------- a run's test data

def require(given: Path | None, split: str) -> Path:
    """The test data a run uses (see resolve_test_data; the dev split falls back to the targets
    `targets build` made); UserError with the fixes when there is none."""
    path = resolve_test_data(given)
    if given is not None and (path is None or not Path(path).is_file()):
        raise UserError(f"test data not found: {given}")
    if path is None and split == "dev":
        own = targets_path("dev")
        path = own if own.is_file() else None
    if path is None:
        hint = ("; for the dev split you can also build targets: scicode-harness targets build --split dev"
                if split == "dev" else "")
        raise UserError("test data (test_data.h5) not found: pass --test-data PATH, set SCICODE_TEST_DATA, "
                        "or run `scicode-harness data pull-test-data`" + hint)
    return Path(path)


def check_steps(path: Path, problems: list[dict], allow_missing: bool = False) -> list[str]:
    """Steps the file lacks; an error unless allow_missing (then they score as no_target)."""
    from harness.data import h5targets
    need = {s["step_number"]: len(s["test_cases"]) for p in problems for s in p["sub_steps"]
            if s.get("test_cases")}
    try:
        missing = h5targets.missing_steps(path, need)
    except OSError as e:
        raise UserError(f"cannot read test data {path}: {e}") from None
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        if not allow_missing:
            raise UserError(f"test data {path} lacks {len(missing)} step(s) this run needs: {shown} "
                            "(--allow-missing-targets scores them as no_target)")
        logging.getLogger("scicode_eval").warning(
            "test data %s lacks %d step(s); they score as no_target: %s", path, len(missing), shown)
    return missing
