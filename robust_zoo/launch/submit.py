"""``launch``: run a program's tasks here (``local``) or submit them to SLURM through submitit
(``slurm``: one job array, or one multi-node job per task for ``kind="ddp"``), skipping finished
runs and runs still queued; ``Submission`` describes what went where and waits for it."""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence

from ..console import progress, report_error
from ..errors import RobustZooError, UsageError
from . import jobs
from .jobs import TaskOutcome
from .options import LaunchOptions
from .tasks import Resumable, Task, run_task

KINDS = ("array", "ddp")


class JobsFailed(RobustZooError, RuntimeError):
    """Some runs of a submission ended without their result (the message names their logs)."""


class Submission:
    """What ``launch`` did: the ledger it wrote, the runs it submitted (``entries``, with job
    ids and logs) and the ones it left alone (finished, or still queued from before)."""

    def __init__(self, out: Path, ledger: dict, ledger_path: Path | None,
                 skipped_done: Sequence[Task], in_flight: Sequence[dict]):
        self.out = Path(out)
        self.ledger = ledger
        self.ledger_path = ledger_path
        self.skipped_done = list(skipped_done)
        self.in_flight = list(in_flight)

    @property
    def launcher(self) -> str:
        return self.ledger["launcher"]

    @property
    def entries(self) -> list[dict]:
        """The runs this submission started, one dict each (key, run_dir, job_id, log…)."""
        return list(self.ledger["tasks"])

    @property
    def job_ids(self) -> list[str]:
        return [e["job_id"] for e in self.entries]

    def describe(self) -> list[str]:
        """Lines for a person: what was submitted (job ids, where the logs are), what was
        skipped, and how to follow it."""
        lines = []
        if self.skipped_done:
            lines.append(f"{len(self.skipped_done)} runs already finished: skipped")
        if self.in_flight:
            lines.append(f"{len(self.in_flight)} runs still queued or running from an earlier "
                         f"submission: not submitted again")
        n = len(self.entries)
        if self.launcher == "local" or not n:
            lines.append(f"{n} runs in this process" if n else "nothing to submit")
            return lines
        first = self.entries[0]["job_id"].split("_")[0]
        what = (f"SLURM job array {first} ({n} tasks, at most "
                f"{self.ledger['array_parallelism']} at once)"
                if self.ledger["kind"] == "array" else f"{n} SLURM jobs")
        lines.append(f"submitted {n} runs as {what}")
        for e in self.entries[:20]:
            lines.append(f"  {e['job_id']:>12}  {e['key']}  log: {e['log']}")
        if n > 20:
            lines.append(f"  … {n - 20} more in {self.ledger_path}")
        lines.append(f"logs: {self.ledger['folder']}; ledger: {self.ledger_path}")
        lines.append(f"follow with: robust-zoo jobs {self.out}")
        return lines

    def _watched(self) -> list[dict]:
        return self.entries + self.in_flight

    def _poll(self) -> tuple[list[TaskOutcome], dict[str, str]]:
        entries = [jobs.ledger_entry(self.ledger, e) for e in self.entries] + self.in_flight
        states, reasons = jobs.split_queue(entries)
        return [jobs.outcome(e, states, reasons) for e in entries], states or {}

    def outcomes(self) -> list[TaskOutcome]:
        """Where each run of this submission (and each carried over) stands now."""
        return self._poll()[0]

    def wait(self, progress_bar: bool = True, poll_s: float = 2.0,
             timeout_s: float | None = None) -> list[TaskOutcome]:
        """Block until every run has ended: failed, or done with its job gone from the queue
        (its log complete); a bar counts them. The outcomes, skipped finished runs first.
        ``timeout_s`` bounds the wait (TimeoutError)."""
        done = [TaskOutcome(key=t.key, run_dir=Path(t.run_dir), state="done",
                            attempts=len(jobs.attempts(t.run_dir))) for t in self.skipped_done]
        total = len(self._watched())
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        bar = progress(total=total, enabled=progress_bar and total > 0, desc="runs",
                       unit="run", leave=False)
        try:
            while True:
                now, queue = self._poll()
                ended = [o.state == "failed" or
                         (o.state == "done" and queue.get(o.job_id or "") not in jobs.IN_QUEUE)
                         for o in now]
                bar.update(sum(ended) - bar.n)
                if all(ended):
                    return done + now
                if deadline is not None and time.monotonic() > deadline:
                    left = [o.key for o, e in zip(now, ended) if not e]
                    raise TimeoutError(f"runs still queued after {timeout_s:g} s: {left}")
                time.sleep(poll_s)
        finally:
            bar.close()


def _failures(outcomes: Sequence[TaskOutcome]) -> tuple[str, str] | None:
    """(one line naming the failed runs, why and their logs; the first one's log tail)."""
    failed = [o for o in outcomes if o.state != "done"]
    if not failed:
        return None
    names = "; ".join(f"{o.key} ({o.detail or o.state}, log {o.log})" for o in failed[:5])
    more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
    return f"{len(failed)} of {len(outcomes)} runs failed: {names}{more}", failed[0].log_tail


def check_outcomes(outcomes: Sequence[TaskOutcome]) -> None:
    """Raise ``JobsFailed`` naming every failed run, why and its log, with the last lines of
    the first failed run's log."""
    found = _failures(outcomes)
    if found:
        line, tail = found
        raise JobsFailed(f"{line}\n{tail}" if tail else line)


def exit_status(outcomes: Sequence[TaskOutcome]) -> int:
    """What a program's ``--wait`` returns: 0 when every run is done; else 1, after the one
    ``error:`` line naming each failed run, why and its log, and the last lines of the first
    failed run's log, on stderr."""
    found = _failures(outcomes)
    if not found:
        return 0
    line, tail = found
    report_error(JobsFailed(line))
    if tail:
        print("\n".join(f"    | {ln}" for ln in tail.splitlines()), file=sys.stderr, flush=True)
    return 1


def finish(sub: "Submission", tasks: Sequence[Task], opts: LaunchOptions, aggregate, *,
           then: str, log=print, refresh=None, every_s: float = 60.0) -> int:
    """A program's last step after ``launch``: under SLURM without ``--wait``, while runs are
    unfinished, one line saying that the same command again (or ``--wait``) ``then``, and 0;
    else wait for the runs (``exit_status``), print the lines of ``aggregate(out)`` (the one
    process that aggregates) and return the status.

    ``refresh(out)``, for a program whose tables can follow its runs, rewrites them from the
    runs finished so far and returns their lines: while it waits, every ``every_s`` seconds in
    which more runs finished (the lines are not printed); without ``--wait``, once, printed
    before the line, when some runs have finished."""
    status = 0
    if opts.launcher == "slurm" and not opts.wait:
        if not all(t.is_done() for t in tasks):
            if refresh is not None and any(t.is_done() for t in tasks):
                for line in refresh(sub.out):
                    print(line)
            log(f"when every run has finished, run the same command again (or pass --wait) "
                f"{then}")
            return 0
    else:
        status = exit_status(_wait(sub, tasks, refresh, every_s))
    for line in aggregate(sub.out):
        print(line)
    return status


def _wait(sub: "Submission", tasks: Sequence[Task], refresh, every_s: float
          ) -> list[TaskOutcome]:
    """``sub.wait()``, calling ``refresh(out)`` every ``every_s`` seconds in which more of
    ``tasks`` finished."""
    bar = sys.stderr.isatty()
    if refresh is None:
        return sub.wait(progress_bar=bar)
    finished = sum(t.is_done() for t in tasks)
    while True:
        try:
            return sub.wait(progress_bar=bar, timeout_s=every_s)
        except TimeoutError:
            now = sum(t.is_done() for t in tasks)
            if now != finished:
                refresh(sub.out)
                finished = now


def _entry(task: Task, job_id: str, log: Path | None) -> dict:
    return {"key": task.key, "run_dir": str(Path(task.run_dir).resolve()),
            "done_file": task.done_file, "job_id": job_id, "log": str(log) if log else None}


def _ledger(opts: LaunchOptions, kind: str, name: str, folder: Path | None,
            aggregate: str | None) -> dict:
    return {"launcher": opts.launcher, "kind": kind, "name": name, "aggregate": aggregate,
            "folder": str(folder) if folder else None, "pid": os.getpid(),
            "array_parallelism": opts.array_parallelism, "tasks": []}


def _split(tasks: Sequence[Task], out: Path) -> tuple[list[Task], list[Task], list[dict]]:
    """Tasks to run, finished tasks, and entries of earlier submissions still queued."""
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        twice = sorted(k for k in set(keys) if keys.count(k) > 1)
        raise UsageError(f"two runs have the same key: {twice}")
    done = [t for t in tasks if t.is_done()]
    todo = [t for t in tasks if not t.is_done()]
    earlier = jobs.latest_entries(out)
    queued = [earlier[t.key] for t in todo if earlier.get(t.key, {}).get("launcher") == "slurm"]
    in_flight = []
    if queued:
        states, _ = jobs.split_queue(queued)
        in_flight = [e for e in queued
                     if jobs.outcome(e, states).state in ("pending", "running")]
    busy = {e["key"] for e in in_flight}
    return [t for t in todo if t.key not in busy], done, in_flight


def _aggregate_name(aggregate) -> str | None:
    """``"module:function"`` of a table-making function of a robust_zoo program."""
    if aggregate is None:
        return None
    name = aggregate if isinstance(aggregate, str) else \
        f"{aggregate.__module__}:{aggregate.__qualname__}"
    if not name.startswith("robust_zoo.") or ":" not in name:
        raise ValueError(f"aggregate must be a function of robust_zoo's programs, got {name!r}")
    return name


def launch(tasks: Sequence[Task], opts: LaunchOptions, out: Path, *, kind: str = "array",
           name: str = "robust-zoo", aggregate=None) -> Submission:
    """Run ``tasks`` with the launcher ``opts`` names and record them in a ledger under
    ``out/.jobs``. Finished runs (completion file present) are skipped, and so are runs still
    queued or running from an earlier submission.

    ``local``: the tasks run here, one after another (an error propagates). ``slurm``: one job
    array (``kind="array"``, one single-task job per run, ``--array-parallelism`` at once) or
    one job of ``--nodes`` × ``--tasks-per-node`` processes per run (``kind="ddp"``); a preempted
    or timed-out job is requeued and calls its task again. A refusal by sbatch is a
    ``UsageError`` quoting it, and leaves nothing in ``out``.

    ``aggregate``: the program's function ``fn(out) -> list[str]`` that builds its tables from
    the finished run folders (a robust_zoo function, or its ``"module:function"`` name); the
    ledger records it and ``robust-zoo jobs OUT`` calls it after the status."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = Path(out)
    todo, done, in_flight = _split(tasks, out)
    if opts.launcher == "slurm":
        return _launch_slurm(todo, done, in_flight, opts, out, kind, name,
                             _aggregate_name(aggregate))
    ledger, path = record_local(todo, out, kind=kind, name=name, aggregate=aggregate)
    for t in todo:
        run_task(t)
    return Submission(out, ledger, path, done, in_flight)


def record_local(tasks: Sequence[Task], out: Path, *, kind: str = "array",
                 name: str = "robust-zoo", aggregate=None) -> tuple[dict, Path | None]:
    """The ledger of runs this process does itself (``--launcher local``), written under
    ``out/.jobs`` (none for no tasks) so that ``robust-zoo jobs OUT`` follows them: running
    while this process lives, failed when it ended without their result. (ledger, its path)."""
    ledger = _ledger(LaunchOptions(), kind, name, None, _aggregate_name(aggregate))
    ledger["tasks"] = [_entry(t, "local", None) for t in tasks]
    path = jobs.write_ledger(Path(out), jobs.new_stamp(), ledger) if tasks else None
    return ledger, path


@contextlib.contextmanager
def recording_local(tasks: Sequence[Task], out: Path, *, kind: str = "array",
                    name: str = "robust-zoo", aggregate=None) -> Iterator[dict]:
    """``record_local`` for the runs done inside the block. When the block raises before any
    of them made its run folder (a refusal of bad input), the ledger is removed again and
    ``out`` is left as it was."""
    out = Path(out)
    made = [p for p in (jobs.jobs_dir(out), out) if not p.exists()]
    ledger, path = record_local(tasks, out, kind=kind, name=name, aggregate=aggregate)
    try:
        yield ledger
    except BaseException:
        if path is not None and not any(Path(t.run_dir).exists() for t in tasks):
            path.unlink(missing_ok=True)
            _remove_empty(made)
        raise


def _submit_jobs(tasks: Sequence[Task], opts: LaunchOptions, folder: Path, kind: str,
                 name: str) -> list:
    """One sbatch call for an array; one per task for ``ddp``, where a refusal part-way
    cancels the jobs already submitted (the submission is all or nothing)."""
    from submitit.core.utils import FailedJobError

    from . import slurm

    ex = slurm.executor(folder, opts, kind, name)
    submitted: list = []
    try:
        if kind == "array":
            return ex.map_array(Resumable(), list(tasks))
        for t in tasks:
            submitted.append(ex.submit(Resumable(), t))
        return submitted
    except (FailedJobError, OSError) as e:
        for job in submitted:
            job.cancel(check=False)
        raise slurm.refusal(e) from None


def _remove_new(folder: Path, parents: Sequence[Path]) -> None:
    """Undo a failed submission: its own folder, and the parents it made if they stayed empty."""
    shutil.rmtree(folder, ignore_errors=True)
    _remove_empty(parents)


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove each folder, innermost first, where nothing else has been written in it."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            pass


def _launch_slurm(todo, done, in_flight, opts, out, kind, name, aggregate) -> Submission:
    from . import slurm

    slurm.require_slurm()
    slurm.parameters(opts, kind, name)                      # bad flags before any file
    stamp = jobs.new_stamp()
    folder = jobs.jobs_dir(out) / stamp
    ledger = _ledger(opts, kind, name, folder, aggregate)
    if not todo:
        return Submission(out, ledger, None, done, in_flight)
    made = [p for p in (jobs.jobs_dir(out), out) if not p.exists()]
    folder.mkdir(parents=True)
    try:
        submitted = _submit_jobs(todo, opts, folder, kind, name)
    except BaseException:
        _remove_new(folder, made)
        raise
    ledger["tasks"] = [_entry(t, j.job_id, j.paths.stderr) for t, j in zip(todo, submitted)]
    path = jobs.write_ledger(out, stamp, ledger)
    return Submission(out, ledger, path, done, in_flight)
