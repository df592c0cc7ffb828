"""``robust-zoo regenerate``: zoo entries trained again from their recorded recipes, one training
job per entry (``OUT/NAME``), entries whose run folder already holds the finished model skipped,
and, once every run has finished, one manifest of them all (``OUT/weights_manifest.json``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import UsageError
from . import outputs

__all__ = ["regenerate", "entry_names", "entry_recipe", "manifest_of_runs"]


def entry_names(names: Sequence[str], all_entries: bool, manifest: str | None) -> list[str]:
    """The entries asked for (``--all``: every entry of the manifest that records a recipe)."""
    from ..hub.manifest import load_manifest

    m = load_manifest(manifest)
    if all_entries == bool(names):
        raise UsageError("regenerate: name one or more models, or pass --all (not both); "
                         "robust-zoo list shows the names")
    if all_entries:
        return [e.name for e in m if e.recipe]
    for name in names:
        m.get(name)          # an unknown name: UnknownModelError with the closest names
    return list(dict.fromkeys(names))


def entry_recipe(name: str, manifest: str | None, out: Path, data: str | None):
    """(Recipe, notes) of entry ``name`` as ``python -m robust_zoo.train --from-manifest`` reads
    it (recorded values, Recipe defaults for what the entry does not record)."""
    from .cli import build_parser, resolve_recipe

    argv = ["--from-manifest", name, "--out", str(out)]
    argv += ["--manifest", str(manifest)] if manifest else []
    argv += ["--data", str(data)] if data else []
    return resolve_recipe(build_parser().parse_args(argv))


def regenerate(names: Sequence[str], *, out: str | Path, data: str | None, manifest: str | None,
               launch_opts, argv: Sequence[str], device: str | None = None) -> int:
    """Submit (or with ``--launcher local`` run here) one training run per entry; write the
    manifest of the regenerated entries once all of them have finished."""
    from ..launch import finish, launch
    from .jobs import training_task
    from .options import RunOptions

    out = Path(out).expanduser().absolute()
    tasks = []
    for name in names:
        recipe, notes = entry_recipe(name, manifest, out / name, data)
        options = RunOptions(out=out / name, data=data, name=name, device=device,
                             progress=launch_opts.launcher == "local", argv=list(argv),
                             notes=notes)
        tasks.append(training_task(name, recipe, options))
    sub = launch(tasks, launch_opts, out, kind="ddp", name="regenerate",
                 aggregate="robust_zoo.train.regenerate:manifest_of_runs")
    for line in sub.describe():
        print(line)
    return finish(sub, tasks, launch_opts, manifest_of_runs,
                  then=f"to write {out / outputs.MANIFEST}")


def manifest_of_runs(out: str | Path) -> list[str]:
    """``OUT/weights_manifest.json`` with the entry of every finished run folder under ``OUT``
    (what the waiting process, ``robust-zoo jobs OUT`` or the next run of the command writes:
    one process aggregates)."""
    out = Path(out)
    runs = {p.parent.name: p.parent for p in sorted(out.glob(f"*/{outputs.WEIGHTS}"))
            if (p.parent / outputs.MANIFEST).is_file()}
    if not runs:
        return []
    path = outputs.combined_manifest(out, runs)
    return [f"wrote {path}: {len(runs)} entries ({', '.join(runs)})"]
