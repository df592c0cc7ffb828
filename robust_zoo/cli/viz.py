"""``robust-zoo viz``: pictures of what a model has learned, as one PNG grid.

    robust-zoo viz NAME saliency|synthesize|invert|feature [--images DIR_OR_FILES ...]
        [--target CLASSES] [--unit UNITS] [--eps E] [--steps N] [--step-size A] [--smooth N]
        [--compare OTHER_NAME] [--manifest PATH] [--seed S] --out grid.png

The first row holds the inputs (the images, or the starting points of synthesis and feature
visualisation), each further row one model's results (``--compare`` adds a second model, e.g.
the standard one next to a robust one); under every tile: the file / target / unit and the
model's prediction. NAME and OTHER_NAME resolve as in ``robust_zoo.load``: a zoo name (with
``--manifest`` or ``$ROBUST_ZOO_MANIFEST``), an export folder, or ``hf-hub:org/repo``.

* saliency: |∇ₓ loss| summed over channels of each image (``--target``: the class explained,
  default the prediction; ``--smooth N``: SmoothGrad).
* synthesize: images of the ``--target`` classes (e.g. ``0-4`` or ``1,7``) grown from
  ``--images`` or, without them, from uniform noise (the same start for every model).
* invert: images whose penultimate representation matches each of ``--images``, from noise.
* feature: images maximising penultimate ``--unit`` UNITS, from ``--images`` or noise.

``render_grid`` is the renderer (PIL only), for use from Python.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Sequence

import torch

from ..console import ArgumentParser, command
from ..errors import UsageError
from ..naming import arg_type, int_arg, parse_device, parse_number

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MODES = ("saliency", "synthesize", "invert", "feature")

Tile = tuple[torch.Tensor, Sequence[str]]      # (C, H, W) or (H, W) in [0, 1], caption lines


# -- rendering --------------------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):                 # Pillow without FreeType: the bitmap font
        return ImageFont.load_default()


def render_grid(rows: Sequence[tuple[str, Sequence[Tile]]], path: str | Path, *,
                title: str | None = None, tile: int = 96, caption_lines: int = 2) -> Path:
    """Write a PNG grid: one row per ``(row_label, tiles)``, each tile an image in [0, 1]
    ((C, H, W) with C = 1 or 3, or (H, W)) upscaled to ``tile`` px (nearest neighbour for small
    images, so pixels stay visible) with its caption lines underneath. Written atomically."""
    from PIL import Image, ImageDraw

    from ..fileio import atomic_path

    if not rows or not any(tiles for _, tiles in rows):
        raise UsageError("render_grid: nothing to draw (no rows or no tiles)")
    font, small = _font(13), _font(11)
    pad, line_h, label_w = 6, 13, 150
    title_h = 22 if title else 0
    n_cols = max(len(tiles) for _, tiles in rows)
    cell_h = tile + caption_lines * line_h + pad
    width = label_w + n_cols * (tile + pad) + pad
    height = title_h + len(rows) * (cell_h + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    for r, (label, tiles) in enumerate(rows):
        y0 = title_h + pad + r * (cell_h + pad)
        for i, part in enumerate(_wrap(label, 20)[:4]):
            draw.text((pad, y0 + tile // 2 - 14 + i * line_h), part, fill="black", font=small)
        for c, (img, caption) in enumerate(tiles):
            x0 = label_w + pad + c * (tile + pad)
            canvas.paste(_to_pil(img, tile), (x0, y0))
            for i, line in enumerate(list(caption)[:caption_lines]):
                draw.text((x0, y0 + tile + 1 + i * line_h), str(line)[:18], fill="black",
                          font=small)
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return path


def _wrap(text: str, width: int) -> list[str]:
    out, line = [], ""
    for part in str(text).replace("_", "_\u200b").split("\u200b"):
        if len(line) + len(part) > width and line:
            out.append(line)
            line = ""
        line += part
    return out + ([line] if line else [])


def _to_pil(img: torch.Tensor, tile: int):
    from PIL import Image

    t = img.detach().float().cpu().clamp(0, 1)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[0] not in (1, 3):
        raise UsageError(f"render_grid: a tile must be (C, H, W) with C = 1 or 3, or (H, W); got "
                         f"{tuple(img.shape)}")
    arr = (t.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    pil = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
    h, w = arr.shape[:2]
    scale = tile / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return pil.resize(size, Image.NEAREST if scale >= 2 else Image.BILINEAR)


def saliency_image(g: torch.Tensor) -> torch.Tensor:
    """(C, H, W) gradient → (H, W) in [0, 1]: |g| summed over channels, divided by its 99th
    percentile (a few extreme pixels would otherwise leave the map black)."""
    m = g.detach().float().abs().sum(0)
    q = torch.quantile(m.flatten(), 0.99).clamp_min(1e-12)
    return (m / q).clamp(0, 1)


# -- command line -----------------------------------------------------------------------------

def _number(what: str, minimum: float | None = None, allow_zero: bool = True):
    return arg_type(parse_number, what=what, minimum=minimum, allow_zero=allow_zero)



def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="robust-zoo viz",
        description="Saliency, class synthesis, representation inversion or feature "
                    "visualisation of a zoo model, written as an image grid (PNG).")
    p.add_argument("name", help="zoo name, export folder or hf-hub:org/repo")
    p.add_argument("mode", choices=MODES)
    p.add_argument("--images", nargs="+", metavar="DIR_OR_FILE",
                   help="input images (folders: their image files, sorted): the images to "
                        "explain (saliency) or invert; start points for synthesize / feature")
    p.add_argument("--target", type=arg_type(parse_indices, what="--target"),
                   help="classes, e.g. 3 or 0-4 or 1,7: what to synthesise (required), or the "
                        "class each saliency map explains (default: prediction)")
    p.add_argument("--unit", type=arg_type(parse_indices, what="--unit"),
                   help="penultimate units for feature, e.g. 0-7 or 5,12")
    p.add_argument("--eps", type=_number("--eps", 0.0, allow_zero=False),
                   help="L2 radius around the start in [0, 1] pixel units; fractions allowed "
                        "(default: the function's, see docs/representations.md)")
    p.add_argument("--steps", type=int_arg("--steps", 1),
                   help="PGD steps (default: the function's)")
    p.add_argument("--step-size", type=_number("--step-size", 0.0, allow_zero=False),
                   help="L2 step size (default: the function's)")
    p.add_argument("--smooth", type=int_arg("--smooth", 0), default=0,
                   help="saliency: SmoothGrad copies (default 0)")
    p.add_argument("--compare", metavar="OTHER_NAME", help="a second model, rendered as a "
                   "second row (e.g. the standard model next to a robust one)")
    p.add_argument("--manifest", help="manifest file or folder (default: $ROBUST_ZOO_MANIFEST or "
                   "the zoo's own)")
    p.add_argument("--limit", type=int_arg("--limit", 1), default=16,
                   help="at most this many images (default 16)")
    p.add_argument("--seed", type=int_arg("--seed", 0), default=0,
                   help="seed of the noise starts (default 0)")
    p.add_argument("--device", type=arg_type(parse_device),
                   help="e.g. cuda or cpu (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--out", required=True, help="PNG file to write")
    return p


def parse_indices(text: str, what: str = "indices") -> list[int]:
    """``"3"``, ``"0-4"``, ``"1,7,9"``, ``"0-2,5"`` → a list of ints."""
    out: list[int] = []
    try:
        for part in str(text).split(","):
            lo, sep, hi = part.strip().partition("-")
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise UsageError(f"{what}: cannot read {text!r}; write e.g. 3, 0-4 or 1,7,9") from None
    if not out:
        raise UsageError(f"{what}: {text!r} names no index; write e.g. 3, 0-4 or 1,7,9")
    return out


def collect_images(items: Sequence[str], limit: int) -> list[Path]:
    files: list[Path] = []
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UsageError(f"--images: folder {p} has no image files "
                                 f"({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UsageError(f"--images: {p} is neither an image file nor a folder")
    return files[:limit]


def load_images(files: Sequence[Path], entry) -> torch.Tensor:
    """Files → (N, 3, crop, crop) in [0, 1] with the entry's eval preprocessing."""
    from PIL import Image, UnidentifiedImageError

    tf = entry.transforms()
    out = []
    for f in files:
        try:
            with Image.open(f) as im:
                out.append(tf(im.convert("RGB")))
        except (UnidentifiedImageError, OSError) as e:
            raise UsageError(f"--images: cannot read {f} as an image ({e})") from None
    return torch.stack(out)


def _check_mode(args: argparse.Namespace, files: list[Path]) -> None:
    """The flags that the mode needs, and none that it ignores."""
    mode = args.mode
    if args.smooth and mode != "saliency":
        raise UsageError("--smooth applies to saliency only")
    if mode in ("saliency", "invert") and not files:
        verb = "explain" if mode == "saliency" else "invert"
        raise UsageError(f"{mode} needs --images (the images to {verb})")
    if mode == "synthesize" and not args.target:
        raise UsageError("synthesize needs --target (the classes to draw, e.g. 0-4)")
    if mode == "feature" and not args.unit:
        raise UsageError("feature needs --unit (penultimate units, e.g. 0-7)")
    if args.unit and mode != "feature":
        raise UsageError("--unit applies to feature only")
    if args.target and mode in ("invert", "feature"):
        raise UsageError(f"--target does not apply to {mode}")


def _main(argv: list[str]) -> int:
    from ..hub.factory import load

    args = build_parser().parse_args(argv)
    files = collect_images(args.images, args.limit) if args.images else []
    _check_mode(args, files)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    names = [args.name] + ([args.compare] if args.compare else [])
    models = [load(n, manifest=args.manifest, device=device, progress=not args.no_progress)
              for n in names]
    job = _inputs(args, files, models[0])
    rows = [("inputs" if job.x is not None else "starts", list(zip(job.first, job.head)))]
    summary = []
    for name, model in zip(names, models):
        tiles, line = _model_row(args, job, model)
        rows.append((name, tiles))
        summary.append(line)
    out = render_grid(rows, args.out, title=_title(args, tuple(job.start.shape)))
    for name, line in zip(names, summary):
        print(f"{name}: {line}")
    print(f"wrote {out}")
    return 0


main = command(_main)


def _inputs(args: argparse.Namespace, files: list[Path], model) -> SimpleNamespace:
    """What every model starts from, shared so that the rows differ only by the model: the
    images ``x`` (or None), the starts, the per-image targets / units, and the first row's
    tiles and captions."""
    from .. import representations as R
    from ..models.robust_model import input_size

    mode, x = args.mode, (load_images(files, model.entry) if files else None)
    count = (max(len(files), len(args.target or args.unit or [])) if mode in ("synthesize",
             "feature") else len(files))
    labels = _broadcast(args.target, count, "--target") if args.target else None
    units = _broadcast(args.unit, count, "--unit") if args.unit else None
    if x is not None and mode in ("synthesize", "feature"):
        x = x[_broadcast(list(range(len(x))), count, "--images")]
    crop = input_size(model)
    start = x if x is not None else R._noise((count, 3, crop, crop), args.seed)
    if mode == "invert":
        start = R._noise(tuple(x.shape), args.seed)
    stems = [f.stem for f in files] if files else []
    if mode in ("synthesize", "feature"):
        arrow = [f"-> class {c}" for c in labels] if mode == "synthesize" else \
            [f"-> unit {u}" for u in units]
        head = [[stems[i] if stems else "noise", arrow[i]] for i in range(count)]
    else:
        head = [[stems[i], f"y={labels[i]}" if labels else ""] for i in range(count)]
    first = [(x if x is not None else start)[i] for i in range(count)]
    return SimpleNamespace(x=x, start=start, labels=labels, units=units, count=count,
                           first=first, head=head)


def _model_row(args: argparse.Namespace, job: SimpleNamespace, model
               ) -> tuple[list[Tile], str]:
    """One model's row of tiles (result, prediction and the mode's measure) and its summary."""
    from .. import representations as R

    mode, progress = args.mode, not args.no_progress
    budget = dict(eps=args.eps, steps=args.steps, step_size=args.step_size, progress=progress)
    if mode == "saliency":
        g = R.saliency(model, job.x, job.labels, smooth=args.smooth, progress=progress)
        shown, probs = [saliency_image(gi) for gi in g], _probs(model, job.x)
    else:
        if mode == "synthesize":
            shown = R.synthesize(model, job.labels, job.start, **budget)
        elif mode == "invert":
            shown = R.invert(model, job.x, job.start, **budget)
        else:
            shown = R.visualize_feature(model, job.units, job.start, **budget)
        probs = _probs(model, shown)
    p, k = probs.max(1)
    caps = [[f"pred {int(k[i])} ({100 * float(p[i]):.0f}%)"] for i in range(job.count)]
    if mode == "invert":
        f_t = R.penultimate(model, job.x)
        d = ((R.penultimate(model, shown) - f_t).norm(dim=1) / f_t.norm(dim=1)).tolist()
        for c, di, ki in zip(caps, d, _probs(model, job.x).argmax(1).tolist()):
            c.append(f"dist {di:.2f} (y {ki})")
        line = f"mean representation distance {sum(d) / len(d):.3f}"
    elif mode == "synthesize":
        hits = sum(int(k[i]) == job.labels[i] for i in range(job.count))
        line = f"{hits}/{job.count} classified as their target"
    elif mode == "feature":
        act = R.penultimate(model, shown)[torch.arange(job.count), torch.tensor(job.units)]
        for c, a in zip(caps, act.tolist()):
            c.append(f"unit act {a:.2f}")
        line = f"mean unit activation {float(act.mean()):.3f}"
    else:
        line = f"predictions {k.tolist()}"
    return list(zip(list(shown), caps)), line


def _title(args: argparse.Namespace, shape: tuple[int, ...]) -> str:
    from .. import representations as R

    if args.mode == "saliency":
        return f"saliency (SmoothGrad, {args.smooth} copies)" if args.smooth else "saliency"
    fn = {"synthesize": "synthesize", "invert": "invert", "feature": "visualize_feature"}
    e, s, a = R.budget(fn[args.mode], shape, args.eps, args.steps, args.step_size)
    return f"{args.mode}: L2 eps {e:.3g}, {s} steps, step {a:.3g}"


def _broadcast(values: list[int], count: int, what: str) -> list[int]:
    if len(values) == count:
        return list(values)
    if len(values) == 1:
        return list(values) * count
    if count == 1 or count == 0:
        return list(values)
    raise UsageError(f"{what}: {len(values)} values for {count} images; give one, or one per "
                     "image")


@torch.no_grad()
def _probs(model, x: torch.Tensor) -> torch.Tensor:
    was = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        dev = next(model.parameters()).device
        return model(x.to(dev)).float().softmax(1).cpu()
    finally:
        for m, t in was:
            m.training = t


if __name__ == "__main__":
    sys.exit(main())
