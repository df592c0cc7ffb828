"""Verified weights from the local cache, content-checked on every read: the load path below
``api``.

``load_spec`` turns one manifest file into (state dict, metadata):

* a safetensors file is fetched and verified (``sources.fetch_verified``) and read with
  ``weights.read_weights``, which recomputes the fast digest of exactly the bytes it maps and
  compares it with the one recorded when the file's sha256 was checked;
* an upstream pickle is converted once into ``converted/<source sha256>.safetensors`` — only
  after its sha256 was checked in that very call, and only with a torch whose weights-only
  unpickler is not known to be exploitable. The copy is bound to its source: its metadata
  carries ``source_sha256`` (compared with the pinned sha256 on every load) and its sidecar
  ``.json`` records its sha256 and fast digest. A malformed sidecar counts as absent;
  a copy that fails a check is discarded and converted again. With ``verify="always"`` the
  source is re-hashed by sha256 and converted afresh, and the copy must equal that conversion.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from . import records, sources
from ..formats.upstream import CheckpointFormatError, from_robustness, read_checkpoint
from ..fileio import FAST_DIGEST, atomic_write_text, hash_file
from .cache import cache_dir, cache_write_error, file_lock
from .manifest import Entry, FileSpec
from ..validate import IntegrityError
from ..formats.safetensors_file import (Loaded, read_weights, save_weights, serialized_digest,
                                        weights_metadata)

_FAST_RE = re.compile(r"^[0-9a-f]{32}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def converted_path(source_sha256: str) -> Path:
    """Where the converted copy of the upstream file with this sha256 lives."""
    return cache_dir() / "converted" / f"{source_sha256}.safetensors"


def load_spec(entry: Entry, spec: FileSpec, *, verify: str = "auto", progress: bool = True,
              local_files_only: bool = False) -> Loaded:
    """One file of ``entry``, verified and content-checked (see the module doc)."""
    if spec.format == "safetensors":
        return _load_safetensors(entry, spec, verify, progress, local_files_only)
    return converted_copy(entry, spec, verify=verify, progress=progress,
                          local_files_only=local_files_only)


def _load_safetensors(entry, spec, verify, progress, local_files_only) -> Loaded:
    what = spec.describe()
    kw = dict(base_dir=entry.base_dir, progress=progress, local_files_only=local_files_only)
    v = sources.fetch_verified(spec, verify=verify, **kw)
    try:
        return read_weights(v.path, v.fast, what)
    except IntegrityError as e:
        # Changed since it was verified: re-check by sha256, which deletes and re-downloads a
        # cached Hub/URL file that no longer matches (or refuses a local one).
        warnings.warn(f"{e}; checking it by sha256 again.")
        records.forget(v.path)
        v = sources.fetch_verified(spec, verify="always", **kw)
        return read_weights(v.path, v.fast, what)


# ----------------------------------------------------------------------------- conversion

def _read_sidecar(out: Path, source_sha: str) -> dict | None:
    try:
        side = json.loads(out.with_suffix(".json").read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if (isinstance(side, dict) and side.get("source_sha256") == source_sha
            and isinstance(side.get("sha256"), str) and _SHA_RE.match(side["sha256"])
            and isinstance(side.get(FAST_DIGEST), str) and _FAST_RE.match(side[FAST_DIGEST])):
        return side
    return None


def _discard(out: Path, why: str) -> None:
    warnings.warn(f"Discarding a damaged converted checkpoint ({why}); converting again.")
    for p in (out, out.with_suffix(".json")):
        try:
            p.unlink()
        except OSError:
            pass


def _cached_conversion(source_sha: str, verify: str) -> Loaded | None:
    out = converted_path(source_sha)
    if not out.exists():
        return None
    side = _read_sidecar(out, source_sha)
    if side is None:
        _discard(out, f"its record {out.with_suffix('.json').name} is missing or malformed")
        return None
    try:
        loaded = read_weights(out, None if verify == "never" else side[FAST_DIGEST],
                              f"converted cache {out}")
    except (IntegrityError, CheckpointFormatError) as e:
        _discard(out, str(e))
        return None
    if loaded.metadata.get("source_sha256") != source_sha:
        _discard(out, f"it says it was converted from {loaded.metadata.get('source_sha256')!r}, "
                 f"not {source_sha}")
        return None
    return loaded


def converted_copy(entry: Entry, spec: FileSpec, *, verify: str = "auto", progress: bool = True,
                   local_files_only: bool = False) -> Loaded:
    """Upstream pickle → safetensors, once; later loads read only the safetensors file."""
    if spec.sha256 and verify != "always":
        hit = _cached_conversion(spec.sha256, verify)
        if hit is not None:
            return hit
    # The pickle is unpickled only right after its sha256 was checked in this call.
    v = sources.fetch_verified(spec, base_dir=entry.base_dir,
                           verify="never" if verify == "never" else "always",
                           progress=progress, local_files_only=local_files_only)
    source_sha = spec.sha256 or records.file_sha256(v.path)
    out = converted_path(source_sha)
    with file_lock(f"convert-{source_sha}"):
        if verify != "always":
            hit = _cached_conversion(source_sha, verify)  # another process may have done it
            if hit is not None:
                return hit
        try:
            conv = from_robustness(read_checkpoint(v.path), entry.arch, mean=entry.mean,
                                   std=entry.std, source=spec.describe())
        except CheckpointFormatError as e:
            raise CheckpointFormatError(f"{entry.name}: {e}") from None
        meta = weights_metadata(entry.arch, entry.num_classes, conv.mean, conv.std,
                                name=entry.name, source_sha256=source_sha,
                                source_file=spec.describe(), source_epoch=str(conv.epoch))
        fresh = serialized_digest(conv.state_dict, meta)
        if out.exists():
            try:
                old = hash_file(out)
            except OSError:
                old = None
            side = _read_sidecar(out, source_sha)
            if old is not None and old[1] == fresh and side is not None \
                    and side["sha256"] == old[0] and side[FAST_DIGEST] == fresh:
                return read_weights(out, fresh, f"converted cache {out}")
            _discard(out, "it is not what the verified source converts to")
        try:
            save_weights(conv.state_dict, out, arch=entry.arch, num_classes=entry.num_classes,
                         mean=conv.mean, std=conv.std, name=entry.name,
                         source_sha256=source_sha, source_file=spec.describe(),
                         source_epoch=str(conv.epoch))
            sha, fast, _ = hash_file(out)
            atomic_write_text(out.with_suffix(".json"), json.dumps(
                {"sha256": sha, FAST_DIGEST: fast, "source_sha256": source_sha,
                 "source": spec.describe(), "arch": entry.arch, "name": entry.name}, indent=2))
        except OSError as e:
            try:
                out.unlink(missing_ok=True)
            except OSError:
                pass
            raise cache_write_error(e, out.parent, f"write the converted copy of "
                                        f"{entry.name}") from None
        if fast != fresh:
            raise IntegrityError(f"{out} changed while it was written (digest {fast}, "
                                 f"expected {fresh})")
    return read_weights(out, fast, f"converted cache {out}")


def local_file(entry: Entry) -> Path:
    """The verified local file behind ``entry`` (the converted copy for upstream pickles)."""
    for spec in entry.files:
        try:
            path = sources.fetch(spec, base_dir=entry.base_dir, progress=False,
                             local_files_only=True)
        except (sources.NotCachedError, sources.SourceUnavailableError):
            continue
        if spec.format == "robustness-ckpt":
            return converted_path(spec.sha256 or records.file_sha256(path))
        return path
    raise sources.NotCachedError(f"{entry.name} has no file in the local cache")


__all__ = ["load_spec", "converted_copy", "converted_path", "local_file"]
