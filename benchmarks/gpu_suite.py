"""Every speed and memory measurement that matters on a GPU, in one run, as one markdown table.

    bash benchmarks/gpu_suite.sh                      # CUDA, full sizes (≤ 8 min, one H100)
    bash benchmarks/gpu_suite.sh --device cpu --quick # the same code paths, tiny sizes (~1-2 min)

Sections (each ratio is against an anchor measured in the same run):

* **train**: img/s of a PGD-3 training step (``engine.Trainer.train_step``, the step every run
  takes: PGD Linf 4/255, keep-best, BN in eval during the attack, then forward/backward/SGD)
  for ResNet-18/50, per precision (fp32, bf16 autocast) × memory layout (contiguous,
  channels_last), eager, and compiled (``engine.precision.compile_model``, what ``--compile``
  does: the attack's input-only forward/backward and the update both run compiled) for bf16 +
  channels_last. Anchor: fp32 contiguous eager of the same arch.
* **eval**: img/s of PGD-10 evaluation (ResNet-50; attack + final prediction) vs torchattacks'
  ``PGD`` on the same card, same images, same ε/α, with the robust accuracy of each.
* **loader**: img/s of the training loader on generated 500×375 JPEGs: torchvision
  ImageFolder + PIL vs ``robust_zoo.data.jpeg`` (CPU decode; on CUDA also batched nvJPEG decode).
* **features**: img/s of penultimate-feature extraction (fixed-feature transfer), fp32 vs bf16.
* **memory**: peak memory of the PGD-10 attack per batch size (CUDA: max_memory_allocated;
  CPU: peak RSS growth) and PGD-2 vs PGD-20 at one batch size (equal when no graph is kept).
* **toggles** (CUDA): cudnn.benchmark, TF32 matmul/conv, pin_memory + non_blocking copies,
  each on vs off.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robust_zoo.models.archs import build  # noqa: E402
from robust_zoo.attacks import default_step_size, pgd  # noqa: E402
from robust_zoo.engine.loop import Trainer  # noqa: E402
from robust_zoo.engine.precision import autocast, compile_model  # noqa: E402
from robust_zoo.models import RobustModel  # noqa: E402
from robust_zoo.recipe import AttackSettings  # noqa: E402

EPS = 4 / 255          # training attack (the paper's Linf 4/255)
# evaluation attack: random weights flip every prediction at 4/255, which would hide any
# difference between two attacks; at 0.25/255 part of the predictions survive
EVAL_EPS = 0.25 / 255


class Suite:
    def __init__(self, device: torch.device, quick: bool, budget_s: float):
        self.device, self.quick, self.t0, self.budget = device, quick, time.perf_counter(), budget_s
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.cuda = device.type == "cuda"

    def row(self, section: str, config: str, metric: str, value: str, ratio: str = "") -> None:
        self.rows.append((section, config, metric, value, ratio))
        print(f"| {section} | {config} | {metric} | {value} | {ratio} |", flush=True)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.t0 > self.budget

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def timed(self, fn: Callable[[], object], warmup: int, reps: int) -> float:
        """Median seconds per call after ``warmup`` calls."""
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times)


def model_for(arch: str, device, layout: str, num_classes: int = 1000):
    torch.manual_seed(0)
    m = RobustModel(build(arch, num_classes=num_classes), arch).to(device)
    if layout == "channels_last":
        m = m.to(memory_format=torch.channels_last)
    return m


def pgd3_trainer(model, device, precision: str, layout: str, compiled: bool):
    """The training step every run takes (``engine.Trainer``): PGD-3 Linf 4/255 (keep-best, BN
    in eval, input-only gradients), then forward, backward, SGD step; ``compiled`` through
    ``engine.precision.compile_model`` (what ``--compile`` does)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    attack = AttackSettings(norm="linf", eps=EPS, attack_steps=3, keep_best=True)
    net = compile_model(model, device) if compiled else model
    return Trainer(model, opt, device=device, attack=attack, precision=precision,
                   channels_last=layout == "channels_last", train_model=net)


def batch(device, n: int, size: int, layout: str = "contiguous", classes: int = 1000):
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=size, mode="bilinear")
    y = torch.randint(0, classes, (n,), generator=g)
    x = x.to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device)


# ----------------------------------------------------------------------------- sections

def section_train(s: Suite, args) -> None:
    archs = ["resnet18"] if s.quick else ["resnet18", "resnet50"]
    size, bs = (32, 4) if s.quick else (224, args.train_batch)
    warm, reps = (0, 2) if s.quick else (3, 8)
    configs = [(p, l, False) for p in ("fp32", "bf16") for l in ("contiguous", "channels_last")]
    if s.quick:     # bf16 on a CPU is slow and not what the suite is for: one row checks it
        configs = [c for c in configs if c[0] == "fp32" or c[1] == "channels_last"]
    if args.compile:
        configs.append(("bf16", "channels_last", True))
    for arch in archs:
        anchor = None
        for precision, layout, compiled in configs:
            if s.over_budget():
                s.row("train", f"{arch} {precision} {layout}", "img/s", "skipped (time budget)")
                continue
            model = model_for(arch, s.device, layout).train()
            x, y = batch(s.device, bs, size, layout)
            t_c = time.perf_counter()
            try:
                trainer = pgd3_trainer(model, s.device, precision, layout, compiled)
                trainer.train_step(x, y)                           # first call: compile
            except Exception as e:  # noqa: BLE001 - report, keep measuring the rest
                s.row("train", f"{arch} {precision} {layout}{' compile' if compiled else ''}",
                      "img/s", f"failed: {type(e).__name__}: {str(e)[:80]}")
                continue
            first = time.perf_counter() - t_c
            sec = s.timed(lambda: trainer.train_step(x, y), warm, reps)
            ips = bs / sec
            anchor = anchor or ips
            s.row("train", f"{arch} PGD-3 {precision} {layout}"
                  + (f" compile (first step {first:.0f} s)" if compiled else ""),
                  f"img/s (batch {bs}, {size} px)", f"{ips:.1f}", f"{ips / anchor:.2f}×")
            model = trainer = None     # free before the next config
            gc.collect()


def section_eval(s: Suite, args) -> None:
    import torchattacks

    arch = "resnet18" if s.quick else "resnet50"
    size, bs = (32, 8) if s.quick else (224, args.eval_batch)
    warm, reps = (0, 2) if s.quick else (2, 5)
    steps, alpha = 10, default_step_size(EVAL_EPS, 10)
    model = model_for(arch, s.device, "contiguous").eval()
    x, _ = batch(s.device, bs, size)
    with torch.no_grad():
        y = model(x).argmax(1)      # random weights: the model's own labels (clean acc 100%)

    def acc(xa, m=model):
        with torch.no_grad():
            return 100.0 * (m(xa).argmax(1) == y).float().mean().item()

    ta = torchattacks.PGD(model, eps=EVAL_EPS, alpha=alpha, steps=steps, random_start=False)
    out: dict[str, torch.Tensor] = {}

    def run_ta():
        out["ta"] = ta(x, y)
        return acc(out["ta"])

    t_ta = s.timed(run_ta, warm, reps)
    s.row("eval", f"{arch} PGD-10 torchattacks fp32 (Linf 0.25/255)", f"img/s (batch {bs})",
          f"{bs / t_ta:.1f}",
          f"1.00× (robust acc {run_ta():.1f}%)")
    variants = [("fp32", "contiguous", False), ("bf16", "channels_last", False)]
    if args.compile:
        variants.append(("bf16", "channels_last", True))
    for precision, layout, compiled in variants:
        if s.over_budget():
            s.row("eval", f"{arch} PGD-10 robust_zoo {precision}", "img/s", "skipped (budget)")
            continue
        m = model.to(memory_format=torch.channels_last) if layout == "channels_last" else model
        net = compile_model(m, s.device) if compiled else m
        xl = x.contiguous(memory_format=torch.channels_last) if layout == "channels_last" else x

        def run_ours():
            with autocast(s.device, precision):
                xa = pgd(net, xl, y, norm="linf", eps=EVAL_EPS, steps=steps, step_size=alpha,
                         keep_best=False)
                with torch.no_grad():
                    return 100.0 * (net(xa).argmax(1) == y).float().mean().item()

        try:
            run_ours()
        except Exception as e:  # noqa: BLE001
            s.row("eval", f"{arch} PGD-10 robust_zoo {precision} {layout}", "img/s",
                  f"failed: {type(e).__name__}: {str(e)[:80]}")
            continue
        t = s.timed(run_ours, warm, reps)
        s.row("eval", f"{arch} PGD-10 robust_zoo {precision} {layout}"
              + (" compile" if compiled else ""), f"img/s (batch {bs})", f"{bs / t:.1f}",
              f"{t_ta / t:.2f}× (robust acc {run_ours():.1f}%)")
    model.to(memory_format=torch.contiguous_format)


def section_loader(s: Suite, args) -> None:
    import bench_loader

    files, size = (64, 64) if s.quick else (args.loader_files, 224)
    workers = [0] if s.quick else sorted({0, min(8, os.cpu_count() or 1)})
    with tempfile.TemporaryDirectory(prefix="gpu_suite_jpeg_") as tmp:
        bench_loader.make_jpegs(Path(tmp), files)
        rows = bench_loader.run(Path(tmp), size=size, batch=32 if s.quick else 128,
                                workers_list=workers, epochs=1 if s.quick else 2,
                                device=str(s.device), log=lambda *_: None)
    for r in rows:
        s.row("loader", f"{r['loader']}, {r['workers']} workers", f"img/s ({files} JPEGs "
              f"500×375 → {size})", f"{r['images_per_s']:.0f}", f"{r['ratio']:.2f}×")


def section_features(s: Suite, args) -> None:
    arch = "resnet18" if s.quick else "resnet50"
    size, bs = (32, 32) if s.quick else (224, 256)
    anchor = None
    for precision, layout in (("fp32", "contiguous"), ("bf16", "channels_last")):
        model = model_for(arch, s.device, layout).eval()
        model.model.fc = torch.nn.Identity()     # penultimate features (transfer's input)
        x, _ = batch(s.device, bs, size, layout)

        def extract():
            with torch.inference_mode(), autocast(s.device, precision):
                return model(x)

        t = s.timed(extract, 1 if s.quick else 3, 3 if s.quick else 10)
        ips = bs / t
        anchor = anchor or ips
        s.row("features", f"{arch} {precision} {layout}", f"img/s (batch {bs})", f"{ips:.0f}",
              f"{ips / anchor:.2f}×")


class _RssPeak:
    """Peak resident set size while the block runs, sampled every millisecond from
    /proc/self/statm (torch's CPU allocator returns large blocks to the OS on free, so the
    current RSS follows the live tensors; tracemalloc does not see torch)."""

    def __enter__(self):
        import threading

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.base = self.peak = self._rss()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self.stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def mb(self) -> float:
        return (self.peak - self.base) / 2**20


def attack_peak_mb(s: Suite, model, bs: int, size: int, steps: int) -> float:
    """Peak memory of one PGD attack above what was allocated before it (MB)."""
    x, y = batch(s.device, bs, size)
    gc.collect()
    if s.cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(s.device)
        base = torch.cuda.memory_allocated(s.device)
        pgd(model, x, y, norm="linf", eps=EPS, steps=steps)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated(s.device) - base) / 2**20
    with _RssPeak() as r:
        pgd(model, x, y, norm="linf", eps=EPS, steps=steps)
    return r.mb


def section_memory(s: Suite, args) -> None:
    arch = "resnet18" if s.quick else "resnet50"
    size = 64 if s.quick else 224
    sizes = [8, 16, 32, 64] if s.quick else [32, 64, 128, 256]
    model = model_for(arch, s.device, "contiguous").eval()
    kind = "max_memory_allocated" if s.cuda else "peak RSS growth, sampled"
    attack_peak_mb(s, model, sizes[0], size, steps=2)      # warm-up: kernels, allocator pools
    first = None
    for bs in sizes:
        mb = attack_peak_mb(s, model, bs, size, steps=10)
        first = first or (mb / bs if mb else None)
        s.row("memory", f"{arch} PGD-10 fp32, batch {bs}, {size} px", f"MB ({kind})",
              f"{mb:.0f}", f"{mb / bs:.2f} MB/img")
    bs = sizes[-1]
    m2, m20 = (attack_peak_mb(s, model, bs, size, k) for k in (2, 20))
    s.row("memory", f"{arch} PGD-2 vs PGD-20, batch {bs}", "MB", f"{m2:.0f} vs {m20:.0f}",
          f"{m20 / m2:.2f}× (1.00× = no graph kept)" if m2 else "")


def section_toggles(s: Suite, args) -> None:
    if not s.cuda:
        s.row("toggles", "cudnn.benchmark, TF32, pin_memory/non_blocking", "-",
              "CUDA only", "")
        return
    arch, bs, size = "resnet50", args.train_batch, 224
    model = model_for(arch, s.device, "channels_last").train()
    x, y = batch(s.device, bs, size, "channels_last")
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    try:
        for name, setter, prec in (
                ("cudnn.benchmark", lambda on: setattr(torch.backends.cudnn, "benchmark", on),
                 "bf16"),
                ("TF32 (fp32 step)", lambda on: (
                    setattr(torch.backends.cuda.matmul, "allow_tf32", on),
                    setattr(torch.backends.cudnn, "allow_tf32", on)), "fp32")):
            res = {}
            trainer = pgd3_trainer(model, s.device, prec, "channels_last", compiled=False)
            for on in (False, True):
                setter(on)
                res[on] = bs / s.timed(lambda: trainer.train_step(x, y), 3, 6)
            s.row("toggles", f"{name} {arch} PGD-3 {prec} channels_last", "img/s off → on",
                  f"{res[False]:.0f} → {res[True]:.0f}", f"{res[True] / res[False]:.2f}×")
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved
    host = torch.rand(bs, 3, size, size)
    pinned = host.pin_memory()
    res = {}
    for name, src, nb in (("pageable, blocking", host, False), ("pinned, non_blocking", pinned,
                                                                 True)):
        res[name] = s.timed(lambda: src.to(s.device, non_blocking=nb), 2, 10)
    gb = host.numel() * 4 / 1e9
    s.row("toggles", f"host→GPU copy of a {bs}×3×{size}² fp32 batch",
          "GB/s pageable → pinned",
          f"{gb / res['pageable, blocking']:.1f} → {gb / res['pinned, non_blocking']:.1f}",
          f"{res['pageable, blocking'] / res['pinned, non_blocking']:.2f}×")


SECTIONS = {"train": section_train, "eval": section_eval, "loader": section_loader,
            "features": section_features, "memory": section_memory, "toggles": section_toggles}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a CPU check of every path)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="include torch.compile rows (default: on for CUDA, off with --quick)")
    p.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    p.add_argument("--train-batch", type=int, default=256)
    p.add_argument("--eval-batch", type=int, default=256)
    p.add_argument("--loader-files", type=int, default=1000)
    p.add_argument("--budget", type=float, default=450.0,
                   help="seconds after which remaining measurements are skipped (default 450)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", default="gpu_suite.md", help="markdown table written here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available (use --device cpu --quick)",
              file=sys.stderr)
        return 2
    if args.compile is None:
        args.compile = device.type == "cuda" and not args.quick
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    s = Suite(device, args.quick, args.budget)
    name = (torch.cuda.get_device_name(device) if s.cuda
            else f"CPU {platform.processor() or platform.machine()} × {os.cpu_count()}")
    head = (f"# gpu_suite: {name}, torch {torch.__version__}, "
            f"{'quick' if args.quick else 'full'} sizes, compile {'on' if args.compile else 'off'}"
            f", load avg {os.getloadavg()[0]:.2f}\n\ncommand: "
            f"{' '.join(['python'] + sys.argv)}\n")
    print(head)
    print("| section | config | metric | value | ratio |\n| --- | --- | --- | --- | --- |")
    for sec in args.sections:
        try:
            SECTIONS[sec](s, args)
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others
            s.row(sec, "-", "-", f"failed: {type(e).__name__}: {str(e)[:120]}")
    total = time.perf_counter() - s.t0
    lines = [head, "| section | config | metric | value | ratio |",
             "| --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(r) + " |" for r in s.rows]
    lines.append(f"\ntotal {total:.0f} s")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"\ntotal {total:.0f} s; table written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
