"""Training runs as jobs of the launch layer: the function a job calls (``run_job``: every rank
of a multi-node job calls it, and a requeued job calls it again and resumes), the task that
names it (``training_task``), and ``python -m robust_zoo.train --launcher slurm``
(``submit``: one DDP job of ``--nodes`` × ``--tasks-per-node`` processes)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, Sequence

from ..recipe import Recipe
from . import outputs
from .options import UNSET, RunOptions

__all__ = ["run_job", "training_task", "submit", "job_options", "program_lines"]


def job_options(options: RunOptions) -> dict[str, Any]:
    """The fields of ``options`` that were given, as plain values (a job receives them pickled;
    a field left out stays out, so the job's resume takes the run's own value)."""
    kept = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    kept = {k: v for k, v in kept.items() if v is not UNSET}
    kept["out"] = str(Path(options.out).expanduser().absolute())
    if kept.get("data") is not None:
        kept["data"] = str(Path(kept["data"]).expanduser().absolute())
    kept["resume"] = False
    return kept


def run_job(recipe: dict[str, Any], options: dict[str, Any]) -> None:
    """One training run inside a job. A run folder that holds a checkpoint is resumed (the job
    was requeued after a preemption, a time limit or ``scontrol requeue``); one that holds the
    finished model is left alone."""
    from ..engine import checkpoint as ckpt
    from .run import train

    opts = RunOptions(**options)
    run_dir = Path(opts.out)
    if (run_dir / outputs.WEIGHTS).is_file():
        return
    opts = dataclasses.replace(opts, resume=ckpt.exists(run_dir))
    train(Recipe.from_dict(recipe), opts)


def training_task(key: str, recipe: Recipe, options: RunOptions):
    """The launch layer's ``Task`` for one training run, finished when its weights exist."""
    from ..launch import Task

    kw = job_options(options)
    return Task(key=key, run_dir=Path(kw["out"]), fn=run_job, args=(recipe.to_dict(), kw),
                done_file=outputs.WEIGHTS)


def program_lines(log: str) -> list[str]:
    """The lines the training program printed in a job's log (submitit's own and srun's
    lines left out)."""
    noise = ("submitit ", "srun: ", "slurmstepd")
    return [ln for ln in log.splitlines() if ln.strip() and not ln.startswith(noise)]


def submit(recipe: Recipe, options: RunOptions, launch_opts, argv: Sequence[str]) -> int:
    """``--launcher slurm``: the run as one job (``kind="ddp"``), its ledger in the run folder's
    ``.jobs``. Prints the job id and log; with ``--wait`` waits, then prints what the run
    printed, and fails naming the log when the job failed."""
    from ..engine import checkpoint as ckpt
    from ..launch import exit_status, launch

    run_dir = Path(options.out)
    if not options.resume and (ckpt.exists(run_dir) or (run_dir / outputs.WEIGHTS).is_file()):
        raise ckpt.ResumeError(f"{run_dir} already holds a run: pass --resume to continue it "
                               "(a finished one is skipped), or choose another --out")
    options = dataclasses.replace(options, argv=list(argv), progress=False)
    task = training_task(run_dir.name, recipe, options)    # the ledger is the run folder's own
    sub = launch([task], launch_opts, task.run_dir, kind="ddp", name=f"train-{run_dir.name}")
    for line in sub.describe():
        print(line)
    if not launch_opts.wait:
        return 0
    outcomes = sub.wait(progress_bar=sys.stderr.isatty())   # once the job has left the queue
    for o in outcomes:
        log = Path(o.log) if o.log else None
        if log is not None and log.is_file():
            for line in program_lines(log.read_text(errors="replace")):
                print(line, file=sys.stderr)
    return exit_status(outcomes)
