"""Training at scale: ranks from SLURM's environment, the scheduler's warning signal (checkpoint
at the step where it came, resume bit-identical), multi-node torchrun (c10d rendezvous, two
agents), and on a private SLURM cluster: a requeued training job, a 2-task DDP job and
``robust-zoo regenerate``."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robust_zoo.engine import checkpoint as ckpt
from robust_zoo.engine import distributed

from zoo import make_image_folder

ROOT = Path(__file__).resolve().parents[1]

# mini_resnet on a 2-class image folder: 2 epochs × 14 steps of 4 images, L2 PGD with a random
# start, deterministic kernels; checkpoints only at epoch ends, so a checkpoint mid-epoch can
# only come from the warning signal.
RUN_ARGS = ["--arch", "mini_resnet", "--dataset", "imagefolder", "--input-size", "16",
            "--norm", "l2", "--eps", "0.5", "--random-start", "--epochs", "2", "--batch-size", "4",
            "--lr", "0.05", "--log-every", "3", "--deterministic", "--no-progress",
            "--final-eval-steps", "3", "--eval-limit", "10", "--final-eval-limit", "8",
            "--name", "r10", "--workers", "0"]


def child_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)


def train_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "robust_zoo.train", *map(str, args)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wait_for(predicate, what: str, timeout: float = 120.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc is None or proc.poll() is None, f"{what}: the process ended first"
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(0.01)


def step_records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    recs = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in recs if r["type"] == "step"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("cluster-train") / "data")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The uninterrupted local run of RUN_ARGS."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = subprocess.run(train_cmd(*RUN_ARGS, "--data", data, "--out", out), env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out


# ----------------------------------------------------------------------------- SLURM's environment

def test_slurm_tasks_become_torchrun_ranks():
    env = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1",
           "SLURM_STEP_NUM_NODES": "2", "SLURM_JOB_NODELIST": "localhost,gpu[7-9]",
           "SLURM_JOB_ID": "123457"}
    got = distributed.slurm_environment(env)
    assert got == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2",
                   "MASTER_ADDR": "localhost", "MASTER_PORT": str(20000 + 123457 % 40000)}
    # the same port on every task and after a requeue (same job id); a given one wins
    assert distributed.slurm_environment(dict(env, SLURM_PROCID="0"))["MASTER_PORT"] == \
        got["MASTER_PORT"]
    assert distributed.slurm_environment(dict(env, MASTER_PORT="29501"))["MASTER_PORT"] == \
        "29501"
    assert distributed.first_host("node[03-05,7],gpu1") == "node03"
    # torchrun's variables win; a batch script's one process (no srun step) is a world of one
    assert distributed.slurm_environment(dict(env, RANK="0", WORLD_SIZE="2")) == {}
    batch = {k: v for k, v in env.items() if k != "SLURM_STEP_NUM_TASKS"}
    assert distributed.slurm_environment(dict(batch, SLURM_NTASKS="4")) == {}


# ----------------------------------------------------------------------------- the warning signal

def test_warning_signal_checkpoints_mid_epoch_and_the_resumed_run_is_bit_identical(
        data, reference, tmp_path):
    """SIGUSR2 (what SLURM sends ahead of a time limit, for submitit) lands mid-epoch: the run
    writes its checkpoint at that step (it has no periodic checkpoints) and ends by the signal;
    ``--resume`` continues to the uninterrupted run's exact weights."""
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(*RUN_ARGS, "--data", data, "--out", out),
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: step_records(out), "the first step record", proc=proc)
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGUSR2, err
    state, _ = ckpt.load(out, kind="train")
    assert state["epoch"] == 0 and 3 <= state["step"] < state["steps_per_epoch"] == 14
    assert f"stopping on SIGUSR2 after global step {state['global_step']}" in err
    assert not (out / "model.safetensors").exists()
    resumed = subprocess.run(train_cmd("--resume", "--out", out), env=child_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at epoch 1, step {state['step']}/14" in resumed.stderr
    assert sha256(out / "model.safetensors") == sha256(reference / "model.safetensors")
