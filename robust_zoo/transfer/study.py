"""The transfer study: a grid of runs (model × data set × mode × lr × seed) and one table.

``plan`` turns the grid into ``Run``s. Each run is one unit of work (``execute``, a module-level
function a job array can call) that writes only its own folder,
``OUT/<model>/<data set>/<mode>[-<protocol>][-g<PX>][-faithful][-lr<lr>]/seed<k>/``
(``runner.run_dir``), ending with its ``result.json``. ``aggregate`` reads every run folder
under OUT in one process and writes ``OUT/results.csv``/``results.json`` (one row per run),
``OUT/summary.csv``/``summary.json`` (one row per grid cell: the mean over its seeds with the
min and max, the paper's error bars) and the figures. A run counts as finished when its
``result.json`` holds a result of the same config (``finished``), so running the same grid
again runs only the missing or failed runs (``force=True`` redoes them). Data sets, models and
the protocol of every mode are checked before the first run starts (``check``), so a missing
data set, a misspelt name or a protocol a mode cannot run fails in seconds rather than hours in.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..data.transfer_sets import get_spec, load_splits
from ..engine.distributed import Dist, barrier, cleanup, setup
from ..fileio import atomic_write_text
from .hparams import TransferConfig
from .runner import DEFAULT_CACHE, check_model_name, load_model, run_dir, run_transfer

__all__ = ["Run", "Execution", "plan", "check", "finished", "pending", "execute", "sweep",
           "run_here", "submit", "collect", "over_seeds", "aggregate", "tables", "format_table",
           "summary_row", "write_results", "read_results", "COLUMNS", "SUMMARY_COLUMNS"]

COLUMNS = ["model", "arch", "norm", "eps", "dataset", "mode", "granularity", "faithful", "path",
           "protocol", "views", "metric", "accuracy", "top1", "mean_per_class", "lr", "epochs",
           "seed", "n_train", "n_test", "time_s", "paper_accuracy", "out_dir"]
# What names a grid cell: the runs of one cell differ only in their seed.
CELL = ("model", "dataset", "mode", "protocol", "views", "granularity", "faithful", "path", "lr",
        "epochs")
SUMMARY_COLUMNS = ["model", "arch", "norm", "eps", "dataset", "mode", "granularity", "faithful",
                   "path", "protocol", "views", "metric", "lr", "epochs", "seeds", "accuracy",
                   "accuracy_min", "accuracy_max", "paper_accuracy"]
_FLOATS = ("eps", "accuracy", "top1", "mean_per_class", "lr", "time_s", "paper_accuracy",
           "accuracy_min", "accuracy_max")
_INTS = ("granularity", "epochs", "n_train", "n_test", "views", "seed", "seeds")


@dataclass(frozen=True)
class Run:
    """One run of a grid: ``config`` holds its mode, seed and lr (None: the paper's table)."""

    model: str
    dataset: str
    config: TransferConfig
    dir: Path

    @property
    def key(self) -> str:
        """``<model>/<data set>/<mode tag>/seed<k>``: the run's folder below OUT."""
        return "/".join(self.dir.parts[-4:])


@dataclass(frozen=True)
class Execution:
    """How runs execute; nothing here changes a result."""

    data_root: str
    manifest: Any = None
    pretrained: bool = True
    cache_dir: Any = DEFAULT_CACHE
    resume: bool = False
    progress: bool = True
    workers: int = 0
    device: str | None = None
    save_model: bool | None = None


def plan(models: Sequence[str], datasets: Sequence[str], *, out, modes: Sequence[str] = (
         "fixed-feature",), seeds: Sequence[int] | None = None,
         lrs: Sequence[float | None] | None = None, config: TransferConfig | None = None,
         ) -> list[Run]:
    """Every (model, data set, mode, lr, seed) of the grid, model by model. ``seeds`` and
    ``lrs`` default to the config's own; a protocol that a mode cannot run raises here."""
    cfg = config or TransferConfig()
    runs = []
    for m in models:
        for d in (get_spec(d).name for d in datasets):
            for mode in modes:
                for lr in (cfg.lr,) if lrs is None else lrs:
                    for seed in (cfg.seed,) if seeds is None else seeds:
                        rcfg = dataclasses.replace(cfg, mode=mode, lr=lr, seed=seed)
                        runs.append(Run(m, d, rcfg, run_dir(out, m, d, rcfg)))
    return runs


def check(runs: Sequence[Run], how: Execution) -> dict[str, tuple]:
    """Fail early: every data set is there (its splits, returned by name) and every model name
    is known."""
    splits = {d: load_splits(d, how.data_root) for d in dict.fromkeys(r.dataset for r in runs)}
    for m in dict.fromkeys(r.model for r in runs):
        check_model_name(m, manifest=how.manifest, pretrained=how.pretrained)
    return splits


def finished(run: Run) -> dict | None:
    """The result in the run's folder if it is a finished run of the run's config (with the
    paper's lr when the config names none)."""
    path = run.dir / "result.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    want, have = run.config.resolved().to_dict(), dict(res.get("config") or {})
    if run.config.lr is None:
        want.pop("lr")
        have.pop("lr", None)
    return res if have == want else None


def pending(runs: Iterable[Run]) -> list[Run]:
    """The runs without a finished result: never started, failed, cancelled or stale."""
    return [r for r in runs if finished(r) is None]


def execute(run: Run, how: Execution, *, model: Any = None, dist: Dist | None = None,
            datasets: tuple | None = None, log: Callable = print) -> dict:
    """Do ``run`` (``model``: its network already loaded, else loaded here) and write its folder;
    with ``how.resume`` it continues from the checkpoint the folder holds. Module level, so a
    job array can pickle it."""
    if model is None:
        model = load_model(run.model, manifest=how.manifest, pretrained=how.pretrained,
                           progress=how.progress)
    return run_transfer(model, run.dataset, data_root=how.data_root, out_dir=run.dir,
                        config=run.config, cache_dir=how.cache_dir, resume=how.resume,
                        progress=how.progress, workers=how.workers, device=how.device,
                        save_model=how.save_model, dist=dist, log=log, model_name=run.model,
                        datasets=datasets)


def run_local(runs: Sequence[Run], how: Execution, *, dist: Dist, splits: dict[str, tuple],
              log: Callable = print) -> None:
    """``runs`` one after another in this process (every process of a torchrun group), each
    model loaded once for its consecutive runs."""
    name, model = None, None
    for run in runs:
        if run.model != name:
            name, model = run.model, None
            model = load_model(run.model, manifest=how.manifest, pretrained=how.pretrained,
                               progress=how.progress)
        execute(run, how, model=model, dist=dist, datasets=splits[run.dataset], log=log)


def skip_finished(runs: Sequence[Run], force: bool, log: Callable = print) -> list[Run]:
    """The runs still to do (all with ``force``), saying how many were finished before."""
    todo = list(runs) if force else pending(runs)
    if len(todo) < len(runs):
        log(f"{len(runs) - len(todo)} of {len(runs)} runs finished before: skipped "
            f"({len(todo)} to run)")
    return todo


def sweep(models: Sequence[str], datasets: Sequence[str], *, data_root, out,
          modes: Sequence[str] = ("fixed-feature",), config: TransferConfig | None = None,
          seeds: Sequence[int] | None = None, lrs: Sequence[float | None] | None = None,
          manifest: Any = None, pretrained: bool = True, download: bool = False,
          cache_dir: Any = DEFAULT_CACHE, resume: bool = True, force: bool = False,
          progress: bool = True, workers: int = 0, device: str | None = None,
          save_model: bool | None = None, plots: bool = True, log: Callable = print,
          ) -> list[dict]:
    """Run the grid in this process; return its runs' rows (the table of every run under OUT
    is in OUT/results.* and OUT/summary.*)."""
    runs = plan(models, datasets, out=out, modes=modes, seeds=seeds, lrs=lrs, config=config)
    how = Execution(str(data_root), manifest, pretrained, cache_dir, resume, progress, workers,
                    device, save_model)
    run_here(runs, how, out=out, download=download, force=force, plots=plots, log=log)
    return [summary_row(finished(r) or {}) for r in runs]


def run_here(runs: Sequence[Run], how: Execution, *, out, download: bool = False,
             force: bool = False, plots: bool = True, log: Callable = print) -> None:
    """The unfinished ``runs`` in this process (every process of a torchrun group takes part;
    they are recorded in a ledger of OUT for ``robust-zoo jobs``), then the tables and figures
    of OUT."""
    dist = setup(how.device)
    try:
        if download and dist.is_main:
            for d in dict.fromkeys(r.dataset for r in runs):
                load_splits(d, how.data_root, download=True)
        barrier(dist)
        splits = check(runs, how)
        todo = skip_finished(runs, force, log if dist.is_main else _quiet)
        from ..launch import Task, recording_local

        recorded = (recording_local([Task(r.key, r.dir, execute, (r, how)) for r in todo],
                                    Path(out), name="robust-zoo-transfer", aggregate=tables)
                    if dist.is_main else contextlib.nullcontext())
        with recorded:                   # robust-zoo jobs OUT follows these runs too
            run_local(todo, how, dist=dist, splits=splits, log=log)
        barrier(dist)
        if dist.is_main:
            aggregate(out, plots=plots, log=log)
    finally:
        cleanup(dist)


def _quiet(*_: Any) -> None:
    pass


def submit(runs: Sequence[Run], how: Execution, opts: Any, out: "str | Path", *,
           force: bool = False, plots: bool = True, log: Callable = print) -> int:
    """The grid's unfinished runs as one SLURM job array (``robust_zoo.launch``, ``opts`` a
    ``LaunchOptions``): one array task per run, each resuming from its folder when requeued.
    Prints the job ids and logs, then ``launch.finish``: without ``opts.wait`` the table of the
    runs finished so far; with it, waits (rewriting the tables as runs finish), aggregates and
    prints the table, and returns 1 after naming the logs of failed runs; else 0."""
    from ..launch import Task, finish, launch
    from ..launch.slurm import parameters, require_slurm

    name = "robust-zoo-transfer"
    require_slurm()                  # sbatch, submitit and the flags: before touching OUT
    parameters(opts, "array", name)
    todo = skip_finished(runs, force, log)
    for run in todo:                 # a result of another config (or --force): not "done"
        (run.dir / "result.json").unlink(missing_ok=True)
    how = dataclasses.replace(how, resume=True)
    tasks = [Task(r.key, r.dir, execute, (r, how)) for r in todo]
    sub = launch(tasks, opts, Path(out), kind="array", name=name, aggregate=tables)
    for line in sub.describe():
        log(line)
    return finish(sub, tasks, opts, functools.partial(tables, plots=plots), then="for the table",
                  log=log, refresh=functools.partial(tables, plots=False))


# ----------------------------------------------------------------------------- the table


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    """One table row; ``paper_accuracy`` is the paper's number where the run's protocol is
    comparable with it (``paper_reference``), else empty."""
    row = {k: result.get(k) for k in COLUMNS}
    row["paper_accuracy"] = (result.get("paper_reference") or {}).get("accuracy")
    return row


def collect(out: "str | Path") -> list[dict]:
    """The row of every finished run under ``out`` (its folders' result.json files)."""
    rows = []
    for path in sorted(Path(out).glob("*/*/*/seed*/result.json")):
        try:
            rows.append(summary_row(json.loads(path.read_text())))
        except (OSError, ValueError):     # results are written atomically: not one of ours
            continue
    return rows


def over_seeds(rows: Iterable[dict]) -> list[dict]:
    """One row per grid cell (``CELL``): ``accuracy`` the mean over its seeds, ``accuracy_min``
    and ``accuracy_max`` the extremes, ``seeds`` how many."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault(tuple(r.get(k) for k in CELL), []).append(r)
    out = []
    for rs in cells.values():
        acc = [float(r["accuracy"]) for r in rs]
        row = {k: rs[0].get(k) for k in SUMMARY_COLUMNS}
        row.update(seeds=len(rs), accuracy=sum(acc) / len(acc), accuracy_min=min(acc),
                   accuracy_max=max(acc))
        out.append(row)
    return out


def _write_table(rows: list[dict], columns: list[str], out: Path, stem: str) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    atomic_write_text(out / f"{stem}.csv", buf.getvalue())
    atomic_write_text(out / f"{stem}.json", json.dumps(rows, indent=2) + "\n")


def write_results(rows: list[dict], out: Path) -> None:
    """``out/results.csv`` and ``out/results.json``: one row per run."""
    _write_table(rows, COLUMNS, Path(out), "results")


def read_results(path: "str | Path") -> list[dict]:
    """Rows from results.json / results.csv (or summary.*) (numbers parsed back)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if path.suffix == ".json":
        return json.loads(path.read_text())
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k in _FLOATS:
                if k in r:
                    r[k] = float(r[k]) if r[k] not in (None, "") else None
            for k in _INTS:
                if k in r:
                    r[k] = int(r[k]) if r[k] not in (None, "") else None
            r["faithful"] = r.get("faithful") == "True"
            r["norm"] = r.get("norm") or None
            r["protocol"] = r.get("protocol") or None
            rows.append(r)
    return rows


def format_table(summary: Sequence[dict]) -> list[str]:
    """The summary as text: accuracy as the mean over seeds [min, max], the paper's number."""
    head = ("model", "dataset", "mode", "lr", "seeds", "accuracy % mean [min, max]", "paper")
    body = [(r["model"], r["dataset"], r["mode"] + (f" ({r['protocol']})" if r.get("protocol")
                                                     not in (None, "paper") else ""),
             f"{r['lr']:g}" if r.get("lr") is not None else "", str(r["seeds"]),
             f"{r['accuracy']:.2f} [{r['accuracy_min']:.2f}, {r['accuracy_max']:.2f}]",
             f"{r['paper_accuracy']:.2f}" if r.get("paper_accuracy") is not None else "")
            for r in sorted(summary, key=lambda r: (r["dataset"], r["mode"], r["model"],
                                                    r.get("lr") or 0.0))]
    widths = [max(len(row[i]) for row in (head, *body)) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in (head, *body)]


def tables(out: "str | Path", *, plots: bool = True) -> list[str]:
    """``aggregate`` for ``robust-zoo jobs OUT`` (recorded in the ledger of a submission) and
    ``launch.finish``: the tables (and figures) of the runs finished so far; the lines of the
    summary ([] before any run has finished)."""
    lines: list[str] = []
    if collect(out):
        aggregate(out, plots=plots, log=lines.append)
    return lines


def aggregate(out: "str | Path", *, plots: bool = True, log: Callable = print) -> list[dict]:
    """Read every run folder under ``out`` and write the tables and figures; print the summary.
    One process does this (the local run, the one waiting for a job array, or the next run)."""
    out = Path(out)
    rows = collect(out)
    write_results(rows, out)
    summary = over_seeds(rows)
    _write_table(summary, SUMMARY_COLUMNS, out, "summary")
    for line in format_table(summary):
        log(line)
    if plots:
        from .plots import make_plots

        for p in make_plots(summary, out):
            log(f"wrote {p}")
    return summary
