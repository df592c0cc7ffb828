"""``weights_manifest.json``: the zoo as data.

``{"schema_version": 1, "models": [entry, ...]}``; each entry names a checkpoint (arch, norm, ε),
where its files live (in order of preference, each pinned by sha256 where known), the metrics it
claims, its preprocessing and the recipe that produced it. The JSON Schema is
``robust_zoo/schema/manifest.schema.json``; ``docs/manifest.md`` explains every field.

A user manifest (``manifest=`` argument, or ``ROBUST_ZOO_MANIFEST``) has the same form; relative
``path`` sources in it are resolved against the manifest's own folder.
"""
from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import validate
from ..models.archs import IMAGENET_MEAN, IMAGENET_STD, get_arch, list_archs
from ..errors import RobustZooError
from ..naming import check_norm, eps_close, eps_display, model_name

SCHEMA_VERSION = 1
PACKAGE_MANIFEST = Path(__file__).parents[1] / "weights_manifest.json"
SCHEMA_PATH = Path(__file__).parents[1] / "schema" / "manifest.schema.json"
FORMATS = ("safetensors", "robustness-ckpt", "torch-state-dict")


class ManifestError(RobustZooError, ValueError):
    """The manifest itself is malformed."""


class UnknownModelError(RobustZooError, KeyError):
    """No entry matches the requested name or (arch, norm, ε)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


@dataclass(frozen=True)
class FileSpec:
    """One place a checkpoint's bytes can come from: a Hub file, a URL or a local path."""

    format: str
    sha256: str | None = None
    size: int | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    url: str | None = None
    path: str | None = None

    @property
    def source(self) -> str:
        return "hf" if self.repo_id else "url" if self.url else "path"

    @property
    def basename(self) -> str:
        if self.filename:
            return os.path.basename(self.filename)
        if self.url:
            return os.path.basename(self.url.split("?")[0]) or "download"
        return os.path.basename(self.path or "")

    def describe(self) -> str:
        if self.repo_id:
            return f"hf://{self.repo_id}@{self.revision or 'main'}/{self.filename}"
        return self.url or str(self.path)

    def to_dict(self) -> dict[str, Any]:
        d = {"format": self.format, "sha256": self.sha256, "size": self.size}
        for k in ("repo_id", "filename", "revision", "url", "path"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass(frozen=True)
class Entry:
    name: str
    arch: str
    norm: str
    eps: float
    files: tuple[FileSpec, ...]
    metrics: tuple[dict, ...] = ()
    preprocessing: dict = field(default_factory=dict)
    license: str | None = None
    citation: str | None = None
    recipe: dict = field(default_factory=dict)
    num_classes: int = 1000
    description: str | None = None
    extra: dict = field(default_factory=dict)        # provenance, notes, ...
    base_dir: Path | None = None                      # folder of the manifest it came from

    # -- metadata a user reads
    @property
    def eps_display(self) -> str:
        return eps_display(self.norm, self.eps)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.preprocessing.get("mean", IMAGENET_MEAN))

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.preprocessing.get("std", IMAGENET_STD))

    def metric(self, name: str, **match: Any) -> dict | None:
        """The first claimed metric record called ``name`` whose fields equal ``match``."""
        for m in self.metrics:
            if m.get("name") == name and all(m.get(k) == v for k, v in match.items()):
                return m
        return None

    @property
    def clean_top1(self) -> float | None:
        m = self.metric("clean_top1")
        return None if m is None else m["value"]

    def transforms(self, normalize: bool = False):
        """Eval preprocessing for this checkpoint: resize, center-crop, to a [0, 1] tensor.

        The models ``robust_zoo.load`` returns normalize inside; pass ``normalize=True`` for the
        bare network (``load(..., normalize=False)``) to append the matching ``Normalize``.
        """
        from torchvision import transforms as T

        p = self.preprocessing
        interp = T.InterpolationMode(p.get("interpolation", "bilinear"))
        steps = [T.Resize(p.get("resize", 256), interpolation=interp),
                 T.CenterCrop(p.get("crop", 224)), T.ToTensor()]
        if normalize:
            steps.append(T.Normalize(self.mean, self.std))
        return T.Compose(steps)

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "arch": self.arch, "norm": self.norm, "eps": self.eps,
             "num_classes": self.num_classes, "files": [f.to_dict() for f in self.files],
             "metrics": list(self.metrics), "preprocessing": self.preprocessing,
             "license": self.license, "citation": self.citation, "recipe": self.recipe}
        if self.description:
            d["description"] = self.description
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_dir: Path | None = None) -> "Entry":
        known = {"name", "arch", "norm", "eps", "files", "metrics", "preprocessing", "license",
                 "citation", "recipe", "num_classes", "description"}
        if not isinstance(d, dict):
            raise ManifestError(f"manifest entry {d!r} is not an object")
        where = f"manifest entry {d.get('name', '?')!r}"
        for k in ("name", "arch", "norm", "eps", "files"):
            if k not in d:
                raise ManifestError(f"{where} has no {k!r} field")
        try:
            validate.non_empty_str(d["name"], "name")
            validate.non_empty_str(d["arch"], "arch")
            get_arch(d["arch"])
            norm = check_norm(validate.non_empty_str(d["norm"], "norm"))
            eps = validate.eps(d["eps"])
            num_classes = validate.positive_int(d.get("num_classes", 1000), "num_classes")
            pre = validate.preprocessing(d.get("preprocessing"))
            if not isinstance(d["files"], list) or not d["files"]:
                raise validate.FieldError("files", "lists no files")
            files = tuple(_file_spec(f, i) for i, f in enumerate(d["files"]))
            recipe = validate.recipe(d.get("recipe"))
            metrics = validate.metrics(d.get("metrics"))
            for k in ("license", "citation", "description"):
                validate.optional_str(d.get(k), k)
            for k in ("upstream", "provenance"):
                validate.optional_object(d.get(k), k)
            if "num_params" in d:
                validate.positive_int(d["num_params"], "num_params", maximum=10**13)
        except ValueError as e:
            raise ManifestError(f"{where}: {e}") from None
        return cls(name=d["name"], arch=get_arch(d["arch"]).name, norm=norm, eps=eps,
                   files=files, metrics=metrics, preprocessing=pre, license=d.get("license"),
                   citation=d.get("citation"), recipe=recipe,
                   num_classes=num_classes, description=d.get("description"),
                   extra={k: v for k, v in d.items() if k not in known}, base_dir=base_dir)

    @classmethod
    def for_weights(cls, path: "str | os.PathLike", *, name: str, arch: str, norm: str,
                    eps: float, num_classes: int, base_dir: "str | os.PathLike | None" = None,
                    metrics: Iterable[dict] = (), preprocessing: dict | None = None,
                    recipe: dict | None = None, description: str | None = None,
                    license: str | None = None, citation: str | None = None,
                    **extra: Any) -> "Entry":
        """The entry for a safetensors file this package wrote (a training run, a transfer run,
        an export): its sha256 and size are read from the file, its path is stored relative to
        ``base_dir`` (default: the file's folder), and the whole entry is validated as if read
        from a manifest. Write it with ``Manifest([entry]).write(...)``."""
        from ..fileio import sha256_file

        path = Path(path)
        base = Path(base_dir) if base_dir is not None else path.parent
        rel = os.path.relpath(path, base)
        d = {"name": name, "arch": arch, "norm": norm, "eps": float(eps),
             "num_classes": int(num_classes),
             "files": [{"format": "safetensors", "path": Path(rel).as_posix(),
                        "sha256": sha256_file(path), "size": path.stat().st_size}],
             "metrics": list(metrics), "preprocessing": dict(preprocessing or {}),
             "license": license, "citation": citation, "recipe": dict(recipe or {}),
             **({"description": description} if description else {}), **extra}
        return cls.from_dict(d, base)


def _file_spec(f: Any, i: int) -> FileSpec:
    """One ``files`` item, every field checked (``validate``); errors name ``files[i].field``."""
    if not isinstance(f, dict):
        raise validate.FieldError(f"files[{i}]", f"{f!r} is not an object")
    if f.get("format") not in FORMATS:
        raise validate.FieldError(f"files[{i}].format",
                                  f"{f.get('format')!r} is not one of {FORMATS}")
    if sum(k in f for k in ("repo_id", "url", "path")) != 1:
        raise validate.FieldError(f"files[{i}]", "needs exactly one of repo_id, url, path")
    g = {k: f.get(k) for k in FileSpec.__dataclass_fields__}
    g["sha256"] = validate.sha256_hex(g["sha256"], f"files[{i}].sha256")
    g["size"] = validate.optional_size(g["size"], f"files[{i}].size")
    if "repo_id" in f:
        validate.repo_id(g["repo_id"], f"files[{i}].repo_id")
        validate.relative_filename(g["filename"], f"files[{i}].filename")
        validate.revision(g["revision"], f"files[{i}].revision")
    elif "url" in f:
        if not isinstance(g["url"], str) or not g["url"].startswith(("https://", "http://")):
            raise validate.FieldError(f"files[{i}].url", f"{g['url']!r} is not an http(s) URL")
    elif not isinstance(g["path"], str) or not g["path"]:
        raise validate.FieldError(f"files[{i}].path", f"{g['path']!r} is not a path")
    return FileSpec(**g)


class Manifest:
    def __init__(self, entries: Iterable[Entry], path: Path | None = None):
        self.path = path
        self._entries: dict[str, Entry] = {}
        for e in entries:
            if e.name in self._entries:
                raise ManifestError(f"{path or 'manifest'}: duplicate model name {e.name!r}")
            self._entries[e.name] = e

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        if name in self._entries:
            return self._entries[name]
        close = difflib.get_close_matches(name, self._entries, n=5, cutoff=0.6)
        hint = (f" Closest names: {', '.join(close)}." if close else
                " Run `robust-zoo list` or robust_zoo.list_models() for all names.")
        src = f" in {self.path}" if self.path else ""
        raise UnknownModelError(f"No model named {name!r}{src}.{hint}")

    def filter(self, arch: str | None = None, norm: str | None = None,
               eps: float | None = None) -> list[Entry]:
        arch = get_arch(arch).name if arch else None
        norm = check_norm(norm) if norm else None
        return [e for e in self if (arch is None or e.arch == arch)
                and (norm is None or e.norm == norm)
                and (eps is None or eps_close(e.eps, eps))]

    def find(self, arch: str, norm: str, eps: float) -> Entry:
        """The entry for (arch, norm, ε); prefers the canonical name when several match."""
        hits = self.filter(arch, norm, eps)
        if hits:
            canonical = model_name(get_arch(arch).name, norm, eps)
            return next((e for e in hits if e.name == canonical), hits[0])
        same = self.filter(arch, norm)
        if not same:
            have = sorted({e.norm for e in self.filter(arch)})
            raise UnknownModelError(
                f"No {check_norm(norm)} models for {arch}. Norms available for it: "
                f"{', '.join(have) or 'none'}; architectures: {', '.join(list_archs())}.")
        vals = ", ".join(e.eps_display for e in sorted(same, key=lambda e: e.eps))
        raise UnknownModelError(
            f"No {arch} {check_norm(norm)} model with eps={eps:g}"
            f"{' (= %g/255)' % (eps * 255) if check_norm(norm) == 'linf' else ''}. "
            f"ε values that exist: {vals}.")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "models": [e.to_dict() for e in self]}

    def write(self, path: str | os.PathLike) -> None:
        from ..fileio import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def parse_manifest(data: dict[str, Any], path: Path | None = None) -> Manifest:
    if not isinstance(data, dict) or "models" not in data:
        raise ManifestError(f"{path or 'manifest'}: expected an object with 'schema_version' and "
                            "'models'")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ManifestError(f"{path or 'manifest'}: schema_version {data.get('schema_version')!r} "
                            f"is not supported (this robust_zoo reads {SCHEMA_VERSION})")
    base = path.parent if path else None
    if not isinstance(data["models"], list):
        raise ManifestError(f"{path or 'manifest'}: 'models' is not a list")
    return Manifest((Entry.from_dict(m, base) for m in data["models"]), path)


@lru_cache(maxsize=16)
def _load_cached(path: str, mtime_ns: int) -> Manifest:
    p = Path(path)
    try:
        data = validate.load_json(p.read_bytes(), str(p))
    except validate.JSONError as e:
        raise ManifestError(str(e)) from None
    return parse_manifest(data, p)


def load_manifest(manifest: "str | os.PathLike | Manifest | dict | None" = None) -> Manifest:
    """The manifest to use: an object, dict, path, ``$ROBUST_ZOO_MANIFEST``, or the zoo's own."""
    if isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, dict):
        return parse_manifest(manifest)
    path = manifest or os.environ.get("ROBUST_ZOO_MANIFEST") or PACKAGE_MANIFEST
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "weights_manifest.json"
    if not p.is_file():
        origin = ('ROBUST_ZOO_MANIFEST' if not manifest and os.environ.get('ROBUST_ZOO_MANIFEST')
                  else 'the manifest argument')
        raise FileNotFoundError(f"Manifest {p} does not exist (from {origin})")
    p = p.resolve()
    return _load_cached(str(p), p.stat().st_mtime_ns)
