"""``robust_zoo.load`` and friends: name → verified weights → eval-mode model."""
from __future__ import annotations

import math
import os
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import validate
from . import loading, network, records, sources
from ..models.archs import build, get_arch
from ..formats.safetensors_file import Loaded
from ..formats.upstream import match_state_dict
from ..errors import RobustZooError, UsageError
from ..naming import check_norm
from .manifest import Entry, FileSpec, Manifest, ManifestError, UnknownModelError, load_manifest
from ..models.robust_model import RobustModel, replace_head

__all__ = ["load", "get_entry", "list_models", "download", "load_state_dict", "arch_of",
           "NormalizationWarning"]


def list_models(arch: str | None = None, norm: str | None = None, eps: float | None = None, *,
                family: str | None = None, paper: str | None = None,
                threat_model: str | None = None, manifest: Any = None) -> list[str]:
    """Names in the zoo, optionally filtered by architecture, norm ("l2", "linf", "none"),
    ε, architecture family ("resnet", "convnext", "swin", "vit", "xcit", ...), paper key
    (a RobustBench id's first part, e.g. "Singh2023Revisiting"; case ignored) and
    RobustBench threat model ("Linf", "L2", "corruptions"). Aliases (RobustBench's
    ``Salman2020Do_*`` ids) load their entry but are not listed."""
    return sorted(e.name for e in load_manifest(manifest).filter(
        arch, norm, eps, family=family, paper=paper, threat_model=threat_model))


def get_entry(name: str | os.PathLike | None = None, *, arch: str | None = None,
              norm: str | None = None, eps: float | None = None, manifest: Any = None) -> Entry:
    """The manifest entry for a name, an ``hf-hub:org/repo[@rev]`` export, an export folder
    (a path, or ``local-dir:PATH`` as in timm), or (arch, norm, ε)."""
    eps = _check_selection(name, arch, norm, eps)
    if name is not None:
        name = os.fspath(name)
        if name.startswith(("hf-hub:", "local-dir:")) or _is_export_dir(name):
            return _export_entry(name)
    m = load_manifest(manifest)
    if name is not None:
        if name not in m and (Path(name) / "config.json").is_file():
            return _export_entry(name)    # a bare folder name that is not a zoo name
        return m.get(name)
    return m.find(arch, norm, eps)


def _check_selection(name: Any, arch: Any, norm: Any, eps: Any) -> float | None:
    """A name, or all of arch/norm/eps, each of a valid kind; returns ε as a float."""
    if name is not None:
        if not isinstance(name, (str, os.PathLike)) or not os.fspath(name):
            raise UsageError(f"name={name!r} is not a model name: pass a name from "
                             "robust_zoo.list_models(), an export folder or hf-hub:org/repo")
        given = [k for k, v in (("arch", arch), ("norm", norm), ("eps", eps)) if v is not None]
        if given:
            raise UsageError(f"Pass either a name or arch=/norm=/eps=, not both (got name="
                             f"{os.fspath(name)!r} and {', '.join(given)})")
        return None
    if arch is None or norm is None or eps is None:
        raise UsageError("Pass a model name, or all of arch=, norm= and eps= "
                         "(e.g. arch='resnet50', norm='linf', eps=4/255)")
    if not isinstance(arch, str):
        raise UsageError(f"arch={arch!r} is not an architecture name (e.g. 'resnet50')")
    try:
        get_arch(arch)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if str(norm).strip().lower() != "none":
        check_norm(norm)
    try:
        return validate.eps(eps, "eps")
    except validate.FieldError as e:
        raise UsageError(f"eps={eps!r}: {str(e).split(': ', 1)[1]}") from None


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
    Every argument is checked before anything is read or written (a ``UsageError`` naming it).
    The weights are cast to ``dtype`` (default float32) whatever precision the file stores;
    the normalization is the manifest entry's (a file whose metadata says otherwise gets a
    ``NormalizationWarning``).
    """
    _check_selection(name, arch, norm, eps)
    _check_load_arguments(pretrained=pretrained, normalize=normalize, progress=progress,
                          local_files_only=local_files_only, num_classes=num_classes,
                          device=device, dtype=dtype, verify=verify)
    entry = get_entry(name, arch=arch, norm=norm, eps=eps, manifest=manifest)
    a = get_arch(entry.arch)
    mean, std = entry.mean, entry.std
    if pretrained:
        sd, meta = load_state_dict(entry, verify=verify, progress=progress,
                                   local_files_only=local_files_only,
                                   dtype=dtype or torch.float32)
        net = build(a.name, entry.num_classes, device="meta")
        net.load_state_dict(_with_versions(sd, net), strict=True, assign=True)
        _computed_buffers(net, a.name, entry.num_classes)
        _check_normalization(meta, entry)
    else:   # random weights; on the meta device built there, without allocating
        meta = device is not None and torch.device(device).type == "meta"
        net = build(a.name, entry.num_classes, device="meta" if meta else None)
    if num_classes is not None and num_classes != entry.num_classes:
        replace_head(net, num_classes, arch=a.name)
    model: nn.Module = RobustModel(net, a.name, mean, std, name=entry.name) if normalize else net
    model.entry = entry
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def _computed_buffers(net: nn.Module, arch: str, num_classes: int) -> None:
    """Fill the buffers no state dict holds (non-persistent: Swin's relative position indices
    and attention masks), which the build on the meta device left without values: computed on
    the CPU by the module's own ``init_non_persistent_buffers`` (timm's) where it has one,
    else taken from a build of ``arch`` on the CPU."""
    empty = {f"{p}.{k}" if p else k: (m, k) for p, m in net.named_modules()
             for k, b in m._buffers.items() if b is not None and b.is_meta}
    if not empty:
        return
    for m, k in empty.values():
        m._buffers[k] = torch.empty_like(m._buffers[k], device="cpu")
    owners = {id(m) for m, _ in empty.values()}
    done = set()
    for p, m in net.named_modules():
        if id(m) in owners and hasattr(m, "init_non_persistent_buffers"):
            m.init_non_persistent_buffers()
            done.add(id(m))
    rest = [name for name, (m, _) in empty.items() if id(m) not in done]
    if rest:
        ref = dict(build(arch, num_classes).named_buffers())
        for name in rest:
            m, k = empty[name]
            m._buffers[k] = ref[name]


def _check_load_arguments(*, pretrained: Any, normalize: Any, progress: Any,
                          local_files_only: Any, num_classes: Any, device: Any, dtype: Any,
                          verify: Any) -> None:
    """``load``'s arguments other than the model's selection, each of a valid kind and value."""
    records.check_mode(verify)
    for k, v in (("pretrained", pretrained), ("normalize", normalize), ("progress", progress),
                 ("local_files_only", local_files_only)):
        if not isinstance(v, bool):
            raise UsageError(f"{k}={v!r}: pass True or False")
    if num_classes is not None and (isinstance(num_classes, bool)
                                    or not isinstance(num_classes, int) or num_classes < 0):
        raise UsageError(f"num_classes={num_classes!r}: pass an integer >= 0 (0: features "
                         "only) or None (the entry's own head)")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        hint = (f"; did you mean torch.{dtype}?" if isinstance(dtype, str)
                and isinstance(getattr(torch, dtype, None), torch.dtype) else "")
        raise UsageError(f"dtype={dtype!r}: pass a floating torch dtype (torch.float32, "
                         f"torch.float16, torch.bfloat16, torch.float64) or None{hint}")
    if device is not None:
        _check_device(device)


def _check_device(device: Any) -> None:
    """``device`` names a device that exists on this machine."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise UsageError(f"device={device!r} is not a device ({str(e).splitlines()[0]}); use "
                         "e.g. 'cpu', 'cuda' or 'cuda:0'") from None
    if d.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (d.index or 0) >= n:
            raise UsageError(f"device={device!r}: this machine has {n} CUDA device(s)"
                             + ("; use device='cpu'" if n == 0 else
                                f"; use an index below {n}"))
    elif d.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device={device!r}: MPS is not available here; use device='cpu'")


def _with_versions(sd: dict[str, torch.Tensor], net: nn.Module) -> "OrderedDict":
    """``sd`` with the module versions of ``net`` attached. Files (safetensors, converted
    pickles) carry no ``_metadata``, and some torchvision modules (MNASNet) refuse a state dict
    without a version; the weights are for this very architecture, so its versions apply."""
    out = OrderedDict(sd)
    out._metadata = net.state_dict()._metadata  # type: ignore[attr-defined]
    return out


def load_state_dict(entry: Entry, *, verify: str = "auto", progress: bool = True,
                    local_files_only: bool = False, dtype: torch.dtype | None = torch.float32
                    ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(torchvision state dict, metadata) for ``entry``: its files tried in order of preference,
    each verified and content-checked by ``hub.loading``, then fitted to the architecture
    (keys, shapes and kinds of dtype, ``formats.upstream.match_state_dict``) with the floating
    tensors cast to ``dtype`` (None: as the file stores them)."""
    loaded, spec = _load_first(entry, verify=verify, progress=progress,
                               local_files_only=local_files_only)
    return _fitted(loaded, spec, entry, dtype), loaded.metadata


def _fitted(loaded: Loaded, spec: FileSpec, entry: Entry, dtype: torch.dtype | None
            ) -> dict[str, torch.Tensor]:
    sd, what = loaded.state_dict, f"file {spec.describe()}"
    if spec.format != "safetensors":
        what = f"converted copy {loaded.path} of {spec.describe()}"
    elif "normalize.mean" in sd and all(k.startswith(("model.", "normalize.")) for k in sd):
        # a file saved from a RobustModel (RobustBench layout) rather than a bare network
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    return dict(match_state_dict(sd, entry.arch, entry.num_classes, what=what, dtype=dtype))


class NormalizationWarning(UserWarning):
    """A weight file's metadata names another mean/std than its manifest entry."""


def _check_normalization(meta: dict[str, str], entry: Entry) -> None:
    """Warn when the file's metadata mean/std differ from the entry's: the manifest entry is the
    contract, so its normalization is the one the model uses."""
    said = {k: validate.metadata_json_list(meta, k, entry.name) for k in ("mean", "std")}
    want = {"mean": tuple(entry.mean), "std": tuple(entry.std)}
    if all(said[k] is None or (len(said[k]) == len(want[k]) and all(
            math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(said[k], want[k])))
           for k in said):
        return
    show = ", ".join(f"{k}={list(v)}" for k, v in want.items())
    warnings.warn(f"{entry.name}: the weight file's metadata says "
                  + ", ".join(f"{k}={list(v)}" for k, v in said.items() if v is not None)
                  + f" but the manifest entry says {show}; the model uses the manifest's (the "
                  "entry is the contract). Correct whichever of the two is wrong.",
                  NormalizationWarning, stacklevel=3)


def _load_first(entry: Entry, **kw: Any) -> tuple[Loaded, FileSpec]:
    """The first of ``entry``'s files that can be fetched, verified and read, and its spec."""
    errors = []
    for spec in entry.files:
        try:
            return loading.load_spec(entry, spec, **kw), spec
        except (sources.SourceUnavailableError, sources.NotCachedError) as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise sources.SourceUnavailableError(f"No file of {entry.name} could be fetched:\n  "
                                         + "\n  ".join(str(e) for e in errors))


def download(names: list[str] | str, *, manifest: Any = None, progress: bool = True,
             verify: str = "auto") -> dict[str, Path]:
    """Fetch, verify (and convert) entries so later loads need no network; returns, per name,
    the local file that later loads read."""
    records.check_mode(verify)
    out = {}
    for name in [names] if isinstance(names, str) else names:
        entry = get_entry(name, manifest=manifest)
        loaded, spec = _load_first(entry, verify=verify, progress=progress)
        _fitted(loaded, spec, entry, None)   # what load would refuse, download refuses
        out[name] = loaded.path
    return out


# ----------------------------------------------------------------------------- exported repos

def _is_export_dir(name: str) -> bool:
    """A path-looking name (a separator in it) whose folder holds an export's config.json; a
    bare word is a zoo name first."""
    seps = (os.sep, os.altsep) if os.altsep else (os.sep,)
    return any(c in name for c in seps) and (Path(name) / "config.json").is_file()


def _export_entry(ref: str) -> Entry:
    """An Entry for a folder or Hub repo written by ``robust-zoo export``; every field of its
    config.json is checked (``validate.export_config``) before anything is built from it."""
    if ref.startswith("hf-hub:"):
        repo, _, rev = ref[len("hf-hub:"):].partition("@")
        try:
            validate.repo_id(repo or None, "hf-hub repo")
            validate.revision(rev or None, "hf-hub revision")
        except validate.FieldError as e:
            raise UnknownModelError(f"{ref}: {e}. Use hf-hub:org/name or hf-hub:org/name@rev")\
                from None
        cfg_spec = FileSpec(format="safetensors", repo_id=repo, filename="config.json",
                            revision=rev or "main")
        try:
            cfg_path = sources.hf_download(cfg_spec, progress=False)
        except Exception as e:  # noqa: BLE001 — huggingface_hub's own errors, named below
            if isinstance(e, RobustZooError) or (
                    not isinstance(e, network.Abort) and type(e).__module__.split(".")[0] not in
                    ("huggingface_hub", "httpx", "httpx2", "requests")):
                raise
            raise UnknownModelError(f"{ref}: no export config.json could be fetched from the "
                                    f"Hub repo {repo!r} ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:200] if str(e) else ''}). Is "
                                    "the repo id right, and was it written by `robust-zoo "
                                    "export`?") from None
        text = cfg_path.read_text(errors="replace")
        base, weights = None, dict(repo_id=repo, filename="model.safetensors",
                                   revision=rev or "main")
    else:
        base = Path(ref.removeprefix("local-dir:"))
        if not (base / "config.json").is_file():
            raise UnknownModelError(f"{ref}: no config.json in {base}; an export folder holds "
                                    "model.safetensors and config.json (`robust-zoo export`)")
        text = (base / "config.json").read_text(errors="replace")
        weights = dict(path="model.safetensors")
    try:
        cfg = validate.load_json(text, "config.json")
    except ValueError as e:
        raise ManifestError(f"{ref}: config.json is not valid JSON ({e})") from None
    try:
        d = validate.export_config(cfg, ref)
    except validate.FieldError as e:
        if e.field == "robust_zoo":
            raise UnknownModelError(str(e).split(": ", 1)[1]) from None
        raise ManifestError(f"{ref}: config.json {e}") from None
    d["files"] = [dict(format="safetensors", sha256=d.get("sha256"), size=d.get("size"),
                       **weights)]
    d.pop("sha256", None)
    d.pop("size", None)
    return Manifest([Entry.from_dict(d, base)]).get(d["name"])
