"""Clean and robust top-1 of a zoo model on an image folder, checked against its claimed metrics.

    python -m robust_zoo.evaluate resnet50_l2_eps3 --data /data/imagenet/val --limit 1000
    torchrun --nproc_per_node 4 -m robust_zoo.evaluate resnet50_linf_eps4 --data val/ --json r.json

``evaluate()`` is the same thing as a function, for models and data already in memory.
Robust accuracy counts an example only if it is classified correctly clean and after every PGD
restart; AutoAttack (``--autoattack standard|fast``, needs ``pip install 'robust-zoo[eval]'``)
is run on its own, as RobustBench reports it. Everything runs in fp32. The counting is
``robust_zoo.engine.evaluation.evaluate_loader``; this module adds the steps around it, each
its own function: device (and torchrun), model (and its threat model), loader (data sets,
sharding), attacks (the counts of every rank) and the report with its claim checks.
"""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..attacks import check_pgd_args
from ..data import DataError, checked_image_folder, fixed_subset
from ..data.common import Loader, iter_batches, tensor_pair
from ..engine import distributed
from ..engine.evaluation import (AUTOATTACK_VERSIONS, AutoAttackUnavailable,
                                 AutoAttackUnsupported, EvalResult, evaluate_loader,
                                 make_autoattack)
from ..engine.precision import check_precision, compile_model
from ..errors import RobustZooError, UsageError, message
from ..naming import check_norm, eps_close, eps_display, parse_eps, parse_int
from .. import validate
from ..recipe import default_step_size
from .corruptions import corruption_folders, corruption_transform, summarize

__all__ = ["evaluate", "compare_claims", "format_report", "threat_model",
           "ROBUSTBENCH_FIELDS"]

DEFAULT_STEPS = 20


# ----------------------------------------------------------------------------- data

def _as_dataset(data, transform):
    """A map-style dataset from a folder path, an ``(images, labels)`` pair or a dataset;
    None for loaders and other iterables of batches (used as they are)."""
    if isinstance(data, (str, os.PathLike)):
        return checked_image_folder(data, transform)
    pair = tensor_pair(data)
    if pair is not None:
        return torch.utils.data.TensorDataset(*pair)
    if isinstance(data, torch.utils.data.DataLoader):
        return None
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return data
    return None


def _loader(data, transform, entry, *, limit: int | None, batch_size: int,
            workers: int | None, device: torch.device, d: distributed.Dist):
    """(loader, class names or None, dataset size or None, the examples this rank owns or None
    for all): a DataLoader over this rank's shard of a dataset, or ``data`` itself when it is
    already an iterable of batches."""
    if transform is None and isinstance(data, (str, os.PathLike)):
        if entry is None:
            raise UsageError("evaluate: an image folder needs transform= when the model has no "
                             "manifest entry")
        transform = entry.transforms()
    ds = _as_dataset(data, transform)
    if ds is None:
        if d.world_size > 1:
            raise UsageError("evaluate under torchrun needs a dataset or folder to shard, not an "
                             "iterable of batches")
        return data, None, None, limit
    if len(ds) == 0:
        raise DataError("evaluate: the dataset is empty")
    ds = fixed_subset(ds, limit)
    sampler, cap = None, None   # DistributedSampler pads the last batch: count this rank's own
    if d.world_size > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(ds, num_replicas=d.world_size, rank=d.rank, shuffle=False)
        cap = len(range(d.rank, len(ds), d.world_size))
    loader = Loader(
        ds, batch_size=batch_size, shuffle=False, sampler=sampler,
        num_workers=min(8, os.cpu_count() or 1) if workers is None else workers,
        pin_memory=device.type == "cuda")
    return loader, getattr(ds, "classes", None), len(ds), cap


# ----------------------------------------------------------------------------- claims

def _binomial_halfwidth(p_percent: float, n: int) -> float:
    p = min(max(p_percent / 100.0, 0.0), 1.0)
    return 100.0 * 1.96 * math.sqrt(p * (1 - p) / n) if n > 0 else float("inf")


# RobustBench's names of the metrics (its model_info JSON and leaderboard), by ours
ROBUSTBENCH_FIELDS = {"clean_top1": "clean_acc", "autoattack_top1": "autoattack_acc",
                      "corruptions_top1": "corruptions_acc"}
_ATTACKED = ("pgd_top1", "autoattack_top1")


def threat_model(entry, norm: str, corruptions: bool = False) -> str:
    """RobustBench's threat-model name of this evaluation: "corruptions" for common-corruption
    accuracy or a corruption-robust entry (norm "none"), else "Linf" / "L2" of ``norm``."""
    none = corruptions or (entry is not None and entry.norm == "none")
    return validate.threat_models(None, "none" if none else norm)[0]


def _claim_applies(claim: dict, name: str, norm: str, eps: float, threat: str | None) -> bool:
    """Whether ``claim`` of an entry is a claim about metric ``name`` measured here: the same
    name (ours or RobustBench's), the same threat model when the claim names one, the same
    norm and ε for an attacked accuracy (or, for a claim without them, its threat model)."""
    if claim.get("name") not in (name, ROBUSTBENCH_FIELDS.get(name)):
        return False
    claimed_threat = claim.get("threat_model")
    if threat is not None and claimed_threat is not None \
            and str(claimed_threat).lower() != threat.lower():
        return False
    if name in _ATTACKED:
        if claim.get("norm") is None:        # named by its threat model alone
            return threat is not None and claimed_threat is not None
        return claim.get("norm") == norm and eps_close(float(claim.get("eps", -1)), eps)
    return True


def compare_claims(entry, measured: dict[str, float | None], *, norm: str, eps: float, n: int,
                   tolerance: float = 1.0, threat: str | None = None,
                   counts: dict[str, int] | None = None,
                   autoattack: str | None = None) -> list[dict[str, Any]]:
    """Measured vs claimed for each metric the entry claims (under its own name or
    RobustBench's, for the threat model ``threat`` when the claim names one). The allowed
    difference is ``tolerance`` points, widened to the binomial 95% half-width 1.96·√(p(1−p)/n)
    at the claimed accuracy p when n is small enough that sampling alone exceeds it;
    ``counts`` gives a metric its own n (corruption accuracy counts every corrupted image).
    ``autoattack`` is the AutoAttack version that measured ``autoattack_top1``: against a claim
    made with another version (published AutoAttack accuracies are ``standard``'s unless the
    claim says otherwise) the row is not comparable, ``ok`` is None and ``note`` says why."""
    rows = []
    for name, value in measured.items():
        if value is None or entry is None:
            continue
        for claim in entry.metrics:
            if not _claim_applies(claim, name, norm, eps, threat):
                continue
            n_metric = (counts or {}).get(name, n)
            half = _binomial_halfwidth(claim["value"], n_metric)
            tol, rule = ((tolerance, f"fixed {tolerance:g} pt") if half <= tolerance
                         else (half, f"binomial 95% (n={n_metric})"))
            diff = value - claim["value"]
            row = {"name": name, "measured": value, "claimed": claim["value"], "diff": diff,
                   "tolerance": tol, "rule": rule, "ok": abs(diff) <= tol,
                   "claim_n": claim.get("n_examples"), "claim_attack": claim.get("attack"),
                   "threat_model": claim.get("threat_model"), "source": claim.get("source")}
            claimed_with = (claim.get("attack") or {}).get("version", "standard")
            if name == "autoattack_top1" and autoattack not in (None, claimed_with):
                row.update(ok=None, note=f"claimed with AutoAttack {claimed_with}, measured "
                                         f"with {autoattack}: not comparable")
            rows.append(row)
    return rows


def claim_verdict(row: dict[str, Any]) -> str:
    """A claim row in one word: ok, DIFFERS, or not comparable (another attack measured it)."""
    return "not comparable" if row["ok"] is None else "ok" if row["ok"] else "DIFFERS"


# ----------------------------------------------------------------------------- evaluation

def _device(model_or_name, device) -> tuple[torch.device, distributed.Dist]:
    """The device to run on (default: the model's, else CUDA at LOCAL_RANK, else CPU) and the
    torchrun setup."""
    if device is None and isinstance(model_or_name, nn.Module):
        device = next(model_or_name.parameters()).device
    try:
        device = torch.device(device) if device is not None else (
            torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            if torch.cuda.is_available() else torch.device("cpu"))
    except RuntimeError:
        raise UsageError(f"device {device!r} is not a torch device: use cpu, cuda or "
                         "cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device} was asked for but CUDA is not available: pass "
                         "--device cpu")
    d = distributed.setup(str(device))
    return (d.device if device.type == "cuda" else device), d


def _model(model_or_name, manifest, device: torch.device, norm, eps):
    """(model on ``device``, its manifest entry or None, norm, ε): a zoo name is loaded with
    ``robust_zoo.load``; norm and ε default to the entry's own threat model."""
    if isinstance(model_or_name, nn.Module):
        model, entry = model_or_name, getattr(model_or_name, "entry", None)
    else:
        from ..hub.factory import load

        model = load(model_or_name, manifest=manifest, device=device)
        entry = model.entry
    model = model.to(device)
    bad = {str(p.dtype) for p in model.parameters() if p.is_floating_point()
           and p.dtype != torch.float32}
    if bad:
        raise UsageError(f"evaluate runs in fp32 but the model has {', '.join(sorted(bad))} "
                         "parameters: pass model.float()")
    if entry is not None and entry.norm not in ("l2", "linf"):
        # a corruption-robust entry (norm "none", ε 0): no attack unless one is asked for
        norm, eps = ("linf" if norm is None else norm), (0.0 if eps is None else eps)
    if entry is not None:
        norm = entry.norm if norm is None else norm
        eps = entry.eps if eps is None else eps
    if norm is None or eps is None:
        raise UsageError("evaluate: pass norm= and eps= (the model has no manifest entry to "
                         "take them from)")
    return model, entry, check_norm(norm), parse_eps(eps)


def _autoattack_version(autoattack: bool | str | None) -> str | None:
    """The requested AutoAttack version: "standard", "fast", "auto" or None (off)."""
    if autoattack is None or autoattack is False:
        return None
    if autoattack is True:
        return "standard"
    v = str(autoattack).lower()
    v = {"on": "standard", "off": None}.get(v, v)
    if v is not None and v not in (*AUTOATTACK_VERSIONS, "auto"):
        raise UsageError(f"autoattack={autoattack!r}: use one of standard, fast, auto, off "
                         "(True means standard)")
    return v


def _autoattack_fn(model, norm: str, eps: float, device, requested: str | None, loader,
                   d: distributed.Dist):
    """(per-batch AutoAttack or None, why it is skipped or None). "auto" leaves Square out where
    it cannot run on the images (the plan is named so, with a note printed here) and skips
    AutoAttack where nothing of it can run; an explicit version that cannot run is an
    ``AutoAttackUnsupported``. The plan is made here on the data's first image when it can be
    read twice (datasets, folders, tensors, DataLoaders), else on the first batch."""
    if requested is None or eps == 0:
        return None, "not requested" if requested is None else "eps = 0"
    version = "standard" if requested == "auto" else requested
    try:
        run = make_autoattack(model, norm=norm, eps=eps, version=version, device=device,
                              drop_square=requested == "auto")
    except AutoAttackUnavailable as e:
        if requested == "auto":
            return None, "pyautoattack is not installed (pip install 'robust-zoo[eval]')"
        raise AutoAttackUnavailable(f"AutoAttack was requested but {e}") from None
    sample = _first_image(loader)
    if sample is not None:
        try:
            plan = run.prepare(sample.to(device, torch.float32).unsqueeze(0))
        except AutoAttackUnsupported as e:
            if requested == "auto":
                return None, str(e)
            raise
        if plan.note and d.rank == 0:
            print(f"note: AutoAttack {plan.version}: {plan.note}", file=sys.stderr, flush=True)
    return run, None


def _first_image(loader) -> torch.Tensor | None:
    """The first image of a map-style DataLoader's dataset or of a re-iterable collection of
    batches; None for what can be read only once."""
    if isinstance(loader, torch.utils.data.DataLoader):
        if isinstance(loader.dataset, torch.utils.data.IterableDataset):
            return None
        x = loader.dataset[0][0]
    else:
        try:
            if iter(loader) is loader:
                return None
        except TypeError:       # not iterable: evaluate_loader says so
            return None
        x = next(iter(iter_batches(loader)), (None,))[0]
        x = None if x is None else x[0]
    return x if isinstance(x, torch.Tensor) and x.ndim == 3 else None


def _autoattack_info(run, skipped: str | None) -> dict[str, Any]:
    """The report's description of the AutoAttack that ran (or why it did not)."""
    if run is None:
        return {"skipped": skipped}
    from importlib.metadata import version as _pkg_version

    plan = run.plan
    return {"version": plan.version, "attacks": list(plan.attacks),
            "target_classes": plan.target_classes, "note": plan.note,
            "package": "pyautoattack", "package_version": _pkg_version("pyautoattack")}


def _count(model, loader, *, attack: dict, autoattack, classes, total, cap, device,
           d: distributed.Dist, precision: str, compile: bool, progress: bool) -> EvalResult:
    """The counts of every rank, summed (``evaluate_loader`` on this rank's shard)."""
    run_model = compile_model(model, device) if compile else model
    desc = (f"evaluate ({total} images" + (f", {d.world_size} ranks)" if d.world_size > 1
                                           else ")") if total else "evaluate")
    if cap == 0:     # more ranks than images: this rank has nothing, the others count
        attacking = attack["eps"] > 0 and attack["steps"] > 0
        counts = EvalResult(0, 0, 0 if attacking else None, 0 if autoattack else None)
    else:
        try:
            counts = evaluate_loader(run_model, loader, **attack, autoattack=autoattack,
                                     device=device, limit=cap, precision=precision,
                                     progress=progress and d.rank == 0, desc=desc,
                                     classes=classes)
        except RobustZooError as e:
            if "Original Traceback" not in str(e):
                raise
            raise _as_read(e) from None
    res = counts.all_reduce(d)
    if res.n == 0:
        raise DataError("evaluate: the data yielded no examples")
    return res


def _as_read(e: RobustZooError) -> RobustZooError:
    """A DataLoader worker's error as the worker raised it. The worker re-raises it in this
    process as the same class around the worker's traceback text; the message is the last line
    of that text (``errors.message``), e.g. the one line of a DataError naming a bad file."""
    try:
        return type(e)(message(e))
    except Exception:        # a class that takes other arguments: as torch gave it
        return e


def evaluate(model_or_name: nn.Module | str, data, *, norm: str | None = None,
             eps: float | None = None, steps: int = DEFAULT_STEPS, step_size: float | None = None,
             restarts: int = 1, random_start: bool = False, keep_best: bool = True,
             autoattack: bool | str = False, limit: int | None = None, batch_size: int = 64,
             workers: int | None = None, device: str | torch.device | None = None,
             manifest: Any = None, transform=None, tolerance: float = 1.0,
             precision: str = "fp32", compile: bool = False, progress: bool = True,
             corruptions: str | os.PathLike | None = None) -> dict[str, Any]:
    """Clean top-1, PGD robust top-1 (and AutoAttack top-1) in percent, plus claim checks.

    ``model_or_name``: a zoo name (loaded with ``robust_zoo.load``) or a model taking [0, 1]
    images. ``data``: an ImageFolder path (preprocessed with the entry's ``transforms()`` unless
    ``transform`` is given), a map-style dataset of (image, label), an ``(images, labels)``
    tensor pair, or a DataLoader / iterable of batches. ``norm``/``eps`` default to the entry's
    own. ``autoattack``: "standard" (or True), "fast" (APGD-CE + APGD-T), "auto" (standard when
    pyautoattack is installed and it runs on the images, without Square where Square cannot,
    reported as "standard-no-square" with a note; skipped when nothing of it can run) or False.
    A version asked for by name that cannot run is an ``AutoAttackUnsupported`` saying why.
    ``corruptions``: an ImageNet-C folder (``<corruption>/<severity>/<class>/<image>``): the
    clean top-1 on each of its corruption folders too, and their mean (RobustBench's
    ``corruptions_acc``; images resized to the model's input size, as RobustBench does).
    The result carries RobustBench's field names (percent) next to ``metrics``: ``clean_acc``,
    ``autoattack_acc``, ``external`` (the lowest robust accuracy any attack here found),
    ``corruptions_acc`` and ``threat_model``, also gathered as ``robustbench`` with the
    entry's claimed leaderboard values, so a leaderboard row can be re-checked.
    ``precision="bf16"`` runs the model under bf16 autocast (the attack's steps stay fp32; the
    result records it: manifest accuracies are fp32 numbers). ``compile``: clean and PGD passes
    through ``torch.compile`` (the attack keeps input-only gradients); AutoAttack runs eager.
    Under torchrun (WORLD_SIZE > 1) each rank evaluates its shard and counts are summed.

    The steps: arguments, device, model, loader, attacks, report.
    """
    requested = _autoattack_version(autoattack)
    precision = check_precision(precision)
    steps = parse_int(steps, what="steps", minimum=0)
    restarts = parse_int(restarts, what="restarts", minimum=1)
    batch_size = parse_int(batch_size, what="batch_size", minimum=1)
    if limit is not None:
        limit = parse_int(limit, what="limit (None for all images)", minimum=1)
    device, d = _device(model_or_name, device)
    model, entry, norm, eps = _model(model_or_name, manifest, device, norm, eps)
    norm, eps, steps, step_size = check_pgd_args(norm, eps, steps, step_size)
    attack = dict(norm=norm, eps=eps, steps=steps, step_size=step_size, restarts=restarts,
                  random_start=random_start, keep_best=keep_best)
    loader, classes, total, cap = _loader(data, transform, entry, limit=limit,
                                          batch_size=batch_size, workers=workers,
                                          device=device, d=d)
    folders = None if corruptions is None else corruption_folders(corruptions)   # checked first
    aa_run, aa_skipped = _autoattack_fn(model, norm, eps, device, requested, loader, d)
    t0 = time.perf_counter()
    res = _count(model, loader, attack=attack, autoattack=aa_run, classes=classes, total=total,
                 cap=cap, device=device, d=d, precision=precision, compile=compile,
                 progress=progress)
    corr = None
    if folders is not None:
        corr = _count_corruptions(model, folders, Path(corruptions), entry, limit=limit,
                                  batch_size=batch_size, workers=workers, device=device, d=d,
                                  precision=precision, compile=compile, progress=progress)
    return _report(res, model, entry, data, attack, _autoattack_info(aa_run, aa_skipped),
                   tolerance=tolerance, limit=limit, corruptions=corr,
                   world=d.world_size, device=device, precision=precision, compile=compile,
                   seconds=time.perf_counter() - t0)


def _count_corruptions(model, folders: list, root: Path, entry, *, limit, batch_size, workers,
                       device, d: distributed.Dist, precision: str, compile: bool,
                       progress: bool) -> dict[str, Any]:
    """Clean top-1 on each ImageNet-C folder of ``folders`` (``corruption_folders(root)``; at
    most ``limit`` images each), summed over ranks: the report's ``corruptions`` section
    (``corruptions.summarize``)."""
    from ..models.robust_model import input_size

    transform = corruption_transform(input_size(model))
    clean_only = dict(norm="linf", eps=0.0, steps=0, step_size=None, restarts=1,
                      random_start=False, keep_best=True)
    accuracies = {}
    for c, sev, folder in folders:
        loader, classes, total, cap = _loader(folder, transform, entry, limit=limit,
                                              batch_size=batch_size, workers=workers,
                                              device=device, d=d)
        res = _count(model, loader, attack=clean_only, autoattack=None, classes=classes,
                     total=total, cap=cap, device=device, d=d, precision=precision,
                     compile=compile, progress=progress)
        accuracies[(c, sev)] = (res.clean_top1, res.n)
    return summarize(accuracies, root)


def _report(res: EvalResult, model, entry, data, attack: dict, aa_info: dict, *,
            tolerance: float, limit, corruptions: dict | None, world: int, device,
            precision: str, compile: bool, seconds: float) -> dict[str, Any]:
    """The result of ``evaluate`` as one JSON-ready dict (``format_report`` prints it)."""
    norm, eps, steps = attack["norm"], attack["eps"], attack["steps"]
    alpha = (attack["step_size"] if attack["step_size"] is not None
             else default_step_size(eps, steps))
    metrics = res.metrics()
    counts = {}
    if corruptions is not None:
        metrics["corruptions_top1"] = corruptions["corruptions_acc"]
        counts["corruptions_top1"] = corruptions["n"]
    threat = threat_model(entry, norm, corruptions is not None)
    claims = compare_claims(entry, metrics, norm=norm, eps=eps, n=res.n, tolerance=tolerance,
                            threat=threat, counts=counts, autoattack=aa_info.get("version"))
    rb = _robustbench_row(entry, metrics, threat, norm, eps, res.n)
    return {
        "model": entry.name if entry else getattr(model, "name", None) or type(model).__name__,
        "arch": entry.arch if entry else getattr(model, "arch", None),
        "data": _describe(data),
        "n": res.n, "norm": norm, "eps": eps, "eps_display": eps_display(norm, eps),
        "attack": {"name": "pgd", "steps": steps, "step_size": alpha,
                   "restarts": attack["restarts"], "random_start": attack["random_start"],
                   "keep_best": attack["keep_best"]} if eps > 0 and steps > 0 else None,
        "autoattack": aa_info,
        "metrics": metrics,
        "counts": {"n": res.n, "clean": res.clean, "pgd": res.pgd, "autoattack": res.autoattack},
        "corruptions": corruptions,
        # RobustBench's field names (percent), so results compare with its leaderboard
        **{k: rb[k] for k in ("threat_model", "clean_acc", "autoattack_acc", "external",
                              "corruptions_acc")},
        "robustbench": rb,
        "claims": claims,
        "limit": limit, "world_size": world, "device": str(device), "precision": precision,
        "compiled": bool(compile),
        "seconds": round(seconds, 3), "torch": torch.__version__,
    }


def _robustbench_row(entry, metrics: dict, threat: str, norm: str, eps: float, n: int
                     ) -> dict[str, Any]:
    """This evaluation as a row of RobustBench's ImageNet leaderboard (its field names, in
    percent) and the row the entry claims. ``external`` is the leaderboard's robust accuracy:
    the lowest that any attack run here found (AutoAttack or PGD)."""
    robust = [v for v in (metrics["autoattack_top1"], metrics["pgd_top1"]) if v is not None]
    claimed = {}
    for ours, theirs in ROBUSTBENCH_FIELDS.items():
        for claim in getattr(entry, "metrics", None) or ():
            if _claim_applies(claim, ours, norm, eps, threat) and theirs not in claimed:
                claimed[theirs] = claim["value"]
    return {"model_name": getattr(entry, "name", None), "dataset": "imagenet",
            "threat_model": threat,
            "eps": None if threat == "corruptions" else eps_display(norm, eps),
            "clean_acc": metrics["clean_top1"], "autoattack_acc": metrics["autoattack_top1"],
            "external": min(robust) if robust and threat != "corruptions" else None,
            "corruptions_acc": metrics.get("corruptions_top1"), "n_examples": n,
            "claimed": claimed}


def _describe(data) -> str:
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    pair = tensor_pair(data)
    if pair is not None:
        return f"tensors {tuple(pair[0].shape)}"
    return type(data).__name__


# ----------------------------------------------------------------------------- report / CLI

def format_report(result: dict[str, Any]) -> str:
    m = result["metrics"]
    threat = (f"{result['norm']} eps={result['eps_display']}" if result["eps"] > 0
              or result.get("threat_model") != "corruptions" else "common corruptions")
    lines = [f"{result['model']}  on {result['data']}  (n={result['n']}, {threat})"]
    att = result["attack"]
    if att:
        lines.append(f"PGD: {att['steps']} steps, step size {att['step_size']:.4g}, "
                     f"{att['restarts']} restart(s), keep_best={att['keep_best']}")
    if result.get("precision", "fp32") != "fp32" or result.get("compiled"):
        lines.append(f"run: {result.get('precision', 'fp32')}"
                     + (" autocast (the claims are fp32 numbers)"
                        if result.get("precision", "fp32") != "fp32" else "")
                     + (", torch.compile" if result.get("compiled") else ""))
    aa = result["autoattack"]
    if "skipped" in aa:
        lines.append(f"AutoAttack: skipped ({aa['skipped']})")
    else:
        lines.append(f"AutoAttack: {aa['version']} ({', '.join(aa['attacks'])}; "
                     f"{aa['package']} {aa['package_version']})")
        if aa.get("note"):
            lines.append(f"  note: {aa['note']}")
    corr = result.get("corruptions")
    if corr:
        lines.append(f"corruptions: {corr['folders']} ImageNet-C folders, {corr['n']} images"
                     + ("" if corr["complete"] else f" ({len(corr['missing'])} of 75 missing: "
                        "not RobustBench's full set)"))
    claims = {c["name"]: c for c in result["claims"]}
    head = ("metric", "measured", "claimed", "diff", "allowed", "")
    rows = []
    for name in ("clean_top1", "pgd_top1", "autoattack_top1", "corruptions_top1"):
        if m.get(name) is None:
            continue
        c = claims.get(name)
        rows.append((name, f"{m[name]:.2f}", f"{c['claimed']:.2f}" if c else "-",
                     f"{c['diff']:+.2f}" if c else "-", f"±{c['tolerance']:.2f}" if c else "-",
                     claim_verdict(c) if c else ""))
    w = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    lines.append("  ".join(h.ljust(w[i]) for i, h in enumerate(head)).rstrip())
    lines += ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    rules = sorted({c["rule"] for c in result["claims"]})
    if rules:
        lines.append("allowed difference: " + "; ".join(rules))
    lines += [f"note: {c['name']} {c['note']}" for c in result["claims"] if c.get("note")]
    return "\n".join(lines)
