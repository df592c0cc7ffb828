"""torchrun / DDP plumbing shared by training, evaluation and transfer: who am I, which device,
and the few collectives they need.

Launched by ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), a program joins the process
group (NCCL on CUDA, gloo on CPU); launched plainly it is a world of one and no group exists.
Launched as the tasks of one ``srun`` step (a SLURM job, submitit's included) without torchrun,
the same variables are derived from SLURM's (``slurm_environment``) and set first.
A group that was already there (the caller's own DDP program) is used and left alone.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False     # setup() created the process group, so cleanup() ends it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                      "MASTER_PORT")
PORT_RANGE = (20000, 60000)


def slurm_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """torchrun's variables for a task of a multi-task ``srun`` step, from SLURM's: rank
    ``SLURM_PROCID``, world ``SLURM_STEP_NUM_TASKS`` (set inside a step only, so a batch script
    that runs a program plainly stays a world of one), local rank ``SLURM_LOCALID``, the
    rendezvous on the first host of ``SLURM_JOB_NODELIST`` at a port derived from the job id
    (every task derives the same one, and a requeued job gets it again). Empty when torchrun's
    ``RANK``/``WORLD_SIZE`` are set or the step has one task."""
    env = os.environ if env is None else env
    if "RANK" in env or "WORLD_SIZE" in env:
        return {}
    tasks = int(env.get("SLURM_STEP_NUM_TASKS", "1") or 1)
    if tasks <= 1 or "SLURM_PROCID" not in env:
        return {}
    nodes = int(env.get("SLURM_STEP_NUM_NODES", env.get("SLURM_JOB_NUM_NODES", "1")) or 1)
    job = int(env.get("SLURM_JOB_ID", "0") or 0)
    lo, hi = PORT_RANGE
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": str(tasks),
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": str(max(1, tasks // max(1, nodes))),
            "MASTER_ADDR": env.get("MASTER_ADDR") or node_address(first_host(
                env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", ""))),
            "MASTER_PORT": env.get("MASTER_PORT") or str(lo + job % (hi - lo))}


def launch_rank(env: dict[str, str] | None = None) -> int:
    """This process's rank as its launcher gave it, read before (or without) any process group:
    torchrun's ``RANK``, else that of a task of a multi-task ``srun`` step
    (``slurm_environment``), else 0."""
    env = os.environ if env is None else env
    return int(env.get("RANK") or slurm_environment(env).get("RANK", "0"))


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``node[03-05,7],gpu1`` -> ``node03``): what
    ``scontrol show hostnames`` prints first, read without it where it is not installed."""
    if not nodelist:
        return "127.0.0.1"
    scontrol = shutil.which("scontrol")
    if scontrol:
        try:
            out = subprocess.run([scontrol, "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30)
            if out.returncode == 0 and out.stdout.split():
                return out.stdout.split()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    m = re.match(r"([^,\[]*)(?:\[([^,\]-]*))?", nodelist)
    return m.group(1) + (m.group(2) or "")


def node_address(node: str) -> str:
    """An address of SLURM node ``node``: the name itself where it resolves, else the
    ``NodeAddr`` that ``scontrol show node`` reports (node names need not be host names)."""
    try:
        socket.getaddrinfo(node, None)
        return node
    except OSError:
        pass
    try:
        out = subprocess.run(["scontrol", "show", "node", node], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return node
    m = re.search(r"\bNodeAddr=(\S+)", out)
    return m.group(1) if m else node


def setup(device: str | None = None) -> Dist:
    """Read the torchrun environment (or SLURM's, ``slurm_environment``), pick this rank's
    device, join the process group."""
    for key, value in slurm_environment().items():
        os.environ.setdefault(key, value)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = launch_rank()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but CUDA is not available")
        dev = torch.device("cuda", local if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        _import_group_pinning_modules()
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                rank=rank, world_size=world)
    return Dist(rank, world, local, dev, owns)


def _import_group_pinning_modules() -> None:
    """Import, before the group exists, the torch modules that capture it at import time.

    ``torch.distributed.nn.functional`` binds ``group.WORLD`` as a default argument. Imported
    after ``init_process_group`` (``import torchvision`` pulls it in through ``torch._dynamo``),
    it keeps the default group alive after ``destroy_process_group``; gloo's worker threads then
    outlive the interpreter and abort the process at exit ("terminate called without an active
    exception") once in a while. Imported first, it binds None, meaning "the default group".
    """
    import torch.distributed.nn  # noqa: F401


def cleanup(d: Dist) -> None:
    """End the process group if ``setup`` created it."""
    if d.owns_group:
        shutdown()


def shutdown() -> None:
    """End the process group, whoever created it (a command-line program's last step)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        if d.device.type == "cuda":
            dist.barrier(device_ids=[d.device.index])
        else:
            dist.barrier()


def all_reduce_sum(d: Dist, values: list[float]) -> list[float]:
    """Sum a list of numbers over ranks (float64, so counts stay exact)."""
    if not d.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def all_gather(d: Dist, obj: Any) -> list[Any]:
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast(d: Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
