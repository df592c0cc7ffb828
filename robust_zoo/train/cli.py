"""``python -m robust_zoo.train``: command line → Recipe + RunOptions → ``train``.

Every Recipe field is a flag (``--attack-steps``, ``--batch-size``, ...), generated from the
dataclass so the two never drift. Precedence: explicit flags > ``--from-manifest`` recipe >
data-set defaults (CIFAR: 32 px, ...) > Recipe defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from .. import naming
from ..console import ArgumentParser, command
from ..recipe import META_FIELDS, Decoder, Recipe, choices, field_choices
from ..launch.options import add_launch_arguments
from .options import RUN_DEFAULTS

HELP = {
    "arch": "architecture (robust_zoo.archs.list_archs())",
    "norm": "threat model: l2 or linf",
    "eps": "attack radius in [0, 1] pixel units; fractions allowed (4/255). 0: standard training",
    "dataset": "imagenet | imagefolder | cifar10 | cifar100 | digits[:0-4]",
    "num_classes": "classes of the head (default: from the data)",
    "input_size": "training/eval crop in pixels (eval resizes to size·256/224 first)",
    "epochs": "training epochs",
    "batch_size": "GLOBAL batch size, split evenly over torchrun processes",
    "optimizer": "optimizer (sgd)",
    "lr": "initial learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay (all parameters, as robustness)",
    "lr_schedule": "step (×lr_gamma every lr_step epochs) | cosine | constant",
    "lr_step": "epochs between LR drops (step schedule)",
    "lr_gamma": "LR drop factor (step schedule)",
    "attack_steps": "PGD steps of the training attack",
    "attack_step_size": "PGD step size in pixel units (default 2.5·eps/steps); fractions allowed",
    "random_start": "start PGD at a random point of the ε-ball",
    "keep_best": "keep the highest-loss PGD iterate (robustness' use_best; --use-best is the "
                 "same flag)",
    "bn_eval_during_attack": "run the attack with BatchNorm in eval mode",
    "augmentation": "robustness-imagenet | robustness-cifar | flip-crop | none",
    "label_smoothing": "label smoothing of the training loss",
    "precision": "fp32 | bf16 (autocast). Default: the recipe's; on CUDA bf16 for a recipe "
                 "given by flags (--from-manifest keeps the recorded precision, fp32 where "
                 "unknown)",
    "seed": "seed of initialization, data order, augmentation and attack starts",
}
# Flags whose values are a fixed set: read from the recipe's Literal types.
CHOICES = {f: field_choices(Recipe, f) for f in Recipe.field_names() if field_choices(Recipe, f)}
ALIASES = {"keep_best": ("--use-best",)}


# argparse types (the parsers themselves are robust_zoo.naming's)
parse_number = naming.arg_type(naming.parse_number)
eps_type = naming.arg_type(naming.parse_eps)
parse_int = naming.arg_type(naming.parse_int)


def recipe_fields() -> list[dataclasses.Field]:
    by_name = {f.name: f for f in dataclasses.fields(Recipe)}
    return [by_name[n] for n in Recipe.field_names() if n not in META_FIELDS]


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()                     # type: ignore[misc]
    return None


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "recipe (every Recipe field; overrides --from-manifest)")
    for f in recipe_fields():
        flags = ["--" + f.name.replace("_", "-"), *ALIASES.get(f.name, ())]
        kind = str(f.type)
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": HELP.get(f.name, f.name)}
        if "bool" in kind:
            kw["action"] = argparse.BooleanOptionalAction
        elif "int" in kind:
            kw.update(type=naming.arg_type(naming.parse_int, what=flags[0]), metavar="N")
        elif "float" in kind:
            parse = naming.parse_eps if f.name in ("eps", "attack_step_size") else \
                naming.parse_number
            kw.update(type=naming.arg_type(parse, what=flags[0]), metavar="X")
        else:
            kw.update(type=str, metavar="NAME")
            if f.name in CHOICES:
                kw.update(type=str.lower, choices=CHOICES[f.name], metavar=None)
        group.add_argument(*flags, **kw)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m robust_zoo.train",
        description="Train a (robust) classifier with the robustness recipe: PGD adversarial "
                    "training, checkpoints, resume, torchrun DDP. Ends with model.safetensors and "
                    "a weights_manifest.json entry that robust_zoo.load reads.",
        epilog="examples:\n"
               "  python -m robust_zoo.train --from-manifest resnet50_l2_eps3 "
               "--data /data/imagenet --out runs/r50_l2_eps3\n"
               "  torchrun --nproc_per_node 8 -m robust_zoo.train --arch resnet18 --norm linf "
               "--eps 4/255 --data /data/imagenet --out runs/r18_linf4\n"
               "  python -m robust_zoo.train --resume --out runs/r50_l2_eps3\n"
               "  python -m robust_zoo.train --from-manifest resnet50_l2_eps3 --data "
               "/data/imagenet --out runs/r50 --launcher slurm --nodes 2 --gpus-per-node 8",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from-manifest", metavar="NAME",
                   help="start from the recorded recipe of this zoo entry")
    p.add_argument("--manifest", metavar="PATH",
                   help="manifest to read --from-manifest from (default: the zoo's)")
    p.add_argument("--data", metavar="DIR",
                   help="data root: ImageFolder tree with train/ and val/, or the CIFAR root")
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10/100 into --data if missing (never done otherwise)")
    p.add_argument("--out", metavar="DIR", required=True, help="run folder")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint.pt")
    p.add_argument("--name", help="manifest name (default: {arch}_{norm}_eps{ε})")
    p.add_argument("--device", type=naming.arg_type(naming.parse_device),
                   help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--workers", type=parse_int, metavar="N",
                   help="data-loading processes per rank (default: 0 for in-memory data, "
                        "else min(8, CPUs))")
    p.add_argument("--decoder", choices=choices(Decoder), default="pil",
                   help="ImageFolder training images: pil (torchvision ImageFolder + PIL, "
                        "default), tensor (torchvision.io decode, uint8 crops, batched colour "
                        "augmentation; the same random draws), nvjpeg (GPU decode, CUDA only)")
    p.add_argument("--ckpt-every-steps", type=parse_int, default=0, metavar="N",
                   help="also checkpoint every N optimizer steps (always at epoch ends)")
    p.add_argument("--log-every", type=parse_int, default=50, metavar="N",
                   help="steps between metrics.jsonl records / progress updates")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=False,
                   help="deterministic kernels only: a resumed run then ends bit-identical")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model: the attack (input-only backward) and the "
                        "update run compiled; for GPUs (see benchmarks/README.md)")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=False,
                   help="SyncBatchNorm across GPUs (default: per-GPU BN statistics, as "
                        "robustness' DataParallel)")
    p.add_argument("--eval-every", type=parse_int, default=1, metavar="N",
                   help="validate every N epochs (0: only the final evaluation)")
    p.add_argument("--eval-limit", type=parse_int, metavar="N",
                   help="validate on a fixed random subset of N images")
    p.add_argument("--final-eval-steps", type=parse_int, default=20, metavar="N",
                   help="PGD steps of the final evaluation recorded in the manifest")
    p.add_argument("--final-eval-norm", choices=("l2", "linf"),
                   help="norm of the final evaluation (default: the recipe's)")
    p.add_argument("--final-eval-eps", type=eps_type, metavar="X",
                   help="ε of the final evaluation (default: the recipe's)")
    p.add_argument("--final-eval-limit", type=parse_int, metavar="N",
                   help="final evaluation on a fixed random subset of N images")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--print-recipe", action="store_true",
                   help="print the resolved recipe as JSON and exit")
    add_recipe_arguments(p)
    add_launch_arguments(p)
    return p


def explicit_recipe_values(args: argparse.Namespace) -> dict[str, Any]:
    return {f.name: getattr(args, f.name) for f in recipe_fields() if hasattr(args, f.name)}


def resolve_recipe(args: argparse.Namespace, *, cuda: bool = False) -> tuple[Recipe, list[str]]:
    """The run's Recipe from the command line, and the notes to print about where values
    came from (defaults filled in for unknown fields, unconfirmed fields, device choices)."""
    explicit = explicit_recipe_values(args)
    notes: list[str] = []
    if args.resume and not args.from_manifest and "arch" not in explicit:
        saved = _saved_recipe(Path(args.out))
        names = [f.name for f in recipe_fields()]
        values = {**{k: v for k, v in saved.to_dict().items() if k in names}, **explicit}
        return _make(values, saved.source), notes
    if args.from_manifest:
        values, source = _manifest_recipe(args, explicit, notes)
    else:
        values, source = _new_recipe(args, explicit), "robust_zoo.train"
    if (cuda and not args.from_manifest and "precision" not in explicit
            and values.get("precision") in (None, "fp32")):
        values["precision"] = "bf16"
        notes.append("CUDA: bf16 autocast (pass --precision fp32 to train in fp32)")
    return _make(values, source), notes


def _manifest_recipe(args: argparse.Namespace, explicit: dict[str, Any], notes: list[str]
                     ) -> tuple[dict[str, Any], str]:
    """--from-manifest: the entry's recorded recipe under the explicit flags, Recipe defaults
    for what it does not record; the notes say which values came from where."""
    from ..hub.manifest import load_manifest

    manifest = load_manifest(args.manifest)
    entry = manifest.get(args.from_manifest)
    if not entry.recipe:
        raise ValueError(f"Manifest entry {entry.name!r} records no recipe; give the recipe "
                         "with --arch --norm --eps ... instead")
    rec = dict(entry.recipe)
    unknown, unconfirmed = list(rec.get("unknown") or []), list(rec.get("unconfirmed") or [])
    values, used = {}, []
    for f in recipe_fields():
        v = rec.get(f.name)
        if f.name in explicit:
            continue
        if v is None:
            v = field_default(f)
            hint = " (2.5·eps/steps)" if f.name == "attack_step_size" and v is None else ""
            used.append(f"{f.name}={v!r}{hint}")
        values[f.name] = v
    src = rec.get("source")
    if isinstance(src, dict):
        nosrc = sorted(k for k, v in src.items() if str(v).startswith("no source"))
        src = "per-field sources in the entry" + (
            f"; no source for {', '.join(nosrc)}" if nosrc else "")
    notes.append(f"Recipe of {entry.name} from {manifest.path or 'the zoo manifest'}"
                 + (f" (source: {src})" if src else ""))
    if unknown:
        notes.append(f"Not documented upstream (unknown): {', '.join(unknown)}")
    if used:
        notes.append(f"Recipe defaults used for missing values: {', '.join(used)}")
    if unconfirmed:
        shown = [f"{k}={values.get(k, explicit.get(k))!r}" for k in unconfirmed]
        notes.append(f"Unconfirmed upstream values (secondary sources): {', '.join(shown)}")
    values.update(explicit)
    overridden = sorted(set(explicit) & {f.name for f in recipe_fields()})
    if overridden:
        notes.append(f"Overridden on the command line: {', '.join(overridden)}")
    source = (f"robust_zoo.train --from-manifest {entry.name}"
              + (f"; Recipe defaults used for {', '.join(u.split('=')[0] for u in used)}"
                 if used else "")
              + (f"; upstream-unconfirmed: {', '.join(unconfirmed)}" if unconfirmed else "")
              + (f"; overridden: {', '.join(overridden)}" if overridden else ""))
    return values, source


def _new_recipe(args: argparse.Namespace, explicit: dict[str, Any]) -> dict[str, Any]:
    """A recipe given by flags: the data set's defaults (CIFAR: 32 px, ...) under them."""
    from ..data import DATASET_DEFAULTS, dataset_kind, parse_digit_classes

    if "arch" not in explicit:
        raise ValueError("Give --arch (and --norm/--eps/...) for a new model, or "
                         "--from-manifest NAME to reproduce a zoo entry's recipe")
    values = {}
    kind = dataset_kind(explicit.get("dataset", "imagenet"))
    for k, v in DATASET_DEFAULTS.get(kind, {}).items():
        if k not in explicit:
            values[k] = v
    if kind == "digits" and "num_classes" not in explicit:
        values["num_classes"] = len(parse_digit_classes(explicit["dataset"]))
    data = getattr(args, "data", None)        # absent when left out (main)
    if kind == "imagefolder" and "num_classes" not in explicit and data:
        train_dir = Path(data).expanduser() / "train"
        if train_dir.is_dir():
            values["num_classes"] = sum(1 for p in train_dir.iterdir() if p.is_dir()) or 1000
    values.update(explicit)
    return values


def _make(values: dict[str, Any], source: str | dict | None) -> Recipe:
    return Recipe(**values, source=source)


def _saved_recipe(run_dir: Path) -> Recipe:
    from ..engine import checkpoint

    path = run_dir / "recipe.json"
    if checkpoint.exists(run_dir):
        return Recipe.from_dict(checkpoint.load(run_dir, kind="train")[0]["recipe"])
    if path.is_file():
        raise checkpoint.ResumeError(f"{run_dir} has a recipe.json but no checkpoint.pt: the run "
                                     "never finished a checkpoint; start it again without "
                                     "--resume")
    raise checkpoint.ResumeError(f"No run to resume in {run_dir} (no checkpoint.pt); start it "
                                 "without --resume")


def _main(argv: list[str]) -> int:
    parser = build_parser()
    for action in parser._actions:   # left out stays out: --resume takes the run's own
        if action.dest in RUN_DEFAULTS:
            action.default = argparse.SUPPRESS
    args = parser.parse_args(argv)
    import torch

    from .run import RunOptions, train

    slurm = args.launcher == "slurm"
    here = "cuda" if torch.cuda.is_available() or (slurm and args.gpus_per_node) else "cpu"
    cuda = (args.device or here).startswith("cuda")
    recipe, notes = resolve_recipe(args, cuda=cuda)
    if args.print_recipe:
        for n in notes:
            print(n, file=sys.stderr)
        print(json.dumps(recipe.to_dict(), indent=2))
        return 0
    options = RunOptions(
        out=args.out, download=args.download, resume=args.resume, device=args.device,
        workers=args.workers, compile=args.compile, progress=not args.no_progress,
        argv=["python", "-m", "robust_zoo.train", *argv], notes=notes,
        **{k: getattr(args, k) for k in RUN_DEFAULTS if hasattr(args, k)})
    if slurm:
        from ..launch import launch_options
        from .jobs import submit

        return submit(recipe, options, launch_options(args), options.argv)
    train(recipe, options)
    return 0


main = command(_main)
