"""Reading image files: every failure names the file.

``checked_image_folder`` is torchvision's ``ImageFolder`` with a loader that refuses, by name,
a file that is not an image, a truncated image and a decompression bomb (more pixels than
``MAX_PIXELS``), and with clear errors for a folder without class sub-folders or a class
folder without images. Bad files surface as ``DataError`` in the process that reads them
(a DataLoader worker re-raises it in the main process).

``list_images`` is the one file listing of an ImageFolder tree (``checked_image_folder`` and
``data.jpeg.JpegFolder`` both use it): torchvision's classes, extensions and order, with
symlinked folders followed (data set trees are often links) except those that point back into
the tree, and each real folder entered once, so a link to a parent folder cannot multiply the
images: every file is listed once, under its own class, and the count is what is on disk.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .common import DataError

__all__ = ["MAX_PIXELS", "load_rgb", "list_images", "checked_image_folder"]

# Larger than any photograph of the supported data sets (SUN397's biggest are ~ 20 Mpx);
# a decompression bomb declares far more.
MAX_PIXELS = 64_000_000


def load_rgb(path: str | os.PathLike):
    """The image at ``path`` as an RGB PIL image, fully decoded; ``DataError`` naming the file
    when it is empty, is not an image, is truncated or declares more than ``MAX_PIXELS``
    pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise DataError(f"{path} is empty (0 bytes): remove or replace it")
            img = Image.open(f)
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise DataError(f"{path}: the image declares {w}×{h} = {w * h:,} pixels, more "
                                f"than the {MAX_PIXELS:,} allowed (a decompression bomb or a "
                                "damaged header); remove the file")
            return img.convert("RGB")
    except DataError:
        raise
    except UnidentifiedImageError:
        raise DataError(f"{path} is not an image file PIL can read (named like one, but its "
                        "bytes are something else); remove or replace it") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path} cannot be decoded ({type(e).__name__}: {e}); the file is "
                        "truncated or damaged: remove or replace it") from None


def _walk_once(top: str, tree: str):
    """``os.walk(top, followlinks=True)`` that enters each real folder (device, inode) once
    and no linked folder that lies inside ``tree`` (its files are listed where they are)."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(top, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs[:] = [d for d in dirs if not (
            os.path.islink(os.path.join(root, d))
            and _inside(os.path.realpath(os.path.join(root, d)), tree))]
        yield root, files


def _inside(path: str, tree: str) -> bool:
    return path == tree or path.startswith(tree.rstrip(os.sep) + os.sep)


def list_images(root: str | os.PathLike, class_to_idx: dict[str, int],
                extensions: tuple[str, ...]) -> list[tuple[str, int]]:
    """``(path, label)`` of every image under ``root/<class>/``: torchvision ``make_dataset``'s
    order and extensions, each real folder walked once (see the module doc). A class without
    an image raises FileNotFoundError, as torchvision's listing does."""
    samples, empty = [], []
    root = os.path.expanduser(str(root))
    tree = os.path.realpath(root)
    for cls in sorted(class_to_idx):
        top = os.path.join(root, cls)
        if not os.path.isdir(top):
            continue
        found = [os.path.join(r, f) for r, files in sorted(_walk_once(top, tree))
                 for f in sorted(files) if f.lower().endswith(extensions)]
        samples += [(path, class_to_idx[cls]) for path in found]
        if not found:
            empty.append(cls)
    if empty:
        raise FileNotFoundError(f"Found no valid file for the classes {', '.join(empty)}.")
    return samples


def _image_folder_class():
    from torchvision.datasets import ImageFolder

    class CheckedImageFolder(ImageFolder):
        """torchvision's ImageFolder listed by ``list_images``."""

        @staticmethod
        def make_dataset(directory, class_to_idx, extensions=None, is_valid_file=None,
                         allow_empty=False):
            return list_images(directory, class_to_idx, tuple(extensions))

    return CheckedImageFolder


def checked_image_folder(root: str | os.PathLike, transform: Callable | None = None):
    """``ImageFolder(root)`` whose every failure is a ``DataError`` naming the folder or file,
    listed by ``list_images``."""
    ImageFolder = _image_folder_class()

    p = Path(root).expanduser()
    if not p.is_dir():
        raise DataError(f"Data folder {p} does not exist (or is not a folder): expected "
                        "DIR/<class>/<image>")
    classes = sorted(d.name for d in p.iterdir() if d.is_dir())
    if not classes:
        raise DataError(f"{p} has no class sub-folders: expected DIR/<class>/<image> (a flat "
                        "ImageNet val/ must first be sorted into its 1000 WordNet-id folders)")
    try:
        return ImageFolder(str(p), transform=transform, loader=load_rgb)
    except FileNotFoundError as e:   # torchvision: "Found no valid file for the classes ..."
        from torchvision.datasets.folder import IMG_EXTENSIONS

        empty = [c for c in classes if not any(
            f.suffix.lower() in IMG_EXTENSIONS for f in (p / c).rglob("*") if f.is_file())]
        raise DataError(f"{p}: class folder(s) {', '.join(empty[:5]) or '?'} hold no image "
                        f"({', '.join(IMG_EXTENSIONS)}); every class needs at least one image, "
                        f"so remove the empty folder(s) or add images. ({e})") from None
