"""The transfer study as a grid of runs: seeds, one folder per run, one aggregated table (mean
over seeds with min/max), reruns that do only what is missing, named studies, --dry-run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from robust_zoo.transfer.__main__ import main
from robust_zoo.transfer.hparams import PAPER_TABLE, STUDIES

from zoo import digits_folder, random_manifest

MODELS = ("mini_resnet_l2_eps0", "mini_resnet_l2_eps3")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return digits_folder(tmp_path_factory.mktemp("digits"), per_class=(8, 4))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return random_manifest(tmp_path_factory.mktemp("models"),
                           [(MODELS[0], 0.0, 1), (MODELS[1], 3.0, 2)], arch="mini_resnet")


def grid_args(digits: Path, manifest: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", *MODELS, "--manifest", str(manifest), "--dataset", "imagefolder",
            "--data-root", str(digits), "--out", str(out), "--epochs", "1", "--image-size", "16",
            "--workers", "0", "--no-progress", "--lr", "0.05", *extra]


def cli(args: list[str], capsys) -> tuple[int, str]:
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


SEED_GRID = ("--seeds", "0", "1")          # 2 models × 2 seeds = 4 runs


@pytest.fixture(scope="module")
def local_grid(digits, manifest, tmp_path_factory) -> tuple[Path, str]:
    """The 4-run grid done here (--launcher local): its OUT and what it printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("local") / "study"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = main(grid_args(digits, manifest, out, *SEED_GRID, "--launcher", "local"))
    assert rc == 0, buf.getvalue()
    return out, buf.getvalue()


def run_results(out: Path) -> dict[tuple[str, int], dict]:
    """(model, seed) → result.json of every run of the grid under ``out``."""
    return {(m, seed): json.loads((out / m / "imagefolder" / "fixed-feature-lr0.05" /
                                   f"seed{seed}" / "result.json").read_text())
            for m in MODELS for seed in (0, 1)}


def cli_jobs(out: Path, capsys) -> tuple[int, str]:
    """``robust-zoo jobs OUT``: its exit status and output."""
    from robust_zoo.cli.commands import main as robust_zoo

    rc = robust_zoo(["jobs", str(out)])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def test_seeds_make_one_folder_per_run_and_a_table_over_seeds(local_grid, digits, manifest,
                                                               tmp_path, capsys):
    out, text = local_grid
    results = {k: r["accuracy"] for k, r in run_results(out).items()}
    for (m, seed), res in run_results(out).items():
        assert res["seed"] == seed and res["config"]["seed"] == seed and res["lr"] == 0.05
    rows = json.loads((out / "results.json").read_text())
    assert sorted((r["model"], r["seed"]) for r in rows) == sorted(results)
    summary = {r["model"]: r for r in json.loads((out / "summary.json").read_text())}
    for m in MODELS:
        accs = [results[(m, 0)], results[(m, 1)]]
        s = summary[m]
        assert s["seeds"] == 2 and s["accuracy"] == pytest.approx(sum(accs) / 2)
        assert (s["accuracy_min"], s["accuracy_max"]) == (min(accs), max(accs))
        line = next(ln for ln in text.splitlines() if ln.startswith(m + " "))
        assert f"{s['accuracy']:.2f} [{min(accs):.2f}, {max(accs):.2f}]" in line
    assert (out / "summary.csv").read_text().splitlines()[0].endswith(
        "seeds,accuracy,accuracy_min,accuracy_max,paper_accuracy")
    assert (out / "robust_vs_standard_fixed-feature.png").stat().st_size > 1000

    # a failed run (no result.json) and a stale one (another recipe): only those run again
    out = shutil.copytree(out, tmp_path / "again")
    lost = out / MODELS[1] / "imagefolder" / "fixed-feature-lr0.05" / "seed1" / "result.json"
    lost.unlink()
    stale = out / MODELS[0] / "imagefolder" / "fixed-feature-lr0.05" / "seed0" / "result.json"
    old = json.loads(stale.read_text())
    stale.write_text(json.dumps({**old, "config": {**old["config"], "epochs": 7}}))
    kept = out / MODELS[1] / "imagefolder" / "fixed-feature-lr0.05" / "seed0" / "result.json"
    mtime = kept.stat().st_mtime_ns
    args = grid_args(digits, manifest, out, *SEED_GRID)
    rc, text = cli(args, capsys)
    assert rc == 0 and "2 of 4 runs finished before: skipped (2 to run)" in text
    assert kept.stat().st_mtime_ns == mtime
    assert json.loads(lost.read_text())["accuracy"] == results[(MODELS[1], 1)]
    assert json.loads(stale.read_text())["config"]["epochs"] == 1
    assert [{k: r[k] for k in ("model", "seeds", "accuracy")} for r in
            json.loads((out / "summary.json").read_text())] == \
        [{k: r[k] for k in ("model", "seeds", "accuracy")} for r in summary.values()]

    rc, text = cli([*args, "--dry-run"], capsys)
    assert rc == 0 and "= 4 runs; 4 finished in" in text and "0 to run" in text


def test_slurm_without_sbatch_is_one_line_and_leaves_out_alone(local_grid, digits, manifest,
                                                                 tmp_path, monkeypatch, capsys):
    out = shutil.copytree(local_grid[0], tmp_path / "study")
    stale = out / MODELS[0] / "imagefolder" / "fixed-feature-lr0.05" / "seed0" / "result.json"
    old = json.loads(stale.read_text())
    stale.write_text(json.dumps({**old, "config": {**old["config"], "epochs": 7}}))
    before = sorted((p, p.read_bytes()) for p in out.rglob("*") if p.is_file())
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))              # no sbatch
    rc, text = cli(grid_args(digits, manifest, out, *SEED_GRID, "--launcher", "slurm"), capsys)
    assert rc == 2 and text.startswith("error: --launcher slurm: sbatch is not on PATH")
    assert len(text.strip().splitlines()) == 1
    assert sorted((p, p.read_bytes()) for p in out.rglob("*") if p.is_file()) == before


def test_job_array_equals_local_runs_and_reruns_only_the_cancelled_one(
        slurm_env, local_grid, digits, manifest, tmp_path, capsys):
    """The grid as a SLURM job array (--wait): one array task cancelled while it waits for a
    slot; --wait and the run status report it failed, naming its log; the same command again
    submits only that run and completes the table; every result equals the local run's."""
    import threading
    import time

    from robust_zoo.launch.jobs import read_ledgers

    out = tmp_path / "array"
    args = grid_args(digits, manifest, out, *SEED_GRID, "--launcher", "slurm", "--wait",
                     "--array-parallelism", "3", "--time", "10")
    first: list[int] = []
    waiting = threading.Thread(target=lambda: first.append(main(args)))
    waiting.start()
    deadline = time.monotonic() + 60
    while not read_ledgers(out):
        assert time.monotonic() < deadline and waiting.is_alive(), capsys.readouterr()
        time.sleep(0.1)
    (ledger,) = read_ledgers(out)
    cancelled = ledger["tasks"][3]
    slurm_env.scancel(cancelled["job_id"])
    waiting.join(timeout=180)
    text = capsys.readouterr()
    text = text.out + text.err
    assert first == [1], text
    assert "error: 1 of 4 runs failed: " + cancelled["key"] in text, text
    assert cancelled["log"] in text
    assert "mini_resnet_l2_eps0  imagefolder  fixed-feature  0.05  2 " in text  # the table
    rc, text = cli_jobs(out, capsys)
    assert rc == 1 and "4 runs: 3 done, 0 running, 0 pending, 1 failed" in text, text
    failed = next(ln for ln in text.splitlines() if ln.strip().startswith("failed"))
    assert cancelled["key"] in failed and cancelled["job_id"] in failed
    assert cancelled["log"] in failed

    rc, text = cli(args, capsys)
    assert rc == 0, text
    assert "3 of 4 runs finished before: skipped (1 to run)" in text
    assert "submitted 1 runs as SLURM job array" in text
    assert len(read_ledgers(out)) == 2
    (out / "summary.json").unlink()
    rc, text = cli_jobs(out, capsys)                  # the status, then the study's tables
    assert rc == 0 and "4 runs: 4 done, 0 running, 0 pending, 0 failed" in text
    assert "mini_resnet_l2_eps3  imagefolder  fixed-feature  0.05  2 " in text
    here, there = run_results(local_grid[0]), run_results(out)
    for key in here:
        assert there[key]["accuracy"] == here[key]["accuracy"], key
        assert [h["train_loss"] for h in there[key]["history"]] == pytest.approx(
            [h["train_loss"] for h in here[key]["history"]], rel=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert sorted((r["model"], r["seeds"]) for r in summary) == [(m, 2) for m in MODELS]
    assert (summary == json.loads((local_grid[0] / "summary.json").read_text()))


def test_dry_run_prints_the_grid_and_its_gpu_hours(tmp_path, capsys):
    from robust_zoo.transfer.cost import forward_flops

    out = tmp_path / "never"
    rc, text = cli(["--study", "paper-full-network", "--dataset", "cifar10", "--dry-run",
                    "--out", str(out)], capsys)
    assert rc == 0, text
    assert not out.exists()                                     # nothing run or written
    assert "study paper-full-network: 40 models × 1 data set × 1 mode × 1 lr × 3 seeds = " \
           "120 runs; 0 finished" in text
    assert "lr: the paper's table per (data set, arch, mode)" in text
    # ResNet-50 at 224 px: 1,300 img/s PGD-3 × 3.23 (standard step) for 150 epochs of CIFAR-10's
    # 50,000 training images, the 10,000 test images at 3.08× that rate; 30 runs
    rate = 1300 * 3.23
    hours = 30 * (150 * 50000 / rate + 10000 / (rate * 3.08)) / 3600
    line = next(ln for ln in text.splitlines() if "full" in ln and " resnet50 " in ln)
    assert line.split()[2] == "30" and float(line.split()[4].replace(",", "")) == \
        pytest.approx(hours, abs=0.06)
    wide = next(ln for ln in text.splitlines() if "wide_resnet50_4" in ln)
    ratio = forward_flops("wide_resnet50_4", 224) / forward_flops("resnet50", 224)
    assert float(wide.split()[4].replace(",", "")) == pytest.approx(hours * ratio, rel=0.01)
    for row in ("'GPU host'", "'PGD-3 training step ÷ standard step'",
                "'forward + full backward'"):
        assert "benchmarks/README.md, " in text and row in text

    rc, text = cli(["--study", "paper-fixed-feature", "--dry-run", "--out", str(out)], capsys)
    assert rc == 0 and "40 models × 12 data sets × 1 mode × 1 lr × 3 seeds = 1440 runs" in text


def test_named_studies_are_the_papers_grid():
    import robust_zoo

    known = set(robust_zoo.list_models())
    for name, mode in (("paper-fixed-feature", "fixed-feature"), ("paper-full-network", "full")):
        s = STUDIES[name]
        assert s.modes == (mode,) and s.seeds == (0, 1, 2)
        assert set(s.datasets) == set(PAPER_TABLE) and len(s.datasets) == 12
        assert len(s.models) == 40 and set(s.models) <= known
        assert {robust_zoo.get_entry(m).arch for m in s.models} == {
            "resnet18", "resnet50", "wide_resnet50_2", "wide_resnet50_4"}


def test_grid_errors(digits, tmp_path, capsys):
    rc, text = cli(["--dataset", "cifar10", "--out", str(tmp_path / "o")], capsys)
    assert rc == 2 and "--model is required (or --study NAME" in text
    rc, text = cli(["--study", "paper-linear", "--dry-run"], capsys)
    assert rc == 2 and "invalid choice: 'paper-linear'" in text
    rc, text = cli(["--model", "mini_resnet", "--pretrained", "false", "--dataset", "imagefolder",
                    "--data-root", str(digits), "--seeds", "-1"], capsys)
    assert rc == 2 and "--seeds" in text
    assert not (tmp_path / "o").exists()


def test_figures_draw_the_spread_over_seeds(tmp_path):
    from robust_zoo.transfer.plots import make_plots

    rows = [{"model": f"resnet18_l2_eps{e}", "arch": "resnet18", "norm": "l2", "eps": e,
             "dataset": "cifar10", "mode": "full", "accuracy": acc, "accuracy_min": acc - 2,
             "accuracy_max": acc + 1} for e, acc in ((0.0, 80.0), (3.0, 85.0))]
    bare = [{k: v for k, v in r.items() if not k.startswith("accuracy_")} for r in rows]
    with_bars = make_plots(rows, tmp_path / "bars")
    without = make_plots(bare, tmp_path / "plain")
    assert [p.name for p in with_bars] == [p.name for p in without]
    for a, b in zip(with_bars, without):
        assert a.read_bytes() != b.read_bytes()
