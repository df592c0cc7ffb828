"""Many models × data sets × modes in one call, with a results table and the paper's figures.

Every run writes ``OUT/<model>/<data set>/<mode>/result.json``; the sweep rewrites
``OUT/results.csv`` and ``OUT/results.json`` after each run, so an interrupted sweep keeps what
it finished, and running it again skips runs whose result.json exists with the same protocol
(``force=True`` redoes them). Data sets, models and the protocol of every mode are checked
before the first run starts, so a missing data set, a misspelt name or a protocol a mode cannot
run fails in seconds rather than hours in.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from ..fileio import atomic_write_text
from ..data.transfer_sets import load_splits
from ..engine.distributed import barrier, cleanup, setup
from .hparams import TransferConfig
from .runner import DEFAULT_CACHE, check_model_name, load_model, run_dir, run_transfer

__all__ = ["sweep", "summary_row", "write_results", "read_results", "COLUMNS"]

COLUMNS = ["model", "arch", "norm", "eps", "dataset", "mode", "granularity", "faithful", "path",
           "protocol", "views", "metric", "accuracy", "top1", "mean_per_class", "lr", "epochs",
           "n_train", "n_test", "time_s", "paper_accuracy", "out_dir"]


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    """One table row; ``paper_accuracy`` is the paper's number where the run's protocol is
    comparable with it (``paper_reference``), else empty."""
    row = {k: result.get(k) for k in COLUMNS}
    row["paper_accuracy"] = (result.get("paper_reference") or {}).get("accuracy")
    return row


def write_results(rows: list[dict], out: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    atomic_write_text(out / "results.csv", buf.getvalue())
    atomic_write_text(out / "results.json", json.dumps(rows, indent=2) + "\n")


def read_results(path: "str | Path") -> list[dict]:
    """Rows from a sweep's results.json or results.csv (numbers parsed back)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if path.suffix == ".json":
        return json.loads(path.read_text())
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k in ("eps", "accuracy", "top1", "mean_per_class", "lr", "time_s",
                      "paper_accuracy"):
                r[k] = float(r[k]) if r.get(k) not in (None, "") else None
            for k in ("granularity", "epochs", "n_train", "n_test", "views"):
                r[k] = int(r[k]) if r.get(k) not in (None, "") else None
            r["faithful"] = r.get("faithful") == "True"
            r["norm"] = r.get("norm") or None
            r["protocol"] = r.get("protocol") or None
            rows.append(r)
    return rows


def _finished(res_file: Path, cfg: TransferConfig) -> dict | None:
    """The result in ``res_file`` if it is a finished run of ``cfg``'s protocol (a result
    without a protocol, written before protocols were recorded, is not)."""
    if not res_file.exists():
        return None
    res = json.loads(res_file.read_text())
    r = cfg.resolved()
    if res.get("protocol") != r.protocol or res.get("views") != r.views:
        return None
    return res


def sweep(models: Sequence[str], datasets: Sequence[str], *, data_root, out,
          modes: Sequence[str] = ("fixed-feature",), config: TransferConfig | None = None,
          manifest: Any = None, pretrained: bool = True, download: bool = False,
          cache_dir: Any = DEFAULT_CACHE, resume: bool = True, force: bool = False,
          progress: bool = True, workers: int = 0, device: str | None = None,
          save_model: bool | None = None, plots: bool = True, log: Callable = print,
          ) -> list[dict]:
    """Run every (model, data set, mode); return the summary rows (also in OUT/results.*)."""
    cfg = config or TransferConfig()
    out = Path(out)
    dist = setup(device)
    try:
        if download and dist.is_main:
            for d in datasets:
                load_splits(d, data_root, download=True)
        barrier(dist)
        splits = {d: load_splits(d, data_root) for d in datasets}  # fails early when missing
        for m in models:  # same early check for model names
            check_model_name(m, manifest=manifest, pretrained=pretrained)
        mode_cfgs = [dataclasses.replace(cfg, mode=mode) for mode in modes]  # and protocols
        rows: list[dict] = []
        done = {}
        if (out / "results.json").exists() and not force:
            done = {r["out_dir"]: r for r in read_results(out / "results.json")}
        for m in models:
            model = None
            for d in datasets:
                spec = splits[d][2]
                for rcfg in mode_cfgs:
                    rdir = run_dir(out, m, spec.name, rcfg)
                    res_file = rdir / "result.json"
                    before = _finished(res_file, rcfg) if not force else None
                    if before is not None:
                        rows.append(summary_row(before))
                        if dist.is_main:
                            log(f"[{m} → {spec.name} {rcfg.mode}] done before: skipped")
                        continue
                    if model is None:
                        model = load_model(m, manifest=manifest, pretrained=pretrained,
                                           progress=progress)
                    res = run_transfer(model, d, data_root=data_root, out_dir=rdir, config=rcfg,
                                       cache_dir=cache_dir, resume=resume, progress=progress,
                                       workers=workers, save_model=save_model, dist=dist,
                                       log=log, model_name=m, datasets=splits[d])
                    rows.append(summary_row(res))
                    if dist.is_main:
                        merged = {**done, **{r["out_dir"]: r for r in rows}}
                        write_results(list(merged.values()), out)
            del model
        if dist.is_main:
            merged = {**done, **{r["out_dir"]: r for r in rows}}
            write_results(list(merged.values()), out)
            if plots:
                from .plots import make_plots

                plotted = make_plots(list(merged.values()), out)
                for p in plotted:
                    log(f"wrote {p}")
        return rows
    finally:
        cleanup(dist)
