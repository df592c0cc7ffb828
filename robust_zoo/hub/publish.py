"""Publishing: ``robust-zoo export`` writes a Hub-ready folder for one entry.

``model.safetensors`` (bare torchvision keys), ``config.json`` (timm's format — architecture,
num_classes, pretrained_cfg with mean/std/crop — plus a ``robust_zoo`` section with the entry),
and ``README.md``, a model card generated from the manifest. The folder loads with
``robust_zoo.load(folder)`` or, once uploaded, ``robust_zoo.load("hf-hub:org/repo")``; for the
architectures timm builds with the same keys (ResNets, WRNs, ResNeXt) also with
``timm.create_model("hf-hub:org/repo", pretrained=True)`` — which then expects normalized inputs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..models.archs import get_arch
from ..fileio import atomic_write_text, sha256_file
from .manifest import Entry
from ..naming import eps_display


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


def model_card(entry: Entry, repo_id: str | None = None) -> str:
    """A Hub model card (YAML front matter + markdown) for ``entry``."""
    a = get_arch(entry.arch)
    norm = "L2" if entry.norm == "l2" else "Linf"
    ref = f"hf-hub:{repo_id}" if repo_id else entry.name
    lines = [
        "---",
        "library_name: robust_zoo",
        f"license: {entry.license or 'other'}",
        "tags: [image-classification, adversarial-robustness, robust_zoo, timm]",
        f"datasets: [{_dataset(entry)}]",
        "pipeline_tag: image-classification",
        "---",
        f"# {entry.name}",
        "",
        entry.description or f"{norm}-robust {entry.arch} (ε = {entry.eps_display}) trained on "
        f"{_dataset(entry)}.",
        "",
        "## Model details",
        f"- Architecture: `{a.name}` (torchvision keys; {a.num_params:,} parameters with the "
        f"{entry.num_classes}-class head)",
        f"- Threat model: {norm}, ε = {entry.eps_display} on images in [0, 1]"
        + (" (standard training)" if entry.eps == 0 else ""),
        f"- Input: {entry.preprocessing.get('crop', 224)} px, resize "
        f"{entry.preprocessing.get('resize', 256)} + center crop; mean {list(entry.mean)}, "
        f"std {list(entry.std)}",
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


def timm_config(entry: Entry) -> dict[str, Any]:
    a = get_arch(entry.arch)
    p = entry.preprocessing
    crop, resize = p.get("crop", 224), p.get("resize", 256)
    cfg: dict[str, Any] = {
        "architecture": (a.timm or {}).get("architecture", a.name),
        "num_classes": entry.num_classes,
        "num_features": a.num_features,
        "pretrained_cfg": {
            "tag": entry.name, "input_size": [3, crop, crop], "interpolation":
            p.get("interpolation", "bilinear"), "crop_pct": round(crop / resize, 4),
            "crop_mode": "center", "mean": list(entry.mean), "std": list(entry.std),
            "num_classes": entry.num_classes, "classifier": a.head, "license": entry.license,
        },
    }
    if a.timm and a.timm.get("model_args"):
        cfg["model_args"] = a.timm["model_args"]
    return cfg


def export(name: str, out_dir: str | Path, *, manifest: Any = None, repo_id: str | None = None,
           progress: bool = True) -> dict[str, Any]:
    """Write the export folder; returns the manifest entry that points at the uploaded repo."""
    from .factory import get_entry, load_state_dict
    from ..formats.safetensors_file import save_weights

    entry = get_entry(name, manifest=manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd, _ = load_state_dict(entry, progress=progress)
    weights = out / "model.safetensors"
    save_weights(sd, weights, arch=entry.arch, num_classes=entry.num_classes, mean=entry.mean,
                 std=entry.std, name=entry.name)
    sha, size = sha256_file(weights), weights.stat().st_size
    rz = {k: v for k, v in entry.to_dict().items() if k != "files"}
    rz.update(sha256=sha, size=size)
    cfg = timm_config(entry)
    cfg["robust_zoo"] = rz
    atomic_write_text(out / "config.json", json.dumps(cfg, indent=2) + "\n")
    atomic_write_text(out / "README.md", model_card(entry, repo_id))
    published = entry.to_dict()
    published["files"] = [{"format": "safetensors", "repo_id": repo_id or "<org>/<repo>",
                           "filename": "model.safetensors", "revision": "<commit after upload>",
                           "sha256": sha, "size": size}] + published["files"]
    return published
