"""The data layer: bad image files and folders are errors that name them, for training,
transfer and evaluation alike (no traceback from a command line)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robust_zoo.data import DataError, checked_image_folder, load_rgb
from robust_zoo.train import main as train_main

from zoo import make_image_folder


def _train(data: Path, out: Path, workers: int) -> list[str]:
    return ["--arch", "mini_resnet", "--dataset", "imagefolder", "--input-size", "16",
            "--epochs", "1", "--batch-size", "4", "--no-progress", "--eval-every", "0",
            "--final-eval-steps", "0", "--data", str(data), "--out", str(out),
            "--workers", str(workers)]


def _bomb(path: Path) -> None:
    """A tiny PNG whose header declares 100,000 × 100,000 pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["not-an-image", "truncated", "bomb"])
def test_a_bad_file_is_named(tmp_path, kind):
    from PIL import Image

    good = tmp_path / "good.jpg"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(good, quality=90)
    bad = tmp_path / "bad.jpg"
    if kind == "not-an-image":
        bad.write_text("<html>not a picture</html>")
    elif kind == "truncated":
        bad.write_bytes(good.read_bytes()[:200])
    else:
        bad = tmp_path / "bad.png"
        _bomb(bad)
    assert load_rgb(good).size == (40, 40)
    with pytest.raises(DataError, match=str(bad)):
        load_rgb(bad)


def test_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        checked_image_folder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        checked_image_folder(tmp_path / "flat")
    root = make_image_folder(tmp_path / "d", classes=2, per_class=(2, 1))
    (root / "train" / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class"):
        checked_image_folder(root / "train")


@pytest.mark.parametrize("workers", [0, 1])
def test_training_on_a_damaged_file_exits_2_naming_it(tmp_path, capsys, workers):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=(4, 2), size=16)
    bad = root / "train" / "class0" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    torch.manual_seed(0)
    assert train_main(_train(root, tmp_path / "run", workers)) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err


class _FailsAt(torch.utils.data.Dataset):
    def __init__(self, bad: int):
        self.bad = bad

    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == self.bad:
            raise DataError(f"item {i} is damaged")
        return torch.zeros(2), i


def test_the_loaders_workers_end_with_a_failed_or_abandoned_iteration():
    """The package's loader ends its worker processes when a worker's error reaches the loop
    or the loop is left early, while the error (which refers to the loader) is still held;
    persistent workers stay for the next epoch."""
    import multiprocessing

    from robust_zoo.data.common import Loader

    before = set(multiprocessing.active_children())
    with pytest.raises(DataError, match="item 5 is damaged") as err:
        for _ in Loader(_FailsAt(5), batch_size=2, num_workers=2):
            pass
    assert err.value and set(multiprocessing.active_children()) <= before
    batches = iter(Loader(_FailsAt(-1), batch_size=2, num_workers=2))
    assert next(batches)[1].tolist() == [0, 1]
    assert set(multiprocessing.active_children()) > before
    batches.close()             # as when a loop left early drops its iterator
    assert set(multiprocessing.active_children()) <= before
    kept = Loader(_FailsAt(-1), batch_size=2, num_workers=2, persistent_workers=True)
    assert [y.tolist() for _, y in kept][-1] == [6, 7]
    assert set(multiprocessing.active_children()) > before
    del kept


def test_an_image_folder_counts_what_is_on_disk_with_symlinked_folders(tmp_path):
    """A link back to a parent folder does not multiply the images; a linked class folder
    and a linked sub-folder are still read (data set trees are often links)."""
    from robust_zoo.data.jpeg import JpegFolder

    root = make_image_folder(tmp_path / "d", classes=2, per_class=(10, 2)) / "train"
    (root / "class0" / "loop").symlink_to(root, target_is_directory=True)
    (root / "class1" / "up").symlink_to(root / "class1", target_is_directory=True)
    assert len(checked_image_folder(root)) == 20
    assert JpegFolder(root).samples == checked_image_folder(root).samples

    elsewhere = make_image_folder(tmp_path / "e", classes=1, per_class=(3, 1)) / "train"
    (root / "class2").symlink_to(elsewhere / "class0", target_is_directory=True)
    ds = checked_image_folder(root)
    assert len(ds) == 23 and ds.classes == ["class0", "class1", "class2"]
