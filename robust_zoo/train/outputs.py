"""What a finished run leaves in its folder, and the manifest entry that makes it loadable.

``model.safetensors`` (bare network, ``weights.save_weights``), ``weights_manifest.json`` (one
entry: files, recipe, final metrics, provenance), ``README.md`` (model card), plus the
``recipe.json``, ``metrics.jsonl`` and ``training_curves.png`` the loop keeps up to date.
``robust_zoo.load(name, manifest=run_dir / "weights_manifest.json")`` loads the result.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write_text
from ..hub.manifest import Entry, Manifest
from ..naming import eps_display
from ..recipe import Recipe
from ..formats.safetensors_file import save_weights

WEIGHTS = "model.safetensors"
MANIFEST = "weights_manifest.json"
RECIPE = "recipe.json"
METRICS = "metrics.jsonl"
CURVES = "training_curves.png"
CARD = "README.md"


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    """The commit of the source tree robust_zoo runs from, if it is a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def hardware(device: torch.device, world_size: int) -> dict[str, Any]:
    info: dict[str, Any] = {"device_type": device.type, "world_size": world_size,
                            "torch": torch.__version__, "python": platform.python_version(),
                            "platform": platform.platform(), "cpu": _cpu_name(),
                            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_recipe(run_dir: Path, recipe: Recipe) -> None:
    atomic_write_text(run_dir / RECIPE, json.dumps(recipe.to_dict(), indent=2) + "\n")


def metric_records(result, attack: dict | None, norm: str, eps: float,
                   dataset: str) -> list[dict]:
    """Manifest metric records from the final evaluation (an ``engine.EvalResult``)."""
    base = {"dataset": dataset, "split": "val", "n_examples": result.n,
            "source": "robust_zoo.train final evaluation (fp32)"}
    out = [{"name": "clean_top1", "value": round(result.clean_top1, 4), **base}]
    if result.pgd_top1 is not None:
        out.append({"name": "pgd_top1", "value": round(result.pgd_top1, 4), "norm": norm,
                    "eps": eps, "attack": dict(attack), **base})
    return out


def finalize(run_dir: Path, *, name: str, recipe: Recipe, net: torch.nn.Module,
             mean, std, preprocessing: dict, metrics: list[dict], provenance: dict,
             description: str | None = None) -> dict[str, Any]:
    """Write weights, manifest, model card; return the manifest entry (as a dict)."""
    recipe_json = json.dumps(recipe.to_dict(), sort_keys=True)
    weights = save_weights(net.state_dict(), run_dir / WEIGHTS, arch=recipe.arch,
                           num_classes=recipe.num_classes, mean=mean, std=std, name=name,
                           recipe=recipe_json)
    norm = "L2" if recipe.norm == "l2" else "Linf"
    entry = Entry.for_weights(
        weights, name=name, arch=recipe.arch, norm=recipe.norm, eps=recipe.eps,
        num_classes=recipe.num_classes, base_dir=run_dir, metrics=metrics,
        preprocessing=preprocessing, recipe=recipe.to_dict(),
        description=description or (
            f"{recipe.arch} trained with robust_zoo.train on {recipe.dataset}: "
            + ("standard training (ε = 0)" if not recipe.adversarial else
               f"{norm} PGD-{recipe.attack_steps} adversarial training, "
               f"ε = {eps_display(recipe.norm, recipe.eps)}")),
        provenance=provenance).to_dict()
    Manifest([Entry.from_dict(entry, run_dir)]).write(run_dir / MANIFEST)
    atomic_write_text(run_dir / CARD, model_card(entry, run_dir))
    return entry


def model_card(entry: dict, run_dir: Path) -> str:
    from ..hub.publish import model_card as card     # robust_zoo's Hub model card

    prov = entry.get("provenance", {})
    extra = ["", "## Provenance",
             f"- Trained with `robust_zoo.train`: `{prov.get('command', '?')}`",
             f"- Source commit: {prov.get('git_commit') or 'unknown'}",
             f"- Started {prov.get('start_time')}, finished {prov.get('end_time')}",
             f"- Hardware: {_hw_line(prov.get('hardware', {}))}",
             "", "Load it with:", "```python", "import robust_zoo",
             f'model = robust_zoo.load("{entry["name"]}", manifest="weights_manifest.json")',
             "```", ""]
    return card(Entry.from_dict(entry, run_dir)).rstrip("\n") + "\n" + "\n".join(extra)


def _hw_line(hw: dict) -> str:
    dev = hw.get("gpu") or hw.get("cpu") or hw.get("device_type", "?")
    return f"{hw.get('world_size', 1)} × {dev} (torch {hw.get('torch', '?')})"


def combined_manifest(out: Path, runs: dict[str, Path]) -> Path:
    """``out/weights_manifest.json`` with the entry of every run folder in ``runs`` (a folder
    under ``out`` for each key: the entry's file paths get that prefix)."""
    models = []
    for sub, run_dir in runs.items():
        entry = json.loads((Path(run_dir) / MANIFEST).read_text())["models"][0]
        for f in entry["files"]:
            f["path"] = f"{sub}/{f['path']}"
        models.append(Entry.from_dict(entry, Path(out)))
    path = Path(out) / MANIFEST
    Manifest(models, path).write(path)
    return path
