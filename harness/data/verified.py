"""SciCode-Verified (arXiv 2608.04975; github.com/flyingwagner/scicode-verified, Apache-2.0,
dataset v2): a human-verified correction of SciCode's test split. 64 problems, 287 scored steps;
the unscored steps 13.6, 62.1, 76.3 take upstream's prefilled code where
the JSONL carries none (the released v2 JSONL carries none).

A Pin says where the files come from and what they must be: problems_test.jsonl and
test_data_cleaned.h5 (~1.1 GB, resumable download) by md5 (and sha256 when pinned); manifest.json
by content (version, n_problems and its md5s equal the pin's; sha256 when pinned). Everything is
verified before anything is renamed into cache_dir()/verified/<pin id>; loading re-verifies cheaply
(stat signature for the small files, a stamp file for the h5).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from harness.data import testdata
from harness.data import dataset
from harness.data.dataset import SKIPPED_STEPS, DataError, _sig
from harness.util.paths import cache_dir, write_bytes_atomic

REPO = "flyingwagner/scicode-verified"
COMMIT = "3dfa277b3cee817083a7079148b95f029c6b4293"
RAW = "https://raw.githubusercontent.com/{repo}/{commit}/scicode_verified/{name}"
PROBLEMS = "problems_test.jsonl"
MANIFEST = "manifest.json"
H5 = "test_data_cleaned.h5"
H5_URL = f"https://github.com/{REPO}/releases/download/data/{H5}"
# the same file on the authors' Hugging Face dataset, at a pinned revision (tried second)
H5_HF_URL = ("https://huggingface.co/datasets/shhu2001/SciCode-Verified/resolve/"
             f"eea11a866be6860725258702b39ef8651ed26abd/{H5}")
PROBLEMS_MD5 = "07c4cd521ea60a166c05737ddfa51ac0"
H5_MD5 = "2b41a7df40ddc23ce651ec05b8ecb6f8"
PROBLEMS_SHA256 = "24e5e32a77c5504a7d79f7a28b705dfdd7175975cf417bed48caf68f1610ea1a"
MANIFEST_SHA256 = "28a4663f1c911661c9895431a1f840fb7b3f7f7992cbef2120d14c379361045f"
H5_SHA256 = "8fb6e575b7b6dda5e48b04dea338fc6af4fe185774b8f19221c96945df9b4142"   # 1,108,078,257 bytes
PULL_HINT = "scicode-harness data pull --benchmark verified"
SUBDIR = "scicode_verified"   # where a checkout of the repository keeps the small files


@dataclass(frozen=True)
class Pin:
    """Where SciCode-Verified comes from and what its files must hash to."""
    commit: str
    problems_urls: tuple[str, ...]
    manifest_urls: tuple[str, ...]
    h5_urls: tuple[str, ...]
    problems_md5: str
    h5_md5: str
    problems_sha256: str | None = None
    manifest_sha256: str | None = None
    h5_sha256: str | None = None
    version: str = "v2"                # the manifest's "version"
    n_problems: int | None = 64        # the manifest's "n_problems" and the JSONL's count; None: unchecked
    unscored_steps: tuple[str, ...] = SKIPPED_STEPS
    official: bool = False
    source: str = ""


def official_pin() -> Pin:
    """The upstream repository at the pinned commit."""
    problems, manifest = (RAW.format(repo=REPO, commit=COMMIT, name=n) for n in (PROBLEMS, MANIFEST))
    # The two small files' sha256 were taken from the commit's text (their md5/content equal the
    # manifest's). The h5's sha256 is the one independent consumers of the same release pin beside
    # its manifest md5 (neither host was reachable from where this was pinned); both must match.
    return Pin(commit=COMMIT, problems_urls=(problems,), manifest_urls=(manifest,),
               h5_urls=(H5_URL, H5_HF_URL), problems_md5=PROBLEMS_MD5, h5_md5=H5_MD5, official=True,
               problems_sha256=PROBLEMS_SHA256, manifest_sha256=MANIFEST_SHA256, h5_sha256=H5_SHA256,
               source=f"github.com/{REPO}@{COMMIT[:12]} (dataset v2)")


# ---------------------------------------------------------------- pin files

def _need(ok: bool, what: str):
    if not ok:
        raise ValueError(what)


def _hex(value, n: int, what: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    _need(isinstance(value, str) and len(value) == n and set(value) <= set("0123456789abcdef"),
          f"{what} must be {n} lowercase hex digits" + (" or null" if optional else ""))
    return value


def _urls(value, what: str) -> tuple[str, ...]:
    value = [value] if isinstance(value, str) else value
    _need(isinstance(value, list) and value and all(isinstance(u, str) and u for u in value),
          f"{what} must be a URL or a non-empty list of URLs")
    return tuple(value)


def _pin_from(d) -> Pin:
    _need(isinstance(d, dict), "not a JSON object")
    urls, md5, sha = d.get("urls") or {}, d.get("md5") or {}, d.get("sha256") or {}
    _need(all(isinstance(x, dict) for x in (urls, md5, sha)), "urls, md5 and sha256 must be JSON objects")
    commit, version, n = d.get("commit"), d.get("version", "v2"), d.get("n_problems")
    steps = d.get("unscored_steps", list(SKIPPED_STEPS))
    _need(isinstance(commit, str) and commit, "commit must be a non-empty string")
    _need(isinstance(version, str), "version must be a string")
    _need(n is None or (type(n) is int and n > 0), "n_problems must be a positive integer or null")
    _need(isinstance(steps, list) and all(isinstance(x, str) for x in steps),
          "unscored_steps must be a list of step ids")
    return Pin(commit=commit, problems_urls=_urls(urls.get("problems"), "urls.problems"),
               manifest_urls=_urls(urls.get("manifest"), "urls.manifest"), h5_urls=_urls(urls.get("h5"), "urls.h5"),
               problems_md5=_hex(md5.get("problems"), 32, "md5.problems"), h5_md5=_hex(md5.get("h5"), 32, "md5.h5"),
               problems_sha256=_hex(sha.get("problems"), 64, "sha256.problems", True),
               manifest_sha256=_hex(sha.get("manifest"), 64, "sha256.manifest", True),
               h5_sha256=_hex(sha.get("h5"), 64, "sha256.h5", True),
               version=version, n_problems=n, unscored_steps=tuple(steps), official=False,
               source=str(d.get("source") or f"pin file (commit {commit[:12]})"))


def load_pin(path: str | os.PathLike) -> Pin:
    """A pin from a JSON file (mirrors, tests): {"commit", "urls": {"problems", "manifest", "h5"}
    (a URL or a list each), "md5": {"problems", "h5"}, optional "sha256": {"problems", "manifest",
    "h5"}, "version", "n_problems", "unscored_steps", "source"}. Never official."""
    path = Path(path).expanduser()
    try:
        return _pin_from(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"pin file {path}: {e}".split("\n")[0]) from None


def pin_id(pin: Pin) -> str:
    """Short id of what the pin verifies (not where it fetches from); names the cache directory."""
    ident = {k: v for k, v in asdict(pin).items() if not k.endswith("_urls") and k not in ("official", "source")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def cache_path(pin: Pin) -> Path:
    """cache_dir()/verified/<pin id> (may not exist yet)."""
    return cache_dir() / "verified" / pin_id(pin)


def describe(pin: Pin) -> dict:
    """The data block of a results JSON."""
    return {"benchmark": "verified", "official": pin.official, "commit": pin.commit, "version": pin.version,
            "pin_id": pin_id(pin), "source": pin.source,
            "md5": {PROBLEMS: pin.problems_md5, H5: pin.h5_md5},
            "sha256": {PROBLEMS: pin.problems_sha256, MANIFEST: pin.manifest_sha256, H5: pin.h5_sha256}}


# ---------------------------------------------------------------- checks

def _expected(pin: Pin, name: str) -> dict[str, str]:
    md5 = {PROBLEMS: pin.problems_md5, H5: pin.h5_md5}.get(name)
    sha = {PROBLEMS: pin.problems_sha256, MANIFEST: pin.manifest_sha256, H5: pin.h5_sha256}[name]
    return {a: d for a, d in (("md5", md5), ("sha256", sha)) if d}


def _parse(data: bytes) -> list[dict]:
    out = []
    for i, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"line {i}: not valid JSON ({e.msg})") from None
            _need(isinstance(out[-1], dict), f"line {i}: not a JSON object")
    return out


def _manifest_problem(pin: Pin, data: bytes) -> str | None:
    try:
        m = json.loads(data)
    except ValueError as e:
        return f"not valid JSON ({e})"
    if not isinstance(m, dict):
        return "not a JSON object"
    want = {"version": pin.version, "problems_test_jsonl_md5": pin.problems_md5, "h5_md5": pin.h5_md5}
    if pin.n_problems is not None:
        want["n_problems"] = pin.n_problems
    for key, value in want.items():
        if m.get(key) != value:
            return f"{key} is {m.get(key)!r}, the pin expects {value!r}"
    if not isinstance(m.get("problem_order"), list):
        return "problem_order is not a list"
    return None


def _problems_problem(pin: Pin, data: bytes, manifest: dict) -> str | None:
    """What is wrong with the JSONL's content (count, ids, unscored steps), else None."""
    try:
        problems = _parse(data)
    except ValueError as e:
        return str(e)
    ids = [str(p.get("problem_id")) for p in problems]
    order = [str(i) for i in manifest["problem_order"]]
    if pin.n_problems is not None and len(ids) != pin.n_problems:
        return f"{len(ids)} problems, the pin expects {pin.n_problems}"
    if len(set(ids)) != len(ids) or set(ids) != set(order):
        return f"problem ids differ from the manifest's problem_order (in one only: {sorted(set(ids) ^ set(order))})"
    steps = {s.get("step_number") for p in problems for s in p.get("sub_steps") or []}
    missing = [sid for sid in pin.unscored_steps if sid not in steps]
    if missing:
        return f"unscored step(s) {', '.join(missing)} missing"
    return None


def _check(pin: Pin, name: str, data: bytes) -> str | None:
    """What is wrong with a small file's bytes (one line), else None."""
    want = _expected(pin, name)
    bad = testdata.hash_mismatch(want, {a: hashlib.new(a, data).hexdigest() for a in want})
    if bad is None and name == MANIFEST:
        bad = _manifest_problem(pin, data)
    return bad


# ---------------------------------------------------------------- the cache

# str(path) -> (stat signature, verified bytes), as in harness.data.dataset (single dict
# operations, atomic under the GIL, so no lock).
_verified: dict[str, tuple[tuple, bytes]] = {}


def _load(pin: Pin, name: str) -> bytes:
    """Verified bytes of a cached small file; DataError (missing / mismatch). Read and checked
    again only when the file's stat signature changed."""
    path = cache_path(pin) / name
    try:
        sig = _sig(path.stat())
        hit = _verified.get(str(path))
        if hit is not None and hit[0] == sig:
            return hit[1]
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name} is missing from {path.parent}: run `{PULL_HINT}`") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    _verified.pop(str(path), None)
    bad = _check(pin, name, data)
    if bad:
        raise DataError(f"{path}: {bad}; the file is tampered or truncated: run `{PULL_HINT} --force`")
    _verified[str(path)] = (sig, data)
    return data


def _forget(pin: Pin):
    prefix = str(cache_path(pin)) + os.sep
    for k in [k for k in list(_verified) if k.startswith(prefix)]:
        _verified.pop(k, None)


def test_data_path(pin: Pin, fresh: bool = False) -> Path:
    """The verified cached test_data_cleaned.h5; DataError saying how to pull it. A stamp spares
    re-hashing an unchanged file (fresh=True hashes anyway)."""
    path = cache_path(pin) / H5
    try:
        testdata.verify_test_data(path, pin.h5_sha256, expected_md5=pin.h5_md5, fresh=fresh, pull_hint=PULL_HINT)
    except testdata.TestDataError as e:
        raise DataError(str(e)) from None
    return path


def verify_report(pin: Pin, with_h5: bool = True) -> list[tuple[str, bool, str | None]]:
    """(name, ok, error message or None) for every file; hashes every file afresh."""
    _forget(pin)
    out = []
    for name in (PROBLEMS, MANIFEST) + ((H5,) if with_h5 else ()):
        try:
            test_data_path(pin, fresh=True) if name == H5 else _load(pin, name)
            out.append((name, True, None))
        except DataError as e:
            out.append((name, False, str(e)))
    return out


def data_dir(pin: Pin) -> Path:
    """The cache directory, once problems_test.jsonl and manifest.json verify (else DataError)."""
    _load(pin, PROBLEMS)
    _load(pin, MANIFEST)
    return cache_path(pin)


def load_problems(pin: Pin) -> list[dict]:
    """The problems of problems_test.jsonl, from verified bytes."""
    return _parse(_load(pin, PROBLEMS))


def load_manifest(pin: Pin) -> dict:
    """manifest.json (problem_order, targets_md5, ...), verified."""
    return json.loads(_load(pin, MANIFEST))


def prefilled_code(problem: dict, step_id: str) -> str:
    """The reference code an unscored step (13.6, 62.1, 76.3) brings into the cumulative program:
    the JSONL's ground_truth_code where it has one, else upstream's pinned prefilled code (the
    released v2 JSONL has none for these steps, as upstream's test split)."""
    for step in problem.get("sub_steps") or []:
        if step.get("step_number") == step_id:
            code = step.get("ground_truth_code")
            if isinstance(code, str) and code.strip() and code.strip() != "None":
                return code
            break
    return dataset.prefilled_code(step_id)


# ---------------------------------------------------------------- pulling

def _fetch(client, urls: tuple[str, ...], name: str, progress) -> tuple[bytes, str]:
    """(bytes, url) from the first url that answers 200; DataError naming every failure."""
    import httpx
    errors = []
    for url in urls:
        progress(f"fetching {url}")
        try:
            r = client.get(url)
        except httpx.HTTPError as e:
            errors.append(f"{url}: {type(e).__name__}: {e}".split("\n")[0])
            continue
        if r.status_code == 200:
            return r.content, url
        errors.append(f"{url}: HTTP {r.status_code}")
    raise DataError(f"cannot fetch {name}: " + "; ".join(errors)
                    + f"; or copy the files and use `{PULL_HINT} --from DIR`")


def _find(src: Path, name: str) -> Path | None:
    for cand in (src / name, src / SUBDIR / name):
        if cand.is_file():
            return cand
    return None


def _small_files(pin: Pin, src: Path | None, client, progress) -> dict[str, tuple[bytes, str]]:
    """{name: (bytes, origin)} for problems_test.jsonl and manifest.json, all verified."""
    files = {}
    for name, urls in ((MANIFEST, pin.manifest_urls), (PROBLEMS, pin.problems_urls)):
        if src is None:
            files[name] = _fetch(client, urls, name, progress)
        else:
            path = _find(src, name)
            if path is None:
                raise DataError(f"--from {src}: {name} not found there (nor under {SUBDIR}/)")
            files[name] = (path.read_bytes(), str(path))
    for name, (data, origin) in files.items():   # the manifest first: the JSONL check reads it
        bad = _check(pin, name, data)
        if bad is None and name == PROBLEMS:
            bad = _problems_problem(pin, data, json.loads(files[MANIFEST][0]))
        if bad:
            raise DataError(f"{name} from {origin}: {bad}")
    return files


def _pull_h5(pin: Pin, src: Path | None, force: bool, progress, client):
    dest = cache_path(pin) / H5
    try:
        earlier = None if force or dest.exists() else _earlier_h5(pin)
        if src is None and earlier is not None:   # a pin that only added a hash: no 1.1 GB download
            src = earlier.parent
        if src is None:
            testdata.pull_test_data(dest, pin.h5_urls, progress, expected_sha256=pin.h5_sha256,
                                    expected_md5=pin.h5_md5, name=H5, force=force, client=client,
                                    fallback=f"or download it elsewhere and use `{PULL_HINT} --from DIR`")
            return
        found = _find(src, H5)
        if found is None:
            raise DataError(f"--from {src}: {H5} not found there (nor under {SUBDIR}/); --no-h5 skips it")
        if not force and _ok(test_data_path, pin):
            progress(f"{dest} already present and verified")
            return
        testdata.copy_test_data(found, dest, progress, expected_sha256=pin.h5_sha256, expected_md5=pin.h5_md5)
    except testdata.TestDataError as e:
        raise DataError(str(e)) from None


def _earlier_h5(pin: Pin) -> Path | None:
    """The same h5 (by md5) in another pin's cache directory, e.g. one pinned before its sha256."""
    for other in sorted((cache_dir() / "verified").glob(f"*/{H5}")):
        if other.parent != cache_path(pin) and testdata.stamped_md5(other) == pin.h5_md5:
            return other
    return None


def _ok(check, *args) -> bool:
    try:
        check(*args)
        return True
    except DataError:
        return False


def pull(pin: Pin, source: str | os.PathLike | None = None, force: bool = False,
         progress: Callable[[str], None] | None = print, with_h5: bool = True, client=None) -> Path:
    """Fetch (or copy from the directory `source`), verify and cache the pinned files; returns
    the cache directory. Quick no-op when the cache already verifies (unless force).
    Raises DataError (one line) naming the file on any mismatch; nothing is renamed into the
    cache before everything verifies."""
    progress = progress or (lambda msg: None)
    src = Path(source).expanduser() if source is not None else None
    if src is not None and not src.is_dir():
        raise DataError(f"--from {src}: no such directory")
    directory = cache_path(pin)
    _forget(pin)
    if not force and _ok(data_dir, pin) and (not with_h5 or _ok(test_data_path, pin)):
        progress(f"SciCode-Verified data already present and verified in {directory}")
        return directory
    own = src is None and client is None
    client = testdata.http_client(timeout=60.0) if own else client
    try:
        files = _small_files(pin, src, client, progress)
        if with_h5:
            _pull_h5(pin, src, force, progress, client)
    finally:
        if own:
            client.close()
    for name, (data, _) in files.items():
        write_bytes_atomic(directory / name, data, 0o644)   # plain shared data, whatever the umask
    _forget(pin)
    progress(f"SciCode-Verified data verified in {directory} ({pin.source or pin.commit})"
             + ("" if with_h5 else f"; {H5} skipped (--no-h5)"))
    return directory
