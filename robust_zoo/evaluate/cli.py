"""``python -m robust_zoo.evaluate``: the command line of ``evaluate``.

    python -m robust_zoo.evaluate resnet50_l2_eps3 --data /data/imagenet/val --limit 1000
    torchrun --nproc_per_node 4 -m robust_zoo.evaluate resnet50_linf_eps4 --data val/ --json r.json
    python -m robust_zoo.evaluate --all --data val/ --out evals/ --launcher slurm --wait
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..console import ArgumentParser, command
from ..engine import distributed
from ..errors import UsageError
from ..launch.options import add_launch_arguments
from ..naming import arg_type, int_arg, parse_eps, parse_number
from ..recipe import Precision, choices
from .run import DEFAULT_STEPS, evaluate, format_report



def _arg(parse):
    return arg_type(parse)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m robust_zoo.evaluate",
        description="Clean and PGD (and AutoAttack) top-1 of a zoo model on an ImageFolder tree, "
                    "compared with the accuracy its manifest entry claims.")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="model name (robust-zoo list), export folder or hf-hub:org/repo; "
                        "several (or --all) give one run per model and one table")
    p.add_argument("--all", action="store_true", help="every model of the manifest")
    p.add_argument("--out", metavar="DIR",
                   help="several models: OUT/NAME/result.json per model and OUT/results.json "
                        "(required with several models or --launcher slurm)")
    p.add_argument("--data", default=os.environ.get("ROBUST_ZOO_DATA"),
                   help="ImageFolder tree, e.g. ImageNet val/ (default: $ROBUST_ZOO_DATA)")
    p.add_argument("--corruptions", metavar="DIR",
                   help="ImageNet-C folder (<corruption>/<severity>/<class>/<image>): also the "
                        "mean top-1 over its corruption folders, RobustBench's corruptions_acc "
                        "(--limit applies to each folder)")
    p.add_argument("--manifest", help="manifest file or folder (default: the zoo's own)")
    p.add_argument("--norm", choices=("l2", "linf"), help="default: the entry's")
    p.add_argument("--eps", type=_arg(parse_eps),
                   help="in [0, 1] pixel units; fractions like 4/255 "
                   "work (default: the entry's)")
    p.add_argument("--steps", type=int_arg("--steps", 0), default=DEFAULT_STEPS,
                   help="PGD steps (default %(default)s; 0: clean accuracy only)")
    p.add_argument("--step-size", type=_arg(lambda t: parse_number(
        t, what="--step-size", minimum=0.0, allow_zero=False)), help="default 2.5·eps/steps")
    p.add_argument("--restarts", type=int_arg("--restarts", 1), default=1,
                   help="PGD runs; an example is robust only if every run fails")
    p.add_argument("--random-start", action="store_true", help="random start for the first run "
                   "too (later restarts always start at random)")
    p.add_argument("--no-keep-best", dest="keep_best", action="store_false",
                   help="use the last PGD iterate instead of the highest-loss one")
    p.add_argument("--autoattack", choices=("standard", "fast", "auto", "off", "on"),
                   default="auto",
                   help="AutoAttack (pyautoattack, pip install 'robust-zoo[eval]'): 'standard' "
                        "(APGD-CE, APGD-T, FAB-T, Square; 'on' is the same), 'fast' (APGD-CE + "
                        "APGD-T), 'auto' (standard when the package is installed, without Square "
                        "where Square cannot run on the images, noted; default), 'off'")
    p.add_argument("--limit", type=int_arg("--limit", 1),
                   help="evaluate a fixed random subset of N images (seed 0)")
    p.add_argument("--batch-size", type=int_arg("--batch-size", 1), default=64)
    p.add_argument("--workers", type=int_arg("--workers", 0),
                   help="DataLoader workers (default min(8, #cpus))")
    p.add_argument("--device",
                   help="default: cuda (LOCAL_RANK under torchrun) if available, else cpu")
    p.add_argument("--tolerance", type=_arg(lambda t: parse_number(t, what="--tolerance",
                                                                  minimum=0.0)), default=1.0,
                   help="allowed |measured - claimed| in points (widened to a binomial 95%% "
                        "interval when n is small)")
    p.add_argument("--precision", choices=choices(Precision), default="fp32",
                   help="bf16: autocast (faster on GPUs; manifest claims are fp32 numbers, and "
                        "the result records the precision). Default %(default)s")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model for the clean and PGD passes")
    p.add_argument("--json", dest="json_out", help="write the result here")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    add_launch_arguments(p)
    return p


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.data:
        raise UsageError("pass --data DIR (an ImageFolder tree such as ImageNet val/) or set "
                         "ROBUST_ZOO_DATA")
    names = _names(args)
    kwargs = dict(norm=args.norm, eps=args.eps, steps=args.steps, step_size=args.step_size,
                  restarts=args.restarts, random_start=args.random_start,
                  keep_best=args.keep_best, autoattack=args.autoattack, limit=args.limit,
                  batch_size=args.batch_size, workers=args.workers, device=args.device,
                  manifest=args.manifest, tolerance=args.tolerance, precision=args.precision,
                  compile=args.compile, progress=args.progress,
                  corruptions=args.corruptions)
    if len(names) > 1 or args.all or args.launcher == "slurm" or args.out:
        return _many(names, args, kwargs)
    try:
        result = evaluate(names[0], args.data, **kwargs)
    finally:
        distributed.shutdown()
    if result["world_size"] == 1 or distributed.launch_rank() == 0:
        print(format_report(result))
        if args.json_out:
            from ..fileio import atomic_write_text

            atomic_write_text(args.json_out, json.dumps(result, indent=2) + "\n")
    return 0


def _names(args) -> list[str]:
    if args.all == bool(args.names):
        raise UsageError("name one or more models (robust-zoo list shows them), or pass --all "
                         "(not both)")
    if not args.all:
        return list(dict.fromkeys(args.names))
    from ..hub.manifest import load_manifest

    return load_manifest(args.manifest).names()


def _many(names: list[str], args, kwargs: dict) -> int:
    """One run per model (here, or a SLURM job array) and one table."""
    from pathlib import Path

    from ..launch import launch_options
    from .array import evaluate_many

    if not args.out:
        raise UsageError("several models (or --all, or --launcher slurm) write one result per "
                         "model: pass --out DIR")
    if kwargs["manifest"] and Path(kwargs["manifest"]).exists():
        kwargs["manifest"] = str(Path(kwargs["manifest"]).absolute())
    if args.launcher == "slurm":
        kwargs["progress"] = False
    return evaluate_many(names, args.data, args.out, kwargs, launch_options(args))


main = command(_main)


if __name__ == "__main__":
    sys.exit(main())
