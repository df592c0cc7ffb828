"""The package's layers, lowest first: the one table that ``scripts/check_layers.py`` enforces
and docs/architecture.md describes (tests/test_architecture.py checks that the page names every
module and layer of it). A module belongs to the first layer with a prefix that matches its
dotted name; it may import from its own layer and the layers below, never from above."""
from __future__ import annotations

LAYERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("base", ("_version", "_lazy", "_layers", "errors", "console", "naming", "fileio", "validate",
              "recipe"),
     "the error family, zoo names and the number/ε parsers, atomic writes and hashing, "
     "validation of everything read from outside, recipes"),
    ("models", ("models",),
     "the architecture registry, RobustModel (normalization inside), heads, small networks"),
    ("formats", ("formats",),
     "weight files: the zoo's safetensors files and upstream robustness checkpoints"),
    ("hub", ("hub",),
     "the manifest, fetching and verifying files, the cache and load step, load/get_entry, "
     "pin, export"),
    ("inputs", ("data", "attacks"),
     "data sets, transforms and sampling; the PGD engine with its threat models and "
     "objectives"),
    ("engine", ("engine",),
     "one training step and epoch, optimizer and schedule, checkpoints, precision, "
     "evaluation over a loader, torchrun plumbing"),
    ("launch", ("launch",),
     "where runs execute: in this process or as SLURM jobs (submitit job arrays, multi-node "
     "jobs, requeue after preemption), the ledger of a submission and its status"),
    ("programs", ("train", "transfer", "evaluate", "representations"),
     "whole runs: training, transfer (and detection backbones), evaluation, representation "
     "tools"),
    ("front", ("cli",), "robust-zoo, its pictures (viz) and the offline quickstart"),
)


def layer_of(module: str) -> int:
    """Index in LAYERS of ``module`` (dotted, without ``robust_zoo.``); -1 when none matches."""
    for i, (_, prefixes, _) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return -1
