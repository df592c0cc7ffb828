"""``python -m robust_zoo.transfer``: the paper's fixed-feature and full-network transfer.

    python -m robust_zoo.transfer --model resnet50_l2_eps3 --dataset cifar10 --mode fixed \\
        --data-root DIR --out runs/t
    python -m robust_zoo.transfer --model resnet50_l2_eps0 resnet50_l2_eps3 \\
        --dataset cifar10 pets --mode fixed full --data-root DIR --out runs/sweep
    torchrun --nproc_per_node 8 -m robust_zoo.transfer --model resnet50_l2_eps3 \\
        --dataset cifar10 --mode full --data-root DIR --out runs/t --resume
    python -m robust_zoo.transfer plot runs/sweep/results.csv --out runs/sweep

Protocols (--protocol; default: paper, the paper code's path, for every mode). Four flags select
one too: --slow → paper (fixed-feature head behind the frozen network), --views K>1 →
paper-kview-approx with K views, --views 1 or --no-augment → centre-crop-sgd, --head-solver
lbfgs → centre-crop-lbfgs. See docs/transfer.md.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..console import ArgumentParser, command
from ..launch import add_launch_arguments
from ..naming import arg_type, int_arg, parse_device, parse_number
from .core import MODES
from ..data.transfer_sets import TRANSFER_DATASETS
from .hparams import DEFAULT_VIEWS, HEAD_SOLVERS, PROTOCOLS, STUDIES


def _bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")



def _number(what: str, allow_zero: bool = True):
    return arg_type(parse_number, what=what, minimum=0.0, allow_zero=allow_zero)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m robust_zoo.transfer",
        description="Transfer zoo models to the paper's 12 data sets (or any ImageFolder). "
                    "Defaults are the paper's recipe; see docs/transfer.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=list(STUDIES),
                   help="a named grid from the paper (models, data sets, mode, 3 seeds; lrs from "
                        "its table): " + "; ".join(f"{s.name}: {s.description}"
                                                   for s in STUDIES.values())
                        + ". --model/--dataset/--mode/--seeds narrow or replace its lists")
    p.add_argument("--model", nargs="+",
                   help="zoo model name(s), e.g. resnet50_l2_eps3; with --pretrained false an "
                        "architecture name (resnet18) gives random weights")
    p.add_argument("--dataset", nargs="+",
                   help=f"data set name(s): {', '.join(TRANSFER_DATASETS)}")
    p.add_argument("--mode", nargs="+",
                   help=f"fixed (fixed-feature, the default), full, or a ResNet freeze level "
                        f"layer1..layer4 (= 1..4); several modes make a sweep. Canonical: "
                        f"{', '.join(MODES)}")
    p.add_argument("--data-root", help="folder holding the data sets (torchvision's root)")
    p.add_argument("--out", default="runs/transfer", help="output folder (default %(default)s)")
    p.add_argument("--download", action="store_true",
                   help="let torchvision download missing data sets (off by default)")
    p.add_argument("--manifest", help="weights manifest to look model names up in")
    p.add_argument("--pretrained", type=_bool, default=True, metavar="true|false",
                   help="false: random weights (no download), for smoke tests")
    p.add_argument("--arch", help="fail unless every --model is this architecture")
    p.add_argument("--faithful", action="store_true",
                   help="reproduce the paper code's quirks (no ImageNet normalization except "
                        "CIFAR mean/std, BN statistics updating in fixed-feature mode, DTD head "
                        "of 57)")
    _recipe_arguments(p.add_argument_group("recipe (defaults: the paper's)"))
    _protocol_arguments(p.add_argument_group("protocol and fixed-feature fast path"))
    _execution_arguments(p.add_argument_group("execution"))
    add_launch_arguments(p)
    return p


def _recipe_arguments(r) -> None:
    r.add_argument("--lr", type=_number("--lr", allow_zero=False), nargs="+",
                   help="one or several (a grid; each run's folder names its lr); default: the "
                        "paper's table per (data set, arch, mode)")
    r.add_argument("--epochs", type=int_arg("--epochs", 1), default=150)
    r.add_argument("--batch-size", type=int_arg("--batch-size", 1), default=64,
                   help="global batch size")
    r.add_argument("--step-lr", type=int_arg("--step-lr", 1), default=50,
                   help="lr x0.1 every N epochs")
    r.add_argument("--weight-decay", "--wd", type=_number("--weight-decay"), default=5e-4)
    r.add_argument("--momentum", type=_number("--momentum"), default=0.9)
    r.add_argument("--image-size", type=int_arg("--image-size", 1), default=224)
    r.add_argument("--granularity", type=int_arg("--granularity", 1), metavar="PX",
                   help="shrink images to PX (shorter side) before the usual resizing, e.g. 32 "
                        "(the paper's granularity experiment)")
    r.add_argument("--no-augment", action="store_true",
                   help="train on centre crops, no RandomResizedCrop/flip (protocol "
                        "centre-crop-sgd)")
    r.add_argument("--hidden", type=int_arg("--hidden", 1), nargs="*", default=[],
                   help="hidden layer widths in front of the new head")
    r.add_argument("--seeds", "--seed", dest="seeds", type=int_arg("--seeds", 0), nargs="+",
                   metavar="SEED", help="one run per seed (its folder: .../seed<k>); the table "
                                        "and figures show the mean over seeds with min/max "
                                        "error bars (default 0; a --study: 0 1 2)")


def _protocol_arguments(f) -> None:
    f.add_argument("--protocol", choices=PROTOCOLS,
                   help="what training sees: paper = fresh RandomResizedCrop+flip views behind "
                        "the (frozen) network every epoch, the paper code's path; "
                        f"paper-kview-approx = K (--views, default {DEFAULT_VIEWS}) cached "
                        "augmented views per image, one drawn per epoch (fixed-feature; its "
                        "approximation); centre-crop-sgd = the SGD recipe on centre crops; "
                        "centre-crop-lbfgs = L-BFGS linear probe on centre-crop features "
                        "(Kornblith et al. 2019). Default: paper")
    f.add_argument("--slow", action="store_true",
                   help="fixed-feature: train the head behind the frozen network every epoch "
                        "(the same as --protocol paper, the default)")
    f.add_argument("--views", type=int_arg("--views", 1),
                   help="cached path: 1 = centre-crop features (protocol centre-crop-sgd); K > 1 "
                        f"= K augmented views (paper-kview-approx; default {DEFAULT_VIEWS})")
    f.add_argument("--head-solver", choices=HEAD_SOLVERS,
                   help="lbfgs: protocol centre-crop-lbfgs; sgd: the recipe (every other "
                        "protocol)")
    f.add_argument("--cache-dir", help="feature cache (default: $ROBUST_ZOO_CACHE/features)")
    f.add_argument("--no-cache", action="store_true", help="extract features without caching")


def _execution_arguments(x) -> None:
    x.add_argument("--device", type=arg_type(parse_device),
                   help="cpu, cuda, cuda:1 (default: cuda if available)")
    x.add_argument("--workers", type=int_arg("--workers", 0), default=min(8, os.cpu_count() or 1),
                   help="data loader workers per process (default %(default)s)")
    x.add_argument("--resume", action="store_true",
                   help="continue interrupted runs from their last epoch checkpoint")
    x.add_argument("--force", action="store_true", help="redo runs whose result.json exists")
    x.add_argument("--eval-every", type=int_arg("--eval-every", 0), default=0,
                   help="evaluate every N epochs too")
    x.add_argument("--amp", type=_bool, metavar="true|false", help="bf16 autocast (default: CUDA)")
    x.add_argument("--channels-last", type=_bool, metavar="true|false",
                   help="default: on for CUDA")
    x.add_argument("--compile", action="store_true",
                   help="torch.compile the network while it trains (full fine-tuning and the "
                        "fixed-feature paper path; results agree with eager within float "
                        "rounding)")
    x.add_argument("--save-model", type=_bool, metavar="true|false",
                   help="write model.safetensors (default: for modes that train the backbone)")
    x.add_argument("--dry-run", action="store_true",
                   help="print the grid (runs, finished ones in --out, estimated GPU-hours) and "
                        "exit without running or submitting anything")
    x.add_argument("--no-plots", action="store_true")
    x.add_argument("--no-progress", action="store_true")


def _plot_main(argv: list[str]) -> int:
    p = ArgumentParser(prog="python -m robust_zoo.transfer plot",
                       description="Figures from a sweep's results.csv / results.json (the mean "
                                   "over seeds with min/max error bars)")
    p.add_argument("results")
    p.add_argument("--out", help="folder for the PNGs (default: next to the results)")
    a = p.parse_args(argv)
    from .plots import make_plots
    from .study import over_seeds, read_results

    src = Path(a.results)
    rows = over_seeds(read_results(src))
    for path in make_plots(rows, a.out or (src if src.is_dir() else src.parent)):
        print(f"wrote {path}")
    return 0


def _grid(args: argparse.Namespace):
    """The runs the flags name (a --study's lists unless the flags give their own)."""
    from ..errors import UsageError
    from .hparams import get_study
    from .study import plan

    study = get_study(args.study) if args.study else None
    models = args.model or (study.models if study else None)
    datasets = args.dataset or (study.datasets if study else None)
    for flag, value in (("--model", models), ("--dataset", datasets)):
        if not value:
            raise UsageError(f"{flag} is required (or --study NAME, one of "
                             f"{', '.join(STUDIES)})")
    from .core import parse_mode

    modes = list(dict.fromkeys(parse_mode(m) for m in (
        args.mode or (study.modes if study else ["fixed-feature"]))))
    if args.arch:
        for m in models:
            _check_arch(m, args.arch, args.manifest, args.pretrained)
    seeds = list(dict.fromkeys(args.seeds or (study.seeds if study else [0])))
    lrs = list(dict.fromkeys(args.lr)) if args.lr else None
    # a protocol that one of the modes cannot run fails here, before anything is written
    return plan(models, datasets, out=args.out, modes=modes, seeds=seeds, lrs=lrs,
                config=_config(args))


def _main(argv: list[str]) -> int:
    if argv[:1] == ["plot"]:
        return _plot_main(argv[1:])
    args = build_parser().parse_args(argv)
    from ..data.transfer_sets import DatasetNotFoundError
    from ..launch import launch_options

    opts = launch_options(args)
    if opts.launcher == "slurm":          # jobs start elsewhere: every path absolute
        args.out = str(Path(args.out).absolute())
    runs = _grid(args)
    if args.dry_run:
        for line in dry_run(runs, args):
            print(line)
        return 0
    if args.data_root is None:
        raise DatasetNotFoundError("--data-root DIR is required (the folder holding the "
                                   "data sets; add --download to fetch them into it)")
    return _run(runs, args, opts)


def _execution(args: argparse.Namespace, absolute: bool):
    """How the runs execute (paths made absolute for jobs that start elsewhere)."""
    from .study import Execution

    def path(p):
        if not absolute or p in (None, "default"):
            return p
        return str(Path(p).expanduser().absolute())

    cache = None if args.no_cache else (args.cache_dir or "default")
    return Execution(path(args.data_root), path(args.manifest), args.pretrained, path(cache),
                     args.resume or absolute, not args.no_progress, args.workers, args.device,
                     args.save_model)


def _run(runs, args: argparse.Namespace, opts) -> int:
    """The grid here (``--launcher local``) or as a SLURM job array; the exit status (1: some
    run of the array failed)."""
    from ..data.transfer_sets import load_splits
    from .study import check, run_here, submit

    plots = not args.no_plots
    if opts.launcher == "local":
        run_here(runs, _execution(args, False), out=args.out, download=args.download,
                 force=args.force, plots=plots)
        return 0
    how = _execution(args, True)
    if args.download:                 # data sets fetched and checked before any job exists
        for d in dict.fromkeys(r.dataset for r in runs):
            load_splits(d, how.data_root, download=True)
    check(runs, how)
    return submit(runs, how, opts, args.out, force=args.force, plots=plots)


main = command(_main)


def _config(args: argparse.Namespace):
    """The ``TransferConfig`` the flags describe (mode, seed and lr: the defaults; each run of
    the grid sets its own)."""
    from .hparams import TransferConfig

    return TransferConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr_step=args.step_lr,
        weight_decay=args.weight_decay, momentum=args.momentum, image_size=args.image_size,
        granularity=args.granularity, augment=not args.no_augment, hidden=tuple(args.hidden),
        faithful=args.faithful, path="network" if args.slow else "auto",
        views=args.views, head_solver=args.head_solver, eval_every=args.eval_every,
        precision=None if args.amp is None else ("bf16" if args.amp else "fp32"),
        channels_last=args.channels_last, compile=args.compile, protocol=args.protocol)


def _size(dataset: str, data_root) -> "tuple[int, int] | None":
    """(train, test) images of ``dataset``: the real data set's, else counted under
    ``data_root``; None when neither is known."""
    from ..data.transfer_sets import get_spec, load_splits

    spec = get_spec(dataset)
    if spec.sizes:
        return spec.sizes
    try:
        train, test, _ = load_splits(dataset, data_root)
    except Exception:                       # not there: the estimate leaves the runs out
        return None
    return len(train), len(test)


def dry_run(runs, args: argparse.Namespace) -> list[str]:
    """What --dry-run prints: the grid, how much of it OUT holds, the GPU-hours it needs."""
    from .cost import SOURCES, estimate
    from .runner import check_model_name
    from .study import pending

    todo = runs if args.force else pending(runs)
    dims = [("model", {r.model for r in runs}), ("data set", {r.dataset for r in runs}),
            ("mode", {r.config.mode for r in runs}), ("lr", {r.config.lr for r in runs}),
            ("seed", {r.config.seed for r in runs})]
    name = f"study {args.study}" if args.study else "grid"
    lines = [f"{name}: " + " × ".join(f"{len(v)} {k}{'s' * (len(v) != 1)}" for k, v in dims)
             + f" = {len(runs)} runs; {len(runs) - len(todo)} finished in {args.out}, "
               f"{len(todo)} to run",
             "lr: " + ", ".join(sorted(f"{lr:g}" for lr in dims[3][1] if lr is not None)
                                or ["the paper's table per (data set, arch, mode)"])]
    archs = {m: check_model_name(m, manifest=args.manifest, pretrained=args.pretrained)
             for m in dims[0][1]}
    sizes = {d: _size(d, args.data_root) for d in dims[1][1]}
    est = estimate(todo, archs.__getitem__, sizes.__getitem__)
    lines.append(f"estimated GPU time of the {len(todo)} runs to run: {est.total:,.1f} "
                 f"GPU-hours (H100/H200 class)")
    for (mode, arch), n in sorted(est.runs.items()):
        lines.append(f"  {mode:<14} {arch:<18} {n:>6} runs {est.hours[(mode, arch)]:>10,.1f} h")
    if est.unsized:
        unknown = ", ".join(sorted(d for d, s in sizes.items() if s is None))
        lines.append(f"  ({est.unsized} runs not counted: the size of {unknown} is unknown "
                     f"without --data-root)")
    lines.append("estimated from:")
    lines += [f"  - {s}" for s in SOURCES]
    lines.append("  scaled by forward FLOPs per arch and image size; data loading assumed to "
                 "keep up")
    return lines


def _check_arch(model: str, arch: str, manifest, pretrained: bool) -> None:
    from ..models.archs import get_arch
    from .runner import check_model_name

    want = get_arch(arch).name
    have = check_model_name(model, manifest=manifest, pretrained=pretrained)
    if have != want:
        raise ValueError(f"--model {model} is a {have}, but --arch says {want}; drop --arch or "
                         f"pick a {want} model")


if __name__ == "__main__":
    sys.exit(main())
