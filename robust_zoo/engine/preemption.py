"""Stopping a run at a step boundary when the scheduler warns that it will stop it.

SLURM sends a warning signal ahead of a time limit or a preemption (``sbatch --signal``;
submitit asks for USR2, 90 s ahead, and ``SUBMITIT_PREEMPT_SIGNAL`` names another). While a
training loop runs inside ``watch(d)``, that signal only records the request. The loop asks
``requested()`` after each step (every rank asks at the same step and they agree: the flags are
summed over the ranks), writes its checkpoint where it is, and calls ``hand_over()``: the
handler that was there before runs. Under submitit that handler re-submits the task and requeues
the job (rank 0) and the other ranks wait for the requeue to stop them; with no handler (the
signal's default action) the process ends by the signal, as it would have without the watch.
Either way the next start resumes from the checkpoint at the step where the signal came.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import NoReturn

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
    """The warning signal, noted while a loop runs (see the module docstring)."""

    def __init__(self, d: distributed.Dist, signum: signal.Signals | None = None):
        self.d = d
        self.signum = signum or warning_signal()
        self.received: int | None = None
        self.previous = None
        self.active = False

    def __enter__(self) -> "Watch":
        # signal handlers can only be set from the main thread; elsewhere nothing is watched
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(self.signum, self._note)
            self.active = True
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        if self.active:
            signal.signal(self.signum, self.previous)
            self.active = False

    def _note(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def requested(self) -> bool:
        """True on every rank when any rank has received the signal (a collective: every rank
        calls it at the same step)."""
        flag = float(self.received is not None)
        if self.d.enabled:
            flag = distributed.all_reduce_sum(self.d, [flag])[0]
        return flag > 0

    def hand_over(self) -> NoReturn:
        """After the checkpoint: run the handler that was there before (see the module
        docstring). Raises ``Preempted`` where that handler neither exits nor stops us."""
        self._restore()
        distributed.barrier(self.d)
        previous = self.previous
        if callable(previous):
            previous(int(self.signum), None)       # submitit: rank 0 requeues and exits
            if self.d.enabled and not self.d.is_main:
                # the requeue ends this task with SIGTERM (which submitit ignores otherwise)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                time.sleep(WAIT_FOR_REQUEUE_S)
        elif previous in (signal.SIG_DFL, None):
            signal.signal(self.signum, signal.SIG_DFL)
            os.kill(os.getpid(), self.signum)      # the default action: the process ends
            time.sleep(5.0)
        raise Preempted(f"stopped on signal {signal.Signals(self.signum).name} after writing a "
                        "checkpoint; start the run again with --resume to continue it")


def watch(d: distributed.Dist) -> Watch:
    """``with watch(d) as stop: ... if stop.requested(): save(); stop.hand_over()``."""
    return Watch(d)
