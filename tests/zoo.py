"""Test helpers, in one place: random-weight networks (BN statistics randomised too),
checkpoints in the exact upstream layout published on the loopback Hub, safetensors manifest
entries, and PNG class-folder trees."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from robust_zoo.models import archs
from robust_zoo.formats.upstream import to_robustness
from robust_zoo.naming import model_name, upstream_filename

REPO = "madrylab/robust-imagenet-models"
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def random_net(arch: str, seed: int = 0, num_classes: int = 1000) -> torch.nn.Module:
    """A network whose BN statistics are random too, so a load that skips buffers shows."""
    torch.manual_seed(seed)
    net = archs.build(arch, num_classes).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


def ckpt_bytes(net: torch.nn.Module, arch: str, **kw) -> bytes:
    buf = io.BytesIO()
    torch.save(to_robustness(net.state_dict(), arch, **kw), buf)
    return buf.getvalue()


def publish_upstream(server, arch: str, norm: str = "l2", eps: float = 3.0, seed: int = 0,
                     pin: bool = True) -> tuple[dict, torch.nn.Module]:
    """Serve an upstream .ckpt for (arch, norm, eps); return its manifest entry and the net."""
    net = random_net(arch, seed)
    data = ckpt_bytes(net, arch)
    fname = upstream_filename(archs.get_arch(arch).upstream_name, norm, eps)
    sha = server.add_file(REPO, fname, data)
    entry = {"name": model_name(arch, norm, eps), "arch": arch, "norm": norm, "eps": eps,
             "files": [{"format": "robustness-ckpt", "repo_id": REPO, "filename": fname,
                        "revision": "main", "sha256": sha if pin else None, "size": len(data)}],
             "metrics": [{"name": "clean_top1", "value": 50.0}]}
    return entry, net


def manifest(*entries: dict) -> dict:
    return {"schema_version": 1, "models": list(entries)}


def reference_logits(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net((x - MEAN) / STD)


def safetensors_entry(folder: Path, name: str, net: torch.nn.Module, arch: str, *,
                      norm: str = "l2", eps: float = 3.0, num_classes: int = 1000,
                      **fields) -> dict:
    """Save ``net`` as ``folder/<name>.safetensors`` and return its manifest entry (the file
    pinned by sha256 and size, its path relative to the manifest's folder)."""
    from robust_zoo.fileio import sha256_file
    from robust_zoo.formats.safetensors_file import save_weights

    path = save_weights(net.state_dict(), Path(folder) / f"{name}.safetensors", arch=arch,
                        num_classes=num_classes)
    return {"name": name, "arch": arch, "norm": norm, "eps": eps, "num_classes": num_classes,
            "files": [{"format": "safetensors", "path": path.name,
                       "sha256": sha256_file(path), "size": path.stat().st_size}],
            "metrics": [], "preprocessing": {}, **fields}


def write_manifest(path: Path, *entries: dict) -> Path:
    Path(path).write_text(json.dumps(manifest(*entries)))
    return Path(path)


def image_tree(root: Path, per_split: dict[str, int], colors: Sequence[Sequence[float]],
               size: int = 20, noise: float = 60.0, seed: int = 0) -> Path:
    """PNG class folders ``root/<split>/class<c>/<i>.png``: noisy images whose mean colour is
    the class's (``colors[c]``), so a model can learn them."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_split.items():
        for c, col in enumerate(colors):
            d = Path(root) / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.clip(rng.normal(col, noise, size=(size, size, 3)), 0, 255)
                Image.fromarray(a.astype(np.uint8)).save(d / f"{i}.png")
    return Path(root)


def make_image_folder(root: Path, classes: int = 2, per_class=(28, 6), size: int = 20) -> Path:
    """train/ and val/ trees of ``classes`` classes, each a dominant primary colour."""
    colors = [tuple(140.0 if k == c % 3 else 0.0 for k in range(3)) for c in range(classes)]
    return image_tree(root, dict(zip(("train", "val"), per_class)), colors, size, noise=60.0)
