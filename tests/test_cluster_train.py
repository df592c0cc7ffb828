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
import threading
import time
from pathlib import Path

import pytest

from robust_zoo.engine import checkpoint as ckpt
from robust_zoo.engine import distributed

from zoo import make_image_folder

ROOT = Path(__file__).resolve().parents[1]

# mini_resnet on a 2-class image folder: 2 epochs × 7 steps of a global batch of 8, L2 PGD with
# a random start, deterministic kernels; checkpoints only at epoch ends, so a checkpoint
# mid-epoch can only come from the scheduler's signals. Every run here trains this recipe, on
# two processes (2 × 4 per step) or, for one epoch (ONE_EPOCH), on one process (8 per step).
RUN_ARGS = ["--arch", "mini_resnet", "--dataset", "imagefolder", "--input-size", "16",
            "--norm", "l2", "--eps", "0.5", "--random-start", "--epochs", "2", "--batch-size", "8",
            "--lr", "0.05", "--log-every", "3", "--deterministic", "--no-progress",
            "--final-eval-steps", "3", "--eval-limit", "10", "--final-eval-limit", "8",
            "--name", "r10", "--workers", "0"]

ONE_EPOCH = [*RUN_ARGS, "--epochs", "1"]


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


def torchrun(*launcher_args, out: Path, data: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", *map(str, launcher_args), "-m",
         "robust_zoo.train", *map(str, RUN_ARGS), "--data", str(data), "--out", str(out)],
        env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen, timeout: float = 300) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


@pytest.fixture(scope="module")
def references(data, tmp_path_factory) -> dict[str, Path]:
    """The uninterrupted runs of RUN_ARGS, side by side: one process for one epoch ("one") and
    ``torchrun --standalone --nproc-per-node 2`` ("two", what every 2-rank launch reproduces)."""
    root = tmp_path_factory.mktemp("references")
    one = subprocess.Popen(train_cmd(*ONE_EPOCH, "--data", data, "--out", root / "one"),
                           env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
    two = torchrun("--standalone", "--nproc-per-node", "2", out=root / "two", data=data)
    assert "(1 × 8)" in finished(one) and "(2 × 4)" in finished(two)
    return {"one": root / "one", "two": root / "two"}


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
    # the rank a job's task reads before any group exists (it alone records the attempt)
    assert distributed.launch_rank(env) == 3
    assert distributed.launch_rank(dict(env, RANK="1", WORLD_SIZE="2")) == 1
    assert distributed.launch_rank(dict(batch, SLURM_PROCID="0")) == 0


# ----------------------------------------------------------------------------- the warning signal

def test_warning_signal_checkpoints_mid_epoch_and_the_resumed_run_is_bit_identical(
        data, references, tmp_path):
    """SIGUSR2 (what SLURM sends ahead of a time limit, for submitit) lands mid-epoch: the run
    writes its checkpoint at that step (it has no periodic checkpoints) and ends by the signal;
    ``--resume`` continues to the uninterrupted run's exact weights."""
    out = tmp_path / "run"
    proc = subprocess.Popen(train_cmd(*ONE_EPOCH, "--data", data, "--out", out),
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: step_records(out), "the first step record", proc=proc)
    proc.send_signal(signal.SIGUSR2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGUSR2, err
    state, _ = ckpt.load(out, kind="train")
    assert state["epoch"] == 0 and 3 <= state["step"] < state["steps_per_epoch"] == 7
    assert f"stopping on SIGUSR2 after global step {state['global_step']}" in err
    assert not (out / "model.safetensors").exists()
    resumed = subprocess.run(train_cmd("--resume", "--out", out), env=child_env(),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"at epoch 1, step {state['step']}/7" in resumed.stderr
    assert sha256(out / "model.safetensors") == sha256(references["one"] / "model.safetensors")


# ----------------------------------------------------------------------------- multi-node torchrun

def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_torchrun_agents_c10d_give_the_weights_of_one_agent_with_two_processes(
        data, references, tmp_path):
    """Multi-node torchrun as on two machines: two agents (--nnodes 2 --nproc-per-node 1) meet
    at a c10d rendezvous on this machine and train the same run as one agent with 2 processes."""
    port, out = free_port(), tmp_path / "run"
    agents = [torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                       "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "h6-two-agents",
                       out=out, data=data) for _ in range(2)]
    errs = [finished(a) for a in agents]
    assert any("(2 × 4)" in e for e in errs)
    assert sha256(out / "model.safetensors") == sha256(references["two"] / "model.safetensors")
    assert len(ckpt.read(out / "checkpoint.pt")["rng"]) == 2


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("program, argv, message", [
    ("robust-zoo", ["regenerate", "--out", "{tmp}/z"], "name one or more models, or pass --all"),
    ("robust-zoo", ["regenerate", "resnet50_l2_eps3", "--all", "--out", "{tmp}/z"], "not both"),
    ("robust-zoo", ["regenerate", "resnet50_l2_eps9", "--out", "{tmp}/z"],
     "No model named 'resnet50_l2_eps9'"),
    ("robust-zoo", ["regenerate", "resnet50_l2_eps3", "--out", "{tmp}/z", "--launcher", "slurm",
                    "--nodes", "0"], "--nodes"),
    ("evaluate", ["a", "b", "--data", "{tmp}"], "pass --out DIR"),
    ("evaluate", ["a", "--all", "--data", "{tmp}", "--out", "{tmp}/e"], "not both"),
    ("train", [*RUN_ARGS, "--out", "{tmp}/held", "--launcher", "slurm"], "already holds a run"),
    ("train", [*RUN_ARGS, "--out", "{tmp}/t", "--launcher", "slurm", "--time", "-5"], "--time"),
])
def test_bad_input_of_the_cluster_commands_is_one_line_and_writes_nothing(
        program, argv, message, tmp_path, capsys):
    from robust_zoo.cli.commands import main as robust_zoo_main
    from robust_zoo.evaluate import main as evaluate_main
    from robust_zoo.train import main as train_main

    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "model.safetensors").write_bytes(b"")
    main = {"robust-zoo": robust_zoo_main, "evaluate": evaluate_main, "train": train_main}
    assert main[program]([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held"]


def test_without_sbatch_a_slurm_training_says_what_to_install(tmp_path, monkeypatch, capsys):
    from robust_zoo.train import main

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    out = tmp_path / "run"
    assert main([*RUN_ARGS, "--out", str(out), "--launcher", "slurm", "--nodes", "2"]) == 2
    assert "sbatch is not on PATH" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------- on SLURM

def ledger_jobs(out: Path) -> list[dict]:
    """The runs every launch into ``out`` recorded (``out/.jobs/*.json``), oldest first."""
    return [t for p in sorted((out / ".jobs").glob("*.json"))
            for t in json.loads(p.read_text())["tasks"]]


def start_when_requeued(slurm, job: str) -> None:
    """Let a requeued job start as soon as the node is free: SLURM gives a requeued job a
    begin time a few seconds ahead, which only slows the test down."""
    slurm.wait_state(job, ("PENDING", "RUNNING", "COMPLETED"))
    slurm.run("scontrol", "update", f"JobId={job}", "StartTime=now", check=False)


def test_ddp_job_preempted_and_requeued_ends_with_the_torchrun_weights(
        data, references, slurm_env, monkeypatch, tmp_path, capsys):
    """``--launcher slurm --tasks-per-node 2``: one job of two gloo ranks whose rendezvous
    comes from SLURM's environment. It gets the warning signal mid-epoch (checkpoint at that
    step, submitit requeues it), then ``scontrol requeuehold`` in its second run (SLURM's
    SIGTERM: checkpoint at that step too; held until ``--resume --wait`` is waiting for it);
    ``--resume --wait`` waits for it without submitting it again, prints what the run printed,
    and the weights are those of the uninterrupted ``torchrun --nproc-per-node 2`` run."""
    from robust_zoo.launch.tasks import attempts
    from robust_zoo.train import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")           # the thread count of the references
    monkeypatch.setenv("MASTER_PORT", str(free_port()))  # other private clusters number jobs too
    out = tmp_path / "run"
    assert main([*RUN_ARGS, "--data", str(data), "--out", str(out), "--ckpt-every-steps", "2",
                 "--launcher", "slurm", "--tasks-per-node", "2"]) == 0
    assert "submitted 1 runs as 1 SLURM jobs" in capsys.readouterr().out
    [job] = [t["job_id"] for t in ledger_jobs(out)]
    wait_for(lambda: step_records(out), "the first step record")
    slurm_env.run("scancel", "--signal", "USR2", job)
    start_when_requeued(slurm_env, job)
    wait_for(lambda: len(attempts(out)) == 2, "the requeued job's second run")
    stopped = ckpt.load(out, kind="train")[0]["global_step"]
    wait_for(lambda: any(r["global_step"] > stopped for r in step_records(out)),
             "a step of the second run")
    # requeued and held, so the run cannot finish before the waiting command below looks
    slurm_env.scontrol("requeuehold", job)
    slurm_env.wait_state(job, ("PENDING",))
    release = threading.Timer(1.0, lambda: (slurm_env.scontrol("release", job),
                                            start_when_requeued(slurm_env, job)))
    release.start()
    assert main(["--resume", "--out", str(out), "--launcher", "slurm", "--wait"]) == 0
    release.join()
    said = capsys.readouterr()
    assert "not submitted again" in said.out and [t["key"] for t in ledger_jobs(out)] == ["run"]
    assert f"stopping on SIGUSR2 after global step {stopped}" in said.err
    assert "stopping on SIGTERM after global step" in said.err      # the requeue's SIGTERM
    assert said.err.count("Resuming") == 2 and "wrote " in said.err.splitlines()[-1]
    assert "submitit" not in said.err and "slurmstepd" not in said.err
    assert len(attempts(out)) == 3
    assert sha256(out / "model.safetensors") == sha256(references["two"] / "model.safetensors")


def recipe_entry(name: str, seed: int) -> dict:
    """A manifest entry whose recorded recipe is a one-epoch mini_resnet on the image folder."""
    from robust_zoo.recipe import Recipe

    recipe = Recipe(arch="mini_resnet", dataset="imagefolder", num_classes=2, input_size=16,
                    norm="l2", eps=0.0, epochs=1, batch_size=8, lr=0.05, seed=seed,
                    augmentation="flip-crop", source="test").to_dict()
    return {"name": name, "arch": "mini_resnet", "norm": "l2", "eps": 0.0, "num_classes": 2,
            "files": [{"format": "safetensors", "path": f"{name}.safetensors", "sha256": None}],
            "recipe": recipe}


def test_regenerate_trains_the_missing_entries_and_evaluate_runs_one_array_task_per_model(
        data, slurm_env, monkeypatch, tmp_path, capsys):
    """``robust-zoo regenerate``: an entry regenerated before (here) is skipped, the other is
    one SLURM job; ``--wait`` ends with one manifest of both. ``python -m robust_zoo.evaluate
    --all`` of that manifest is a job array of one task per model, each writing its result;
    ``--wait`` prints one table against the claims, the regeneration's own final evaluations."""
    import robust_zoo
    from robust_zoo.cli.commands import main as robust_zoo_main
    from robust_zoo.evaluate import main as evaluate_main
    from robust_zoo.launch.tasks import attempts

    from zoo import write_manifest

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    manifest = write_manifest(tmp_path / "zoo.json", recipe_entry("mini_a", 1),
                              recipe_entry("mini_b", 2))
    out = tmp_path / "regen"
    base = ["regenerate", "--manifest", str(manifest), "--data", str(data), "--out", str(out),
            "--device", "cpu"]
    assert robust_zoo_main([*base, "mini_a"]) == 0              # --launcher local: here
    first = (out / "mini_a" / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert robust_zoo_main([*base, "--all", "--launcher", "slurm", "--wait"]) == 0
    said = capsys.readouterr().out
    assert "1 runs already finished: skipped" in said and "submitted 1 runs" in said
    assert [t["key"] for t in ledger_jobs(out)] == ["mini_a", "mini_b"]   # local, then SLURM
    assert len(attempts(out / "mini_b")) == 1
    assert (out / "mini_a" / "model.safetensors").stat().st_mtime_ns == first
    assert "wrote" in said and "2 entries (mini_a, mini_b)" in said
    regenerated = out / "weights_manifest.json"
    model = robust_zoo.load("mini_b", manifest=regenerated)
    assert model.entry.recipe["seed"] == 2 and model.entry.clean_top1 is not None

    evals = tmp_path / "evals"
    assert evaluate_main(["--all", "--manifest", str(regenerated), "--data", str(data / "val"),
                          "--out", str(evals), "--steps", "0", "--workers", "0",
                          "--autoattack", "off", "--device", "cpu", "--launcher", "slurm",
                          "--wait"]) == 0
    said = capsys.readouterr()
    assert "SLURM job array" in said.err and "(2 tasks" in said.err
    rows = {line.split()[0]: line for line in said.out.splitlines()[1:-1]}
    assert sorted(rows) == ["mini_a", "mini_b"] and said.out.splitlines()[-1] == (
        "2 models, every claim holds")
    for name in rows:
        result = json.loads((evals / name / "result.json").read_text())
        claimed = robust_zoo.load(name, manifest=regenerated).entry.clean_top1
        assert result["n"] == 12 and result["clean_acc"] == pytest.approx(claimed)
        assert f"{result['clean_acc']:.2f} ({claimed:.2f})" in rows[name]
    assert json.loads((evals / "results.json").read_text())[0]["model"] == "mini_a"
