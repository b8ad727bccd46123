"""A resumable, append-only JSONL store keyed by content.

Each line is ``{"key": <sha256 hex>, "record": {...}}``. The key is the hash of
everything that determines the record (model, prompt, sample index, sampling
parameters, code, image digest, ...), so a rerun with a changed setting computes a
different key and never reuses a stale entry. The same store class backs
``generations.jsonl`` and ``records.jsonl``.

Durability: every ``put`` writes one whole line with a single ``write`` on an
``O_APPEND`` descriptor, so a killed process loses at most the line being written;
a torn (unterminated, unparsable) last line is ignored on load and cut off before
the next append. A write that fails part-way (disk full, read-only) is cut back before
``put`` raises, so the file never holds half a line. ``durable=True`` additionally fsyncs each line (survives power
loss, costs a disk flush per put); otherwise the file is fsynced on ``close``.

Thread-safe; ``put`` is a short blocking call, fine to use from asyncio code.
One Store object per file per process.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

log = logging.getLogger(__name__)

# Bump when the meaning of stored records changes, so old entries stop matching.
KEY_SCHEMA = 1


def _canonical(value: Any) -> Any:
    """JSON-able canonical form: sorted dicts (by json.dumps), tuples as lists,
    integral floats as ints (so temperature 0 and 0.0 give the same key),
    non-finite floats and bytes tagged, Paths as strings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return {"__float__": "nan"}
        if math.isinf(value):
            return {"__float__": "inf" if value > 0 else "-inf"}
        return int(value) if value.is_integer() else value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"store key parts: dict keys must be str, got {type(k).__name__}")
            out[k] = _canonical(v)
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"__bytes__": bytes(value).hex()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    # numpy scalars and similar
    item = getattr(value, "item", None)
    if callable(item):
        return _canonical(item())
    raise TypeError(f"store key parts: cannot canonicalise {type(value).__name__}")


def make_key(**parts: Any) -> str:
    """sha256 hex of the canonical JSON of ``parts`` (plus the key schema)."""
    payload = {"__schema__": KEY_SCHEMA, **{k: _canonical(v) for k, v in parts.items()}}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Store:
    def __init__(self, path: "str | os.PathLike[str]", *, durable: bool = False):
        self.path = Path(path)
        self.durable = durable
        self._lock = threading.Lock()
        self._data: dict[str, dict] = {}
        self.skipped_lines = 0  # unparsable lines ignored on load
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._load_and_repair()
        self._fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    key = staticmethod(make_key)

    # -------------------------------------------------------------- loading
    def _load_and_repair(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        good_end = 0  # byte offset just past the last complete line
        pos = 0
        n = len(raw)
        while pos < n:
            nl = raw.find(b"\n", pos)
            terminated = nl != -1
            end = nl + 1 if terminated else n
            line = raw[pos:(nl if terminated else n)]
            entry = self._parse(line)
            if entry is not None:
                k, rec = entry
                self._data[k] = rec  # last one wins
            elif line.strip():
                if terminated:
                    self.skipped_lines += 1
                    log.warning("%s: ignoring unparsable line at byte %d", self.path, pos)
                else:
                    log.warning("%s: ignoring torn last line (%d bytes)", self.path, len(line))
            if terminated or entry is not None:
                good_end = end
            pos = end
        if good_end < n:
            # Cut a torn tail so the next append starts on a fresh line.
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        elif n and not raw.endswith(b"\n"):
            # Complete JSON but no newline (crash between data and "\n").
            with open(self.path, "ab") as f:
                f.write(b"\n")

    @staticmethod
    def _parse(line: bytes) -> Optional["tuple[str, dict]"]:
        if not line.strip():
            return None
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str) or "record" not in obj:
            return None
        return obj["key"], obj["record"]

    # -------------------------------------------------------------- access
    def get(self, key: str) -> Optional[dict]:
        with self._lock:
            return self._data.get(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def keys(self) -> "list[str]":
        with self._lock:
            return list(self._data)

    def items(self) -> "Iterator[tuple[str, dict]]":
        with self._lock:
            snapshot = list(self._data.items())
        return iter(snapshot)

    def put(self, key: str, record: dict) -> None:
        """Append one entry (a later put of the same key supersedes it)."""
        entry = {"key": key, "record": record}
        try:
            data = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        except UnicodeEncodeError:   # a lone surrogate: escaped, so it reads back as it was
            data = (json.dumps(entry, separators=(",", ":")) + "\n").encode("ascii")
        with self._lock:
            if self._fd is None:
                raise ValueError(f"store {self.path} is closed")
            view = memoryview(data)
            start = os.fstat(self._fd).st_size
            try:
                while view:  # os.write may be partial for huge lines
                    written = os.write(self._fd, view)
                    view = view[written:]
                if self.durable:
                    os.fsync(self._fd)
            except OSError:
                # disk full / read-only mid-line: cut what was written, never leave half a line
                try:
                    os.ftruncate(self._fd, start)
                except OSError:
                    pass   # the next load cuts a torn tail anyway
                raise
            self._data[key] = record

    # -------------------------------------------------------------- lifecycle
    def flush(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is None:
                return
            try:
                os.fsync(self._fd)
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


__all__ = ["Store", "make_key", "KEY_SCHEMA"]
