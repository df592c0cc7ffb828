"""Figures in the style of the paper: robust vs standard bars (Fig. 2/3) and ε-vs-accuracy curves
(Fig. 5/7), from table rows (matplotlib, Agg backend, no display needed). Rows of a study's
summary (``study.over_seeds``) carry the mean over seeds as ``accuracy`` and its extremes as
``accuracy_min``/``accuracy_max``: the figures draw those as error bars, as the paper's do (min
and max of three trials)."""
from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Iterable

__all__ = ["plot_robust_vs_standard", "plot_eps_curves", "make_plots", "best_per_group"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _grid(n: int):
    cols = min(4, n)
    return math.ceil(n / cols), cols


def _eps_label(row: dict) -> str:
    from ..naming import eps_display

    return "ε=" + eps_display(row["norm"], float(row["eps"])) if row.get("norm") else "?"


def _spread(row: dict) -> tuple[float, float] | None:
    """(below, above) the row's accuracy: its min and max over seeds, if it has them."""
    lo, hi = row.get("accuracy_min"), row.get("accuracy_max")
    if lo in (None, "") or hi in (None, ""):
        return None
    acc = float(row["accuracy"])
    return acc - float(lo), float(hi) - acc


def _extremes(row: dict) -> tuple[float, float]:
    acc = float(row["accuracy"])
    below, above = _spread(row) or (0.0, 0.0)
    return acc - below, acc + above


def best_per_group(rows: Iterable[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    """{(dataset, arch): {"standard": row with ε=0, "robust": best row with ε>0}}."""
    out: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for r in rows:
        if r.get("eps") is None:
            continue
        kind = "standard" if float(r["eps"]) == 0 else "robust"
        key = (r["dataset"], r["arch"])
        cur = out[key].get(kind)
        if cur is None or float(r["accuracy"]) > float(cur["accuracy"]):
            out[key][kind] = r
    return dict(out)


def plot_robust_vs_standard(rows: list[dict], path: "str | Path", title: str = "") -> Path:
    """One panel per data set, archs on the x axis, standard vs best robust model as bars."""
    plt = _plt()
    groups = best_per_group(rows)
    datasets = sorted({d for d, _ in groups})
    if not datasets:
        raise ValueError("No rows with a known ε to plot (random-weight models have none)")
    nr, nc = _grid(len(datasets))
    fig, axes = plt.subplots(nr, nc, figsize=(3.6 * nc, 3.0 * nr), squeeze=False)
    for ax, ds in zip(axes.flat, datasets):
        archs = sorted(a for d, a in groups if d == ds)
        for i, arch in enumerate(archs):
            g = groups[(ds, arch)]
            for j, (kind, color) in enumerate((("standard", "#9e9e9e"), ("robust", "#1f77b4"))):
                if kind in g:
                    acc, spread = float(g[kind]["accuracy"]), _spread(g[kind])
                    ax.bar(i + (j - 0.5) * 0.38, acc, 0.38, color=color,
                           yerr=None if spread is None else [[spread[0]], [spread[1]]],
                           capsize=2, error_kw={"elinewidth": 0.8},
                           label=kind.capitalize() if i == 0 else None)
                    if kind == "robust":
                        ax.text(i + 0.19, _extremes(g[kind])[1], _eps_label(g[kind]),
                                ha="center", va="bottom", fontsize=6, rotation=90)
        ax.set_xticks(range(len(archs)))
        ax.set_xticklabels(archs, rotation=30, ha="right", fontsize=7)
        vals = [v for a in archs for g in [groups[(ds, a)]] for k in g for v in _extremes(g[k])]
        lo = max(0.0, min(vals) - 10)
        ax.set_ylim(lo, min(100.0, max(vals) + 5))
        ax.set_title(ds, fontsize=9)
        ax.set_ylabel("accuracy (%)", fontsize=7)
    return _finish(plt, fig, axes, len(datasets), title, path, fontsize=7, loc="lower left")


def _finish(plt, fig, axes, used: int, title: str, path: "str | Path", **legend) -> Path:
    """Blank the unused panels, add the legend and title, save, close."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    axes.flat[0].legend(**legend)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_eps_curves(rows: list[dict], path: "str | Path", title: str = "") -> Path:
    """One panel per data set: accuracy against ε, one line per (arch, norm); of several rows
    for one model (lrs) the best."""
    plt = _plt()
    data: dict[str, dict[tuple[str, str], list[tuple[float, float, float, float]]]] = (
        defaultdict(lambda: defaultdict(list)))
    for r in rows:
        if r.get("eps") is None or not r.get("norm"):
            continue
        data[r["dataset"]][(r["arch"], r["norm"])].append(
            (float(r["eps"]), float(r["accuracy"]), *_extremes(r)))
    for curves in data.values():        # several lrs of one model: its best, as the paper
        for key, pts in curves.items():
            best: dict[float, tuple] = {}
            for p in pts:
                if p[0] not in best or p[1] > best[p[0]][1]:
                    best[p[0]] = p
            curves[key] = list(best.values())
    if not data:
        raise ValueError("No rows with a known ε to plot (random-weight models have none)")
    datasets = sorted(data)
    nr, nc = _grid(len(datasets))
    fig, axes = plt.subplots(nr, nc, figsize=(3.6 * nc, 3.0 * nr), squeeze=False)
    for ax, ds in zip(axes.flat, datasets):
        for (arch, norm), pts in sorted(data[ds].items()):
            pts.sort()
            xs = [p[0] * (255 if norm == "linf" else 1) for p in pts]
            ys = [p[1] for p in pts]
            ax.errorbar(xs, ys, yerr=[[y - p[2] for y, p in zip(ys, pts)],
                                      [p[3] - y for y, p in zip(ys, pts)]],
                        marker="o", ms=3, capsize=2, elinewidth=0.8,
                        label=f"{arch} ({'L∞ ×255' if norm == 'linf' else 'L2'})")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel("ε", fontsize=7)
        ax.set_ylabel("accuracy (%)", fontsize=7)
        ax.set_title(ds, fontsize=9)
        ax.tick_params(labelsize=6)
    return _finish(plt, fig, axes, len(datasets), title, path, fontsize=6)


def make_plots(rows: list[dict], out_dir: "str | Path") -> list[Path]:
    """Both figures for every (mode, granularity) in ``rows``; rows without ε are skipped."""
    out_dir = Path(out_dir)
    by: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("eps") not in (None, ""):
            by[(r["mode"], r.get("granularity") or None, bool(r.get("faithful")))].append(r)
    paths = []
    for (mode, gran, faithful), rs in sorted(by.items(), key=lambda kv: str(kv[0])):
        tag = mode + (f"-g{gran}" if gran else "") + ("-faithful" if faithful else "")
        paths.append(plot_robust_vs_standard(rs, out_dir / f"robust_vs_standard_{tag}.png",
                                             f"{mode} transfer: standard vs best robust"))
        paths.append(plot_eps_curves(rs, out_dir / f"eps_vs_accuracy_{tag}.png",
                                     f"{mode} transfer: accuracy vs ε"))
    return paths
