"""Publishing: ``robust-zoo export`` writes a Hub-ready folder for one entry.

``model.safetensors`` (the bare network's keys), ``config.json`` (timm's format — architecture,
num_classes, pretrained_cfg with mean/std/crop — plus a ``robust_zoo`` section with the entry),
and ``README.md``, a model card generated from the manifest. ``config.json``'s ``robust_zoo``
section records what the export wrote (``written``: the sha256 of ``model.safetensors`` and
``README.md``), so a later export into the same folder knows its own files: it never replaces
its own source, refuses a folder that holds another model, and replaces a ``README.md`` or
``config.json`` it did not write only with ``force=True``. The folder loads with
``robust_zoo.load(folder)`` or, once uploaded, ``robust_zoo.load("hf-hub:org/repo")``; for the
architectures timm builds with the same keys (an ``Arch`` with ``timm`` export info: ResNets,
WRNs, ResNeXt, and timm's ConvNeXt, Swin, ViT/DeiT, XCiT) also with
``timm.create_model("hf-hub:org/repo", pretrained=True)`` or ``"local-dir:FOLDER"`` — which
then expects normalized inputs (mean/std in ``pretrained_cfg``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .. import validate
from ..errors import RobustZooError
from ..models.archs import get_arch
from ..fileio import atomic_write_text, sha256_file
from .manifest import Entry
from ..naming import eps_display

WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "README.md"
# files that hold a model: a folder with one the export did not write is another model's
MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class ExportError(RobustZooError, ValueError):
    """The export folder cannot be written without destroying something: it holds the
    weights being exported or another model, or files the export did not write."""


def _fmt_metric(m: dict) -> str:
    threat = ""
    if m.get("norm"):
        threat = f"{'L2' if m['norm'] == 'l2' else 'Linf'} ε={eps_display(m['norm'], m['eps'])}"
    n = f"{m['n_examples']:,}" if m.get("n_examples") else "?"
    return f"| {m['name']} | {m['value']:.2f} | {threat} | {n} | {m.get('source', '')} |"


def _dataset(entry: Entry) -> str:
    """The training data set, from the recipe (ImageNet for the upstream checkpoints)."""
    name = (entry.recipe or {}).get("dataset") or "imagenet"
    return "imagenet-1k" if name == "imagenet" else name


def _yaml(value: str) -> str:
    """``value`` as one YAML scalar: a double-quoted string with every quote, backslash, line
    break and control character escaped (JSON's string syntax, which YAML reads the same), so
    no value can end its line and start another key of the front matter."""
    return json.dumps(str(value))


def model_card(entry: Entry, repo_id: str | None = None) -> str:
    """A Hub model card (YAML front matter + markdown) for ``entry``."""
    a = get_arch(entry.arch)
    norm = "L2" if entry.norm == "l2" else "Linf"
    ref = f"hf-hub:{repo_id}" if repo_id else entry.name
    lines = [
        "---",
        "library_name: robust_zoo",
        f"license: {_yaml(entry.license or 'other')}",
        "tags: [image-classification, adversarial-robustness, robust_zoo, timm]",
        f"datasets: [{_yaml(_dataset(entry))}]",
        "pipeline_tag: image-classification",
        "---",
        f"# {entry.name}",
        "",
        entry.description or f"{norm}-robust {entry.arch} (ε = {entry.eps_display}) trained on "
        f"{_dataset(entry)}.",
        "",
        "## Model details",
        f"- Architecture: `{a.name}` ({_keys(a)} keys; {a.num_params:,} parameters with the "
        f"1000-class head)",
        f"- Threat model: {norm}, ε = {entry.eps_display} on images in [0, 1]"
        + (" (standard training)" if entry.eps == 0 else ""),
        f"- Input: {_input_line(entry)}; mean {list(entry.mean)}, std {list(entry.std)}",
        "",
        "## Usage",
        "```python",
        "import robust_zoo",
        f'model = robust_zoo.load("{ref}")          # takes [0, 1] images, normalizes inside',
        "preprocess = model.entry.transforms()",
        "```",
    ]
    if a.timm:
        lines += ["With timm (expects normalized inputs, as every timm model):", "```python",
                  "import timm",
                  f'model = timm.create_model("hf-hub:{repo_id or "<org>/<repo>"}", '
                  'pretrained=True)',
                  "```"]
    if entry.metrics:
        lines += ["", "## Metrics", "| metric | top-1 % | threat | n | source |",
                  "| --- | --- | --- | --- | --- |"] + [_fmt_metric(m) for m in entry.metrics]
    if entry.recipe:
        r = entry.recipe
        shown = {k: v for k, v in r.items() if k not in ("unknown", "unconfirmed", "source")}
        lines += ["", "## Training recipe", "```json", json.dumps(shown, indent=1), "```"]
        if r.get("unknown"):
            lines.append(f"Not documented upstream: {', '.join(r['unknown'])}.")
        if r.get("unconfirmed"):
            lines.append(f"From secondary sources, unconfirmed: {', '.join(r['unconfirmed'])}.")
        if r.get("source"):
            lines.append(f"Source: {r['source']}.")
    if entry.extra.get("upstream"):
        up = entry.extra["upstream"]
        lines += ["", "## Provenance", f"Converted from `{up.get('filename')}` in "
                  f"`{up.get('repo_id')}` (robustness-library checkpoint), verified by sha256 "
                  "and loaded without unpickling code."]
    if entry.citation:
        lines += ["", "## Citation", "```bibtex", entry.citation.strip(), "```"]
    return "\n".join(lines) + "\n"


def _keys(a) -> str:
    """Whose state-dict keys the weights carry."""
    if a.timm:
        return f"timm `{a.timm['architecture']}`"
    return "torchvision" if a.family in ("resnet", "alexnet", "densenet", "mnasnet",
                                         "mobilenet", "shufflenet", "vgg") else "RobustBench"


def _input_line(entry: Entry) -> str:
    size, resize = entry.input_size, entry.preprocessing.get("resize", 256)   # as transforms()
    if isinstance(resize, (list, tuple)):
        return f"{size} px, resized to {resize[0]}×{resize[1]}"
    if resize:
        return f"{size} px, resize {resize} + center crop"
    return f"{size} px center crop"


def timm_config(entry: Entry) -> dict[str, Any]:
    """timm's ``config.json`` fields: timm builds the architecture from ``architecture`` and
    ``model_args`` and reads ``model.safetensors`` (``timm.create_model("hf-hub:org/repo")`` or
    ``"local-dir:FOLDER"``, ``pretrained=True``). timm models take normalized inputs: mean/std
    are in ``pretrained_cfg`` (timm's data config applies them), where ``robust_zoo.load``
    normalizes inside the model; ``normalization`` says so."""
    a = get_arch(entry.arch)
    p = entry.preprocessing
    crop, crop_pct = entry.input_size, entry.crop_pct
    cfg: dict[str, Any] = {
        "architecture": (a.timm or {}).get("architecture", a.name),
        "num_classes": entry.num_classes,
        "num_features": a.num_features,
        "pretrained_cfg": {
            "tag": entry.name, "input_size": [3, crop, crop], "interpolation":
            p.get("interpolation", "bilinear"), "crop_pct": crop_pct,
            "crop_mode": "center", "mean": list(entry.mean), "std": list(entry.std),
            "num_classes": entry.num_classes, "classifier": a.head, "license": entry.license,
        },
    }
    if a.timm and a.timm.get("model_args"):
        cfg["model_args"] = a.timm["model_args"]
    cfg["normalization"] = (
        "timm: inputs normalized with pretrained_cfg mean/std (timm.data.resolve_data_config "
        "+ create_transform); robust_zoo.load: images in [0, 1], normalized inside the model")
    return cfg


def _written(out: Path) -> dict[str, str]:
    """{file name: sha256} of the files a previous export wrote into ``out`` (its
    ``config.json`` marker); empty when ``out`` holds no export's config.json."""
    try:
        cfg = validate.load_json((out / CONFIG).read_bytes(), str(out / CONFIG))
        written = cfg["robust_zoo"]["written"]
    except (OSError, validate.JSONError, KeyError, TypeError):
        return {}
    if not isinstance(written, dict):
        return {}
    return {k: v for k, v in written.items() if k in (WEIGHTS, CARD) and validate.is_sha256(v)}


def _sources(entry: Entry) -> list[Path]:
    """The local files ``entry`` reads its weights from (its ``path`` sources)."""
    out = []
    for spec in entry.files:
        if spec.path:
            p = Path(spec.path).expanduser()
            out.append(p if p.is_absolute() or entry.base_dir is None else entry.base_dir / p)
    return [p for p in out if p.exists()]


def check_target(entry: Entry, out: Path, force: bool = False) -> None:
    """Refuse an export into ``out`` that would overwrite what it did not write: its own
    source (never), another model (never), a README.md or config.json of the user's (unless
    ``force``)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; an export writes a folder")
    if not out.is_dir():
        return
    for src in _sources(entry):
        if src.parent.resolve() == out.resolve() or any(
                f.exists() and f.samefile(src) for f in out.iterdir()):
            raise ExportError(f"{out} holds {src.name}, the weights {entry.name} is exported "
                              "from; export into another folder")
    ours = _written(out)
    for f in sorted(out.iterdir()):
        model = f.name == "weights_manifest.json" or f.suffix in MODEL_SUFFIXES
        if model and f.is_file() and not (f.name in ours and sha256_file(f) == ours[f.name]):
            raise ExportError(f"{out} holds another model ({f.name}), which robust-zoo export "
                              "did not write; export into an empty folder or one it wrote")
    theirs = [n for n in (CONFIG, CARD) if (out / n).exists() and not (
        ours and (n == CONFIG or sha256_file(out / n) == ours.get(n)))]
    if theirs and not force:
        raise ExportError(f"{out} holds {' and '.join(theirs)}, which robust-zoo export did not "
                          "write (or that were edited since); pass --force (force=True) to "
                          "replace them")


def export(name: str, out_dir: str | Path, *, manifest: Any = None, repo_id: str | None = None,
           progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Write the export folder; returns the manifest entry that points at the uploaded repo.
    ``check_target`` says which folders it refuses."""
    from .factory import get_entry, load_state_dict
    from ..formats.safetensors_file import save_weights

    entry = get_entry(name, manifest=manifest)
    out = Path(out_dir)
    check_target(entry, out, force)
    sd, _ = load_state_dict(entry, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS
    save_weights(sd, weights, arch=entry.arch, num_classes=entry.num_classes, mean=entry.mean,
                 std=entry.std, name=entry.name)
    sha, size = sha256_file(weights), weights.stat().st_size
    card = model_card(entry, repo_id)
    rz = {k: v for k, v in entry.to_dict().items() if k != "files"}
    rz.update(sha256=sha, size=size, written={
        WEIGHTS: sha, CARD: hashlib.sha256(card.encode()).hexdigest()})
    cfg = timm_config(entry)
    cfg["robust_zoo"] = rz
    atomic_write_text(out / CARD, card)
    atomic_write_text(out / CONFIG, json.dumps(cfg, indent=2) + "\n")
    published = entry.to_dict()
    published["files"] = [{"format": "safetensors", "repo_id": repo_id or "<org>/<repo>",
                           "filename": "model.safetensors", "revision": "<commit after upload>",
                           "sha256": sha, "size": size}] + published["files"]
    return published
