"""Stopping a run at a step boundary when the scheduler says it will stop it.

SLURM sends a warning signal ahead of a time limit or a preemption (``sbatch --signal``;
submitit asks for USR2, 90 s ahead, and ``SUBMITIT_PREEMPT_SIGNAL`` names another), and SIGTERM
when it stops a job (``scontrol requeue``, ``scancel``, the end of a preemption's grace time).
While a training loop runs inside ``watch(d)``, either signal only records the request. The loop
asks ``requested()`` after each step (every rank asks at the same step and they agree: the flags
are summed over the ranks), writes its checkpoint where it is, and calls ``hand_over()``. The
warning goes to the handler that was there before: under submitit it re-submits the task and
requeues the job (rank 0), and the other ranks wait for the requeue to end them. SIGTERM (and a
warning nobody handles) ends the process as its default action would have; a job being
requeued is then started again by SLURM. Either way the next start resumes from the checkpoint
at the step where the signal came, instead of from the last periodic one.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any, Callable, NoReturn

from ..errors import RobustZooError
from . import distributed

__all__ = ["watch", "Watch", "Preempted", "warning_signal"]

# How long a rank that does not requeue the job waits for the scheduler to stop it.
WAIT_FOR_REQUEUE_S = 600.0


class Preempted(RobustZooError, RuntimeError):
    """The run checkpointed on the scheduler's warning and stopped; the next start resumes."""


def warning_signal() -> signal.Signals:
    """The signal SLURM sends ahead of stopping the job: submitit's (``SUBMITIT_PREEMPT_SIGNAL``,
    default USR2)."""
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return getattr(signal.Signals, "SIG" + name, signal.SIGUSR2)


class Watch:
    """The warning signal and SIGTERM, noted while a loop runs (see the module docstring)."""

    def __init__(self, d: distributed.Dist, signum: signal.Signals | None = None):
        self.d = d
        self.signum = signum or warning_signal()
        self.watched = (self.signum, signal.SIGTERM)
        self.received: set[int] = set()
        self.previous: dict[int, Any] = {}
        self.previous_used: dict[int, Any] = {}         # the handlers ``_restore`` put back
        self.stopping: signal.Signals | None = None     # what ``requested`` agreed on

    def __enter__(self) -> "Watch":
        # signal handlers can only be set from the main thread; elsewhere nothing is watched
        if threading.current_thread() is threading.main_thread():
            for sig in self.watched:
                self.previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous_used, self.previous = self.previous, {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received.add(signum)

    def requested(self) -> bool:
        """True on every rank when any rank has received a watched signal (a collective: every
        rank calls it at the same step). The warning wins over SIGTERM when both came."""
        flags = [float(self.signum in self.received), float(signal.SIGTERM in self.received)]
        if self.d.enabled:
            flags = distributed.all_reduce_sum(self.d, flags)
        if flags[0] > 0:
            self.stopping = self.signum
        elif flags[1] > 0:
            self.stopping = signal.SIGTERM
        return self.stopping is not None

    def stop_here(self, where: str, say: Callable[[str], Any]) -> NoReturn:
        """After the checkpoint: ``say`` (rank 0) that the run stops on the signal ``where``
        (``at step 3/8 of epoch 2``) and the next start resumes there, then ``hand_over``."""
        if self.d.is_main:
            say(f"stopping on {(self.stopping or self.signum).name} {where}: checkpoint "
                "written, the next start resumes there")
        self.hand_over()

    def hand_over(self) -> NoReturn:
        """After the checkpoint: the warning goes to the handler that was there before
        (submitit's: rank 0 requeues the job and exits, the others wait for the requeue's
        SIGTERM); SIGTERM, and a warning nobody handles, end the process as the signal's default
        action does. Raises ``Preempted`` where neither happens."""
        sig = self.stopping or self.signum
        self._restore()
        distributed.barrier(self.d)
        previous = self.previous_used.get(sig, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if sig == self.signum and callable(previous):
            previous(int(sig), None)                   # submitit: rank 0 requeues and exits
            if self.d.enabled and not self.d.is_main:
                time.sleep(WAIT_FOR_REQUEUE_S)         # the requeue's SIGTERM ends this task
        elif sig == signal.SIGTERM or previous in (signal.SIG_DFL, None):
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)                  # the default action: the process ends
            time.sleep(5.0)
        raise Preempted(f"stopped on {signal.Signals(sig).name} after writing a checkpoint; "
                        "start the run again with --resume to continue it")


def watch(d: distributed.Dist) -> Watch:
    """``with watch(d) as stop: ... if stop.requested(): save(); stop.stop_here(where, print)``
    (or ``stop.hand_over()`` without a word)."""
    return Watch(d)
