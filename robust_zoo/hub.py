"""Getting a manifest file onto disk, verified: Hub (``huggingface_hub``), plain URL, local path.

Every file is checked against the sha256 the manifest pins before anything reads it. Hashing a
1 GB file costs seconds, so a successful check leaves a marker (size, mtime, sha256) in our cache;
later calls re-hash only if the file changed on disk (``verify="auto"``), always
(``verify="always"``) or never (``verify="never"``). A cached file that fails the check is deleted
and fetched once more; a freshly downloaded file that fails it is deleted and refused.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .io import atomic_path, atomic_write_text, sha256_file
from .manifest import FileSpec

VERIFY_MODES = ("auto", "always", "never")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class IntegrityError(RuntimeError):
    """A file's bytes do not have the sha256 the manifest (or the Hub) promises."""


class NotCachedError(FileNotFoundError):
    """Offline (or ``local_files_only``) and the file is not in the local cache."""


class SourceUnavailableError(OSError):
    """The file could not be fetched from this source (missing, unreachable)."""


class UnpinnedFileWarning(UserWarning):
    """A manifest file without a sha256: checked against the Hub's LFS hash only."""


def cache_dir() -> Path:
    """``$ROBUST_ZOO_CACHE``, else ``$XDG_CACHE_HOME/robust_zoo``, else ``~/.cache/robust_zoo``."""
    env = os.environ.get("ROBUST_ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "robust_zoo"


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def file_lock(key: str) -> Iterator[None]:
    """Inter-process lock, so two processes fetching or converting one file do it once."""
    from filelock import FileLock

    d = cache_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    with FileLock(str(d / f"{key}.lock")):
        yield


# ----------------------------------------------------------------------------- verification

def _marker_path(path: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()
    return cache_dir() / "verified" / f"{key}.json"


def _stat_key(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def file_sha256(path: Path, verify: str = "auto") -> str | None:
    """sha256 of ``path``, from its marker when the file is unchanged since it was hashed."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify={verify!r}: use one of {VERIFY_MODES}")
    if verify == "never":
        return None
    marker = _marker_path(path)
    key = _stat_key(path)
    if verify == "auto" and marker.exists():
        try:
            m = json.loads(marker.read_text())
            if all(m.get(k) == v for k, v in key.items()):
                return m["sha256"]
        except (ValueError, KeyError):
            pass
    digest = sha256_file(path)
    atomic_write_text(marker, json.dumps({**key, "sha256": digest}))
    return digest


def check_sha256(path: Path, expected: str | None, what: str, verify: str = "auto") -> None:
    """Raise IntegrityError unless ``path`` hashes to ``expected`` (None: nothing to check)."""
    if expected is None:
        return
    actual = file_sha256(path, verify)
    if actual is not None and actual != expected.lower():
        raise IntegrityError(f"sha256 mismatch for {what}\n  file:     {path}\n"
                             f"  expected: {expected}\n  actual:   {actual}")


# ----------------------------------------------------------------------------- sources

def fetch(spec: FileSpec, *, base_dir: Path | None = None, verify: str = "auto",
          progress: bool = True, local_files_only: bool = False) -> Path:
    """A local, verified copy of ``spec``'s file."""
    if spec.source == "path":
        return _fetch_path(spec, base_dir, verify)
    if spec.source == "url":
        return _fetch_url(spec, verify, progress, local_files_only or offline())
    return _fetch_hf(spec, verify, progress, local_files_only or offline())


def _fetch_path(spec: FileSpec, base_dir: Path | None, verify: str) -> Path:
    p = Path(spec.path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if not p.is_file():
        raise SourceUnavailableError(f"{p} does not exist (manifest path {spec.path!r})")
    check_sha256(p, spec.sha256, str(p), verify)
    return p


def _hf_download(spec: FileSpec, progress: bool, **kw) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, \
        enable_progress_bars

    from . import __version__

    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        return Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision,
                                    library_name="robust_zoo", library_version=__version__, **kw))
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()


def _forget_hf_file(path: Path) -> None:
    """Drop a cached Hub file: its blob and the snapshot link that points at it."""
    blob = path.resolve()
    for p in (path, blob):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _fetch_hf(spec: FileSpec, verify: str, progress: bool, local_only: bool) -> Path:
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    what = spec.describe()
    with file_lock(hashlib.sha1(what.encode()).hexdigest()):
        try:
            path = _hf_download(spec, progress, local_files_only=True)
        except (LocalEntryNotFoundError, EntryNotFoundError, FileNotFoundError):
            path = None
        if path is not None:
            try:
                _check_hf(path, spec, what, verify)
                return path
            except IntegrityError as e:
                if local_only:
                    _forget_hf_file(path)
                    raise IntegrityError(f"{e}\nThe corrupted cache entry was deleted; fetch it "
                                         "again with network access.") from None
                warnings.warn(f"Cached copy of {what} is corrupted; downloading it again.\n{e}")
                _forget_hf_file(path)
        if local_only:
            raise NotCachedError(
                f"{what} is not in the local cache and downloads are off "
                f"({'HF_HUB_OFFLINE=1' if offline() else 'local_files_only=True'}). Fetch it on a "
                "machine with network (`robust-zoo download NAME`) and copy the Hugging Face cache "
                f"({_hf_cache()}) and {cache_dir()}, or unset HF_HUB_OFFLINE.")
        try:
            path = _hf_download(spec, progress, force_download=False)
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
            raise SourceUnavailableError(f"{what}: {type(e).__name__}: "
                                         f"{str(e).splitlines()[0]}") from None
        except (LocalEntryNotFoundError, OSError) as e:
            raise SourceUnavailableError(f"{what} could not be downloaded ({type(e).__name__}: "
                                         f"{str(e).splitlines()[0][:300]})") from None
        try:
            _check_hf(path, spec, what, "always")
        except IntegrityError as e:
            _forget_hf_file(path)
            raise IntegrityError(f"{e}\nThe download was deleted and not loaded: the file on the "
                                 "server is not the one the manifest pins.") from None
        return path


def _check_hf(path: Path, spec: FileSpec, what: str, verify: str) -> None:
    if spec.sha256:
        check_sha256(path, spec.sha256, what, verify)
        return
    # Unpinned: the blob is named after its etag, which for LFS files is the content sha256.
    etag = path.resolve().name
    if _SHA256_RE.match(etag):
        warnings.warn(f"{what} has no sha256 in the manifest; checked against the Hub's LFS hash "
                      f"{etag[:12]}… only. Pin it (`robust-zoo pin`) to guard against changes "
                      "on the Hub.", UnpinnedFileWarning, stacklevel=4)
        check_sha256(path, etag, what, verify)
    else:
        warnings.warn(f"{what} has no sha256 in the manifest and the Hub gave no LFS hash: "
                      "it is not verified.", UnpinnedFileWarning, stacklevel=4)


def _hf_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _fetch_url(spec: FileSpec, verify: str, progress: bool, local_only: bool) -> Path:
    key = spec.sha256 or hashlib.sha256(spec.url.encode()).hexdigest()
    dest = cache_dir() / "downloads" / key / spec.basename
    with file_lock(key):
        if dest.exists():
            try:
                check_sha256(dest, spec.sha256, spec.url, verify)
                return dest
            except IntegrityError as e:
                warnings.warn(f"Cached copy of {spec.url} is corrupted; downloading it again.\n{e}")
                dest.unlink()
        if local_only:
            raise NotCachedError(f"{spec.url} is not in the local cache ({dest}) and downloads "
                                 "are off (HF_HUB_OFFLINE / local_files_only).")
        _download_url(spec.url, dest, spec.size, progress)
        try:
            check_sha256(dest, spec.sha256, spec.url, "always")
        except IntegrityError:
            dest.unlink()
            raise
        if spec.sha256 is None:
            warnings.warn(f"{spec.url} has no sha256 in the manifest: it is not verified.",
                          UnpinnedFileWarning, stacklevel=3)
        return dest


def _download_url(url: str, dest: Path, size: int | None, progress: bool) -> None:
    """Stream ``url`` to ``dest``: resumes a ``.part`` left by an interrupted run (HTTP Range),
    and renames into place only when complete."""
    import requests
    from tqdm.auto import tqdm

    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        with requests.get(url, stream=True, headers=headers, timeout=(10, 60)) as r:
            if r.status_code == 416:  # the .part is already complete
                pass
            else:
                if r.status_code == 404:
                    raise SourceUnavailableError(f"{url}: 404 Not Found")
                r.raise_for_status()
                if have and r.status_code != 206:  # server ignored the Range: start over
                    have = 0
                total = int(r.headers.get("Content-Length", 0)) + have or size
                with open(part, "ab" if have else "wb") as f, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True,
                        desc=dest.name, disable=not progress) as bar:
                    for chunk in r.iter_content(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
    except requests.RequestException as e:
        kept = part.exists() and part.stat().st_size > 0
        raise SourceUnavailableError(
            f"{url} could not be downloaded: {e}"
            + (f"; the partial file ({part.stat().st_size} bytes) is kept and resumed next time"
               if kept else "")) from None
    if size is not None and part.stat().st_size != size:
        got = part.stat().st_size
        if got > size:
            part.unlink()
        raise SourceUnavailableError(f"{url}: got {got} bytes, expected {size}"
                                     + ("; the partial file is kept and resumed next time"
                                        if got < size else ""))
    with atomic_path(dest) as tmp:
        os.replace(part, tmp)
