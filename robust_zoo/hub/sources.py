"""Getting a manifest file onto disk, verified: Hub (``huggingface_hub``), plain URL, local path.

Every file is checked against the sha256 the manifest pins before anything reads it
(``records.verify_file``). A cached file that fails the check is deleted and fetched once more;
a freshly downloaded file that fails it is deleted and refused. Transient network failures
(dropped connections, 5xx) are retried with backoff; what still fails is a
``SourceUnavailableError``. Every wait is bounded (``network``): a download that stalls, trickles
or is asked to wait longer than the cap by a rate limit ends with an error that says which, and
a host name that does not resolve is not retried.
"""
from __future__ import annotations

import errno
import hashlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from .. import validate
from . import network
from ..errors import RobustZooError
from ..fileio import atomic_path
from ..validate import IntegrityError
from .cache import (cache_dir, cache_write_error, cleanup_stale, file_lock, hf_blob, hf_cache,
                    offline, remove)
from .manifest import FileSpec
from ..fileio import hash_file
from .records import check_mode, forget, note, verify_file
from .records import read as read_record

RETRIES = 3                 # attempts per source for transient network errors
BACKOFF_SECONDS = 1.0       # first wait; doubles per attempt


class NotCachedError(RobustZooError, FileNotFoundError):
    """Offline (or ``local_files_only``) and the file is not in the local cache."""


class SourceUnavailableError(RobustZooError, OSError):
    """The file could not be fetched from this source (missing, unreachable)."""


class UnpinnedFileWarning(UserWarning):
    """A manifest file without a sha256: checked against the Hub's LFS hash only."""


__all__ = ["fetch", "fetch_verified", "hf_download", "recorded_sha256", "IntegrityError",
           "NotCachedError", "SourceUnavailableError", "UnpinnedFileWarning", "Verified",
           "DRIVE_HOSTS", "RETRIES", "BACKOFF_SECONDS"]


@dataclass(frozen=True)
class Verified:
    """A local file and the fast digest its bytes must have (None: unverified source)."""

    path: Path
    fast: str | None
    sha256: str | None


def fetch(spec: FileSpec, *, base_dir: Path | None = None, verify: str = "auto",
          progress: bool = True, local_files_only: bool = False) -> Path:
    """A local, verified copy of ``spec``'s file."""
    return fetch_verified(spec, base_dir=base_dir, verify=verify, progress=progress,
                          local_files_only=local_files_only).path


def fetch_verified(spec: FileSpec, *, base_dir: Path | None = None, verify: str = "auto",
                   progress: bool = True, local_files_only: bool = False) -> Verified:
    """``fetch``, also returning the fast digest the caller must find in the bytes it reads."""
    check_mode(verify)
    if spec.source == "path":
        return _fetch_path(spec, base_dir, verify)
    if spec.source == "url":
        return _fetch_url(spec, verify, progress, local_files_only or offline())
    return _fetch_hf(spec, verify, progress, local_files_only or offline())


def _fetch_path(spec: FileSpec, base_dir: Path | None, verify: str) -> Verified:
    p = Path(spec.path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if not p.is_file():
        raise SourceUnavailableError(f"{p} does not exist (manifest path {spec.path!r})")
    return Verified(p, verify_file(p, spec.sha256, str(p), verify), spec.sha256)


def _transient(e: BaseException) -> bool:
    """A network failure worth retrying: dropped or refused connections, 5xx."""
    import requests
    import urllib3

    try:
        import httpx2 as httpx
    except ImportError:  # huggingface_hub before its httpx fork
        import httpx  # type: ignore[no-redef]
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(e, (httpx.TransportError, requests.ConnectionError, requests.Timeout,
                      requests.exceptions.ChunkedEncodingError,
                      urllib3.exceptions.ProtocolError)):
        return not network.unresolved(e)
    status = getattr(getattr(e, "response", None), "status_code", None)
    if isinstance(e, (HfHubHTTPError, requests.HTTPError)) and status is not None:
        return status >= 500 or status == 408
    return False


def _retrying(fn, what: str):
    """``fn()`` with up to RETRIES attempts for transient errors, waiting BACKOFF_SECONDS, then
    twice that, ...; the last transient error becomes a SourceUnavailableError. A rate limit
    (HTTP 429) is waited out as the server asks, up to ``network.limits().max_retry_after``; a
    bound that ended the download (``network.Abort``: stalled, too slow, a host name that does
    not resolve) is not retried."""
    cap = network.limits().max_retry_after
    for attempt in range(RETRIES):
        try:
            return fn()
        except network.RateLimited as e:
            if e.wait is not None and e.wait > cap:
                raise SourceUnavailableError(
                    f"{what} could not be downloaded: {e}, more than the {cap:g} s this package "
                    "waits (ROBUST_ZOO_MAX_RETRY_AFTER). Try again later, or raise the cap."
                ) from None
            if attempt == RETRIES - 1:
                raise SourceUnavailableError(
                    f"{what} could not be downloaded: still rate limited after {RETRIES} "
                    f"attempts ({e}). Try again later.") from None
            time.sleep(max(e.wait or 0.0, BACKOFF_SECONDS * 2 ** attempt))
        except network.Abort as e:
            raise SourceUnavailableError(f"{what} could not be downloaded: {e}") from None
        except Exception as e:  # noqa: BLE001 (classified just below)
            if not _transient(e):
                raise
            if attempt == RETRIES - 1:
                raise SourceUnavailableError(
                    f"{what} could not be downloaded after {RETRIES} attempts ("
                    f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''})"
                ) from None
            time.sleep(BACKOFF_SECONDS * 2 ** attempt)


def hf_download(spec: FileSpec, progress: bool = True, **kw) -> Path:
    """``huggingface_hub.hf_hub_download`` of ``spec`` (its repo id, file name and revision
    checked first, so nothing can name a path outside the Hugging Face cache), its requests
    under the bounds of ``network`` (a bound that ends it raises ``network.Abort``)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, \
        enable_progress_bars

    from .._version import __version__

    try:
        validate.repo_id(spec.repo_id)
        validate.relative_filename(spec.filename)
        validate.revision(spec.revision)
    except validate.FieldError as e:
        raise SourceUnavailableError(f"{spec.describe()}: {e}") from None
    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        with network.bounded(spec.describe()):
            return Path(hf_hub_download(spec.repo_id, spec.filename, revision=spec.revision,
                                        library_name="robust_zoo", library_version=__version__,
                                        **kw))
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()


def _forget_hf_file(path: Path, repo_id: str) -> None:
    """Drop a cached Hub file: its record, its snapshot link and the blob that link names,
    each removed as the path inside the cache (``cache.remove``), never a link's target."""
    blob = hf_blob(path, repo_id)
    forget(path)
    remove(path)
    remove(blob)


def _fetch_hf(spec: FileSpec, verify: str, progress: bool, local_only: bool) -> Verified:
    from huggingface_hub.errors import (EntryNotFoundError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    what = spec.describe()
    with file_lock(hashlib.sha1(what.encode()).hexdigest(), f"downloading {what}"):
        try:
            path = hf_download(spec, progress, local_files_only=True)
        except (LocalEntryNotFoundError, EntryNotFoundError, FileNotFoundError):
            path = None
        if path is not None:
            try:
                return Verified(path, _check_hf(path, spec, what, verify), spec.sha256)
            except IntegrityError as e:
                if local_only:
                    _forget_hf_file(path, spec.repo_id)
                    raise IntegrityError(f"{e}\nThe corrupted cache entry was deleted; fetch it "
                                         "again with network access.") from None
                warnings.warn(f"Cached copy of {what} is corrupted; downloading it again.\n{e}")
                _forget_hf_file(path, spec.repo_id)
        if local_only:
            raise NotCachedError(
                f"{what} is not in the local cache and downloads are off "
                f"({'HF_HUB_OFFLINE=1' if offline() else 'local_files_only=True'}). Fetch it on a "
                "machine with network (`robust-zoo download NAME`) and copy the Hugging Face cache "
                f"({hf_cache()}) and {cache_dir()}, or unset HF_HUB_OFFLINE.")
        cleanup_stale(spec)
        try:
            path = _retrying(lambda: hf_download(spec, progress, force_download=False), what)
        except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
            raise SourceUnavailableError(f"{what}: {type(e).__name__}: "
                                         f"{str(e).splitlines()[0]}") from None
        except SourceUnavailableError:
            raise
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
                raise cache_write_error(e, Path(hf_cache()), f"download {what}") from None
            raise SourceUnavailableError(f"{what} could not be downloaded ({type(e).__name__}: "
                                         f"{str(e).splitlines()[0][:300]})") from None
        except RecursionError:
            # huggingface_hub resumes a dropped body recursively and resets its retry count
            # whenever some bytes arrived: a server that always drops mid-body exhausts the stack
            raise SourceUnavailableError(f"{what} could not be downloaded: the server kept "
                                         "closing the connection before the end of the file"
                                         ) from None
        except Exception as e:  # noqa: BLE001 — HTTP errors of huggingface_hub / httpx
            if type(e).__module__.split(".")[0] not in ("huggingface_hub", "httpx", "httpx2",
                                                        "requests"):
                raise
            raise SourceUnavailableError(f"{what} could not be downloaded ({type(e).__name__}: "
                                         f"{str(e).splitlines()[0][:300] if str(e) else ''})"
                                         ) from None
        try:
            fast = _check_hf(path, spec, what, "always")
        except IntegrityError as e:
            _forget_hf_file(path, spec.repo_id)
            raise IntegrityError(f"{e}\nThe download was deleted and not loaded: the file on the "
                                 "server is not the one the manifest pins.") from None
        return Verified(path, fast, spec.sha256)


def _check_hf(path: Path, spec: FileSpec, what: str, verify: str) -> str | None:
    if spec.sha256:
        return verify_file(path, spec.sha256, what, verify)
    # Unpinned: the blob is named after its etag, which for LFS files is the content sha256.
    etag = (hf_blob(path, spec.repo_id) or path).name
    if validate.is_sha256(etag):
        warnings.warn(f"{what} has no sha256 in the manifest; checked against the Hub's LFS hash "
                      f"{etag[:12]}… only. Pin it (`robust-zoo pin`) to guard against changes "
                      "on the Hub.", UnpinnedFileWarning, stacklevel=5)
        return verify_file(path, etag, what, verify)
    warnings.warn(f"{what} has no sha256 in the manifest and the Hub gave no LFS hash: "
                  "it is not verified.", UnpinnedFileWarning, stacklevel=5)
    return None


def _url_dest(url: str, sha256: str | None, basename: str) -> Path:
    """Where a URL file lives in the cache: under its pinned sha256, else under the URL's."""
    key = sha256 or hashlib.sha256(url.encode()).hexdigest()
    return cache_dir() / "downloads" / key / basename


def recorded_sha256(spec: FileSpec) -> str | None:
    """A URL file's sha256: its pin, else the one recorded when it was first downloaded (None:
    not a URL file, or neither pinned nor downloaded)."""
    if spec.source != "url" or spec.sha256:
        return spec.sha256 if spec.source == "url" else None
    dest = _url_dest(spec.url, None, spec.basename)
    rec = read_record(dest) if dest.exists() else None
    return rec.sha256 if rec is not None else None


def _check_url_file(dest: Path, spec: FileSpec, verify: str) -> str | None:
    """The fast digest of the URL file at ``dest``: checked against its pin or, unpinned,
    against the sha256 recorded on its first download (recorded now when there is none)."""
    if verify == "never":
        return None
    expected = spec.sha256 or recorded_sha256(spec)
    if expected:
        return verify_file(dest, expected, spec.url, verify)
    sha, fast, size = hash_file(dest)
    note(dest, sha, fast, size, None)
    warnings.warn(f"{spec.url} has no sha256 in the manifest: recorded sha256 {sha} of this "
                  "download, which later loads are checked against. Pin it (`robust-zoo pin` "
                  "writes it into the manifest) to guard against a changed file.",
                  UnpinnedFileWarning, stacklevel=5)
    return fast


def _adopt_unpinned_copy(spec: FileSpec, dest: Path) -> None:
    """Move the copy downloaded while ``spec`` was unpinned to its pinned place ``dest`` if it
    matches the pin (a file pinned since is not downloaded again)."""
    old = _url_dest(spec.url, None, spec.basename)
    if dest.exists() or not old.is_file():
        return
    try:
        verify_file(old, spec.sha256, spec.url, "always")
    except IntegrityError:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(old, dest)
    forget(old)


def _fetch_url(spec: FileSpec, verify: str, progress: bool, local_only: bool) -> Verified:
    dest = _url_dest(spec.url, spec.sha256, spec.basename)
    key = dest.parent.name
    with file_lock(key, f"downloading {spec.url}"):
        if spec.sha256:
            _adopt_unpinned_copy(spec, dest)
        if dest.exists():
            try:
                return Verified(dest, _check_url_file(dest, spec, verify), spec.sha256)
            except IntegrityError as e:
                warnings.warn(f"Cached copy of {spec.url} is corrupted; downloading it again.\n{e}")
                remove(dest)
        if local_only:
            raise NotCachedError(f"{spec.url} is not in the local cache ({dest}) and downloads "
                                 "are off (HF_HUB_OFFLINE / local_files_only).")
        part = dest.with_name(dest.name + ".part")
        cleanup_stale(keep=part)
        try:
            _retrying(lambda: _download_url(spec.url, dest, spec.size, progress), spec.url)
        except SourceUnavailableError as e:
            kept = part.exists() and part.stat().st_size > 0
            raise SourceUnavailableError(
                f"{e}" + (f"; the partial file ({part.stat().st_size} bytes) is kept and resumed "
                          "next time" if kept and "kept" not in str(e) else "")) from None
        except OSError as e:
            import requests

            if isinstance(e, RobustZooError):
                raise
            if isinstance(e, requests.RequestException):
                raise SourceUnavailableError(f"{spec.url} could not be downloaded ("
                                             f"{type(e).__name__}: {str(e)[:300]})") from None
            raise cache_write_error(e, dest.parent, f"download {spec.url}") from None
        forget(dest)   # a record of an earlier file at this place says nothing about this one
        try:
            fast = _check_url_file(dest, spec, "always")
        except IntegrityError:
            remove(dest)
            raise
        return Verified(dest, fast, spec.sha256)


DRIVE_HOSTS = ("drive.google.com", "drive.usercontent.google.com", "docs.google.com")


def _html_refused(url: str, part: Path, what: str) -> SourceUnavailableError:
    """The error for an HTML page served in place of the file (``what`` says how it showed);
    from Google Drive, named as Drive's quota or confirmation page."""
    from urllib.parse import urlsplit

    if (urlsplit(url).hostname or "").lower() in DRIVE_HOSTS:
        dest = part.with_name(part.name[:-len(".part")])
        return SourceUnavailableError(
            f"Google Drive returned an HTML page instead of the checkpoint: {url} ({what}): its "
            "download quota for the file is exceeded, or it asks to confirm a virus-scan "
            "warning. Nothing was kept. Try later, or download it by hand (in a browser) and "
            f"pass its path=... as the file of a manifest entry, or save it as {dest}.")
    return SourceUnavailableError(f"{url} answered with an HTML page ({what}), not the file: "
                                  "a login, error or consent page? Nothing was kept.")


def _looks_like_html(head: bytes) -> bool:
    return head.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html", b"<head",
                                                  b"<body"))


def _download_url(url: str, dest: Path, size: int | None, progress: bool) -> None:
    """Stream ``url`` to ``dest`` under the bounds of ``network``: resumes a ``.part`` left by an
    interrupted run (HTTP Range), and renames into place only when complete. An HTML page (an
    error or login page served with 200) is never kept."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if part.is_symlink():       # never append to whatever a link points at: start over
        remove(part)
    have = part.stat().st_size if part.exists() else 0
    lim = network.limits()
    with _get(url, have, lim) as r:
        if r.status_code != 416:  # 416: the .part is already complete
            have = _check_answer(r, url, part, have)
            _write_body(r, url, part, have, size, lim, progress, dest.name)
    if size is not None and part.stat().st_size != size:
        got = part.stat().st_size
        if got > size:
            remove(part)
        raise SourceUnavailableError(f"{url}: got {got} bytes, expected {size}"
                                     + ("; the partial file is kept and resumed next time"
                                        if got < size else ""))
    with atomic_path(dest) as tmp:
        os.replace(part, tmp)


def _get(url: str, have: int, lim: network.Limits):
    """The streamed answer to a GET of ``url`` (from byte ``have`` on), within the bounds: no
    answer within the stall timeout is ``Stalled``, a name that does not resolve
    ``Unresolved``, a 429 ``RateLimited``."""
    import requests
    from urllib.parse import urlsplit

    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        r = requests.get(url, stream=True, headers=headers, timeout=(lim.stall, lim.stall))
    except requests.Timeout:
        raise network.stalled(url, lim, "waiting for an answer") from None
    except requests.ConnectionError as e:
        if network.unresolved(e):
            raise network.unresolved_error(urlsplit(url).hostname or url, e) from None
        raise
    if r.status_code == 429:
        r.close()
        raise network.rate_limited(url, r.headers)
    return r


def _check_answer(r, url: str, part: Path, have: int) -> int:
    """The bytes of ``part`` the answer continues (0 when the server ignored the Range);
    an error status or an HTML page is refused."""
    if r.status_code == 404:
        raise SourceUnavailableError(f"{url}: 404 Not Found")
    ctype = r.headers.get("Content-Type", "").split(";")[0].strip().lower()
    html = ctype in ("text/html", "application/xhtml+xml")
    if html and r.status_code in (200, 206, 403):   # Drive's quota page may come with a 403
        remove(part)
        raise _html_refused(url, part, f"HTTP {r.status_code}, {ctype}")
    r.raise_for_status()
    if have and r.status_code != 206:  # server ignored the Range: start over
        have = 0
    return have


def _write_body(r, url: str, part: Path, have: int, size: int | None, lim: network.Limits,
                progress: bool, name: str) -> None:
    """Append the body to ``part`` as it arrives (whatever each read brings, so that the
    throughput rule sees a trickle); a read that waits past the stall timeout is ``Stalled``."""
    import urllib3
    from tqdm.auto import tqdm

    total = int(r.headers.get("Content-Length", 0)) + have or size
    meter = network.Meter(lim, url)
    first = not have
    with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=name,
            disable=not progress) as bar:
        while True:
            try:
                chunk = r.raw.read1(1 << 20, decode_content=True)
            except urllib3.exceptions.ReadTimeoutError:
                raise network.stalled(url, lim, "in the body") from None
            if not chunk:
                return
            meter.add(len(chunk))
            if first:
                first = False
                if _looks_like_html(chunk[:64]):
                    f.close()
                    remove(part)
                    raise _html_refused(url, part, "its body is an HTML page")
            f.write(chunk)
            bar.update(len(chunk))
