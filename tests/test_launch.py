"""The launch layer (robust_zoo.launch) and ``robust-zoo jobs``: the launcher flags and their
bad values, the local launcher, and job arrays, failures, cancellation, reruns and requeues on
a real private SLURM cluster (conftest's ``slurm`` fixture)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

import zoo
from robust_zoo.cli import commands
from robust_zoo.console import ArgumentParser, run_main
from robust_zoo.errors import UsageError
from robust_zoo.launch import (JobsFailed, LaunchOptions, Task, add_launch_arguments,
                               check_outcomes, exit_status, finish, launch, launch_options,
                               status)
from robust_zoo.launch import slurm as slurm_backend


@pytest.fixture
def light_jobs():
    """Jobs get the helper tasks of tests/zoo.py by value (cloudpickle, which submitit pickles
    with), so that they do not import zoo and torch with it: 5-10 s less per job on 2 busy
    cores."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(zoo)
    yield
    cloudpickle.unregister_pickle_by_value(zoo)


def _options(argv: list[str]) -> LaunchOptions:
    return launch_options(add_launch_arguments(ArgumentParser(prog="prog")).parse_args(argv))


def _program(argv: list[str]) -> int:
    """A program with the launcher flags: exit status of parsing them and checking them for a
    job array (what a program does before it submits)."""
    def main(args: list[str]) -> int:
        opts = _options(args)
        slurm_backend.parameters(opts, "array", "prog")
        return 0
    return run_main(main, argv)


def _program_on_slurm(argv: list[str]) -> int:
    """A program that submits two runs with its launcher flags (``--out OUT``)."""
    def main(args: list[str]) -> int:
        p = add_launch_arguments(ArgumentParser(prog="prog"))
        p.add_argument("--out", type=Path, required=True)
        a = p.parse_args(["--launcher", "slurm", *args])
        launch(_squares(a.out, 2), launch_options(a), a.out)
        return 0
    return run_main(main, argv)


def _squares(out: Path, n: int, flaky: int | None = None, cancel: int | None = None) -> list[Task]:
    return [Task(f"t{i}", out / f"t{i}", zoo.flaky_task if i == flaky else zoo.square_task,
                 (str(out / f"t{i}"), i)) for i in range(n)]


def _results(out: Path, n: int) -> list[dict]:
    return [json.loads((out / f"t{i}" / "result.json").read_text()) for i in range(n)]


ROOT = Path(__file__).resolve().parents[1]


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_the_flags_give_launch_options(tmp_path):
    o = _options(["--launcher", "slurm", "--partition", "gpu", "--nodes", "2", "--gpus-per-node",
                  "4", "--cpus-per-task", "8", "--mem-gb", "64", "--time", "01:30:00",
                  "--account", "a", "--qos", "high", "--constraint", "h100",
                  "--array-parallelism", "16", "--max-retries", "5", "--slurm-extra",
                  "mail-type=END", "--slurm-extra", "exclusive=", "--wait"])
    assert (o.launcher, o.partition, o.nodes, o.gpus_per_node, o.tasks, o.cpus_per_task) == \
        ("slurm", "gpu", 2, 4, 4, 8)
    assert (o.mem_gb, o.time_min, o.account, o.qos, o.constraint) == (64, 90, "a", "high", "h100")
    assert (o.array_parallelism, o.max_retries, o.wait) == (16, 5, True)
    assert o.slurm_extra == (("mail-type", "END"), ("exclusive", ""))
    p = slurm_backend.parameters(o, "ddp", "train")
    assert (p["nodes"], p["ntasks_per_node"], p["gpus_per_node"], p["time"], p["mem"]) == \
        (2, 4, 4, 90, "64GB")
    assert p["additional_parameters"] == {"mail-type": "END", "exclusive": True}
    script = slurm_backend.executor(tmp_path, o, "ddp", "train")._make_submission_file_text(
        "python -m x", "uid")
    for line in ("--partition=gpu", "--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4",
                 "--cpus-per-task=8", "--mem=64GB", "--time=90", "--account=a", "--qos=high",
                 "--constraint=h100", "--mail-type=END", "--exclusive", "--signal=USR2@90",
                 "--job-name=train"):
        assert f"#SBATCH {line}\n" in script, line
    default = _options([])
    assert (default.launcher, default.tasks, default.nodes) == ("local", 1, 1)
    assert _options(["--time", "1-00:00:00"]).time_min == 24 * 60
    assert _options(["--gpus-per-node", "2", "--tasks-per-node", "1"]).tasks == 1


@pytest.mark.parametrize("argv, flag", [
    (["--nodes", "0"], "--nodes"), (["--time", "-5"], "--time"),
    (["--time", "1:75:00"], "--time"), (["--slurm-extra", "nokey"], "--slurm-extra"),
    (["--mem-gb", "0"], "--mem-gb"), (["--launcher", "pbs"], "--launcher"),
    (["--nodes", "2"], "--nodes"),          # a job array's run is one process
])
def test_bad_launcher_flags_exit_2_naming_the_flag(argv, flag, capsys):
    assert _program(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and flag in err, err


def test_without_sbatch_slurm_is_one_line_saying_what_to_install(tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    assert _program_on_slurm(["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --launcher slurm: sbatch is not on PATH") and "\n" not in err
    assert "slurm-client" in err and "--launcher local" in err
    assert not out.exists()


def test_the_local_launcher_runs_here_and_a_rerun_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "out"
    sub = launch(_squares(out, 3), LaunchOptions(), out)
    assert [(r["x"], r["y"]) for r in _results(out, 3)] == [(i, i * i) for i in range(3)]
    assert [o.state for o in sub.wait(progress_bar=False)] == ["done"] * 3
    assert exit_status(sub.wait(progress_bar=False)) == 0
    assert status(out).counts() == {"done": 3, "running": 0, "pending": 0, "failed": 0,
                                    "requeued": 0}
    again = launch(_squares(out, 4), LaunchOptions(), out)
    assert [e["key"] for e in again.entries] == ["t3"] and len(again.skipped_done) == 3
    assert commands.main(["jobs", str(out)]) == 0
    assert "4 runs: 4 done" in capsys.readouterr().out


def test_local_runs_are_running_while_their_process_lives_and_failed_after(tmp_path):
    """A ledger of runs a process does itself (``--launcher local``): unfinished runs are
    running while that process lives, and failed, saying so, once it has ended; runs refused
    before they began leave nothing."""
    import subprocess
    import sys

    from robust_zoo.launch import record_local, recording_local
    from robust_zoo.launch.jobs import read_ledgers, write_ledger

    out = tmp_path / "out"
    tasks = _squares(out, 2)
    tasks[0].run_dir.mkdir(parents=True)
    zoo.square_task(str(tasks[0].run_dir), 0)
    ledger, path = record_local(tasks, out, name="test-local")
    assert read_ledgers(out) == [ledger] and ledger["pid"] == os.getpid()
    assert [o.state for o in status(out).runs] == ["done", "running"]
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True).stdout
    write_ledger(out, path.stem, {**ledger, "pid": int(ended)})
    outcomes = status(out).runs
    assert [o.state for o in outcomes] == ["done", "failed"]
    assert outcomes[1].detail == "not finished (the local run stopped)"
    assert record_local([], out)[1] is None and len(read_ledgers(out)) == 1
    # runs refused before any made its folder leave no ledger, and no folder, behind
    fresh = tmp_path / "fresh"
    with pytest.raises(UsageError, match="refused"):
        with recording_local(_squares(fresh, 2), fresh):
            raise UsageError("refused")
    assert not fresh.exists()


def test_robust_zoo_jobs_on_a_folder_without_submissions_exits_2(tmp_path, capsys):
    assert commands.main(["jobs", str(tmp_path)]) == 2
    assert "no submissions" in capsys.readouterr().err


def test_an_sbatch_refusal_quotes_sbatch_and_leaves_nothing(slurm_env, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="sbatch refused the job: .*[Ii]nvalid partition") as e:
        launch(_squares(out, 2), LaunchOptions(launcher="slurm", partition="nosuch"), out)
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
    assert not out.exists()
    assert _program_on_slurm(["--partition", "nosuch", "--out", str(out)]) == 2
    assert not out.exists()


def test_a_job_array_equals_the_local_runs_and_failures_are_rerun(slurm_env, light_jobs, tmp_path,
                                                                  capsys):
    """5 runs as one array (≤ 4 at once): one fails, one is cancelled while it waits; both are
    reported failed (wait, check_outcomes, robust-zoo jobs) with their logs; the rerun submits
    only those two, and the table equals the local launcher's."""
    out, n = tmp_path / "out", 5
    sub = launch(_squares(out, n, flaky=3), LaunchOptions(launcher="slurm",
                 array_parallelism=4), out, name="test-array")
    ids = sub.job_ids
    assert len(ids) == n and all(i.startswith(ids[0].split("_")[0] + "_") for i in ids)
    assert any(ids[0].split("_")[0] in ln for ln in sub.describe())
    while_queued = launch(_squares(out, n, flaky=3), LaunchOptions(launcher="slurm"), out)
    assert while_queued.entries == [] and \
        len(while_queued.in_flight) + len(while_queued.skipped_done) == n
    slurm_env.scancel(ids[4])                  # held back by the array's limit of 4
    outcomes = sub.wait(progress_bar=False, poll_s=0.3, timeout_s=240)
    assert [o.state for o in outcomes] == ["done"] * 3 + ["failed"] * 2
    assert "cancelled" in outcomes[4].detail
    stdout = outcomes[0].log.with_name(outcomes[0].log.name.replace("_log.err", "_log.out"))
    assert "Exiting after successful completion" in stdout.read_text()   # wait saw the end
    assert "fails once on purpose" in outcomes[3].log_tail
    with pytest.raises(JobsFailed, match=f"2 of 5 runs failed: t3 .*log {outcomes[3].log}"):
        check_outcomes(outcomes)
    capsys.readouterr()
    assert exit_status(outcomes) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 2 of 5 runs failed") and "fails once on purpose" in err
    assert status(out).counts() == {"done": 3, "running": 0, "pending": 0, "failed": 2,
                                    "requeued": 0}
    capsys.readouterr()
    assert commands.main(["jobs", str(out)]) == 1
    shown = capsys.readouterr().out
    assert "5 runs: 3 done, 0 running, 0 pending, 2 failed" in shown
    assert "t4  job " in shown and "cancelled" in shown and "fails once on purpose" in shown

    # the program's last step without --wait: the finished runs' table, then how to get it all
    def table(where):
        return [f"{len(list(Path(where).glob('t*/result.json')))} results"]

    assert finish(sub, _squares(out, n, flaky=3), LaunchOptions(launcher="slurm"), table,
                  then="for the table", refresh=table) == 0
    assert capsys.readouterr().out == ("3 results\nwhen every run has finished, run the same "
                                       "command again (or pass --wait) for the table\n")

    rerun = launch(_squares(out, n, flaky=3), LaunchOptions(launcher="slurm"), out)
    assert [e["key"] for e in rerun.entries] == ["t3", "t4"] and len(rerun.skipped_done) == 3
    assert [o.state for o in rerun.wait(progress_bar=False, poll_s=0.3, timeout_s=240)] == \
        ["done"] * n
    local = tmp_path / "local"
    launch(_squares(local, n), LaunchOptions(), local)
    assert _results(out, n) == _results(local, n)
    assert _results(out, 1)[0]["robust_zoo"] == str(ROOT / "robust_zoo")   # this checkout
    assert status(out).counts()["done"] == n


def test_a_ddp_job_runs_one_process_per_task_and_rank_0_finishes_it(slurm_env, light_jobs,
                                                                       tmp_path):
    out = tmp_path / "out"
    run = out / "ddp"
    sub = launch([Task("ddp", run, zoo.ranks_task, (str(run),))],
                 LaunchOptions(launcher="slurm", tasks_per_node=2), out, kind="ddp")
    [o] = sub.wait(progress_bar=False, poll_s=0.3, timeout_s=120)
    assert (o.state, o.attempts) == ("done", 1)            # only rank 0 records its start
    assert json.loads((run / "result.json").read_text()) == \
        {"world": 2, "ranks": ["rank-0", "rank-1"]}
    assert "#SBATCH --ntasks-per-node=2" in \
        (Path(sub.ledger["folder"]) / f"{sub.job_ids[0]}_submission.sh").read_text()


def _wait_for(path: Path, text: str = "", timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"no {path} holding {text!r}"
        time.sleep(0.1)


def test_requeued_and_preempted_tasks_resume_from_their_run_folders(slurm_env, light_jobs,
                                                                     tmp_path, capsys):
    """Two array tasks. ``count`` stalls after step 2 of its first attempt: ``scontrol
    requeue`` kills it, and the requeued job counts on from step 2 to the sum of an
    uninterrupted count. ``pre`` gets SLURM's warning signal (SIGUSR2, as before a time limit
    or a preemption): the run saves its step where the signal finds it and hands the signal to
    submitit, which requeues the job, and the next start resumes from what was saved."""
    out, steps = tmp_path / "out", 4
    count, pre = out / "count", out / "pre"
    sub = launch([Task("count", count, zoo.counting_task, (str(count), steps, 0.05, 2)),
                  Task("pre", pre, zoo.preempted_task, (str(pre),))],
                 LaunchOptions(launcher="slurm"), out, name="test-requeue")
    _wait_for(count / "state.json", '"step": 2')
    slurm_env.scontrol("requeue", sub.job_ids[0])
    _wait_for(pre / "waiting")
    slurm_env.run("scancel", "--signal=USR2", sub.job_ids[1])
    outcomes = sub.wait(progress_bar=False, poll_s=0.3, timeout_s=240)
    assert [(o.state, o.attempts, o.restarts) for o in outcomes] == [("done", 2, 1)] * 2
    assert json.loads((count / "result.json").read_text()) == \
        {"sum": sum(i * i for i in range(1, steps + 1)), "attempts": 2}
    result = json.loads((pre / "result.json").read_text())
    assert result["attempts"] == 2 and result["saved"]["step"] >= 1, result
    o = outcomes[1]
    stdout = o.log.with_name(o.log.name.replace("_log.err", "_log.out")).read_text()
    assert "this job is preempted" in o.log.read_text() + stdout
    assert status(out).counts()["requeued"] == 2
    assert commands.main(["jobs", str(out), "--all"]) == 0
    assert "requeued 1x" in capsys.readouterr().out
