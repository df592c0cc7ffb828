"""Test zoo: random-weight checkpoints in the exact upstream layout, published on the loopback
Hub."""
from __future__ import annotations

import io

import torch

from robust_zoo import archs
from robust_zoo.convert import to_robustness
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
