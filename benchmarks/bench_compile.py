"""``--compile`` speed-up: eager vs ``torch.compile`` (``engine.precision.compile_model``) for the
PGD-3 training step and the PGD-10 evaluation pass, with torchattacks' PGD as the anchor of
the latter, side by side in one process (run by hand).

    python benchmarks/bench_compile.py                        # resnet18, 128 px, batch 8, CPU
    python benchmarks/bench_compile.py --arch resnet50 --size 224 --batch 128 --device cuda \
        --precision bf16 --channels-last

Training: ``engine.Trainer.train_step`` with the recipe's PGD-3 (L2 ε = 3, keep-best), the step
every training run takes. Evaluation: ``attacks.pgd`` Linf ε = 4/255, 10 steps, eval mode, vs
``torchattacks.PGD`` with the same settings on the eager model (no random start on either, so
the adversarial accuracy must agree; the labels are the model's clean predictions, so clean
accuracy is 100 %). Eager and compiled reps are interleaved so drifting load
hits both; the first compiled call (compilation) is timed on its own and excluded.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def run(arch: str = "resnet18", size: int = 128, batch: int = 8, reps: int = 5,
        device: str = "cpu", precision: str = "fp32", channels_last: bool = False,
        torchattacks: bool = True, log=print) -> list[dict]:
    from robust_zoo.models import archs
    from robust_zoo.attacks import pgd
    from robust_zoo.engine.loop import Trainer
    from robust_zoo.engine.optim import build_optimizer
    from robust_zoo.engine.precision import autocast, compile_model
    from robust_zoo.models import RobustModel
    from robust_zoo.recipe import Recipe

    dev = torch.device(device)
    torch.manual_seed(0)
    model = RobustModel(archs.build(arch, 1000), arch).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.rand(batch, 3, size, size, device=dev).contiguous(memory_format=fmt)
    with torch.no_grad():          # labels = the clean predictions: clean accuracy 100 %,
        y = model.eval()(x).argmax(1)      # so the adversarial accuracy measures the attack
    recipe = Recipe(arch=arch, norm="l2", eps=3.0, attack_steps=3, lr=0.01, momentum=0.9,
                    weight_decay=1e-4, precision=precision)
    opt = build_optimizer(model.parameters(), recipe)
    t = time.perf_counter()
    compiled = compile_model(model, dev)
    probe_s = time.perf_counter() - t
    trainers = {"eager": Trainer(model, opt, device=dev, attack=recipe, precision=precision),
                "compiled": Trainer(model, opt, device=dev, attack=recipe, precision=precision,
                                    train_model=compiled)}
    eps, steps = 4 / 255, 10
    alpha = 2.5 * eps / steps

    def ours(m):
        def go():
            with autocast(dev, precision):
                return pgd(m, x, y, norm="linf", eps=eps, steps=steps, step_size=alpha,
                           keep_best=False)
        return go

    attacks = {"ours eager": ours(model), "ours compiled": ours(compiled)}
    if torchattacks:
        import torchattacks as ta

        ta_pgd = ta.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=False)

        def theirs():
            with autocast(dev, precision):
                return ta_pgd(x, y)
        attacks = {"torchattacks": theirs, **attacks}

    first = {}
    model.train()
    first["train compiled"] = _timed(lambda: trainers["compiled"].train_step(x, y), dev)
    model.eval()
    first["pgd10 compiled"] = _timed(attacks["ours compiled"], dev)
    train_t = {k: [] for k in trainers}
    att_t = {k: [] for k in attacks}
    for _ in range(1 + reps):                       # the first round is a warm-up
        model.train()
        for k, tr in trainers.items():
            train_t[k].append(_timed(lambda: tr.train_step(x, y), dev))
        model.eval()
        for k, fn in attacks.items():
            att_t[k].append(_timed(fn, dev))
    acc = {}
    for k, fn in attacks.items():
        adv = fn()
        with torch.no_grad(), autocast(dev, precision):
            acc[k] = 100.0 * float((model(adv).argmax(1) == y).float().mean())
    rows = []
    med = {k: statistics.median(v[1:]) for k, v in train_t.items()}
    for k in trainers:
        rows.append({"what": f"{arch} PGD-3 train step", "variant": k, "s": med[k],
                     "img_s": batch / med[k], "ratio": med["eager"] / med[k],
                     "anchor": "eager"})
    med = {k: statistics.median(v[1:]) for k, v in att_t.items()}
    anchor = "torchattacks" if torchattacks else "ours eager"
    for k in attacks:
        rows.append({"what": f"{arch} PGD-10 Linf eval", "variant": k, "s": med[k],
                     "img_s": batch / med[k], "ratio": med[anchor] / med[k], "anchor": anchor,
                     "adv_acc": acc[k]})
    log(f"| what | variant | s / batch | img/s | speed-up vs {anchor.split()[0]} / eager | "
        "adv. acc |")
    log("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        log(f"| {r['what']} | {r['variant']} | {r['s']:.3f} | {r['img_s']:.1f} | "
            f"{r['ratio']:.2f}× vs {r['anchor']} | "
            + (f"{r['adv_acc']:.1f} %" if "adv_acc" in r else "") + " |")
    log(f"\ncompilation: probe {probe_s:.1f} s, first compiled train step "
        f"{first['train compiled']:.1f} s, first compiled PGD-10 {first['pgd10 compiled']:.1f} s")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-torchattacks", dest="torchattacks", action="store_false")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"# {a.arch}, {a.size} px, batch {a.batch}, {a.precision}"
          f"{', channels_last' if a.channels_last else ''}, {a.device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), load avg {os.getloadavg()[0]:.2f}; "
          f"median of {a.reps} interleaved reps after one warm-up")
    print(f"command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}\n")
    run(a.arch, a.size, a.batch, a.reps, a.device, a.precision, a.channels_last, a.torchattacks)
    print(f"\nload avg at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
