"""The launcher flags every program shares (``--launcher {local,slurm}`` and the SLURM resources)
and ``LaunchOptions``, the checked values they give."""
from __future__ import annotations

import argparse
import dataclasses
import re
from typing import Any

from ..errors import UsageError
from ..naming import arg_type, int_arg, parse_number

LAUNCHERS = ("local", "slurm")
DEFAULT_TIME_MIN = 24 * 60


@dataclasses.dataclass(frozen=True)
class LaunchOptions:
    """Where and with what a program's runs execute. ``local`` runs them in this process, one
    after another; ``slurm`` submits them with submitit (see ``robust_zoo.launch.launch``)."""
    launcher: str = "local"
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None        # None: one per GPU, else 1
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time_min: int = DEFAULT_TIME_MIN
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = 256
    max_retries: int = 3
    slurm_extra: tuple[tuple[str, str], ...] = ()
    wait: bool = False

    @property
    def tasks(self) -> int:
        """SLURM tasks per node: ``tasks_per_node`` when given, else one per GPU, else 1."""
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return self.gpus_per_node if self.gpus_per_node > 0 else 1


def parse_time(text: str, what: str = "--time") -> int:
    """A SLURM time limit in whole minutes from ``MINUTES`` or ``HH:MM:SS`` (``D-HH:MM:SS`` too),
    at least one minute; ``UsageError`` naming ``what`` otherwise."""
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", s)
    if m:
        d, h, mi, sec = (int(g or 0) for g in m.groups())
        if mi >= 60 or sec >= 60:
            raise UsageError(f"{what} {s!r}: minutes and seconds must be < 60 (HH:MM:SS)")
        minutes = d * 24 * 60 + h * 60 + mi + (1 if sec else 0)
    elif re.fullmatch(r"\d+", s):
        minutes = int(s)
    else:
        raise UsageError(f"{what} must be minutes (e.g. 90) or HH:MM:SS (e.g. 01:30:00), "
                         f"got {s!r}")
    if minutes < 1:
        raise UsageError(f"{what} must be at least 1 minute, got {s!r}")
    return minutes


def parse_extra(text: str, what: str = "--slurm-extra") -> tuple[str, str]:
    """``KEY=VALUE`` for sbatch (``--slurm-extra mail-type=END``): the pair, the key written as
    sbatch's long option without its dashes; ``KEY=`` is a flag without a value
    (``exclusive=`` gives ``--exclusive``)."""
    key, sep, value = str(text).partition("=")
    key = key.strip().lstrip("-")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
        raise UsageError(f"{what} must be KEY=VALUE with KEY an sbatch option "
                         f"(e.g. {what} exclusive=user), got {text!r}")
    return key.replace("_", "-"), value.strip()


def add_launch_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the launcher flags (their own argument group) to ``parser``; ``launch_options``
    reads them back."""
    g = parser.add_argument_group("launcher", "where the runs execute: here (local) or as "
                                  "SLURM jobs (slurm, through submitit); see docs/cluster.md")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help="local: in this process (default); slurm: submit SLURM jobs")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--nodes", type=int_arg("--nodes", 1), default=1,
                   help="nodes per training job (default 1)")
    g.add_argument("--gpus-per-node", type=int_arg("--gpus-per-node", 0), default=0)
    g.add_argument("--tasks-per-node", type=int_arg("--tasks-per-node", 1), default=None,
                   help="processes per node (default: one per GPU, else 1)")
    g.add_argument("--cpus-per-task", type=int_arg("--cpus-per-task", 1), default=None)
    g.add_argument("--mem-gb", type=arg_type(parse_number, what="--mem-gb", minimum=0.0,
                                                allow_zero=False), default=None)
    g.add_argument("--time", type=arg_type(parse_time, what="--time"), default=DEFAULT_TIME_MIN,
                   metavar="MIN|HH:MM:SS",
                   help=f"time limit per job (default {DEFAULT_TIME_MIN} minutes); a job that "
                        "reaches it checkpoints and is requeued")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--constraint")
    g.add_argument("--array-parallelism", type=int_arg("--array-parallelism", 1), default=256,
                   help="at most this many array tasks run at once (default 256)")
    g.add_argument("--max-retries", type=int_arg("--max-retries", 0), default=3,
                   help="requeues after a time limit before a job counts as failed (default 3; "
                        "preemptions always requeue)")
    g.add_argument("--slurm-extra", type=arg_type(parse_extra, what="--slurm-extra"),
                   action="append", default=[], metavar="KEY=VALUE",
                   help="more sbatch options (repeatable)")
    g.add_argument("--wait", action="store_true",
                   help="block until every job has ended, then print what a local run prints")
    return parser


def launch_options(args: argparse.Namespace | Any) -> LaunchOptions:
    """``LaunchOptions`` from parsed ``add_launch_arguments`` flags."""
    return LaunchOptions(
        launcher=args.launcher, partition=args.partition, nodes=args.nodes,
        gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
        cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb, time_min=args.time,
        account=args.account, qos=args.qos, constraint=args.constraint,
        array_parallelism=args.array_parallelism, max_retries=args.max_retries,
        slurm_extra=tuple(args.slurm_extra or ()), wait=bool(args.wait))
