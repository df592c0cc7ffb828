"""Records of verified files: these bytes, this size, this sha256, this fast digest, checked
against this pin.

Hashing a 1 GB file by sha256 costs seconds, so a successful check leaves a ``Record`` in our
cache. Two kinds of file have one: a fetched file (its record in ``verified/``, keyed by the
file's path; ``pinned`` is the sha256 it was checked against, its own) and a converted copy of an
upstream pickle (its record beside it, ``converted/<key>.json``; ``pinned`` is the sha256 of
the verified source it was converted from). One reader and one writer serve both.

``verify="auto"`` trusts a record's sha256 only together with a content check: the reader of
the file (``formats.safetensors_file.read_weights``) recomputes the fast digest of the bytes it
loads and compares it with the record's, so any changed byte is caught on every load.
``"always"`` re-hashes by sha256; ``"never"`` checks nothing. A record that is malformed, of
another version, about another file or of another size is treated as absent (the file is
re-hashed and the record rewritten).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import validate
from ..errors import UsageError
from ..fileio import FAST_DIGEST, atomic_write_text, hash_file
from ..validate import IntegrityError
from .cache import cache_dir, converted_dir, remove

VERIFY_MODES = ("auto", "always", "never")
RECORD_VERSION = 3

__all__ = ["VERIFY_MODES", "Record", "record_path", "read", "write", "note", "forget",
           "check_mode", "verify_file", "file_sha256", "IntegrityError"]


@dataclass(frozen=True)
class Record:
    """What was verified about one file."""

    file: str              # the file: its name in converted/, else its resolved path
    size: int
    sha256: str
    fast: str              # FAST_DIGEST hex of the same bytes
    pinned: str | None     # the pinned sha256 the file (or its source) was checked against
    about: dict[str, Any] = field(default_factory=dict)   # provenance: source, arch, name, ...

    def to_json(self) -> str:
        return json.dumps({"v": RECORD_VERSION, "file": self.file, "size": self.size,
                           "sha256": self.sha256, FAST_DIGEST: self.fast,
                           "pinned": self.pinned, **self.about}, indent=1)


def _identity(path: Path) -> tuple[Path, str]:
    """(where the record of ``path`` lives, how it names ``path``)."""
    if path.parent == converted_dir():
        return path.with_suffix(".json"), path.name
    resolved = str(path.resolve())
    key = hashlib.sha1(resolved.encode()).hexdigest()
    return cache_dir() / "verified" / f"{key}.json", resolved


def record_path(path: Path) -> Path:
    """Where the record of ``path`` lives."""
    return _identity(path)[0]


def read(path: Path) -> Record | None:
    """The record of ``path`` if it is well-formed, names ``path`` and matches its size."""
    where, ident = _identity(path)
    try:
        d = validate.load_json(where.read_text(), str(where))
        size = path.stat().st_size
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not (isinstance(d, dict) and d.get("v") == RECORD_VERSION and d.get("file") == ident
            and type(d.get("size")) is int and d["size"] == size
            and validate.is_sha256(d.get("sha256"))
            and validate.is_fast_digest(d.get(FAST_DIGEST))
            and (d.get("pinned") is None or validate.is_sha256(d["pinned"]))):
        return None
    about = {k: v for k, v in d.items()
             if k not in ("v", "file", "size", "sha256", FAST_DIGEST, "pinned")}
    return Record(ident, size, d["sha256"], d[FAST_DIGEST], d.get("pinned"), about)


def write(path: Path, sha256: str, fast: str, size: int, pinned: str | None,
          **about: Any) -> Record:
    """Record a verification of ``path`` (atomically; an OSError propagates)."""
    where, ident = _identity(path)
    rec = Record(ident, size, sha256, fast, pinned, about)
    atomic_write_text(where, rec.to_json())
    return rec


def note(path: Path, sha256: str, fast: str, size: int, pinned: str | None) -> None:
    """``write``, for a record that only saves work: a cache that cannot be written costs a
    re-hash next time, nothing else."""
    try:
        write(path, sha256, fast, size, pinned)
    except OSError:
        pass


def forget(path: Path) -> None:
    """Drop the record of ``path`` (its verification no longer holds)."""
    try:
        remove(record_path(path))
    except OSError:
        pass


def check_mode(verify: Any) -> str:
    """``verify`` if it is one of VERIFY_MODES, else a UsageError naming them."""
    if not isinstance(verify, str) or verify not in VERIFY_MODES:
        hint = (f"; did you mean {verify.lower()!r}?"
                if isinstance(verify, str) and verify.lower() in VERIFY_MODES else "")
        raise UsageError(f"verify={verify!r}: use one of {', '.join(VERIFY_MODES)}{hint}")
    return verify


def verify_file(path: Path, expected: str | None, what: str, verify: str = "auto") -> str | None:
    """Check ``path`` against ``expected`` (sha256); return the fast digest the bytes had when
    verified, which the reader must find again (None: nothing to check against).

    "auto" takes the sha256 from a valid record; otherwise, and always for "always", the file
    is hashed (sha256 and fast digest in one read)."""
    check_mode(verify)
    if verify == "never" or expected is None:
        return None
    expected = expected.lower()
    rec = read(path) if verify == "auto" else None
    if rec is not None and rec.sha256 == expected:
        return rec.fast
    sha, fast, size = hash_file(path)
    if sha != expected:
        forget(path)
        raise IntegrityError(f"sha256 mismatch for {what}\n  file:     {path}\n"
                             f"  expected: {expected}\n  actual:   {sha}")
    note(path, sha, fast, size, expected)
    return fast


def file_sha256(path: Path, verify: str = "auto") -> str | None:
    """sha256 of ``path``, from its record when one is valid (``verify="auto"``)."""
    check_mode(verify)
    if verify == "never":
        return None
    rec = read(path) if verify == "auto" else None
    if rec is not None:
        return rec.sha256
    sha, fast, size = hash_file(path)
    note(path, sha, fast, size, None)
    return sha
