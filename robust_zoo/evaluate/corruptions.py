"""Common-corruption accuracy as RobustBench computes it: the ImageNet-C layout and the mean.

RobustBench's ``corruptions_acc`` of an ImageNet model is the mean top-1 over the 15 ImageNet-C
corruptions at severities 1 to 5 (75 folders, ``<root>/<corruption>/<severity>/<class>/<image>``,
Hendrycks & Dietterich 2019), every image only resized to the model's input size (its
``Res224``: ImageNet-C images are already 224 × 224). ``corruption_folders`` finds the folders,
``corruption_transform`` is the preprocessing and ``summarize`` turns the per-folder accuracies
into the report's ``corruptions`` section; ``robust_zoo.evaluate.run`` does the counting.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..data import DataError

__all__ = ["CORRUPTIONS", "SEVERITIES", "corruption_folders", "corruption_transform",
           "summarize"]

# robustbench.data.CORRUPTIONS (robustbench 1.1.1), in its order
CORRUPTIONS = ("shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur",
               "brightness", "fog", "zoom_blur", "frost", "glass_blur", "impulse_noise",
               "contrast", "jpeg_compression", "elastic_transform")
SEVERITIES = (1, 2, 3, 4, 5)


def corruption_folders(root: str | os.PathLike) -> list[tuple[str, int, Path]]:
    """(corruption, severity, folder) of every ImageNet-C folder under ``root`` (the ImageNet-C
    folder itself or, as RobustBench's ``data_dir``, the folder holding ``ImageNet-C/``), in
    RobustBench's order. A root with none of them is a ``DataError`` naming the layout."""
    base = Path(root).expanduser()
    if (base / "ImageNet-C").is_dir():
        base = base / "ImageNet-C"
    if not base.is_dir():
        raise DataError(f"corruptions: {base} is not a folder; expected the ImageNet-C folder "
                        "(<corruption>/<severity>/<class>/<image>)")
    found = [(c, s, base / c / str(s)) for c in CORRUPTIONS for s in SEVERITIES
             if (base / c / str(s)).is_dir()]
    if not found:
        raise DataError(f"corruptions: {base} holds no <corruption>/<severity>/ folder of "
                        f"ImageNet-C (corruptions {', '.join(CORRUPTIONS[:3])}, ...; severities "
                        "1-5); pass the ImageNet-C folder")
    return found


def corruption_transform(size: int):
    """RobustBench's preprocessing for corruption accuracy: resize to ``size`` × ``size``
    (bilinear), then a [0, 1] tensor."""
    from torchvision import transforms as T

    return T.Compose([T.Resize((size, size)), T.ToTensor()])


def summarize(accuracies: dict[tuple[str, int], tuple[float, int]], root: Path
              ) -> dict[str, Any]:
    """The report's ``corruptions`` section from {(corruption, severity): (top-1 %, n)}:
    the mean over the folders evaluated (RobustBench's ``corruptions_acc``), the accuracy per
    corruption and severity, and whether all 75 folders were there."""
    per: dict[str, dict[str, float]] = {}
    for (c, s), (acc, _) in accuracies.items():
        per.setdefault(c, {})[str(s)] = acc
    mean = sum(a for a, _ in accuracies.values()) / len(accuracies)
    missing = [f"{c}/{s}" for c in CORRUPTIONS for s in SEVERITIES
               if (c, s) not in accuracies]
    return {"root": str(root), "corruptions_acc": mean, "folders": len(accuracies),
            "complete": not missing, "missing": missing,
            "n": sum(n for _, n in accuracies.values()), "per_corruption": per}
