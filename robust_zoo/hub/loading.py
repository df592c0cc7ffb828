"""Verified weights from the local cache, content-checked on every read: the load step below
``factory``.

``load_spec`` turns one manifest file into (state dict, metadata):

* a safetensors file is fetched and verified (``sources.fetch_verified``) and read with
  ``safetensors_file.read_weights``, which recomputes the fast digest of exactly the bytes it
  maps and compares it with the one recorded when the file's sha256 was checked;
* an upstream pickle (``CONVERTERS``: a ``robustness`` checkpoint, or a RobustBench-style
  ``torch-state-dict``) is converted once into ``converted/<key>.safetensors``, only after its
  sha256 was checked in that very call, and only with a torch whose weights-only unpickler is
  not known to be exploitable. The key (``conversion_key``) is the source sha256 and a digest of
  every other input that determines the copy's bytes: architecture, number of classes,
  mean/std, the entry's name, the source's address and format; two entries that share a source but
  differ in any of them never share a copy. The copy is bound to its inputs: its metadata
  carries them (compared with the entry's on every load) and its record (``records``, beside
  it) holds its sha256, its fast digest and the source sha256 it was converted from. A
  malformed record counts as absent; a copy that fails a check is discarded and converted
  again. With ``verify="always"`` the source is re-hashed by sha256 and converted afresh, and
  the copy must equal that conversion.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

from . import records, sources
from ..fileio import hash_file
from ..formats.safetensors_file import (Loaded, read_weights, serialized_digest, weights_metadata,
                                        write_safetensors)
from ..formats.torch_state_dict import from_state_dict, read_state_dict_file
from ..formats.upstream import CheckpointFormatError, from_robustness, read_checkpoint
from ..validate import IntegrityError
from .cache import (cache_write_error, cleanup_converted, conversion_lock, converted_path,
                    file_lock, remove)
from .manifest import Entry, FileSpec

__all__ = ["load_spec", "converted_copy", "converted_path", "conversion_inputs", "conversion_key",
           "existing_copy", "verify_spec", "Verification", "UnverifiableError"]


def load_spec(entry: Entry, spec: FileSpec, *, verify: str = "auto", progress: bool = True,
              local_files_only: bool = False) -> Loaded:
    """One file of ``entry``, verified and content-checked (see the module doc). Leftovers of
    killed conversions go first (``cache.cleanup_converted``)."""
    cleanup_converted()
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

# Each pickled format: how its file is read (weights-only) and turned into the arch's keys.
CONVERTERS = {"robustness-ckpt": (read_checkpoint, from_robustness),
              "torch-state-dict": (read_state_dict_file, from_state_dict)}

def _discard(out: Path, why: str) -> None:
    warnings.warn(f"Discarding a damaged converted checkpoint ({why}); converting again.")
    for p in (out, records.record_path(out)):
        try:
            remove(p)
        except OSError:
            pass


def conversion_inputs(entry: Entry, spec: FileSpec, source_sha: str) -> dict[str, str]:
    """The metadata a conversion of ``spec`` for ``entry`` writes, less the epoch (which the
    source's bytes give): with the source's bytes, all that determines the copy's content."""
    return weights_metadata(entry.arch, entry.num_classes, entry.mean, entry.std,
                            name=entry.name, source_sha256=source_sha,
                            source_file=spec.describe(), source_format=spec.format)


def conversion_key(inputs: dict[str, str]) -> str:
    """The converted copy's cache key: its source sha256 and a digest of the other inputs."""
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return f"{inputs['source_sha256']}-{digest[:16]}"


def _cached_conversion(inputs: dict[str, str], verify: str) -> Loaded | None:
    source_sha = inputs["source_sha256"]
    out = converted_path(conversion_key(inputs))
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
    meta = loaded.metadata
    if meta.get("source_sha256") != source_sha:
        _discard(out, f"it says it was converted from {meta.get('source_sha256')!r}, "
                 f"not {source_sha}")
        return None
    other = next((k for k, v in inputs.items() if meta.get(k) != v), None)
    if other is not None:
        _discard(out, f"it was converted with {other}={meta.get(other)!r}, not "
                 f"{inputs[other]!r}")
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


class UnverifiableError(sources.NotCachedError):
    """``verify="always"`` for a converted copy whose source is not in the cache: nothing can be
    re-hashed against the pin, so the copy is refused rather than called verified."""


def converted_copy(entry: Entry, spec: FileSpec, *, verify: str = "auto", progress: bool = True,
                   local_files_only: bool = False) -> Loaded:
    """Upstream pickle → safetensors, once; later loads read only the safetensors file (of an
    unpinned URL file too, by the sha256 recorded on its first download)."""
    pin = spec.sha256 or sources.recorded_sha256(spec)
    if pin and verify != "always":
        hit = _cached_conversion(conversion_inputs(entry, spec, pin), verify)
        if hit is not None:
            return hit
    try:
        v = sources.fetch_verified(spec, base_dir=entry.base_dir,
                                   verify="never" if verify == "never" else "always",
                                   progress=progress, local_files_only=local_files_only)
    except sources.NotCachedError:
        copy = existing_copy(entry, spec)
        if verify == "always" and copy is not None:
            raise UnverifiableError(
                f"{entry.name}: its converted copy {copy} is cached but its source "
                f"{spec.describe()} is not, so verify='always' has nothing to re-hash against "
                "the pin. Fetch the source with network access, or load with verify='auto'."
            ) from None
        raise
    return _convert(entry, spec, v, verify)


def existing_copy(entry: Entry, spec: FileSpec) -> Path | None:
    """The converted copy of ``spec`` for ``entry`` if one is in the cache (``spec`` pinned, or
    an unpinned URL file with a sha256 recorded)."""
    pin = spec.sha256 or sources.recorded_sha256(spec)
    if spec.format == "safetensors" or not pin:
        return None
    out = converted_path(conversion_key(conversion_inputs(entry, spec, pin)))
    return out if out.exists() else None


def _convert(entry: Entry, spec: FileSpec, v: sources.Verified, verify: str) -> Loaded:
    """The converted copy of source ``v``, verified in this call (the pickle is unpickled only
    right after its sha256 was checked): the cached one if it is sound (under "always": if it
    equals a fresh conversion), else a fresh conversion, written to the cache."""
    inputs = conversion_inputs(entry, spec, spec.sha256 or records.file_sha256(v.path))
    out = converted_path(conversion_key(inputs))
    with file_lock(conversion_lock(out.stem), f"converting {spec.describe()} for {entry.name}"):
        if verify != "always":
            hit = _cached_conversion(inputs, verify)  # another process may have done it
            if hit is not None:
                return hit
        read, convert = CONVERTERS[spec.format]
        try:
            conv = convert(read(v.path), entry.arch, mean=entry.mean, std=entry.std,
                           num_classes=entry.num_classes, source=spec.describe())
        except CheckpointFormatError as e:
            raise CheckpointFormatError(f"{entry.name}: {e}") from None
        meta = dict(inputs, source_epoch=str(conv.epoch))
        fresh = serialized_digest(conv.state_dict, meta)
        if out.exists():
            if _matches(out, fresh):
                return read_weights(out, fresh, f"converted cache {out}")
            _discard(out, "it is not what the verified source converts to")
        fast = _write_copy(out, conv.state_dict, meta, entry, spec)
        if fast != fresh:
            raise IntegrityError(f"{out} changed while it was written (digest {fast}, "
                                 f"expected {fresh})")
    return read_weights(out, fast, f"converted cache {out}")


def _write_copy(out: Path, state_dict, meta: dict[str, str], entry: Entry,
                spec: FileSpec) -> str:
    """Write the converted copy and its record; returns the copy's fast digest."""
    try:
        write_safetensors(state_dict, out, meta)
        sha, fast, size = hash_file(out)
        records.write(out, sha, fast, size, meta["source_sha256"], source=spec.describe(),
                      arch=entry.arch, name=entry.name)
    except OSError as e:
        try:
            remove(out)
        except OSError:
            pass
        raise cache_write_error(e, out.parent, f"write the converted copy of "
                                f"{entry.name}") from None
    return fast


# ----------------------------------------------------------------------------- verification

@dataclass(frozen=True)
class Verification:
    """What ``verify_spec`` re-hashed by sha256, and against what."""

    spec: FileSpec
    status: str                  # "verified", "unpinned", "unverifiable" or "not cached"
    file: Path | None = None     # the file hashed (for an upstream pickle: the source)
    sha256: str | None = None    # the sha256 it has, equal to ``against``'s
    against: str = ""            # "the manifest's pin", "the Hub's LFS hash", or (unpinned
                                 # URL file) "the sha256 recorded on its first download"
    copy: Path | None = None     # a converted copy: equal to a fresh conversion of ``file``

    def describe(self) -> str:
        what = self.spec.describe()
        if self.status == "not cached":
            return f"{what}: not cached"
        if self.status == "unverifiable":
            return (f"{what}: UNVERIFIABLE: its converted copy {self.copy} is cached but the "
                    "source is not, so nothing can be re-hashed against the pin "
                    f"{self.spec.sha256} (with network: robust_zoo.load(NAME, verify='always'))")
        if self.status == "unpinned":
            return f"{what}: {self.file} is not checked: no sha256 to check it against"
        line = f"{what}: hashed {self.file}: sha256 {self.sha256} = {self.against}"
        if self.copy is not None:
            line += f"\n    converted copy {self.copy} = a fresh conversion of it"
        return line


def verify_spec(entry: Entry, spec: FileSpec) -> Verification:
    """Re-hash ``spec``'s cached file by sha256 against its pin and, for an upstream pickle,
    check its converted copy against a fresh conversion; touches no network. A file that does
    not match is deleted (``IntegrityError``)."""
    try:
        v = sources.fetch_verified(spec, base_dir=entry.base_dir, verify="always",
                                   progress=False, local_files_only=True)
    except (sources.NotCachedError, sources.SourceUnavailableError):
        copy = existing_copy(entry, spec)
        return Verification(spec, "not cached" if copy is None else "unverifiable", copy=copy)
    if v.fast is None:
        return Verification(spec, "unpinned", v.path)
    rec = records.read(v.path)
    sha = spec.sha256 or (rec.pinned if rec is not None else None)
    against = ("the manifest's pin" if spec.sha256 else "the Hub's LFS hash"
               if spec.source == "hf" else "the sha256 recorded on its first download")
    if spec.format == "safetensors":
        read_weights(v.path, v.fast, spec.describe())
        return Verification(spec, "verified", v.path, sha, against)
    loaded = _convert(entry, spec, v, "always")
    return Verification(spec, "verified", v.path, sha, against, loaded.path)
