"""Fixed-feature transfer: cached-feature path vs the paper code's path (head behind the frozen
network, every epoch), same data, same epochs, same recipe. Run by hand:

    .venv/bin/python benchmarks/bench_transfer.py                     # ResNet-18, 112 px, 10 epochs
    .venv/bin/python benchmarks/bench_transfer.py --image-size 224 --epochs 20

The data set is generated (coloured-noise classes, PNG files in an ImageFolder tree) and the
network has random weights, so nothing is downloaded; the timings are what matters. Runs:

* ``network+aug``  protocol ``paper``, the paper code's path: RandomResizedCrop+flip, full
                   forward every epoch;
* ``network``      protocol ``centre-crop-sgd`` behind the network (no augmentation: the
                   computation the centre-crop cache reproduces);
* ``cached cold``  protocol ``centre-crop-sgd`` on cached features: extract train centre crops
                   + test once, train the head on them;
* ``cached warm``  the same with the features already on disk (another lr / seed / sweep point);
* ``kview cold`` / ``kview warm``  protocol ``paper-kview-approx``: K = 16
                   augmented views per training image extracted once (``--views``).

Ratios are against ``network+aug`` of the same invocation.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robust_zoo.models.archs import build
from robust_zoo.models import RobustModel
from robust_zoo.transfer.hparams import TransferConfig
from robust_zoo.transfer.runner import run_transfer


def make_data(root: Path, classes: int, per_train: int, per_test: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", per_train), ("val", per_test)):
        for c in range(classes):
            col = rng.integers(40, 215, size=3)
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                a = np.clip(rng.normal(col, 60, size=(size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.png")
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-train", type=int, default=30)
    p.add_argument("--per-test", type=int, default=10)
    p.add_argument("--source-size", type=int, default=144, help="side of the generated PNGs")
    p.add_argument("--views", type=int, default=16, help="K of the kview runs")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", help="also write the numbers here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_transfer_"))
    try:
        data = make_data(tmp / "data", a.classes, a.per_train, a.per_test, a.source_size)
        torch.manual_seed(0)
        model = RobustModel(build(a.arch), a.arch, name=a.arch)
        common = dict(data_root=data, progress=False, log=lambda *x: None, workers=a.workers,
                      model_name=a.arch)
        base = dict(epochs=a.epochs, image_size=a.image_size, lr=0.01)
        cc = dict(protocol="centre-crop-sgd", **base)
        kv = dict(protocol="paper-kview-approx", views=a.views, **base)
        runs = [("network+aug", TransferConfig(protocol="paper", **base), None),
                ("network", TransferConfig(path="network", **cc), None),
                ("cached cold", TransferConfig(**cc), tmp / "cache"),
                ("cached warm", TransferConfig(**cc), tmp / "cache"),
                ("kview cold", TransferConfig(**kv), tmp / "cache"),
                ("kview warm", TransferConfig(**kv), tmp / "cache")]
        # warm-up: first-call costs (oneDNN kernels, imports) must not land on one path only
        run_transfer(model, "imagefolder", out_dir=tmp / "warmup", cache_dir=None,
                     config=TransferConfig(epochs=1, image_size=a.image_size, views=2), **common)
        results = {}
        for name, cfg, cache in runs:
            t0 = time.perf_counter()
            r = run_transfer(model, "imagefolder", out_dir=tmp / name.replace(" ", "_"),
                             cache_dir=cache, config=cfg, **common)
            results[name] = {"wall_s": time.perf_counter() - t0, "accuracy": r["accuracy"],
                             "extract_s": r.get("extract_s", 0.0), "train_s": r["train_s"]}
        ref = results["network+aug"]["wall_s"]
        n_train = a.classes * a.per_train
        print(f"# {a.arch}, {a.image_size}px, {n_train} train / {a.classes * a.per_test} test "
              f"images, {a.epochs} epochs, batch 64, workers {a.workers}, "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{platform.processor() or platform.machine()}")
        print(f"{'path':<12} {'wall s':>8} {'extract s':>10} {'train s':>8} {'acc %':>7} "
              f"{'speed-up':>9}")
        for name, v in results.items():
            print(f"{name:<12} {v['wall_s']:8.2f} {v['extract_s']:10.2f} {v['train_s']:8.2f} "
                  f"{v['accuracy']:7.2f} {ref / v['wall_s']:8.1f}x")
        if a.json:
            Path(a.json).write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
