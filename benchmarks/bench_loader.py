"""Training-loader throughput: ``robust_zoo.data.jpeg`` (torchvision.io decode + uint8 tensor
augmentation) vs torchvision ``ImageFolder`` + PIL with the recipe's transforms.

    python benchmarks/bench_loader.py [--files 300] [--workers 0 2] [--size 224] [--batch 64]
                                      [--epochs 2] [--device cpu|cuda] [--breakdown]

Generates ``--files`` JPEGs at an ImageNet-like size (500×375, quality 90, ~110 KB each: smooth
colour fields plus grain, about the entropy of a photo) in a temporary folder of 10 classes,
then times full passes of a shuffled DataLoader for each loader and worker count, interleaved
(anchor, ours, anchor, ours ...) so drifting load hits both. Every case applies the recipe's
``robustness-imagenet`` augmentation (RandomResizedCrop(size), flip, ColorJitter(0.1, 0.1, 0.1),
Lighting(0.05)) and yields float batches in [0, 1]:

* torchvision ImageFolder + PIL (the anchor; ``--decoder pil``);
* ``JpegFolder`` + ``TrainAugment`` per image;
* ``JpegFolder`` + ``TrainCrops`` + ``FinishBatch``: uint8 crops per image, colour work per
  batch in the collate_fn (``--decoder tensor`` on CPU);
* uint8 crops + ``CropBatch``, the colour work on the device (``--decoder tensor`` on CUDA; on
  a CPU run the loader alone: the host's share of that path, uint8 batches);
* with ``--device cuda``, the batched nvJPEG path (``EncodedSample`` + ``JpegBatchDecoder``,
  ``--decoder nvjpeg``), timed to the GPU batch.

With 0 workers the table also gives this process's CPU time per image (all of the loader's work,
less sensitive to other jobs than images/s). ``--breakdown`` adds the CPU time of each stage.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # this checkout's robust_zoo


def make_jpegs(root: Path, n: int, size: tuple[int, int] = (375, 500), classes: int = 10,
               quality: int = 90, seed: int = 0) -> int:
    """``n`` JPEGs (height, width = ``size``) under root/<class>/; returns total bytes."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    h, w = size
    total = 0
    for i in range(n):
        d = root / f"c{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        low = F.interpolate(torch.rand(1, 3, max(2, h // 16), max(2, w // 16), generator=g),
                            size=(h, w), mode="bicubic", align_corners=False)
        x = (low + 0.08 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)
        arr = (x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        (d / f"{i:05d}.jpg").write_bytes(buf.getvalue())
        total += len(buf.getvalue())
    return total


def pil_loader(root: Path, size: int, batch: int, workers: int, pin: bool = False):
    from torchvision.datasets import ImageFolder

    from robust_zoo.data import train_transforms

    ds = ImageFolder(str(root), transform=train_transforms("robustness-imagenet", size))
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                       pin_memory=pin, persistent_workers=workers > 0)


def jpeg_loader(root: Path, size: int, batch: int, workers: int, pin: bool = False,
                batched: bool = True):
    """``batched``: the training path (``--decoder tensor``): uint8 crops in the workers, the
    colour work vectorised per batch in the collate_fn; else ``TrainAugment`` per image."""
    from robust_zoo.data.jpeg import FinishBatch, JpegFolder, TrainAugment, TrainCrops

    aug = TrainAugment(size)
    ds = JpegFolder(root, transform=TrainCrops(aug) if batched else aug)
    return torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                       pin_memory=pin, persistent_workers=workers > 0,
                                       collate_fn=FinishBatch(aug) if batched else None)


def crop_loader(root: Path, size: int, batch: int, workers: int, device: str):
    """(loader of uint8 crops + colour parameters, the colour work on ``device``): what
    ``--decoder tensor`` runs on CUDA. On a CPU run ``post`` is None and the loader alone is
    timed: the host's share of that path, per core."""
    from robust_zoo.data.jpeg import CropBatch, DeviceFinish, JpegFolder, TrainAugment, TrainCrops

    aug = TrainAugment(size)
    loader = torch.utils.data.DataLoader(
        JpegFolder(root, transform=TrainCrops(aug)), batch_size=batch, shuffle=True,
        num_workers=workers, collate_fn=CropBatch(), pin_memory=device.startswith("cuda"),
        persistent_workers=workers > 0)
    return loader, DeviceFinish(aug, device) if device.startswith("cuda") else None


def device_decode_loader(root: Path, size: int, batch: int, workers: int, device: str):
    """(loader of encoded bytes + their augmentation draws, per-batch GPU decoder + augmenter)."""
    from robust_zoo.data.jpeg import (EncodedSample, JpegBatchDecoder, JpegFolder, TrainAugment,
                                      collate_encoded)

    aug = TrainAugment(size)
    ds = JpegFolder(root, transform=EncodedSample(aug), decode="device")
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                                         collate_fn=collate_encoded,
                                         persistent_workers=workers > 0)
    return loader, JpegBatchDecoder(aug, device)


def time_epoch(loader, post=None, device: str | None = None) -> tuple[float, int, float]:
    """Seconds for one pass, the number of images (to the device when given) and the CPU
    seconds of this process (all of the loader's work when it has no workers)."""
    n = 0
    c = time.process_time()
    t = time.perf_counter()
    for batch in loader:
        x = (post(batch) if post else batch)[0]
        if device:
            x = x.to(device, non_blocking=True)
        n += len(x)
    if device and device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t, n, time.process_time() - c


def run(root: Path, *, size: int, batch: int, workers_list, epochs: int, device: str = "cpu",
        log=print) -> list[dict]:
    rows = []
    for workers in workers_list:
        cases = {"torchvision ImageFolder + PIL": pil_loader(root, size, batch, workers),
                 "robust_zoo.data.jpeg, per-image TrainAugment":
                     jpeg_loader(root, size, batch, workers, batched=False),
                 "robust_zoo.data.jpeg, uint8 crops + batched colour (--decoder tensor)":
                     jpeg_loader(root, size, batch, workers)}
        posts: dict = {}
        loader, post = crop_loader(root, size, batch, workers, device)
        name = ("robust_zoo.data.jpeg, uint8 crops, colour on the GPU (--decoder tensor on CUDA)"
                if post else "robust_zoo.data.jpeg, uint8 crops only (the host's share of "
                "--decoder tensor on CUDA)")
        cases[name], posts[name] = loader, post
        if device.startswith("cuda"):
            loader, post = device_decode_loader(root, size, batch, workers, device)
            cases["robust_zoo.data.jpeg, nvJPEG batch decode (--decoder nvjpeg)"] = loader
            posts["robust_zoo.data.jpeg, nvJPEG batch decode (--decoder nvjpeg)"] = post
        for name, loader in cases.items():          # warm-up: worker start, page cache
            time_epoch(loader, posts.get(name))
        times: dict[str, list[float]] = {k: [] for k in cases}
        cpu: dict[str, list[float]] = {k: [] for k in cases}
        count = {}
        for _ in range(epochs):
            for name, loader in cases.items():
                s, count[name], c = time_epoch(loader, posts.get(name),
                                               device if device.startswith("cuda") else None)
                times[name].append(s)
                cpu[name].append(c)
        anchor = cpu_anchor = None
        for name in cases:
            ips = count[name] / statistics.median(times[name])
            anchor = anchor or ips
            row = {"workers": workers, "loader": name, "images_per_s": ips, "ratio": ips / anchor}
            cpu_txt = ""
            if workers == 0:     # all the work is this process's: its CPU time per image
                ms = statistics.median(cpu[name]) / count[name] * 1e3
                cpu_anchor = cpu_anchor or ms
                row.update(cpu_ms_per_image=ms, cpu_ratio=cpu_anchor / ms)
                cpu_txt = f" {ms:.2f} ms ({cpu_anchor / ms:.2f}×) |"
            rows.append(row)
            log(f"| {workers} | {name} | {ips:.0f} | {ips / anchor:.2f}× |" + (cpu_txt or " |"))
    return rows


def breakdown(root: Path, size: int, batch: int, n: int = 128, log=print) -> dict[str, float]:
    """Process CPU ms per image of each stage of both paths, one thread, ``n`` images in
    batches of ``batch`` (the batch tensors freshly allocated, as a loader makes them)."""
    from torchvision.datasets.folder import make_dataset

    from robust_zoo.data import load_rgb, train_transforms
    from robust_zoo.data.jpeg import TrainAugment, _quiet, decode

    files = [f for f, _ in make_dataset(str(root), {d.name: i for i, d in enumerate(
        sorted(p for p in root.iterdir() if p.is_dir()))}, (".jpg",))][:n]
    n = len(files)
    out: dict[str, float] = {}

    def clock(name, fn):
        c = time.process_time()
        res = fn()
        out[name] = (time.process_time() - c) / n * 1e3
        return res

    from torchvision.io import read_file

    torch.manual_seed(0)
    pil_imgs = clock("PIL: open + decode + convert RGB", lambda: [load_rgb(f) for f in files])
    tf = train_transforms("robustness-imagenet", size)
    pil_x = clock("PIL: RandomResizedCrop, flip, ColorJitter, ToTensor, Lighting",
                  lambda: [tf(im) for im in pil_imgs])
    clock("PIL: default_collate (torch.stack into a fresh batch)",
          lambda: [torch.stack(pil_x[i:i + batch]) for i in range(0, n, batch)])
    with _quiet():
        imgs = clock("tensor: read_file + decode_jpeg", lambda: [decode(read_file(f))
                                                                 for f in files])
    aug = TrainAugment(size)
    params = clock("tensor: TrainAugment.sample (the draws)",
                   lambda: [aug.sample(*im.shape[-2:]) for im in imgs])
    crops = clock("tensor: uint8 resized crop + flip", lambda: [aug.crop(im, p)
                                                                for im, p in zip(imgs, params)])
    rows = clock("tensor: parameter rows", lambda: [torch.tensor([aug.row(p) for p in
                                                                  params[i:i + batch]])
                                                    for i in range(0, n, batch)])
    clock("tensor: batched float + ColorJitter + Lighting (fresh batch tensor)",
          lambda: [aug.finish(crops[i:i + batch], rows[i // batch]) for i in range(0, n, batch)])
    outb = torch.empty((min(batch, n), 3, size, size))
    aug.finish(crops[:batch], rows[0], out=outb)
    clock("tensor: the same into a reused batch tensor (page faults excluded)",
          lambda: [aug.finish(crops[i:i + batch], rows[i // batch], out=outb[:len(rows[i // batch])])
                   for i in range(0, n, batch)])
    log("\n| stage (1 thread, process CPU time) | ms / image |\n| --- | --- |")
    for k, v in out.items():
        log(f"| {k} | {v:.2f} |")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2, help="timed passes per case (median)")
    p.add_argument("--device", default="cpu", help="cuda adds the nvJPEG batch-decode path")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--breakdown", action="store_true",
                   help="also the CPU time per image of each stage of both paths")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        root = Path(tmp)
        nbytes = make_jpegs(root, args.files)
        print(f"# {args.files} JPEGs 500x375 q90 ({nbytes / args.files / 1e3:.0f} KB avg), "
              f"crop {args.size}, batch {args.batch}, torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
              f"load avg {os.getloadavg()[0]:.2f}")
        print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}\n")
        print("| workers | loader | images/s | vs PIL | CPU per image (vs PIL) |\n"
              "| --- | --- | --- | --- | --- |")
        run(root, size=args.size, batch=args.batch, workers_list=args.workers,
            epochs=args.epochs, device=args.device)
        if args.breakdown:
            breakdown(root, args.size, args.batch)
        print(f"\nload avg at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
