"""``robust-zoo quickstart``: the whole workflow, offline, in a few CPU minutes.

On scikit-learn's 1,797 8×8 digits (shipped inside the package; upsampled to 16 px, 3 channels)
it trains a standard (ε = 0) and a Linf-robust (PGD-3, ε = 32/255) ``mini_resnet`` on digits
0–4 with the same code as ``python -m robust_zoo.train``, evaluates both under the same PGD-20
attack (``robust_zoo.evaluate``), writes them as manifest entries, loads them back with
``robust_zoo.load``, swaps the head and fits it on frozen features for digits 5–9, and prints a
table (plus ``quickstart.png``, the class-synthesis panel ``quickstart_synthesis.png``,
``results.json``).

    robust-zoo quickstart [--out runs/quickstart] [--fast]
    python -m robust_zoo.cli.quickstart --fast
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..console import ArgumentParser, command
from ..errors import UsageError
from ..naming import int_arg

ARCH = "mini_resnet"
INPUT_SIZE = 16
NORM = "linf"
EPS = 32 / 255
SOURCE_CLASSES, TARGET_CLASSES = "0-4", "5-9"
CURVE_EPS = (0.0, 8 / 255, 16 / 255, 32 / 255, 48 / 255)



def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="robust-zoo quickstart",
        description="Train a standard and a robust model on scikit-learn's digits, attack both, "
                    "load them back from their manifest and transfer them to new classes. "
                    "Offline; a few minutes on 2 CPU cores.")
    p.add_argument("--out", default="runs/quickstart", help="output folder (default: %(default)s)")
    p.add_argument("--fast", action="store_true",
                   help="fewer epochs and attack strengths (about a third of the time)")
    p.add_argument("--epochs", type=int_arg("--epochs", 1),
                   help="training epochs per model (default 8; --fast 3)")
    p.add_argument("--seed", type=int_arg("--seed", 0), default=0,
                   help="seed of both runs (default 0)")
    p.add_argument("--threads", type=int_arg("--threads", 0), default=1,
                   help="torch CPU threads (default 1: the tensors are tiny, and on a busy "
                        "machine several threads stall each other at every op; 0 = torch's "
                        "default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def recipes(epochs: int, seed: int):
    from ..recipe import Recipe

    common = dict(arch=ARCH, norm=NORM, dataset=f"digits:{SOURCE_CLASSES}", num_classes=5,
                  input_size=INPUT_SIZE, epochs=epochs, batch_size=64, lr=0.1, momentum=0.9,
                  weight_decay=5e-4, lr_schedule="cosine", attack_steps=3, augmentation="none",
                  precision="fp32", seed=seed, source="robust_zoo.quickstart")
    return {"standard": Recipe(eps=0.0, **common), "robust": Recipe(eps=EPS, **common)}


def _train_both(out: Path, epochs: int, seed: int, progress: bool) -> dict[str, Any]:
    from ..train import RunOptions, train

    results = {}
    for kind, recipe in recipes(epochs, seed).items():
        run_dir = out / kind
        print(f"\n== training the {kind} model "
              f"({'ε = 0' if recipe.eps == 0 else 'Linf ε = 32/255'}"
              f", {epochs} epochs) -> {run_dir}", flush=True)
        results[kind] = train(recipe, RunOptions(
            out=run_dir, progress=progress, log_every=5, final_eval_norm=NORM,
            final_eval_eps=EPS, final_eval_steps=20,
            argv=["robust-zoo", "quickstart", "--out", str(out)]))
    return results


def write_manifest(out: Path, runs: dict[str, Any]) -> Path:
    """One manifest for both runs, file paths relative to ``out``."""
    from ..train.outputs import combined_manifest

    return combined_manifest(out, {kind: res.run_dir for kind, res in runs.items()})


def robustness_curve(model, x, y, eps_values, steps: int) -> list[float]:
    from ..evaluate.run import evaluate

    out = []
    for eps in eps_values:
        r = evaluate(model, (x, y), norm=NORM, eps=eps, steps=steps, batch_size=256,
                     workers=0, progress=False)
        out.append(r["metrics"]["pgd_top1"] if eps > 0 else r["metrics"]["clean_top1"])
    return out


def linear_transfer(model, x_tr, y_tr, x_te, y_te, steps: int = 20) -> dict[str, float]:
    """Fixed-feature transfer: fresh head, frozen body (``transfer.freeze``), the head fit on
    the body's features by full-batch L-BFGS (``fit_head_lbfgs``, deterministic), then the whole
    model evaluated on the new task."""
    from ..evaluate.run import evaluate
    from ..models.robust_model import get_head
    from ..transfer import features, freeze
    from ..transfer.feature_cache import fit_head_lbfgs

    model.reset_classifier(int(y_tr.max()) + 1)
    freeze(model, "fixed-feature")
    model.eval()
    with torch.no_grad():
        f_tr = features(model, x_tr)
    fit_head_lbfgs(get_head(model), f_tr, y_tr, weight_decay=2e-3, max_iter=100)
    r = evaluate(model, (x_te, y_te), norm=NORM, eps=EPS, steps=steps, batch_size=256,
                 workers=0, progress=False)
    return {"clean": r["metrics"]["clean_top1"], "pgd": r["metrics"]["pgd_top1"]}


def plot(path: Path, eps_values, curves: dict[str, list[float]], table: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_path

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for name, accs in curves.items():
        a.plot([e * 255 for e in eps_values], accs, marker="o", label=name)
    a.set_xlabel("Linf ε (/255), PGD")
    a.set_ylabel(f"top-1 % on digits {SOURCE_CLASSES} (test)")
    a.set_ylim(0, 100)
    a.legend()
    a.set_title("robustness")
    names = [r["model"] for r in table]
    w = 0.35
    xs = range(len(names))
    for off, key, label in ((-w / 2, "transfer_clean", "clean"),
                            (w / 2, "transfer_pgd", "PGD-20 ε=32/255")):
        bars = b.bar([i + off for i in xs], [r[key] for r in table], w, label=label)
        b.bar_label(bars, fmt="%.1f", fontsize=8)
    b.set_xticks(list(xs), names, fontsize=8)
    b.set_ylim(0, 100)
    b.set_ylabel(f"top-1 % on digits {TARGET_CLASSES} (test)")
    b.set_title("fixed-feature transfer (new head)")
    b.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


# Class synthesis from class-conditional seeds (Santurkar et al. 2019, Fig. 1): a Gaussian fitted
# to each class's training digits at ``seed_size`` px (half the digits' native 8 px, so a seed is a
# blur of its class that the model has to sharpen, as the paper's 32-px seeds are for 224-px
# images), grown by targeted L2 PGD with the PGD step convention 2.5·ε/steps.
SYNTHESIS = dict(eps=3.0, steps=60, step_size=0.125, per_class=2, seed_size=4)


class GreyInput(torch.nn.Module):
    """``model`` on one-channel images, repeated to the three channels it reads: the digits are
    grey, so a synthesis searched here stays in the data's own colour space (an RGB search also
    moves along colour directions that no training image has)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.num_classes = model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.expand(-1, 3, -1, -1))


def synthesis_panel(path: Path, runs: dict[str, Any], manifest: Path, seed: int = 0
                    ) -> dict[str, Any]:
    """Class syntheses of the standard and the robust model side by side, grown from the same
    class-conditional seeds (``representations.class_seeds`` on the grey training digits),
    written to ``path``; and the share of seeds and of each model's syntheses that a
    pixel-space judge (logistic regression on the digits' 8×8 pixels, trained on the training
    split) recognises as the target class."""
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression

    from ..hub.factory import load
    from ..data import digits_tensors, parse_digit_classes
    from ..representations import class_seeds, synthesize
    from .viz import render_grid

    pixels = lambda x: F.avg_pool2d(x.mean(1, keepdim=True), 2).flatten(1).numpy()  # noqa: E731
    x_tr, y_tr = digits_tensors(parse_digit_classes(f"digits:{SOURCE_CLASSES}"), INPUT_SIZE,
                                "train")
    judge = LogisticRegression(max_iter=2000).fit(pixels(x_tr), y_tr.numpy())
    target = torch.arange(5).repeat_interleave(SYNTHESIS["per_class"])

    def recognised(images: torch.Tensor) -> float:
        return 100.0 * float((judge.predict(pixels(images)) == target.numpy()).mean())

    start = class_seeds((x_tr[:, :1], y_tr), target, seed_size=SYNTHESIS["seed_size"],
                        seed=seed)
    rows = [("start (class seeds)", [(s, [f"-> {int(t)}"]) for s, t in zip(start, target)])]
    rates = {}
    for kind, res in runs.items():
        model = GreyInput(load(res.name, manifest=manifest))
        images = synthesize(model, target, start, eps=SYNTHESIS["eps"], steps=SYNTHESIS["steps"],
                            step_size=SYNTHESIS["step_size"], progress=False)
        rates[kind] = recognised(images)
        rows.append((f"{kind}: {res.name}", [(im, [f"judge: {int(j)}"]) for im, j in
                                             zip(images, judge.predict(pixels(images)))]))
    render_grid(rows, path, title=f"class synthesis: L2 eps {SYNTHESIS['eps']:g}, "
                f"{SYNTHESIS['steps']} steps of {SYNTHESIS['step_size']:g}, from class seeds")
    return {"png": path.name, "judge_recognised_percent": rates,
            "seeds_judge_recognised_percent": recognised(start), **SYNTHESIS}


def format_table(rows: list[dict]) -> str:
    head = ("model", "training", "clean", "PGD-20 ε=32/255", f"transfer {TARGET_CLASSES} clean",
            "transfer PGD")
    body = [(r["model"], r["training"], f"{r['clean']:.1f}", f"{r['pgd']:.1f}",
             f"{r['transfer_clean']:.1f}", f"{r['transfer_pgd']:.1f}") for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def _is_quickstart_run(run: Path) -> bool:
    """A run folder this demo wrote: its recipe trains on the digits data."""
    try:
        return str(json.loads((run / "recipe.json").read_text()).get("dataset", "")).startswith(
            "digits")
    except (OSError, ValueError):
        return False


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


main = command(_main)


def _run(args: argparse.Namespace) -> int:
    from ..hub.factory import load
    from ..data import digits_tensors, parse_digit_classes

    t0 = time.perf_counter()
    out = Path(args.out).expanduser()
    for kind in ("standard", "robust"):
        run = out / kind
        if (run / "checkpoint.pt").exists() or (run / "model.safetensors").exists():
            if not _is_quickstart_run(run):
                raise UsageError(f"{run} holds a run that the quickstart did not write; pass "
                                 "another --out")
            print(f"replacing the previous quickstart run in {run}", flush=True)
            shutil.rmtree(run)
    epochs = args.epochs or (3 if args.fast else 8)
    runs = _train_both(out, epochs, args.seed, not args.no_progress)
    manifest = write_manifest(out, runs)

    src = parse_digit_classes(f"digits:{SOURCE_CLASSES}")
    tgt = parse_digit_classes(f"digits:{TARGET_CLASSES}")
    x_src, y_src = digits_tensors(src, INPUT_SIZE, "val")
    x_tr, y_tr = digits_tensors(tgt, INPUT_SIZE, "train")
    x_te, y_te = digits_tensors(tgt, INPUT_SIZE, "val")
    eps_values = (0.0, EPS) if args.fast else CURVE_EPS
    print(f"\n== loading both from {manifest}, attacking them, transferring to digits "
          f"{TARGET_CLASSES}", flush=True)
    rows, curves = [], {}
    for kind, res in runs.items():
        model = load(res.name, manifest=manifest)     # verified against its sha256
        curve = robustness_curve(model, x_src, y_src, eps_values, steps=20)
        curves[res.name] = curve
        transfer = linear_transfer(model, x_tr, y_tr, x_te, y_te,
                                   steps=10 if args.fast else 20)
        rows.append({"model": res.name, "training": "standard" if kind == "standard" else
                     "Linf PGD-3", "clean": curve[0], "pgd": curve[eps_values.index(EPS)],
                     "transfer_clean": transfer["clean"], "transfer_pgd": transfer["pgd"],
                     "run_dir": str(res.run_dir)})
    plot(out / "quickstart.png", eps_values, curves, rows)
    synthesis = synthesis_panel(out / "quickstart_synthesis.png", runs, manifest, args.seed)
    results = {"rows": rows, "eps_values": list(eps_values), "curves": curves,
               "attack": {"norm": NORM, "eps": EPS, "steps": 20, "step_size": 2.5 * EPS / 20},
               "epochs": epochs, "seed": args.seed, "threads": torch.get_num_threads(),
               "manifest": str(manifest),
               "seconds": round(time.perf_counter() - t0, 1)}
    results["synthesis"] = synthesis
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(format_table(rows))
    print(f"\nwrote {out}/: standard/ and robust/ run folders, weights_manifest.json, "
          f"quickstart.png, results.json ({results['seconds']:.0f} s)")
    rates = synthesis["judge_recognised_percent"]
    print(f"class syntheses (quickstart_synthesis.png) that a pixel-space judge recognises: "
          f"their seeds {synthesis['seeds_judge_recognised_percent']:.0f}%, standard "
          f"{rates['standard']:.0f}%, robust {rates['robust']:.0f}%")
    print(f"load one: robust_zoo.load({rows[-1]['model']!r}, manifest={str(manifest)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
