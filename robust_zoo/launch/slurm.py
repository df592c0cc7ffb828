"""The SLURM back end: a submitit executor from ``LaunchOptions``, and sbatch's refusals as one
line a person can act on."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import UsageError
from .options import LaunchOptions

NO_SBATCH = ("--launcher slurm: sbatch is not on PATH; install the SLURM client (Debian/Ubuntu: "
             "apt-get install slurm-client; on a cluster: module load slurm), or use "
             "--launcher local")
NO_SUBMITIT = ("--launcher slurm needs submitit: pip install 'robust-zoo[cluster]' "
               "(or pip install submitit==1.5.4), or use --launcher local")


def require_slurm() -> None:
    """``UsageError`` unless sbatch is on PATH and submitit imports."""
    if shutil.which("sbatch") is None:
        raise UsageError(NO_SBATCH)
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError(NO_SUBMITIT) from None


def parameters(opts: LaunchOptions, kind: str, name: str) -> dict:
    """submitit ``SlurmExecutor`` parameters for one job of ``kind`` (array: one process per
    run on one node; ddp: ``nodes`` × ``tasks`` processes)."""
    if kind == "array":
        if opts.nodes > 1:
            raise UsageError(f"--nodes {opts.nodes}: each run of this program is one process; "
                             "--nodes applies to training (python -m robust_zoo.train)")
        if opts.tasks_per_node not in (None, 1):
            raise UsageError(f"--tasks-per-node {opts.tasks_per_node}: each run of this program "
                             "is one process; use --tasks-per-node 1 or leave it out")
    p: dict = {"job_name": name, "time": opts.time_min, "nodes": opts.nodes if kind == "ddp" else 1,
               "ntasks_per_node": opts.tasks if kind == "ddp" else 1,
               "array_parallelism": opts.array_parallelism}
    optional = {"partition": opts.partition, "cpus_per_task": opts.cpus_per_task,
                "gpus_per_node": opts.gpus_per_node or None, "account": opts.account,
                "qos": opts.qos, "constraint": opts.constraint}
    p.update({k: v for k, v in optional.items() if v is not None})
    if opts.mem_gb is not None:
        mem = opts.mem_gb
        p["mem"] = f"{int(mem)}GB" if mem == int(mem) else f"{max(1, int(mem * 1024))}MB"
    if opts.slurm_extra:
        p["additional_parameters"] = {k: (v if v != "" else True) for k, v in opts.slurm_extra}
    return p


def executor(folder: Path, opts: LaunchOptions, kind: str, name: str):
    import submitit

    ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=opts.max_retries)
    ex.update_parameters(**parameters(opts, kind, name))
    return ex


def refusal(e: BaseException) -> UsageError:
    """sbatch's own reason for refusing a job (its lines ``sbatch: error:…``) as a
    ``UsageError``."""
    reasons = [r.strip() for r in re.findall(r"sbatch: error:\s*(.+)", str(e))]
    final = [r.split(":", 1)[1].strip() for r in reasons
             if r.startswith("Batch job submission failed:")]
    reason = "; ".join(final + [r for r in reasons if not r.startswith("Batch job submission")])
    if not reason:
        reason = (str(e).strip().splitlines() or ["no reason given"])[-1]
    return UsageError(f"sbatch refused the job: {reason} (check --partition, --account, --qos, "
                      "--constraint and --slurm-extra; sinfo lists the partitions)")
