"""Many models at once: one task per model (``evaluate_job`` writes ``OUT/NAME/result.json``,
the RobustBench-style result of ``evaluate``), run here one after another or as a SLURM job
array, and one table of all of them against the manifest's claims, written by the one process
that aggregates (``OUT/results.json``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ..fileio import atomic_write_text
from .run import claim_verdict, evaluate

RESULT = "result.json"
TABLE = "results.json"

__all__ = ["evaluate_job", "evaluate_many", "format_table", "tables", "RESULT", "TABLE"]


def evaluate_job(name: str, data: str, run_dir: str, kwargs: dict[str, Any]) -> None:
    """One model: ``evaluate(name, data, **kwargs)`` into ``run_dir/result.json``."""
    result = evaluate(name, data, **kwargs)
    atomic_write_text(Path(run_dir) / RESULT, json.dumps(result, indent=2) + "\n")


def _cell(result: dict, metric: str) -> str:
    value = result["metrics"].get(metric)
    if value is None:
        return "-"
    claim = next((c for c in result["claims"] if c["name"] == metric), None)
    if claim is None:
        return f"{value:.2f}"
    verdict = claim_verdict(claim)
    return f"{value:.2f} ({claim['claimed']:.2f}{'' if verdict == 'ok' else ' ' + verdict})"


def format_table(results: Sequence[dict]) -> str:
    """One row per model: measured top-1 (claimed, DIFFERS where outside the allowed
    difference, not comparable where another attack measured it) for clean, PGD and
    AutoAttack, and whether every claim holds."""
    head = ("model", "n", "threat", "clean (claimed)", "PGD (claimed)", "AutoAttack (claimed)",
            "claims")
    rows = []
    for r in results:
        verdicts = [claim_verdict(c) for c in r["claims"]]
        verdict = ("-" if not verdicts else "DIFFERS" if "DIFFERS" in verdicts else
                   "ok" if set(verdicts) == {"ok"} else
                   f"ok, {verdicts.count('not comparable')} not comparable")
        rows.append((r["model"], str(r["n"]), f"{r['norm']} {r['eps_display']}",
                     _cell(r, "clean_top1"), _cell(r, "pgd_top1"), _cell(r, "autoattack_top1"),
                     verdict))
    w = [max(len(row[i]) for row in rows + [head]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(row)).rstrip()
             for row in [head, *rows]]
    bad = sum(row[-1] == "DIFFERS" for row in rows)
    lines.append(f"{len(rows)} models" + (f", {bad} differ from their claims" if bad else
                                          ", every claim holds" if rows else ""))
    return "\n".join(lines)


def tables(out: str | Path) -> list[str]:
    """The table of every model evaluated into ``out`` (``OUT/NAME/result.json``), also written
    as ``OUT/results.json``: what the waiting process, ``robust-zoo jobs OUT`` or the next run
    of the command prints (one process aggregates; array tasks write only their own folder)."""
    out = Path(out)
    results = [json.loads(p.read_text()) for p in sorted(out.glob(f"*/{RESULT}"))]
    if not results:
        return []
    atomic_write_text(out / TABLE, json.dumps(results, indent=2) + "\n")
    return format_table(results).splitlines()


def evaluate_many(names: Sequence[str], data: str, out: str | Path, kwargs: dict[str, Any],
                  launch_opts) -> int:
    """One task per model (finished ones skipped); once all have their result, the table (and
    while they run, the table of those finished so far: ``launch.finish``)."""
    from ..launch import Task, finish, launch

    out = Path(out).expanduser().absolute()
    data = str(Path(data).expanduser().absolute())
    tasks = [Task(key=n, run_dir=out / n, fn=evaluate_job, args=(n, data, str(out / n), kwargs),
                  done_file=RESULT) for n in names]
    sub = launch(tasks, launch_opts, out, kind="array", name="evaluate",
                 aggregate="robust_zoo.evaluate.array:tables")
    if launch_opts.launcher == "slurm":
        for line in sub.describe():
            print(line, file=sys.stderr)
    return finish(sub, tasks, launch_opts, tables, then="for the table",
                  log=lambda line: print(line, file=sys.stderr), refresh=tables)
