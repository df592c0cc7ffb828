"""Clean and robust top-1 of a zoo model on an image folder, checked against its claimed metrics.

    python -m robust_zoo.evaluate resnet50_l2_eps3 --data /data/imagenet/val --limit 1000
    torchrun --nproc_per_node 4 -m robust_zoo.evaluate resnet50_linf_eps4 --data val/ --json r.json

``evaluate()`` is the same thing as a function, for models and data already in memory.
Robust accuracy counts an example only if it is classified correctly clean and after every PGD
restart (and, when run, after AutoAttack). Everything runs in fp32.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from .attacks import _attack_mode, correct_under_attack, default_step_size
from . import distributed
from .data import DataError
from .naming import check_norm, eps_close, eps_display

__all__ = ["evaluate", "main", "compare_claims"]

DEFAULT_STEPS = 20



# ----------------------------------------------------------------------------- data

def image_folder(path: str | os.PathLike, transform) -> "torch.utils.data.Dataset":
    """An ImageFolder over ``path`` with clear errors for the usual mistakes."""
    from torchvision.datasets import ImageFolder

    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"Data folder {p} does not exist (or is not a folder): pass --data DIR, an "
                        "ImageFolder tree DIR/<class>/<image>, e.g. ImageNet val/ sorted into "
                        "one folder per WordNet id")
    if not any(d.is_dir() for d in p.iterdir()):
        raise DataError(f"{p} has no class sub-folders: expected DIR/<class>/<image> (a flat "
                        "ImageNet val/ must first be sorted into its 1000 WordNet-id folders)")
    try:
        return ImageFolder(str(p), transform=transform)
    except FileNotFoundError as e:   # a class folder without any image file
        raise DataError(f"{p}: every class folder needs at least one image. {e}") from None


class _Subset(torch.utils.data.Dataset):
    def __init__(self, ds, indices: list[int]):
        self.ds, self.indices = ds, indices
        self.classes = getattr(ds, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.ds[self.indices[i]]


def _limit(ds, limit: int | None, seed: int = 0):
    """A fixed random subset (seed 0): ImageFolder is sorted by class, so the first N images
    would cover only the first few classes."""
    if limit is None or limit >= len(ds):
        return ds
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    g = torch.Generator().manual_seed(seed)
    return _Subset(ds, sorted(torch.randperm(len(ds), generator=g)[:limit].tolist()))


def _as_dataset(data, transform):
    """A map-style dataset from a folder path, an ``(images, labels)`` pair or a dataset;
    None for loaders and other iterables of batches (used as they are)."""
    if isinstance(data, (str, os.PathLike)):
        return image_folder(data, transform)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        if len(data[0]) != len(data[1]):
            raise DataError(f"images and labels differ in length: {len(data[0])} vs {len(data[1])}")
        return torch.utils.data.TensorDataset(*data)
    if isinstance(data, torch.utils.data.DataLoader):
        return None
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return data
    return None


# ----------------------------------------------------------------------------- claims

def _binomial_halfwidth(p_percent: float, n: int) -> float:
    p = min(max(p_percent / 100.0, 0.0), 1.0)
    return 100.0 * 1.96 * math.sqrt(p * (1 - p) / n) if n > 0 else float("inf")


def compare_claims(entry, measured: dict[str, float | None], *, norm: str, eps: float, n: int,
                   tolerance: float = 1.0) -> list[dict[str, Any]]:
    """Measured vs claimed for each metric the entry claims. The allowed difference is
    ``tolerance`` points, widened to the binomial 95% half-width 1.96·√(p(1−p)/n) at the
    claimed accuracy p when n is small enough that sampling alone exceeds it."""
    rows = []
    for name, value in measured.items():
        if value is None or entry is None:
            continue
        for claim in entry.metrics:
            if claim.get("name") != name:
                continue
            if name != "clean_top1" and not (claim.get("norm") == norm
                                             and eps_close(float(claim.get("eps", -1)), eps)):
                continue
            half = _binomial_halfwidth(claim["value"], n)
            tol, rule = ((tolerance, f"fixed {tolerance:g} pt") if half <= tolerance
                         else (half, f"binomial 95% (n={n})"))
            diff = value - claim["value"]
            rows.append({"name": name, "measured": value, "claimed": claim["value"], "diff": diff,
                         "tolerance": tol, "rule": rule, "ok": abs(diff) <= tol,
                         "claim_n": claim.get("n_examples"), "claim_attack": claim.get("attack"),
                         "source": claim.get("source")})
    return rows


# ----------------------------------------------------------------------------- evaluation

def _resolve_model(model_or_name, manifest, device):
    if isinstance(model_or_name, nn.Module):
        return model_or_name, getattr(model_or_name, "entry", None)
    from .api import load

    model = load(model_or_name, manifest=manifest, device=device)
    return model, model.entry


def _check_fp32(model: nn.Module) -> None:
    bad = {str(p.dtype) for p in model.parameters() if p.is_floating_point()
           and p.dtype != torch.float32}
    if bad:
        raise ValueError(f"evaluate runs in fp32 but the model has {', '.join(sorted(bad))} "
                         "parameters: pass model.float()")


def _import_autoattack():
    """(AutoAttack class, its package): fra31's ``autoattack`` (GitHub) or its PyPI repackaging
    ``pyautoattack``, whose constructor lost ``verbose`` and whose batch argument is named
    ``batch_size``."""
    try:
        from autoattack import AutoAttack

        return AutoAttack, "autoattack"
    except ImportError:
        from pyautoattack import AutoAttack

        return AutoAttack, "pyautoattack"


def _autoattack_fn(model, norm: str, eps: float, device, enabled):
    """A per-batch AutoAttack (standard version) or None, with the reason when skipped."""
    if not enabled or eps == 0:
        return None, ("not requested" if not enabled else "eps = 0")
    try:
        AutoAttack, package = _import_autoattack()
    except ImportError:
        hint = ("neither autoattack (pip install git+https://github.com/fra31/auto-attack) nor "
                "pyautoattack (pip install pyautoattack) is installed")
        if enabled == "auto":
            return None, hint
        raise ImportError(f"AutoAttack was requested but {hint}") from None
    kw = dict(norm="L2" if norm == "l2" else "Linf", eps=eps, version="standard",
              device=str(device))
    if package == "autoattack":
        adversary = AutoAttack(model, verbose=False, **kw)
        batch_kw = "bs"
    else:
        adversary = AutoAttack(model, **kw)
        batch_kw = "batch_size"

    def run_aa(x, y):
        return adversary.run_standard_evaluation(x, y, **{batch_kw: len(x)})

    def run(x, y):
        x_adv = run_aa(x, y)
        if isinstance(x_adv, tuple):   # pyautoattack returns (x_adv, predicted labels)
            x_adv = x_adv[0]
        with torch.no_grad():
            return model(x_adv).argmax(1) == y

    return run, None


def evaluate(model_or_name: nn.Module | str, data, *, norm: str | None = None,
             eps: float | None = None, steps: int = DEFAULT_STEPS, step_size: float | None = None,
             restarts: int = 1, random_start: bool = False, keep_best: bool = True,
             autoattack: bool | str = False, limit: int | None = None, batch_size: int = 64,
             workers: int | None = None, device: str | torch.device | None = None,
             manifest: Any = None, transform=None, tolerance: float = 1.0,
             progress: bool = True) -> dict[str, Any]:
    """Clean top-1, PGD robust top-1 (and AutoAttack top-1) in percent, plus claim checks.

    ``model_or_name``: a zoo name (loaded with ``robust_zoo.load``) or a model taking [0, 1]
    images. ``data``: an ImageFolder path (preprocessed with the entry's ``transforms()`` unless
    ``transform`` is given), a map-style dataset of (image, label), an ``(images, labels)``
    tensor pair, or a DataLoader / iterable of batches. ``norm``/``eps`` default to the entry's
    own. ``autoattack``: True, False or "auto" (run when the package is importable).
    Under torchrun (WORLD_SIZE > 1) each rank evaluates its shard and counts are summed.
    """
    if device is None and isinstance(model_or_name, nn.Module):
        device = next(model_or_name.parameters()).device
    device = torch.device(device) if device is not None else (
        torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available()
        else torch.device("cpu"))
    d = distributed.setup(str(device))
    rank, world = d.rank, d.world_size
    model, entry = _resolve_model(model_or_name, manifest, device)
    model = model.to(device)
    _check_fp32(model)
    if entry is not None:
        norm = entry.norm if norm is None else norm
        eps = entry.eps if eps is None else eps
    if norm is None or eps is None:
        raise ValueError("evaluate: pass norm= and eps= (the model has no manifest entry to "
                         "take them from)")
    norm, eps = check_norm(norm), float(eps)
    if transform is None and isinstance(data, (str, os.PathLike)):
        if entry is None:
            raise ValueError("evaluate: an image folder needs transform= when the model has no "
                             "manifest entry")
        transform = entry.transforms()
    alpha = step_size if step_size is not None else default_step_size(eps, steps)
    attacking = eps > 0 and steps > 0

    ds = _as_dataset(data, transform)
    n_valid = None            # examples this rank owns (DistributedSampler pads the last batch)
    if ds is not None:
        if len(ds) == 0:
            raise DataError("evaluate: the dataset is empty")
        ds = _limit(ds, limit)
        sampler = None
        if world > 1:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
            n_valid = len(range(rank, len(ds), world))
        loader = torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=False, sampler=sampler,
            num_workers=min(8, os.cpu_count() or 1) if workers is None else workers,
            pin_memory=device.type == "cuda")
        classes = getattr(ds, "classes", None)
        total = len(ds)
    else:
        if world > 1:
            raise ValueError("evaluate under torchrun needs a dataset or folder to shard, not an "
                             "iterable of batches")
        loader, classes, total = data, None, None

    cap = n_valid if n_valid is not None else (limit if ds is None else None)
    aa_run, aa_skip = _autoattack_fn(model, norm, eps, device, autoattack)
    counts = [0, 0, 0, 0]     # n, clean, pgd, autoattack
    bar = _progress(loader, total, world, enabled=progress and rank == 0)
    t0 = time.perf_counter()
    try:
        with _attack_mode(model, True), torch.autocast(device.type, enabled=False):
            for x, y in bar:
                if cap is not None:   # DistributedSampler's padding, or --limit on a loader
                    keep = max(0, min(len(y), cap - counts[0]))
                    x, y = x[:keep], y[:keep]
                    if keep == 0:
                        break
                x, y = x.to(device, non_blocking=True).float(), y.to(device, non_blocking=True)
                if counts[0] == 0:
                    _check_classes(model, x, y, classes)
                if attacking:
                    clean, robust = correct_under_attack(
                        model, x, y, norm=norm, eps=eps, steps=steps, step_size=alpha,
                        restarts=restarts, random_start=random_start, keep_best=keep_best)
                else:
                    with torch.no_grad():
                        clean = model(x).argmax(1) == y
                    robust = clean
                # AutoAttack on its own (not stacked on PGD), as the claims report it
                aa = (clean & aa_run(x, y)) if aa_run else robust
                counts = [counts[0] + len(y), counts[1] + int(clean.sum()),
                          counts[2] + int(robust.sum()), counts[3] + int(aa.sum())]
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(clean=f"{100 * counts[1] / counts[0]:.2f}",
                                    pgd=f"{100 * counts[2] / counts[0]:.2f}" if attacking else "-")
    finally:
        if hasattr(bar, "close"):
            bar.close()
    n, n_clean, n_pgd, n_aa = (int(v) for v in distributed.all_reduce_sum(d, counts))
    if n == 0:
        raise DataError("evaluate: the data yielded no examples")
    pct = lambda k: 100.0 * k / n  # noqa: E731
    metrics = {"clean_top1": pct(n_clean), "pgd_top1": pct(n_pgd) if attacking else None,
               "autoattack_top1": pct(n_aa) if aa_run else None}
    return {
        "model": entry.name if entry else getattr(model, "name", None) or type(model).__name__,
        "arch": entry.arch if entry else getattr(model, "arch", None),
        "data": _describe(data),
        "n": n, "norm": norm, "eps": eps, "eps_display": eps_display(norm, eps),
        "attack": {"name": "pgd", "steps": steps, "step_size": alpha, "restarts": restarts,
                   "random_start": random_start, "keep_best": keep_best} if attacking else None,
        "autoattack": {"version": "standard"} if aa_run else {"skipped": aa_skip},
        "metrics": metrics,
        "claims": compare_claims(entry, metrics, norm=norm, eps=eps, n=n, tolerance=tolerance),
        "limit": limit, "world_size": world, "device": str(device),
        "seconds": round(time.perf_counter() - t0, 3), "torch": torch.__version__,
    }


def _describe(data) -> str:
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return f"tensors {tuple(data[0].shape)}"
    return type(data).__name__


def _check_classes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes) -> None:
    with torch.no_grad():
        k = model(x[:1]).shape[1]
    if classes is not None and len(classes) != k:
        raise DataError(f"The data has {len(classes)} classes but the model's head has {k} "
                        "outputs: the folder needs one sub-folder per model class, in the model's "
                        "class order (ImageNet: the 1000 WordNet ids n01440764 ... n15075141)")
    if int(y.max()) >= k or int(y.min()) < 0:
        raise DataError(f"Labels range over [{int(y.min())}, {int(y.max())}] but the model has "
                        f"{k} outputs")


def _progress(loader: Iterable, total: int | None, world: int, enabled: bool):
    if not enabled:
        return loader
    from tqdm.auto import tqdm

    n_batches = len(loader) if hasattr(loader, "__len__") else None
    return tqdm(loader, total=n_batches, unit="batch", dynamic_ncols=True,
                desc=f"evaluate ({total} images" + (f", {world} ranks)" if world > 1 else ")")
                if total else "evaluate")


# ----------------------------------------------------------------------------- report / CLI

def format_report(result: dict[str, Any]) -> str:
    m = result["metrics"]
    lines = [f"{result['model']}  on {result['data']}  (n={result['n']}, "
             f"{result['norm']} eps={result['eps_display']})"]
    att = result["attack"]
    if att:
        lines.append(f"PGD: {att['steps']} steps, step size {att['step_size']:.4g}, "
                     f"{att['restarts']} restart(s), keep_best={att['keep_best']}")
    if "skipped" in result["autoattack"]:
        lines.append(f"AutoAttack: skipped ({result['autoattack']['skipped']})")
    claims = {c["name"]: c for c in result["claims"]}
    head = ("metric", "measured", "claimed", "diff", "allowed", "")
    rows = []
    for name in ("clean_top1", "pgd_top1", "autoattack_top1"):
        if m.get(name) is None:
            continue
        c = claims.get(name)
        rows.append((name, f"{m[name]:.2f}", f"{c['claimed']:.2f}" if c else "-",
                     f"{c['diff']:+.2f}" if c else "-", f"±{c['tolerance']:.2f}" if c else "-",
                     "" if not c else "ok" if c["ok"] else "DIFFERS"))
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines.append("  ".join(h.ljust(w[i]) for i, h in enumerate(head)).rstrip())
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    rules = sorted({c["rule"] for c in result["claims"]})
    if rules:
        lines.append("allowed difference: " + "; ".join(rules))
    return "\n".join(lines)


def _eps_arg(s: str) -> float:
    try:
        num, _, den = s.partition("/")
        return float(num) / float(den) if den else float(num)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{s!r} is not a number or a fraction like 4/255") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m robust_zoo.evaluate",
        description="Clean and PGD (and AutoAttack) top-1 of a zoo model on an ImageFolder tree, "
                    "compared with the accuracy its manifest entry claims.")
    p.add_argument("name", help="model name (robust-zoo list), export folder or hf-hub:org/repo")
    p.add_argument("--data", default=os.environ.get("ROBUST_ZOO_DATA"),
                   help="ImageFolder tree, e.g. ImageNet val/ (default: $ROBUST_ZOO_DATA)")
    p.add_argument("--manifest", help="manifest file or folder (default: the zoo's own)")
    p.add_argument("--norm", choices=("l2", "linf"), help="default: the entry's")
    p.add_argument("--eps", type=_eps_arg, help="in [0, 1] pixel units; fractions like 4/255 "
                   "work (default: the entry's)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--step-size", type=_eps_arg, help="default 2.5·eps/steps")
    p.add_argument("--restarts", type=int, default=1,
                   help="PGD runs; an example is robust only if every run fails")
    p.add_argument("--random-start", action="store_true", help="random start for the first run "
                   "too (later restarts always start at random)")
    p.add_argument("--no-keep-best", dest="keep_best", action="store_false",
                   help="use the last PGD iterate instead of the highest-loss one")
    p.add_argument("--autoattack", choices=("auto", "on", "off"), default="auto",
                   help="standard AutoAttack: 'auto' runs it when the package is installed")
    p.add_argument("--limit", type=int, help="evaluate a fixed random subset of N images (seed 0)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, help="DataLoader workers (default min(8, #cpus))")
    p.add_argument("--device",
                   help="default: cuda (LOCAL_RANK under torchrun) if available, else cpu")
    p.add_argument("--tolerance", type=float, default=1.0,
                   help="allowed |measured - claimed| in points (widened to a binomial 95%% "
                        "interval when n is small)")
    p.add_argument("--json", dest="json_out", help="write the result here")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.data:
        print("error: pass --data DIR (an ImageFolder tree such as ImageNet val/) or set "
              "ROBUST_ZOO_DATA", file=sys.stderr)
        return 2
    try:
        result = evaluate(
            args.name, args.data, norm=args.norm, eps=args.eps, steps=args.steps,
            step_size=args.step_size, restarts=args.restarts, random_start=args.random_start,
            keep_best=args.keep_best, autoattack={"auto": "auto", "on": True, "off": False}[
                args.autoattack], limit=args.limit, batch_size=args.batch_size,
            workers=args.workers, device=args.device, manifest=args.manifest,
            tolerance=args.tolerance, progress=args.progress)
    except (ValueError, KeyError, OSError, _integrity_error()) as e:   # OSError: missing files
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    if result["world_size"] == 1 or int(os.environ.get("RANK", "0")) == 0:
        print(format_report(result))
        if args.json_out:
            from .io import atomic_write_text

            atomic_write_text(args.json_out, json.dumps(result, indent=2) + "\n")
    return 0


def _integrity_error() -> type[Exception]:
    from .hub import IntegrityError

    return IntegrityError


if __name__ == "__main__":
    sys.exit(main())
