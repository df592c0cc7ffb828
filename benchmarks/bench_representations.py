"""Do robust gradients make pictures? Saliency, class synthesis and representation inversion
of the quickstart's standard and robust models, judged by measures outside this package.

    python benchmarks/bench_representations.py [--seeds 0 1 2] [--epochs 3] [--out DIR]
                                               [--threads 1] [--json results.json]

For each seed it trains the quickstart's two models (mini_resnet, digits 0-4 at 16 px, standard
ε = 0 and Linf PGD-3 ε = 32/255, ``robust_zoo.cli.quickstart._train_both``; runs already in
``--out`` are reused) and measures:

* synthesis: 30 targets (6 per class), one shared uniform-noise start; the share of syntheses a
  scikit-learn LogisticRegression on the digits' 8×8 pixels (trained on the training split)
  calls the target class (chance 20%); at the function's default budget and at the
  quickstart panel's (ε 10, 100 steps of 0.15);
* inversion: 8 test images from uniform noise (200 steps of 0.5): fall of the normalised
  penultimate distance, and pixel RMSE to the target (the noise start: ~0.51);
* saliency: Pearson correlation of |∇ₓ loss| (summed over channels) with the image's Sobel
  edge magnitude, mean over 100 test images;

plus the wall time of each function, and as the anchor ``attacks.pgd`` (the same engine with
cross-entropy) on the same 30 images at the synthesis budget: synthesis time / anchor time is the
cost of the objective and the representation bookkeeping. Numbers land in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import robust_zoo  # noqa: E402
from robust_zoo.cli import quickstart  # noqa: E402
from robust_zoo import representations as R  # noqa: E402
from robust_zoo.attacks import pgd  # noqa: E402
from robust_zoo.data import digits_tensors  # noqa: E402

NAMES = {"standard": "mini_resnet_linf_eps0", "robust": "mini_resnet_linf_eps32"}


def pixels(x):
    return F.avg_pool2d(x.mean(1, keepdim=True), 2).flatten(1).numpy()


def sobel(x):
    g = F.pad(x.mean(1, keepdim=True), (1, 1, 1, 1), mode="replicate")
    k = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).view(1, 1, 3, 3)
    return (F.conv2d(g, k) ** 2 + F.conv2d(g, k.transpose(2, 3)) ** 2).sqrt()


def models_for(seed: int, epochs: int, out: Path):
    run = out / f"seed{seed}"
    manifest = run / "weights_manifest.json"
    if not manifest.is_file():
        runs = quickstart._train_both(run, epochs, seed, progress=False)
        manifest = quickstart.write_manifest(run, runs)
    return {k: robust_zoo.load(n, manifest=manifest, progress=False) for k, n in NAMES.items()}


def measure(models, judge, x_te, y_te, seed: int) -> dict:
    res: dict = {}
    gen = torch.Generator().manual_seed(seed)
    target = torch.arange(5).repeat(6)
    start = torch.rand(len(target), 3, 16, 16, generator=gen)
    inv_t = x_te[::27][:8]
    inv_start = torch.rand(inv_t.shape, generator=gen)
    sal_x, sal_y = x_te[:100], y_te[:100]
    edges = sobel(sal_x).flatten(1).numpy()
    for kind, model in models.items():
        r = res[kind] = {}
        for label, kw in (("default", {}), ("panel", dict(eps=10.0, steps=100,
                                                           step_size=0.15))):
            t = time.perf_counter()
            out = R.synthesize(model, target, start, progress=False, **kw)
            r[f"synthesis_{label}_s"] = round(time.perf_counter() - t, 2)
            r[f"synthesis_{label}_judge"] = float((judge.predict(pixels(out))
                                                   == target.numpy()).mean())
            with torch.no_grad():
                r[f"synthesis_{label}_model"] = float((model(out).argmax(1) == target)
                                                      .float().mean())
        # anchor: the attack on the same images, same engine and budget (pgd = run_pgd + CE)
        eps, steps, alpha = R.budget("synthesize", start.shape)
        t = time.perf_counter()
        pgd(model, start, target, norm="l2", eps=eps, steps=steps, step_size=alpha)
        r["pgd_anchor_s"] = round(time.perf_counter() - t, 2)
        r["synthesis_vs_pgd"] = r["synthesis_default_s"] / r["pgd_anchor_s"]
        t = time.perf_counter()
        out = R.invert(model, inv_t, inv_start, steps=200, step_size=0.5, progress=False)
        r["inversion_s"] = round(time.perf_counter() - t, 2)
        f_t = R.penultimate(model, inv_t)
        dist = lambda z: float(((R.penultimate(model, z) - f_t).norm(dim=1)  # noqa: E731
                                / f_t.norm(dim=1)).mean())
        r["inversion_dist_start"], r["inversion_dist_end"] = dist(inv_start), dist(out)
        r["inversion_fall"] = 1 - r["inversion_dist_end"] / r["inversion_dist_start"]
        rmse = lambda z: float((z - inv_t).pow(2).flatten(1).mean(1).sqrt().mean())  # noqa: E731
        r["inversion_rmse_start"], r["inversion_rmse_end"] = rmse(inv_start), rmse(out)
        t = time.perf_counter()
        s = R.saliency(model, sal_x, sal_y).abs().sum(1).flatten(1).numpy()
        r["saliency_s"] = round(time.perf_counter() - t, 2)
        r["saliency_edge_corr"] = float(np.mean([np.corrcoef(a, b)[0, 1]
                                                 for a, b in zip(s, edges)]))
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="runs/bench_representations")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from sklearn.linear_model import LogisticRegression

    x_tr, y_tr = digits_tensors(list(range(5)), 16, "train")
    x_te, y_te = digits_tensors(list(range(5)), 16, "val")
    judge = LogisticRegression(max_iter=2000).fit(pixels(x_tr), y_tr.numpy())
    print(f"judge (logistic regression on 8x8 pixels): test accuracy "
          f"{100 * judge.score(pixels(x_te), y_te.numpy()):.1f}%")
    results = {}
    for seed in args.seeds:
        models = models_for(seed, args.epochs, Path(args.out))
        results[seed] = measure(models, judge, x_te, y_te, seed)
    keys = [("synthesis_default_judge", "synthesis judge %, default budget", 100),
            ("synthesis_panel_judge", "synthesis judge %, panel budget", 100),
            ("synthesis_default_model", "synthesis model-says-target %, default", 100),
            ("inversion_fall", "inversion: representation distance fall %", 100),
            ("inversion_rmse_end", "inversion: pixel RMSE to target", 1),
            ("saliency_edge_corr", "saliency: corr(abs grad, Sobel edges)", 1),
            ("synthesis_default_s", "synthesis, 30 images x 60 steps (s)", 1),
            ("pgd_anchor_s", "anchor: pgd, same 30 images, eps, steps (s)", 1),
            ("synthesis_vs_pgd", "synthesis time / anchor", 1),
            ("inversion_s", "inversion, 8 images x 200 steps (s)", 1),
            ("saliency_s", "saliency, 100 images (s)", 1)]
    print("\n| measure | " + " | ".join(f"standard s{s} | robust s{s}" for s in args.seeds)
          + " |")
    print("| --- |" + " --- |" * (2 * len(args.seeds)))
    for key, label, mult in keys:
        cells = []
        for s in args.seeds:
            for kind in ("standard", "robust"):
                v = results[s][kind][key] * mult
                cells.append(f"{v:.1f}" if mult == 100 else f"{v:.3f}" if v < 1 else f"{v:.2f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    meta = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "epochs": args.epochs}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
