"""Records of verified files: which bytes were checked against which sha256.

Hashing a 1 GB file by sha256 costs seconds, so a successful check leaves a record in our
cache: the file's size, its sha256 and its fast digest (``fileio.FAST_DIGEST``), the record of
exactly which bytes were verified. ``verify="auto"`` trusts the record's sha256 only together
with a content check: the reader (``formats.safetensors_file.read_weights``) recomputes the fast
digest of the bytes it loads and compares it with the record's, so any changed byte is caught on
every load. ``"always"`` re-hashes by sha256; ``"never"`` checks nothing. A record that is
malformed is treated as absent (the file is re-hashed and the record rewritten).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .. import validate
from ..fileio import FAST_DIGEST, atomic_write_text, hash_file
from ..validate import IntegrityError
from .cache import cache_dir

VERIFY_MODES = ("auto", "always", "never")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_FAST_RE = re.compile(r"^[0-9a-f]{32}$")
MARKER_VERSION = 2

__all__ = ["VERIFY_MODES", "read_marker", "write_marker", "forget", "verify_file",
           "file_sha256", "IntegrityError"]


def _marker_path(path: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()
    return cache_dir() / "verified" / f"{key}.json"


def read_marker(path: Path) -> dict | None:
    """The marker of ``path`` if it is well-formed and matches the file's size, else None."""
    try:
        m = json.loads(_marker_path(path).read_text())
        size = path.stat().st_size
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (isinstance(m, dict) and m.get("v") == MARKER_VERSION
            and m.get("path") == str(path.resolve()) and m.get("size") == size
            and isinstance(m.get("sha256"), str) and _SHA256_RE.match(m["sha256"])
            and isinstance(m.get(FAST_DIGEST), str) and _FAST_RE.match(m[FAST_DIGEST])):
        return m
    return None


def write_marker(path: Path, sha256: str, fast: str, size: int) -> None:
    """Record a verification; a cache that cannot be written only costs a re-hash next time."""
    try:
        atomic_write_text(_marker_path(path), json.dumps(
            {"v": MARKER_VERSION, "path": str(path.resolve()), "size": size, "sha256": sha256,
             FAST_DIGEST: fast}))
    except OSError:
        pass


def forget(path: Path) -> None:
    """Drop the marker of ``path`` (its verification no longer holds)."""
    try:
        _marker_path(path).unlink()
    except OSError:
        pass


def check_mode(verify: str) -> str:
    """``verify`` if it is one of VERIFY_MODES, else a FieldError naming them."""
    if verify not in VERIFY_MODES:
        raise validate.FieldError("verify", f"{verify!r}: use one of {VERIFY_MODES}")
    return verify


def verify_file(path: Path, expected: str | None, what: str, verify: str = "auto") -> str | None:
    """Check ``path`` against ``expected`` (sha256); return the fast digest the bytes had when
    verified, which the reader must find again (None: nothing to check against).

    "auto" takes the sha256 from a well-formed marker of the same size; otherwise, and always
    for "always", the file is hashed (sha256 and fast digest in one read)."""
    check_mode(verify)
    if verify == "never" or expected is None:
        return None
    expected = expected.lower()
    m = read_marker(path) if verify == "auto" else None
    if m is not None and m["sha256"] == expected:
        return m[FAST_DIGEST]
    sha, fast, size = hash_file(path)
    if sha != expected:
        forget(path)
        raise IntegrityError(f"sha256 mismatch for {what}\n  file:     {path}\n"
                             f"  expected: {expected}\n  actual:   {sha}")
    write_marker(path, sha, fast, size)
    return fast


def file_sha256(path: Path, verify: str = "auto") -> str | None:
    """sha256 of ``path``, from its marker when one is valid (``verify="auto"``)."""
    check_mode(verify)
    if verify == "never":
        return None
    m = read_marker(path) if verify == "auto" else None
    if m is not None:
        return m["sha256"]
    sha, fast, size = hash_file(path)
    write_marker(path, sha, fast, size)
    return sha
