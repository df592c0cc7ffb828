"""What was submitted and where it stands: the ledger of a submission (``OUT/.jobs/<time>.json``,
written atomically by the launching process) and the state of every run it names (``status``),
from the run folders (a completion file means done) and SLURM's queue."""
from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import shutil
import subprocess
from pathlib import Path
from typing import Sequence

from ..fileio import atomic_write_text
from ..validate import load_json
from .tasks import attempts

JOBS_DIR = ".jobs"
STATES = ("done", "running", "pending", "failed")
# squeue's %T for a job that is still in the queue, by what a person wants to know
_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "SIGNALING", "STAGE_OUT", "SUSPENDED",
            "STOPPED", "RESIZING"}
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PREEMPTED"}
IN_QUEUE = frozenset(_RUNNING | _PENDING)


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    """Where one run stands: ``state`` is one of ``STATES``; ``detail`` says why a run failed
    (``cancelled``, SLURM's end state, ``ended without its result``), ``attempts`` how many times
    a job started it, ``restarts`` how many of those were its latest job starting again
    (requeued after a preemption or ``scontrol requeue``), ``log`` its job's stderr file and
    ``log_tail`` that file's last lines for a failed run."""
    key: str
    run_dir: Path
    state: str
    job_id: str | None = None
    log: Path | None = None
    detail: str = ""
    attempts: int = 0
    restarts: int = 0
    log_tail: str = ""

    @property
    def requeued(self) -> bool:
        return self.restarts > 0


@dataclasses.dataclass(frozen=True)
class Status:
    """Every run named by the ledgers of an output folder, the latest submission of each."""
    runs: tuple[TaskOutcome, ...]

    def counts(self) -> dict[str, int]:
        c = collections.Counter(r.state for r in self.runs)
        out = {s: c.get(s, 0) for s in STATES}
        out["requeued"] = sum(r.requeued for r in self.runs)
        return out

    def summary(self) -> str:
        c = self.counts()
        return (f"{len(self.runs)} runs: {c['done']} done, {c['running']} running, "
                f"{c['pending']} pending, {c['failed']} failed; {c['requeued']} requeued")


def jobs_dir(out: Path) -> Path:
    return Path(out) / JOBS_DIR


def new_stamp() -> str:
    """A ledger's name: UTC time to the microsecond, so that names sort by submission."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def write_ledger(out: Path, stamp: str, ledger: dict) -> Path:
    path = jobs_dir(out) / f"{stamp}.json"
    atomic_write_text(path, json.dumps(ledger, indent=1) + "\n")
    return path


def read_ledgers(out: Path) -> list[dict]:
    """The ledgers under ``out``, oldest first (a file that is not one is skipped)."""
    found = []
    for p in sorted(jobs_dir(out).glob("*.json")):
        try:
            found.append(load_json(p.read_text(), str(p)))
        except (OSError, ValueError):
            continue
    return [d for d in found if isinstance(d, dict) and isinstance(d.get("tasks"), list)]


def ledger_entry(ledger: dict, task: dict) -> dict:
    """A ledger's task entry with what ``outcome`` reads from the ledger itself: its launcher,
    and the process that wrote it (which runs a local ledger's tasks)."""
    return {**task, "launcher": ledger.get("launcher", "local"), "pid": ledger.get("pid")}


def latest_entries(out: Path) -> dict[str, dict]:
    """Task key → its entry in the latest ledger naming it (``ledger_entry``)."""
    entries: dict[str, dict] = {}
    for ledger in read_ledgers(out):
        for t in ledger["tasks"]:
            if isinstance(t, dict) and isinstance(t.get("key"), str):
                entries[t["key"]] = ledger_entry(ledger, t)
    return entries


def aggregator(out: Path) -> str | None:
    """``"module:function"`` of the table-making function the latest ledger naming one
    recorded (``launch(..., aggregate=)``), or None."""
    for ledger in reversed(read_ledgers(out)):
        name = ledger.get("aggregate")
        if isinstance(name, str) and name.startswith("robust_zoo.") and ":" in name:
            return name
    return None


def queue() -> dict[str, tuple[str, str]] | None:
    """This user's SLURM jobs the controller still knows (finished ones for a few minutes):
    job id (``12``, ``12_3`` for an array task) → (squeue's state, its reason: why a job
    waits); None when squeue cannot answer."""
    if shutil.which("squeue") is None:
        return None
    try:
        p = subprocess.run(["squeue", "--me", "-h", "-r", "-t", "all", "-o", "%i %T %r"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    rows = [ln.split(None, 2) for ln in p.stdout.splitlines()]
    return {r[0]: (r[1], r[2].strip() if len(r) > 2 else "") for r in rows if len(r) >= 2}


def tail(path: Path | None, lines: int = 12) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def outcome(entry: dict, states: dict[str, str] | None,
            reasons: dict[str, str] | None = None) -> TaskOutcome:
    """The state of one ledger entry: done when its completion file exists; else what the
    queue (``states``: job id → squeue's state, None when it did not answer) says, with why a
    pending job waits (``reasons``); a job that has left the queue without the file has
    failed."""
    run_dir = Path(entry["run_dir"])
    log = Path(entry["log"]) if entry.get("log") else None
    job = entry.get("job_id")
    started = attempts(run_dir)
    base = dict(key=entry["key"], run_dir=run_dir, job_id=job, log=log, attempts=len(started),
                restarts=max(0, started.count(job) - 1) if job else 0)
    if (run_dir / entry.get("done_file", "result.json")).exists():
        return TaskOutcome(state="done", **base)
    q = (states or {}).get(job or "")
    if q in _RUNNING:
        return TaskOutcome(state="running", **base)
    if q in _PENDING:
        why = (reasons or {}).get(job or "", "")
        return TaskOutcome(state="pending", detail=why if why not in ("", "None") else "",
                           **base)
    if entry.get("launcher") == "slurm" and states is None:
        return TaskOutcome(state="pending", detail="squeue did not answer", **base)
    detail = (q.lower() if q else
              "left the queue without its result (cancelled, or its job was lost)")
    if entry.get("launcher") != "slurm":
        if _alive(entry.get("pid")):
            return TaskOutcome(state="running", **base)
        detail = "not finished (the local run stopped)"
    logs = (log, log.with_name(log.name.replace("_log.err", "_log.out")) if log else None)
    return TaskOutcome(state="failed", detail=detail,
                       log_tail=tail(logs[0]) or tail(logs[1]), **base)


def _alive(pid) -> bool:
    import os

    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def status(out: Path) -> Status:
    """The state of every run the ledgers under ``out`` name (its latest submission)."""
    entries = list(latest_entries(out).values())
    states, reasons = split_queue(entries)
    return Status(tuple(outcome(e, states, reasons) for e in entries))


def split_queue(entries: Sequence[dict]) -> tuple[dict[str, str] | None, dict[str, str]]:
    """One squeue call for ``entries`` (none when no entry is a SLURM job): (job id → state, or
    None when squeue did not answer; job id → why it waits)."""
    if not any(e.get("launcher") == "slurm" for e in entries):
        return {}, {}
    q = queue()
    if q is None:
        return None, {}
    return {k: v[0] for k, v in q.items()}, {k: v[1] for k, v in q.items()}
