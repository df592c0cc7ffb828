"""Verified weights from the local cache, content-checked on every read: the load step below
``factory``.

``load_spec`` turns one manifest file into (state dict, metadata):

* a safetensors file is fetched and verified (``sources.fetch_verified``) and read with
  ``safetensors_file.read_weights``, which recomputes the fast digest of exactly the bytes it
  maps and compares it with the one recorded when the file's sha256 was checked;
* an upstream pickle is converted once into ``converted/<source sha256>.safetensors``, only
  after its sha256 was checked in that very call, and only with a torch whose weights-only
  unpickler is not known to be exploitable. The copy is bound to its source: its metadata
  carries ``source_sha256`` (compared with the pinned sha256 on every load) and its record
  (``records``, beside it) holds its sha256, its fast digest and the source sha256 it was
  converted from. A malformed record counts as absent; a copy that fails a check is discarded
  and converted again. With ``verify="always"`` the source is re-hashed by sha256 and converted
  afresh, and the copy must equal that conversion.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from . import records, sources
from ..fileio import hash_file
from ..formats.safetensors_file import (Loaded, read_weights, save_weights, serialized_digest,
                                        weights_metadata)
from ..formats.upstream import CheckpointFormatError, from_robustness, read_checkpoint
from ..validate import IntegrityError
from .cache import cache_write_error, converted_path, file_lock, remove
from .manifest import Entry, FileSpec

__all__ = ["load_spec", "converted_copy", "converted_path", "local_file"]


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

def _discard(out: Path, why: str) -> None:
    warnings.warn(f"Discarding a damaged converted checkpoint ({why}); converting again.")
    for p in (out, records.record_path(out)):
        try:
            remove(p)
        except OSError:
            pass


def _cached_conversion(source_sha: str, verify: str) -> Loaded | None:
    out = converted_path(source_sha)
    if not out.exists():
        return None
    rec = records.read(out)
    if rec is None or rec.pinned != source_sha:
        _discard(out, f"its record {records.record_path(out).name} is missing, malformed or "
                 "not about this source")
        return None
    try:
        loaded = read_weights(out, None if verify == "never" else rec.fast,
                              f"converted cache {out}")
    except (IntegrityError, CheckpointFormatError) as e:
        _discard(out, str(e))
        return None
    if loaded.metadata.get("source_sha256") != source_sha:
        _discard(out, f"it says it was converted from {loaded.metadata.get('source_sha256')!r}, "
                 f"not {source_sha}")
        return None
    return loaded


def _matches(out: Path, fresh: str) -> bool:
    """The copy at ``out`` is the one whose fast digest is ``fresh``, and its record says so."""
    try:
        sha, fast, _ = hash_file(out)
    except OSError:
        return False
    rec = records.read(out)
    return fast == fresh and rec is not None and rec.sha256 == sha and rec.fast == fresh


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
        meta = dict(name=entry.name, source_sha256=source_sha, source_file=spec.describe(),
                    source_epoch=str(conv.epoch))
        fresh = serialized_digest(conv.state_dict, weights_metadata(
            entry.arch, entry.num_classes, conv.mean, conv.std, **meta))
        if out.exists():
            if _matches(out, fresh):
                return read_weights(out, fresh, f"converted cache {out}")
            _discard(out, "it is not what the verified source converts to")
        try:
            save_weights(conv.state_dict, out, arch=entry.arch, num_classes=entry.num_classes,
                         mean=conv.mean, std=conv.std, **meta)
            sha, fast, size = hash_file(out)
            records.write(out, sha, fast, size, source_sha, source=spec.describe(),
                          arch=entry.arch, name=entry.name)
        except OSError as e:
            try:
                remove(out)
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
