"""PGD-k training step time ÷ standard training step time, same model and batch (run by hand).

The cost model (docs/training.md, performance notes §3.2): a standard step is ≈ 3F (forward +
full backward), a PGD-k step with input-only attack gradients ≈ (2k+3)F, plus 1F when the
highest-loss iterate is kept (keep_best / robustness' use_best): 3.0× and 3.33× for k = 3.
Both steps are ``robust_zoo.engine.Trainer.train_step``, the step every training run takes; the three
variants are interleaved rep by rep, so machine noise hits them alike.

    python benchmarks/bench_train_step.py               # resnet18 + resnet50, 128 px, batch 8
    python benchmarks/bench_train_step.py --archs resnet18 --size 224 --batch 16 --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def x_device() -> torch.device:
    return torch.device("cpu")


def bench(arch: str, size: int, batch: int, k: int, reps: int, warmup: int) -> dict:
    from robust_zoo.models import archs
    from robust_zoo.models import RobustModel
    from robust_zoo.recipe import Recipe
    from robust_zoo.engine.loop import Trainer
    from robust_zoo.engine.optim import build_optimizer

    torch.manual_seed(0)
    model = RobustModel(archs.build(arch, 1000), arch)
    base = dict(arch=arch, norm="l2", lr=0.01, momentum=0.9, weight_decay=1e-4)
    variants = {
        "standard": Recipe(eps=0.0, **base),
        f"pgd{k}_keep_best": Recipe(eps=1.0, attack_steps=k, keep_best=True, **base),
        f"pgd{k}_last": Recipe(eps=1.0, attack_steps=k, keep_best=False, **base),
    }
    opt = build_optimizer(model.parameters(), variants["standard"])
    trainers = {n: Trainer(model, opt, device=x_device(), attack=r) for n, r in variants.items()}
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 1000, (batch,))
    times: dict[str, list[float]] = {n: [] for n in variants}
    forward: list[float] = []
    attack_step: list[float] = []
    model.train()
    for rep in range(warmup + reps):
        for name, recipe in variants.items():
            t = time.perf_counter()
            trainers[name].train_step(x, y)
            if rep >= warmup:
                times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.no_grad():
            model(x)                       # F: one training-mode forward, no graph
        t1 = time.perf_counter()
        model.eval()                       # G: what one attack iteration pays (BN in eval)
        xa = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xa), y)
        torch.autograd.grad(loss, xa)
        model.train()
        if rep >= warmup:
            forward.append(t1 - t)
            attack_step.append(time.perf_counter() - t1)
    med = {n: statistics.median(v) for n, v in times.items()}
    f = statistics.median(forward)
    g = statistics.median(attack_step)
    return {"arch": arch, "size": size, "batch": batch, "k": k, "reps": reps,
            "threads": torch.get_num_threads(), "forward_s": f, "attack_iter_s": g,
            "attack_iter_in_F": g / f,
            "median_s": med, "in_F": {n: v / f for n, v in med.items()},
            "ratio": {n: med[n] / med["standard"] for n in med if n != "standard"},
            "bound": {f"pgd{k}_keep_best": (2 * k + 4) / 3, f"pgd{k}_last": (2 * k + 3) / 3},
            "spread": {n: (min(v), max(v)) for n, v in times.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, "
          f"{a.size} px, median of {a.reps} interleaved reps")
    print(f"{'arch':10s} {'variant':16s} {'step s':>8s} {'in F':>6s} {'÷ standard':>10s} "
          f"{'bound':>6s}")
    for arch in a.archs:
        r = bench(arch, a.size, a.batch, a.k, a.reps, a.warmup)
        rows.append(r)
        for name, s in r["median_s"].items():
            ratio = r["ratio"].get(name)
            bound = r["bound"].get(name)
            print(f"{arch:10s} {name:16s} {s:8.3f} {r['in_F'][name]:6.2f} "
                  f"{(f'{ratio:.2f}×' if ratio else '1'):>10s} "
                  f"{(f'{bound:.2f}×' if bound else ''):>6s}")
        print(f"{arch:10s} {'forward (F)':16s} {r['forward_s']:8.3f}")
        print(f"{arch:10s} {'fwd+input grad':16s} {r['attack_iter_s']:8.3f} "
              f"{r['attack_iter_in_F']:6.2f}   (one attack iteration; the model assumes 2F)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
