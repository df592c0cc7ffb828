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
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator

from .. import validate
from ..models.archs import IMAGENET_MEAN, IMAGENET_STD, families, get_arch, list_archs
from ..errors import RobustZooError, UsageError
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


class AmbiguousModelError(UnknownModelError):
    """Several entries match an (arch, norm, ε) and none of them is the canonical one."""


def hub_name(name: str) -> str:
    """``name`` as a Python identifier, every character other than a letter, digit or '_'
    written '_': the torch.hub entry point of a RobustBench id such as
    ``Singh2023Revisiting_ConvNeXt-T-ConvStem`` (``Singh2023Revisiting_ConvNeXt_T_ConvStem``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _norm_arg(norm: str) -> str:
    """A norm to select entries by: ``"none"`` or an attack norm (``UsageError`` otherwise)."""
    return "none" if str(norm).strip().lower() == "none" else check_norm(norm)


def _threat_arg(value: str) -> str:
    try:
        return validate.threat_model(value)
    except validate.FieldError as e:
        raise UsageError(f"threat_model={value!r}: {str(e).split(': ', 1)[1]}") from None


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
    threat_models: tuple[str, ...] = ()               # RobustBench's names ("Linf", ...)
    family: str | None = None                         # architecture family (list_models filter)
    paper: str | None = None                          # paper key, e.g. "Singh2023Revisiting"
    aliases: tuple[str, ...] = ()                     # other names that load this entry

    def __post_init__(self) -> None:
        if not self.threat_models:     # the one its norm implies
            object.__setattr__(self, "threat_models", validate.threat_models(None, self.norm))

    # -- metadata a user reads
    @property
    def eps_display(self) -> str:
        return "-" if self.norm == "none" else eps_display(self.norm, self.eps)

    @property
    def hub_name(self) -> str:
        """The torch.hub entry point (``hubconf.py``): the name with '-' and '.' as '_'."""
        return hub_name(self.name)

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

    @property
    def input_size(self) -> int:
        """The side of the square images the preprocessing gives (its crop, or its resize)."""
        crop = self.preprocessing.get("crop", 224)
        return crop if crop is not None else max(self.preprocessing["resize"])

    @property
    def crop_pct(self) -> float:
        """timm's crop_pct of the preprocessing: crop / resize (1.0 without one of them)."""
        resize, crop = self.preprocessing.get("resize", 256), self.preprocessing.get("crop", 224)
        if isinstance(resize, int) and crop is not None:
            return round(crop / resize, 4)
        return 1.0

    def describe_preprocessing(self) -> str:
        """One line: what ``transforms()`` does, e.g. "resize 256 (bicubic), center crop 224"."""
        p = self.preprocessing
        resize, crop = p.get("resize", 256), p.get("crop", 224)
        steps = []
        if resize is not None:
            size = "x".join(map(str, resize)) if isinstance(resize, list) else resize
            steps.append(f"resize {size} ({p.get('interpolation', 'bilinear')})")
        if crop is not None:
            steps.append(f"center crop {crop}")
        label = f"{p['name']}: " if p.get("name") else ""
        return label + ", ".join(steps)

    def transforms(self, normalize: bool = False):
        """Eval preprocessing for this checkpoint: resize, center-crop, to a [0, 1] tensor.

        ``resize`` is the shorter side, or ``[height, width]``; a null ``resize`` or ``crop``
        skips that step (RobustBench's ``Crop288``: center crop only; ``Res224``: resize to
        224x224 only). The models ``robust_zoo.load`` returns normalize inside; pass
        ``normalize=True`` for the bare network (``load(..., normalize=False)``) to append the
        matching ``Normalize``.
        """
        from torchvision import transforms as T

        p = self.preprocessing
        interp = T.InterpolationMode(p.get("interpolation", "bilinear"))
        resize, crop = p.get("resize", 256), p.get("crop", 224)
        steps = []
        if resize is not None:
            steps.append(T.Resize(tuple(resize) if isinstance(resize, list) else resize,
                                  interpolation=interp))
        if crop is not None:
            steps.append(T.CenterCrop(crop))
        steps.append(T.ToTensor())
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
        if self.threat_models != validate.threat_models(None, self.norm):
            d["threat_model"] = (self.threat_models[0] if len(self.threat_models) == 1
                                 else list(self.threat_models))
        for k in ("family", "paper"):
            if getattr(self, k):
                d[k] = getattr(self, k)
        if self.aliases:
            d["aliases"] = list(self.aliases)
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], base_dir: Path | None = None) -> "Entry":
        known = {"name", "arch", "norm", "eps", "files", "metrics", "preprocessing", "license",
                 "citation", "recipe", "num_classes", "description", "threat_model", "family",
                 "paper", "aliases"}
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
            norm = validate.entry_norm(d["norm"])
            eps = validate.eps(d["eps"])
            if norm == "none" and eps != 0:
                raise validate.FieldError("eps", f"{d['eps']!r} with norm 'none': a model "
                                          "trained for no norm ball has eps 0")
            threats = validate.threat_models(d.get("threat_model"), norm)
            aliases = validate.names(d.get("aliases"), "aliases")
            num_classes = validate.positive_int(d.get("num_classes", 1000), "num_classes")
            pre = validate.preprocessing(d.get("preprocessing"))
            if not isinstance(d["files"], list) or not d["files"]:
                raise validate.FieldError("files", "lists no files")
            files = tuple(_file_spec(f, i) for i, f in enumerate(d["files"]))
            recipe = validate.recipe(d.get("recipe"))
            metrics = validate.metrics(d.get("metrics"))
            for k in ("license", "citation", "description", "family", "paper",
                      "license_source"):
                validate.optional_str(d.get(k), k)
            for k in ("upstream", "provenance"):
                validate.optional_object(d.get(k), k)
            validate.links(d.get("links"))
            if "num_params" in d:
                validate.positive_int(d["num_params"], "num_params", maximum=10**13)
        except ValueError as e:
            raise ManifestError(f"{where}: {e}") from None
        return cls(name=d["name"], arch=get_arch(d["arch"]).name, norm=norm, eps=eps,
                   files=files, metrics=metrics, preprocessing=pre, license=d.get("license"),
                   citation=d.get("citation"), recipe=recipe,
                   num_classes=num_classes, description=d.get("description"),
                   extra={k: v for k, v in d.items() if k not in known}, base_dir=base_dir,
                   threat_models=threats,
                   family=d.get("family"), paper=d.get("paper"), aliases=aliases)

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
        if g["filename"] is not None and "/" in validate.relative_filename(
                g["filename"], f"files[{i}].filename"):
            raise validate.FieldError(f"files[{i}].filename", f"{g['filename']!r}: a URL's file "
                                      "is saved under a plain name (no '/')")
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
        self._aliases: dict[str, str] = {}          # alias -> entry name
        for e in self._entries.values():
            for a in e.aliases:
                if a in self._entries or a in self._aliases:
                    other = self._aliases.get(a, a)
                    raise ManifestError(f"{path or 'manifest'}: alias {a!r} of {e.name!r} is "
                                        f"already the name or an alias of {other!r}")
                self._aliases[a] = e.name
        self._hub: dict[str, str | None] = {}       # identifier -> entry name (None: clash)
        for n, target in [(n, n) for n in self._entries] + list(self._aliases.items()):
            h = hub_name(n)
            self._hub[h] = target if self._hub.get(h, target) == target else None

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: str) -> bool:
        return self._resolve(name) is not None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def aliases(self) -> dict[str, str]:
        """Every alias and the name of the entry it loads."""
        return dict(self._aliases)

    def hub_names(self) -> dict[str, str]:
        """torch.hub entry point -> entry name, for every name and alias (``hub_name``); an
        identifier two names share is left out."""
        return {h: n for h, n in self._hub.items() if n is not None}

    def _resolve(self, name: str) -> str | None:
        """The entry name that ``name`` (a name, an alias or its hub identifier) stands for."""
        if name in self._entries:
            return name
        return self._aliases.get(name) or self._hub.get(name)

    def get(self, name: str) -> Entry:
        """The entry called ``name``, or of which ``name`` is an alias (a RobustBench id such as
        ``Salman2020Do_R50``) or the torch.hub identifier ('-' written '_')."""
        hit = self._resolve(name)
        if hit is not None:
            return self._entries[hit]
        close = difflib.get_close_matches(name, [*self._entries, *self._aliases], n=5,
                                          cutoff=0.6)
        hint = (f" Closest names: {', '.join(close)}." if close else
                " Run `robust-zoo list` or robust_zoo.list_models() for all names.")
        src = f" in {self.path}" if self.path else ""
        raise UnknownModelError(f"No model named {name!r}{src}.{hint}")

    def filter(self, arch: str | None = None, norm: str | None = None,
               eps: float | None = None, *, family: str | None = None,
               paper: str | None = None, threat_model: str | None = None) -> list[Entry]:
        """The entries that match every criterion given: architecture, norm ("l2", "linf",
        "none"), ε, architecture family ("convnext", ...), paper key ("Singh2023Revisiting",
        case ignored) and RobustBench threat model ("Linf", "L2", "corruptions")."""
        arch = get_arch(arch).name if arch else None
        norm = _norm_arg(norm) if norm else None
        threat = _threat_arg(threat_model) if threat_model else None
        if family is not None:
            self._check_choice("family", family, {*families(), *map(entry_family, self)})
        if paper is not None:
            self._check_choice("paper", paper, {e.paper for e in self if e.paper})
        return [e for e in self if (arch is None or e.arch == arch)
                and (norm is None or e.norm == norm)
                and (eps is None or eps_close(e.eps, eps))
                and (family is None or entry_family(e).lower() == family.lower())
                and (paper is None or (e.paper or "").lower() == paper.lower())
                and (threat is None or threat in e.threat_models)]

    @staticmethod
    def _check_choice(what: str, value: str, valid: set[str]) -> None:
        """``value`` is one of ``valid`` (case ignored); ``UsageError`` naming the closest."""
        if not isinstance(value, str) or value.lower() not in {v.lower() for v in valid}:
            close = difflib.get_close_matches(str(value), sorted(valid), n=3, cutoff=0.5)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            plural = {"family": "families"}.get(what, what + "s")
            raise UsageError(f"{what}={value!r} matches no entry; {plural}: "
                             f"{', '.join(sorted(valid)) or 'none'}{hint}")

    def find(self, arch: str, norm: str, eps: float) -> Entry:
        """The entry for (arch, norm, ε): the only match, or the canonical name
        (``{arch}_{norm}_eps{ε}``) among several; several others are an
        ``AmbiguousModelError`` that lists them."""
        hits = self.filter(arch, norm, eps)
        norm = _norm_arg(norm)
        if hits:
            canonical = (model_name(get_arch(arch).name, norm, eps) if norm != "none"
                         else None)
            hit = next((e for e in hits if e.name == canonical), None)
            if hit is not None or len(hits) == 1:
                return hit or hits[0]
            raise AmbiguousModelError(
                f"{len(hits)} models are {get_arch(arch).name} {norm} eps="
                f"{eps_display(norm, eps) if norm != 'none' else 0}: "
                f"{', '.join(sorted(e.name for e in hits))}. Load one by its name.")
        same = self.filter(arch, norm)
        if not same:
            have = sorted({e.norm for e in self.filter(arch)})
            raise UnknownModelError(
                f"No {norm} models for {arch}. Norms available for it: "
                f"{', '.join(have) or 'none'}; architectures: {', '.join(list_archs())}.")
        vals = ", ".join(e.eps_display for e in sorted(same, key=lambda e: e.eps))
        raise UnknownModelError(
            f"No {arch} {norm} model with eps={eps:g}"
            f"{' (= %g/255)' % (eps * 255) if norm == 'linf' else ''}. "
            f"ε values that exist: {vals}.")

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "models": [e.to_dict() for e in self]}

    def write(self, path: str | os.PathLike) -> None:
        from ..fileio import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def entry_family(entry: Entry) -> str:
    """The entry's architecture family: its own ``family`` field, else its architecture's."""
    return entry.family or get_arch(entry.arch).family or ""


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
