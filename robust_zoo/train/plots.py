"""Training curves: loss and clean/adversarial accuracy per epoch, from ``metrics.jsonl``."""
from __future__ import annotations

import json
from pathlib import Path

from ..fileio import atomic_path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:   # a line cut short by a kill: the rest is intact
                continue
    return out


def plot_curves(records: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Write a two-panel PNG (loss; accuracy) of the ``"epoch"`` records; None if there are none."""
    epochs = [r for r in records if r.get("type") == "epoch"]
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["epoch"] for r in epochs]

    def series(key):
        pts = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
        return ([p[0] for p in pts], [p[1] for p in pts]) if pts else None

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(x, [r["train_loss"] for r in epochs], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    adversarial = bool(epochs[-1].get("adversarial"))
    labels = {"train_acc": "train adversarial (PGD)" if adversarial else "train",
              "train_clean_acc": "train clean (sampled batches)",
              "val_clean_acc": "val clean", "val_adv_acc": "val adversarial (PGD)"}
    for key, label in labels.items():
        s = series(key)
        if s:
            ax_acc.plot(*s, marker="o", label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("top-1 %")
    ax_acc.set_ylim(0, 100)
    ax_acc.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
