"""``robust_zoo.data.jpeg``: the tensor augmentation is the recipe's PIL augmentation (same random
draws, outputs equal up to decode/resize rounding, same output statistics), and JpegFolder reads
an ImageFolder tree as torchvision does."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from robust_zoo.data import DataError, train_transforms
from robust_zoo.data.jpeg import (EvalTransform, JpegBatchDecoder, JpegFolder, TrainAugment,
                             collate_encoded, decode)


def _jpeg(seed: int, h: int = 150, w: int = 200, quality: int = 90) -> bytes:
    """A photo-like JPEG: smooth colour fields plus grain, some pixels saturated."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.rand(1, 3, h // 16, w // 16, generator=g) * 1.2 - 0.1,
                        size=(h, w), mode="bicubic", align_corners=False)
    x = (low + 0.08 * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)
    buf = io.BytesIO()
    Image.fromarray((x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(
        buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _u8(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _pil(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_random_draws_match_the_pil_pipeline():
    from torchvision import transforms as T

    aug = TrainAugment(32)
    for seed in range(20):
        torch.manual_seed(seed)
        ours = aug.sample(150, 200)
        torch.manual_seed(seed)
        box = T.RandomResizedCrop.get_params(torch.empty(1, 150, 200), [0.08, 1.0], [3 / 4, 4 / 3])
        flip = bool(torch.rand(1) < 0.5)
        order, b, c, s, _ = T.ColorJitter.get_params([0.9, 1.1], [0.9, 1.1], [0.9, 1.1], None)
        alpha = torch.empty(3).normal_(0, 0.05).tolist()
        assert ours.box == box and ours.flip == flip and list(ours.order) == order.tolist()
        assert (ours.brightness, ours.contrast, ours.saturation) == (b, c, s)
        assert ours.alpha == pytest.approx(alpha)


def test_outputs_match_the_pil_pipeline_under_the_same_seed():
    pil_tf, ours = train_transforms("robustness-imagenet", 48), TrainAugment(48)
    worst = []
    for seed in range(8):
        data = _jpeg(seed)
        torch.manual_seed(seed)
        a = pil_tf(_pil(data))
        torch.manual_seed(seed)
        b = ours(decode(_u8(data)))
        assert b.shape == a.shape == (3, 48, 48) and b.dtype == torch.float32
        assert 0 <= b.min() and b.max() <= 1
        d = (a - b).abs()
        worst.append((d.max().item(), d.mean().item()))
    # libjpeg-turbo in both; antialiased bilinear resize on uint8 (ours) vs PIL's, and PIL's
    # colour ops round to 8 bits after each step: a few levels of 255 apart, never a wrong crop
    assert max(m for m, _ in worst) < 8 / 255
    assert max(m for _, m in worst) < 2.5 / 255


def test_output_statistics_match_the_pil_pipeline_with_independent_draws():
    pil_tf, ours = train_transforms("robustness-imagenet", 24), TrainAugment(24)
    sources = [_jpeg(s) for s in range(4)]
    torch.manual_seed(0)
    a = torch.stack([pil_tf(_pil(sources[i % 4])) for i in range(96)])
    torch.manual_seed(12345)
    b = torch.stack([ours(decode(_u8(sources[i % 4]))) for i in range(96)])
    # per-channel mean and spread over the batch; the draws differ, so only sampling noise
    # (about 0.01 here) separates them
    assert a.mean((0, 2, 3)).tolist() == pytest.approx(b.mean((0, 2, 3)).tolist(), abs=0.03)
    assert a.std((0, 2, 3)).tolist() == pytest.approx(b.std((0, 2, 3)).tolist(), abs=0.03)
    # and the augmentation does something: flips and crops vary the images
    assert b.std(0).mean() > 0.05


def test_jpeg_folder_reads_an_image_folder_tree_like_torchvision(tmp_path):
    from torchvision.datasets import ImageFolder

    for i, c in enumerate(("b_dog", "a_cat", "c_eel")):
        (tmp_path / c).mkdir()
        for j in range(2):
            (tmp_path / c / f"{j}.jpg").write_bytes(_jpeg(10 * i + j, 40, 60))
    _pil(_jpeg(99, 40, 60)).save(tmp_path / "c_eel" / "x.png")        # a PNG among JPEGs
    tv = ImageFolder(str(tmp_path))
    ds = JpegFolder(tmp_path, transform=EvalTransform(32, 36))
    assert ds.classes == tv.classes and ds.targets == tv.targets and len(ds) == 7
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0)
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == [0, 0, 1, 1]
    raw, _ = JpegFolder(tmp_path)[6]
    assert raw.dtype == torch.uint8 and raw.shape == (3, 40, 60)          # the PNG, decoded

    # bytes + batched decoding give the per-image path's result under the same seed
    enc = JpegFolder(tmp_path, decode="device")
    batch = collate_encoded([enc[i] for i in range(7)])
    aug = TrainAugment(16)
    torch.manual_seed(3)
    xb, yb = JpegBatchDecoder(aug, "cpu")(batch)
    torch.manual_seed(3)
    per_image = torch.stack([aug(JpegFolder(tmp_path)[i][0]) for i in range(7)])
    assert torch.allclose(xb, per_image) and yb.tolist() == ds.targets


def test_jpeg_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        JpegFolder(tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-folders"):
        JpegFolder(tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="at least one image"):
        JpegFolder(tmp_path)
    with pytest.raises(DataError, match="decode="):
        JpegFolder(tmp_path, decode="gpu")
