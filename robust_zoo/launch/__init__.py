"""The launch layer: where a program's runs execute. ``local`` (the default) runs them in this
process; ``slurm`` submits them through submitit, as one job array or one multi-node job per
run, requeued and resumed after preemption. Every program takes the same flags
(``add_launch_arguments``); ``robust-zoo jobs OUT`` reports where the runs stand."""
from __future__ import annotations

from .jobs import Status, TaskOutcome, status
from .options import LaunchOptions, add_launch_arguments, launch_options, parse_time
from .submit import (JobsFailed, Submission, check_outcomes, exit_status, finish, launch,
                     record_local, recording_local)
from .tasks import Task, run_task

__all__ = ["LaunchOptions", "add_launch_arguments", "launch_options", "parse_time", "Task",
           "launch", "Submission", "TaskOutcome", "Status", "status", "check_outcomes",
           "JobsFailed", "exit_status", "finish", "record_local",
           "recording_local", "run_task"]
