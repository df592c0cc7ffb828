"""The robust_zoo cache folder: where it is, what lives in it, how it is locked and cleaned.

Layout under ``cache_dir()``::

    converted/<key>.safetensors   converted copies of upstream pickles (``loading``)
    converted/<key>.json          the record of each copy (``records``)
    verified/<digest>.json        records of verified files held elsewhere (``records``)
    downloads/<key>/<file>        files of ``url`` sources; ``.part`` while incomplete
    locks/<key>.lock              inter-process locks

Hub files live in the Hugging Face cache (``hf_cache()``), managed by ``huggingface_hub``.

Deletion stays inside the caches: every file this package removes or replaces there is removed
as the path inside the cache (``remove``; a symlink goes as a link, never its target), and a
Hub file's blob is found by reading its snapshot link once (``hf_blob``), never by resolving
links to wherever they end.
Leftovers of killed runs (``.incomplete`` blobs of our repositories in the Hugging Face cache,
our ``.tmp`` and ``.part`` files) older than ``STALE_SECONDS`` are removed by the next download.
A ``.tmp`` in ``converted/`` goes at once, on the next load or ``robust-zoo verify``, when no
process holds the conversion lock of its key (``cleanup_converted``): a conversion writes only
while it holds that lock, so a ``.tmp`` whose lock is free was left by a killed one.

A process that waits for another's lock says so every ``LOCK_NOTICE_SECONDS`` (a
``LockWaitWarning`` naming what the other process is doing, the lock and the time waited).
"""
from __future__ import annotations

import errno
import os
import re
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from ..errors import RobustZooError

if TYPE_CHECKING:
    from .manifest import FileSpec

STALE_SECONDS = 3600        # leftovers older than this are removed
LOCK_NOTICE_SECONDS = 10.0  # a process waiting for a lock says so this often

# what fileio.atomic_path names the temporary file of converted/<key>.safetensors or .json
_CONVERSION_TMP = re.compile(r"\.(?P<key>[^.]+)\.(?:safetensors|json)\.[^.]+\.tmp")

__all__ = ["cache_dir", "converted_dir", "converted_path", "offline", "hf_cache", "hf_repo_dir",
           "hf_blob", "remove", "CacheWriteError", "cache_write_error", "file_lock",
           "conversion_lock", "LockWaitWarning", "cleanup_stale", "cleanup_converted",
           "STALE_SECONDS", "LOCK_NOTICE_SECONDS"]


class CacheWriteError(RobustZooError, OSError):
    """The cache could not be written (disk full, read-only, permissions)."""


class LockWaitWarning(Warning):
    """This process waits for a lock another one holds (repeated every LOCK_NOTICE_SECONDS)."""


def cache_dir() -> Path:
    """``$ROBUST_ZOO_CACHE``, else ``$XDG_CACHE_HOME/robust_zoo``, else ``~/.cache/robust_zoo``."""
    env = os.environ.get("ROBUST_ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "robust_zoo"


def converted_dir() -> Path:
    """The folder of converted copies of upstream pickles and their records."""
    return cache_dir() / "converted"


def converted_path(key: str) -> Path:
    """Where the converted copy with cache key ``key`` lives."""
    return converted_dir() / f"{key}.safetensors"


def offline() -> bool:
    """Downloads are off (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hf_cache() -> str:
    """The Hugging Face cache folder (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hf_repo_dir(repo_id: str) -> Path:
    """The folder of Hub model repository ``repo_id`` inside the Hugging Face cache."""
    from huggingface_hub.file_download import repo_folder_name

    return Path(hf_cache()) / repo_folder_name(repo_id=repo_id, repo_type="model")


def hf_blob(path: Path, repo_id: str) -> Path | None:
    """The blob that snapshot file ``path`` of ``repo_id`` links to, as a path inside the
    repository's ``blobs/`` folder: the link is read once and joined lexically, so a blob that
    is itself a symlink is named, not followed. None when ``path`` is no such link."""
    if not path.is_symlink():
        return None
    target = os.path.normpath(path.parent / os.readlink(path))
    blobs = os.path.normpath(hf_repo_dir(repo_id) / "blobs")
    return Path(target) if os.path.dirname(target) == blobs else None


def remove(path: Path | None) -> None:
    """Delete ``path`` itself (a symlink is removed as a link; what it points at stays)."""
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def cache_write_error(e: OSError, path: Path, doing: str) -> CacheWriteError:
    """The specific error for a cache that cannot be written."""
    why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
           errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
           errno.EPERM: "permission denied", errno.ENOTDIR: "a file is where a folder must be",
           errno.EEXIST: "a file is where a folder must be"
           }.get(e.errno, e.strerror or type(e).__name__)
    return CacheWriteError(f"Could not {doing} in the cache ({path}): {why}. Free space, fix "
                           "the permissions, or point ROBUST_ZOO_CACHE at a writable folder.")


def _lock_path(key: str) -> Path:
    return cache_dir() / "locks" / f"{key}.lock"


def conversion_lock(key: str) -> str:
    """The lock key of the conversion whose copy has cache key ``key``."""
    return f"convert-{key}"


@contextmanager
def file_lock(key: str, what: str = "using this part of the cache") -> Iterator[None]:
    """Inter-process lock, so two processes fetching or converting one file do it once. In a
    cache that cannot be written there is nothing to protect, so no lock is taken. While
    another process holds it, a ``LockWaitWarning`` every LOCK_NOTICE_SECONDS says that the
    other is ``what`` (e.g. "downloading org/repo/file") and how long this one has waited."""
    from filelock import FileLock

    path = _lock_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        _acquire(lock, path, what)
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


def _acquire(lock, path: Path, what: str) -> None:
    from filelock import Timeout

    start = time.monotonic()
    while True:
        try:
            lock.acquire(timeout=LOCK_NOTICE_SECONDS)
            return
        except Timeout:
            waited = time.monotonic() - start
            warnings.warn(f"Another process is {what} and holds its lock ({path}); waiting "
                          f"for it to finish: {waited:.{0 if waited >= 10 else 1}f} s so far.",
                          LockWaitWarning, stacklevel=2)


def cleanup_converted() -> list[Path]:
    """Remove the ``.tmp`` files in ``converted/`` whose conversion no process is running (its
    conversion lock is free), whatever their age; returns them."""
    from filelock import FileLock, Timeout

    d = converted_dir()
    found: list[Path] = []
    if not d.is_dir():
        return found
    for p in d.glob(".*.tmp"):
        m = _CONVERSION_TMP.fullmatch(p.name)
        if m is None:
            continue
        path = _lock_path(conversion_lock(m["key"]))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path))
            lock.acquire(timeout=0)
        except (Timeout, OSError, RuntimeError):   # a conversion in progress, or no lock here
            continue
        try:
            remove(p)
            found.append(p)
        except OSError:
            pass
        finally:
            lock.release()
    return found


def cleanup_stale(spec: "FileSpec | None" = None, keep: Path | None = None) -> list[Path]:
    """Remove leftovers of killed runs older than STALE_SECONDS: ``.incomplete`` blobs of
    ``spec``'s Hub repository, our ``.tmp`` files and ``.part`` downloads (except ``keep``);
    and, whatever their age, the ``.tmp`` files of conversions no process runs."""
    now = time.time()
    found = cleanup_converted()
    dirs = []
    if spec is not None and spec.source == "hf":
        dirs.append((hf_repo_dir(spec.repo_id) / "blobs", ("*.incomplete",)))
    root = cache_dir()
    dirs += [(converted_dir(), ("*.tmp",)), (root / "verified", ("*.tmp",)),
             (root / "downloads", ("**/*.tmp", "**/*.part")), (root, (".*.tmp",))]
    for d, patterns in dirs:
        if not d.is_dir():
            continue
        for pat in patterns:
            for p in d.glob(pat):
                try:
                    if p != keep and p.is_file() and now - p.stat().st_mtime > STALE_SECONDS:
                        remove(p)
                        found.append(p)
                except OSError:
                    pass
    return found
