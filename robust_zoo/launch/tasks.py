"""One unit of work (``Task``) and what runs it inside a job: ``run_task`` (attempts recorded
in the run folder, the completion file checked) and ``Resumable``, the submitit
``Checkpointable`` that requeues a preempted or timed-out job, which then calls the task again."""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable

from ..engine import distributed

ATTEMPTS_FILE = ".attempts"


@dataclasses.dataclass(frozen=True)
class Task:
    """One run: ``fn(*args, **kwargs)`` writes its files only under ``run_dir`` and is finished
    when ``run_dir / done_file`` exists. ``fn`` is a module-level function (it is pickled into
    the job) and resumes from what ``run_dir`` holds when called again after a preemption."""
    key: str
    run_dir: Path
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = dataclasses.field(default_factory=dict)
    done_file: str = "result.json"

    @property
    def done_path(self) -> Path:
        return Path(self.run_dir) / self.done_file

    def is_done(self) -> bool:
        return self.done_path.exists()


def attempts(run_dir: Path) -> list[str]:
    """The job ids that started the run in ``run_dir``, one per attempt, oldest first."""
    try:
        text = (Path(run_dir) / ATTEMPTS_FILE).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [ln.split()[0] for ln in text.splitlines() if ln.strip()]


def run_task(task: Task) -> str:
    """Run ``task`` (here or in a job): record the attempt in its run folder, call it, and check
    that it left its completion file; returns the run folder. Of a job's several processes only
    rank 0 records and checks (the others call the task too)."""
    run_dir = Path(task.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = (f"{job}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job
           else os.environ.get("SLURM_JOB_ID", "local"))
    rank = distributed.launch_rank()
    if rank == 0:
        with open(run_dir / ATTEMPTS_FILE, "a") as f:       # one short line: an atomic append
            f.write(f"{job} {time.time():.0f}\n")
    task.fn(*task.args, **task.kwargs)
    if rank == 0 and not task.is_done():
        raise RuntimeError(f"task {task.key} returned without writing {task.done_path}")
    return str(run_dir)


def _resumable_base():
    try:
        from submitit.helpers import Checkpointable
    except ImportError:                                  # the local launcher needs no submitit
        return object
    return Checkpointable


class Resumable(_resumable_base()):   # type: ignore[misc]
    """What a SLURM job calls: ``run_task`` on its task. On the scheduler's warning signal
    (preemption, time limit) submitit calls ``checkpoint``, and the same call is requeued; the
    task then resumes from its run folder. A run that saves where the signal finds it watches
    for it with ``engine.preemption`` (training and transfer do), which hands the signal on to
    submitit once its checkpoint is written. A job stopped without warning (``scontrol
    requeue``, a node failure) is requeued by SLURM and calls the task again too."""

    def __call__(self, task: Task) -> str:
        return run_task(task)

    def checkpoint(self, task: Task):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(Resumable(), task)
