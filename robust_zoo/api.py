"""``robust_zoo.load`` and friends: name → verified weights → eval-mode model."""
from __future__ import annotations

import json
import os
from collections import OrderedDict
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import hub
from .archs import build, get_arch
from .io import atomic_write_text
from .errors import UsageError
from .convert import CheckpointFormatError, from_robustness, match_state_dict, read_checkpoint
from .manifest import Entry, FileSpec, Manifest, UnknownModelError, load_manifest
from .models import RobustModel, replace_head
from .weights import load_weights, save_weights

__all__ = ["load", "get_entry", "list_models", "download", "load_state_dict", "arch_of"]


def list_models(arch: str | None = None, norm: str | None = None, eps: float | None = None, *,
                manifest: Any = None) -> list[str]:
    """Names in the zoo, optionally filtered by architecture, norm ("l2"/"linf") and ε."""
    return sorted(e.name for e in load_manifest(manifest).filter(arch, norm, eps))


def get_entry(name: str | os.PathLike | None = None, *, arch: str | None = None,
              norm: str | None = None, eps: float | None = None, manifest: Any = None) -> Entry:
    """The manifest entry for a name, an ``hf-hub:org/repo[@rev]`` export, an export folder
    (a path, or ``local-dir:PATH`` as in timm), or (arch, norm, ε)."""
    if name is not None:
        name = os.fspath(name)
        if name.startswith(("hf-hub:", "local-dir:")) or _is_export_dir(name):
            return _export_entry(name)
    m = load_manifest(manifest)
    if name is not None:
        if arch or norm or eps is not None:
            raise ValueError("Pass either a name or arch/norm/eps, not both")
        if name not in m and (Path(name) / "config.json").is_file():
            return _export_entry(name)    # a bare folder name that is not a zoo name
        return m.get(name)
    if arch is None or norm is None or eps is None:
        raise ValueError("Pass a model name, or all of arch=, norm= and eps= "
                         "(e.g. arch='resnet50', norm='linf', eps=4/255)")
    return m.find(arch, norm, eps)


def arch_of(name: str, *, manifest: Any = None, pretrained: bool = True) -> str:
    """The architecture of zoo model ``name`` (or of architecture name ``name`` itself when not
    ``pretrained``: random weights need no checkpoint); a clear error otherwise. Touches no
    network."""
    try:
        return get_entry(name, manifest=manifest).arch
    except UnknownModelError as e:
        try:
            a = get_arch(name)
        except ValueError:
            raise e from None
        if pretrained:
            raise UsageError(
                f"{name!r} is an architecture, not a zoo model: pass a model name such as "
                f"{a.name}_l2_eps3 (see robust_zoo.list_models(arch={a.name!r})), or "
                "pretrained=False (--pretrained false) for random weights") from None
        return a.name


def load(name: str | os.PathLike | None = None, *, arch: str | None = None, norm: str | None = None,
         eps: float | None = None, manifest: Any = None, pretrained: bool = True,
         normalize: bool = True, num_classes: int | None = None,
         device: str | torch.device | None = None, dtype: torch.dtype | None = None,
         progress: bool = True, verify: str = "auto", local_files_only: bool = False) -> nn.Module:
    """A zoo model in eval mode.

    By default the model takes images in [0, 1] and normalizes inside (the convention under
    which the manifest's ε is meant); ``normalize=False`` returns the bare torchvision network,
    which expects ``entry.transforms(normalize=True)`` inputs. ``pretrained=False`` builds the
    architecture with random weights and touches neither network nor cache.
    ``num_classes=N`` other than the entry's own replaces the head with a fresh ``Linear``
    (``0``: features only); equal to it, the trained head is kept, as in timm.
    ``model.reset_classifier(N)`` always gives a fresh head.
    ``verify``: "auto" (hash files once, re-hash when they change), "always", "never".
    """
    entry = get_entry(name, arch=arch, norm=norm, eps=eps, manifest=manifest)
    a = get_arch(entry.arch)
    mean, std = entry.mean, entry.std
    if pretrained:
        sd, meta = load_state_dict(entry, verify=verify, progress=progress,
                                   local_files_only=local_files_only)
        net = build(a.name, entry.num_classes, device="meta")
        net.load_state_dict(_with_versions(sd, net), strict=True, assign=True)
        mean = tuple(json.loads(meta["mean"])) if "mean" in meta else mean
        std = tuple(json.loads(meta["std"])) if "std" in meta else std
    else:
        net = build(a.name, entry.num_classes)
    if num_classes is not None and num_classes != entry.num_classes:
        replace_head(net, num_classes, arch=a.name)
    model: nn.Module = RobustModel(net, a.name, mean, std, name=entry.name) if normalize else net
    model.entry = entry
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def _with_versions(sd: dict[str, torch.Tensor], net: nn.Module) -> "OrderedDict":
    """``sd`` with the module versions of ``net`` attached. Files (safetensors, converted
    pickles) carry no ``_metadata``, and some torchvision modules (MNASNet) refuse a state dict
    without a version; the weights are for this very architecture, so its versions apply."""
    out = OrderedDict(sd)
    out._metadata = net.state_dict()._metadata  # type: ignore[attr-defined]
    return out


def load_state_dict(entry: Entry, *, verify: str = "auto", progress: bool = True,
                    local_files_only: bool = False
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(torchvision state dict, metadata) for ``entry``: its files tried in order of preference."""
    errors = []
    for spec in entry.files:
        try:
            if spec.format == "safetensors":
                path = hub.fetch(spec, base_dir=entry.base_dir, verify=verify, progress=progress,
                                 local_files_only=local_files_only)
                sd, meta = load_weights(path)
                return _net_keys(sd, entry, str(path)), meta
            return _converted(entry, spec, verify, progress, local_files_only)
        except (hub.SourceUnavailableError, hub.NotCachedError) as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise hub.SourceUnavailableError(f"No file of {entry.name} could be fetched:\n  "
                                     + "\n  ".join(str(e) for e in errors))


def _net_keys(sd: dict[str, torch.Tensor], entry: Entry, what: str) -> dict[str, torch.Tensor]:
    # Accept files saved from a RobustModel (RobustBench layout) as well as bare networks.
    if "normalize.mean" in sd and all(k.startswith(("model.", "normalize.")) for k in sd):
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    return dict(match_state_dict(sd, entry.arch, entry.num_classes, what=f"file {what}"))


def _converted(entry: Entry, spec: FileSpec, verify: str, progress: bool,
               local_files_only: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Upstream pickle → safetensors, once; later loads read only the safetensors file."""
    if spec.sha256:
        hit = _cached_conversion(spec.sha256, verify)
        if hit is not None:
            return hit
    path = hub.fetch(spec, base_dir=entry.base_dir, verify=verify, progress=progress,
                     local_files_only=local_files_only)
    source_sha = spec.sha256 or hub.file_sha256(path)
    with hub.file_lock(f"convert-{source_sha}"):
        hit = _cached_conversion(source_sha, verify)  # another process may have just done it
        if hit is not None:
            return hit
        try:
            conv = from_robustness(read_checkpoint(path), entry.arch, mean=entry.mean,
                                   std=entry.std, source=spec.describe())
        except CheckpointFormatError as e:
            raise CheckpointFormatError(f"{entry.name}: {e}") from None
        out = _conversion_path(source_sha)
        save_weights(conv.state_dict, out, arch=entry.arch, num_classes=entry.num_classes,
                     mean=conv.mean, std=conv.std, name=entry.name, source_sha256=source_sha,
                     source_file=spec.describe(), source_epoch=str(conv.epoch))
        digest = hub.file_sha256(out, "always")
        atomic_write_text(out.with_suffix(".json"), json.dumps(
            {"sha256": digest, "source_sha256": source_sha, "source": spec.describe(),
             "arch": entry.arch, "name": entry.name}, indent=2))
    return load_weights(out)


def _conversion_path(source_sha: str) -> Path:
    return hub.cache_dir() / "converted" / f"{source_sha}.safetensors"


def _cached_conversion(source_sha: str, verify: str):
    out = _conversion_path(source_sha)
    side = out.with_suffix(".json")
    if not (out.exists() and side.exists()):
        return None
    try:
        expected = json.loads(side.read_text())["sha256"]
        hub.check_sha256(out, expected, f"converted cache {out}", verify)
    except (hub.IntegrityError, ValueError, KeyError) as e:
        warnings.warn(f"Discarding a damaged converted checkpoint ({e}); converting again.")
        out.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        return None
    return load_weights(out)


def download(names: list[str] | str, *, manifest: Any = None, progress: bool = True,
             verify: str = "auto") -> dict[str, Path]:
    """Fetch, verify (and convert) entries so later loads need no network; returns, per name,
    the local file that later loads read."""
    out = {}
    for name in [names] if isinstance(names, str) else names:
        entry = get_entry(name, manifest=manifest)
        load_state_dict(entry, verify=verify, progress=progress)
        out[name] = _local_file(entry)
    return out


def _local_file(entry: Entry) -> Path:
    """The verified local file behind ``entry`` (the converted copy for upstream pickles)."""
    for spec in entry.files:
        try:
            path = hub.fetch(spec, base_dir=entry.base_dir, progress=False, local_files_only=True)
        except (hub.NotCachedError, hub.SourceUnavailableError):
            continue
        if spec.format == "robustness-ckpt":
            return _conversion_path(spec.sha256 or hub.file_sha256(path))
        return path
    raise hub.NotCachedError(f"{entry.name} has no file in the local cache")


# ----------------------------------------------------------------------------- exported repos

def _is_export_dir(name: str) -> bool:
    """A path-looking name (a separator in it) whose folder holds an export's config.json; a
    bare word is a zoo name first."""
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    return any(c in name for c in seps) and (Path(name) / "config.json").is_file()


def _export_entry(ref: str) -> Entry:
    """An Entry for a folder or Hub repo written by ``robust-zoo export``."""
    if ref.startswith("hf-hub:"):
        repo, _, rev = ref[len("hf-hub:"):].partition("@")
        cfg_spec = FileSpec(format="safetensors", repo_id=repo, filename="config.json",
                            revision=rev or "main")
        cfg = json.loads(hub._hf_download(cfg_spec, progress=False).read_text())
        base, weights = None, dict(repo_id=repo, filename="model.safetensors",
                                   revision=rev or "main")
    else:
        base = Path(ref.removeprefix("local-dir:"))
        if not (base / "config.json").is_file():
            raise UnknownModelError(f"{ref}: no config.json in {base}; an export folder holds "
                                    "model.safetensors and config.json (`robust-zoo export`)")
        cfg = json.loads((base / "config.json").read_text())
        weights = dict(path="model.safetensors")
    rz = cfg.get("robust_zoo")
    if not rz:
        raise UnknownModelError(f"{ref} has no 'robust_zoo' section in config.json: it was not "
                                "written by `robust-zoo export`")
    d = dict(rz)
    d["files"] = [dict(format="safetensors", sha256=rz.get("sha256"), size=rz.get("size"),
                       **weights)]
    d.pop("sha256", None)
    d.pop("size", None)
    return Manifest([Entry.from_dict(d, base)]).get(d["name"])
