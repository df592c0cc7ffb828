"""``robust_zoo.data.jpeg``: the tensor augmentation is the recipe's PIL augmentation (same random
draws, outputs equal up to decode/resize rounding, same output statistics), its batched form
(uint8 crops per image, colour work per batch) is the per-image one, JpegFolder reads an
ImageFolder tree as torchvision does, and ``python -m robust_zoo.train --decoder tensor`` trains
on it (the batches the PIL path would give, up to rounding)."""
from __future__ import annotations

import io
import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from robust_zoo.data import (DataError, ResumableSampler, SeededDataset, build_datasets,
                             train_transforms)
from robust_zoo.data.jpeg import (PARAM_COLUMNS, CropBatch, DeviceFinish, EncodedSample,
                                  EvalTransform, FinishBatch, JpegBatchDecoder, JpegFolder,
                                  TrainAugment, TrainCrops, collate_encoded, decode, image_size)
from zoo import write_image_tree


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

    # bytes + batched decoding give the per-image path's result under the same seed, whether
    # the draws are made per sample in the workers (EncodedSample) or for the batch
    aug = TrainAugment(16)
    torch.manual_seed(3)
    per_image = torch.stack([aug(JpegFolder(tmp_path)[i][0]) for i in range(7)])
    enc = JpegFolder(tmp_path, transform=EncodedSample(aug), decode="device")
    torch.manual_seed(3)
    xb, yb = JpegBatchDecoder(aug, "cpu")(collate_encoded([enc[i] for i in range(7)]))
    assert torch.allclose(xb, per_image, atol=1e-6) and yb.tolist() == ds.targets
    raw = JpegFolder(tmp_path, decode="device")
    torch.manual_seed(3)
    xb, _ = JpegBatchDecoder(aug, "cpu")(collate_encoded([raw[i] for i in range(7)]))
    assert torch.allclose(xb, per_image, atol=1e-6)


def test_jpeg_folder_lists_what_image_folder_lists(tmp_path):
    """Same files in the same order (nested folders, every ImageFolder extension), so the
    sampler's indices and seeds mean the same image under every decoder."""
    from torchvision.datasets import ImageFolder

    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "z.jpg").write_bytes(_jpeg(1, 30, 40))
    (tmp_path / "a" / "sub" / "b.JPEG").write_bytes(_jpeg(2, 30, 40))
    _pil(_jpeg(3, 30, 40)).save(tmp_path / "b" / "x.bmp")       # torchvision.io cannot: PIL
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    tv, ours = ImageFolder(str(tmp_path)), JpegFolder(tmp_path)
    assert ours.samples == tv.samples and len(ours) == 3
    bmp, ref = ours[2][0], torch.frombuffer(bytearray(tv[2][0].tobytes()), dtype=torch.uint8)
    assert bmp.dtype == torch.uint8 and torch.equal(bmp, ref.view(30, 40, 3).permute(2, 0, 1))


def test_image_size_reads_jpeg_and_png_headers():
    for h, w in ((30, 41), (375, 500)):
        data = _u8(_jpeg(0, h, w))
        assert image_size(data) == (h, w) == tuple(decode(data).shape[-2:])
        buf = io.BytesIO()
        _pil(_jpeg(0, h, w)).save(buf, format="PNG")
        assert image_size(_u8(buf.getvalue())) == (h, w)
    for kw in ({"progressive": True}, {"exif": b"Exif\x00\x00" + bytes(3000)}):   # SOF2; APP1
        buf = io.BytesIO()
        _pil(_jpeg(1, 50, 70)).save(buf, format="JPEG", **kw)
        assert image_size(_u8(buf.getvalue())) == (50, 70)
    buf = io.BytesIO()
    _pil(_jpeg(1, 50, 70)).convert("L").save(buf, format="JPEG")       # greyscale: 3 channels
    assert image_size(_u8(buf.getvalue())) == (50, 70)
    assert decode(_u8(buf.getvalue())).shape == (3, 50, 70)
    assert image_size(_u8(b"GIF89a" + bytes(40))) is None
    assert image_size(_u8(_jpeg(0)[:20])) is None                 # header cut short


@pytest.mark.parametrize("jitter,lighting", [(0.1, 0.05), (0.4, 0.0), (0.0, 0.05), (0.0, 0.0)])
def test_batched_finish_is_the_per_image_augmentation(jitter, lighting):
    """FinishBatch(TrainCrops items) == TrainAugment.apply image by image under the same draws,
    for batches that do not fill the last chunk, with and without jitter and lighting."""
    aug = TrainAugment(40, jitter=jitter, lighting=lighting)
    images = [decode(_u8(_jpeg(s, 90 + 7 * s, 120))) for s in range(7)]
    torch.manual_seed(5)
    items = [(TrainCrops(aug)(img), i) for i, img in enumerate(images)]
    torch.manual_seed(5)
    ref = torch.stack([aug(img) for img in images])
    x, y = FinishBatch(aug)(items)
    assert x.shape == ref.shape == (7, 3, 40, 40) and x.dtype == torch.float32
    assert y.tolist() == list(range(7))
    assert (x - ref).abs().max() < 1e-5
    # the same finish after the copy to the training device (the CUDA path; here the CPU)
    xd, yd = DeviceFinish(aug, "cpu")(CropBatch()(items))
    assert (xd - ref).abs().max() < 1e-5 and yd.tolist() == list(range(7))
    assert len(aug.row(aug.sample(90, 120))) == PARAM_COLUMNS
    for chunk in (1, 3, 64):
        crops = torch.stack([c for (c, _), _ in items])
        rows = torch.tensor([r for (_, r), _ in items])
        assert (aug.finish(crops, rows, chunk=chunk) - ref).abs().max() < 1e-5
    if jitter:       # strong jitter clamps: the saturated pixels are where the order matters
        assert (ref == 1).any() or (ref == 0).any()


# ----------------------------------------------------------------------------- training

def _jpeg_tree(root, classes=2, per_class=(8, 2), h=40, w=52):
    """train/ and val/ trees of photo-like JPEGs, ``per_class`` images per class in each."""
    return write_image_tree(root, dict(zip(("train", "val"), per_class)),
                            [f"class{c}" for c in range(classes)],
                            lambda split, c, i: _jpeg(1000 * c + 10 * i + len(split), h, w), ".jpg")


def _first_batch(spec, batch=8, seed=7):
    sampler = ResumableSampler(spec.train, seed=seed, batch_size=batch)
    loader = torch.utils.data.DataLoader(SeededDataset(spec.train), batch_size=batch,
                                         sampler=sampler, collate_fn=spec.collate)
    return next(iter(loader))


def test_training_batches_match_the_pil_path_under_the_run_seed(tmp_path):
    """What the trainer sees with --decoder tensor: per-sample seeds give the PIL path's crops,
    flips and colour draws, so the batches agree up to decode/resize rounding."""
    data = _jpeg_tree(tmp_path)
    kw = dict(input_size=24, augmentation="robustness-imagenet")
    pil = build_datasets("imagefolder", data, **kw)
    ours = build_datasets("imagefolder", data, decoder="tensor", **kw)
    assert pil.collate is None and ours.collate is not None and ours.on_device is None
    assert ours.classes == pil.classes and ours.train.targets == pil.train.targets
    (xa, ya), (xb, yb) = _first_batch(pil), _first_batch(ours)
    assert xb.shape == xa.shape == (8, 3, 24, 24) and torch.equal(ya, yb)
    d = (xa - xb).abs()
    assert d.max() < 8 / 255 and d.mean() < 2.5 / 255
    # the validation set stays the PIL path's
    assert torch.equal(pil.val[0][0], ours.val[0][0])


def test_batches_made_in_worker_processes_are_the_in_process_ones(tmp_path):
    """FinishBatch and CropBatch write into shared memory inside a worker: the batches that
    reach the main process are the ones made without workers."""
    data = _jpeg_tree(tmp_path, per_class=(4, 1))
    aug = TrainAugment(20)
    ds = SeededDataset(JpegFolder(data / "train", transform=TrainCrops(aug)))
    keys = [(i, 100 + i) for i in range(8)]
    for collate in (FinishBatch(aug), CropBatch()):
        got = [list(torch.utils.data.DataLoader(ds, batch_size=4, sampler=keys, num_workers=w,
                                                collate_fn=collate)) for w in (0, 1)]
        for a, b in zip(*got):
            assert all(torch.equal(u, v) for u, v in zip(a, b))


@pytest.mark.parametrize("args,message", [
    (["--decoder", "nvjpeg", "--device", "cpu"], "decodes on the GPU"),
    (["--decoder", "tensor", "--augmentation", "flip-crop"], "robustness-imagenet augmentation"),
    (["--decoder", "tensor", "--dataset", "digits", "--input-size", "8"], "--decoder pil"),
])
def test_training_refuses_a_decoder_that_cannot_run(tmp_path, capsys, args, message):
    from robust_zoo.train import main

    data = _jpeg_tree(tmp_path / "data")
    base = ["--arch", "mini_resnet", "--dataset", "imagefolder", "--input-size", "16",
            "--epochs", "1", "--batch-size", "4", "--no-progress", "--data", str(data),
            "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(base + args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
    assert main(base + ["--decoder", "turbo"]) == 2      # not a decoder: the choices are named
    assert "invalid choice: 'turbo' (choose from 'pil', 'tensor', 'nvjpeg')" in \
        capsys.readouterr().err
    with pytest.raises(DataError, match="Unknown decoder 'turbo'"):
        build_datasets("imagefolder", data, input_size=16, augmentation="robustness-imagenet",
                       decoder="turbo")


def test_training_cli_runs_with_the_tensor_decoder(tmp_path):
    """A tiny ImageFolder run end to end, the batches made in a worker process (shared-memory
    batch tensors), the choice recorded in the manifest's provenance."""
    from robust_zoo.train import main

    data = _jpeg_tree(tmp_path / "data", per_class=(6, 2))
    out = tmp_path / "run"
    rc = main(["--arch", "mini_resnet", "--dataset", "imagefolder", "--input-size", "16",
               "--norm", "l2", "--eps", "0.5", "--epochs", "1", "--batch-size", "4",
               "--decoder", "tensor", "--workers", "1", "--device", "cpu", "--no-progress",
               "--log-every", "1", "--eval-every", "0", "--final-eval-steps", "1",
               "--data", str(data), "--out", str(out)])
    assert rc == 0
    manifest = json.loads((out / "weights_manifest.json").read_text())
    (entry,) = manifest["models"]
    assert entry["provenance"]["decoder"] == "tensor"
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in steps if r["type"] == "step"] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in steps if r["type"] == "step")


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
    # a damaged file is refused by name, as the PIL path refuses it
    data = _jpeg(0)
    (tmp_path / "a" / "cut.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "a" / "text.jpg").write_text("not a JPEG")
    ds = JpegFolder(tmp_path, transform=TrainCrops(TrainAugment(16)))
    with pytest.raises(DataError, match=r"cut\.jpg cannot be decoded .*truncated"):
        ds[0]
    with pytest.raises(DataError, match=r"text\.jpg is not an image file"):
        ds[1]
    # a header declaring more than MAX_PIXELS is refused before decoding, in both modes
    bomb = bytearray(_jpeg(0, 40, 40))
    sof = bomb.index(b"\xff\xc0")
    bomb[sof + 5:sof + 9] = (60000).to_bytes(2, "big") * 2
    (tmp_path / "a" / "bomb.jpg").write_bytes(bytes(bomb))
    for mode in ("cpu", "device"):
        with pytest.raises(DataError, match=r"bomb\.jpg: the image declares 60000×60000"):
            JpegFolder(tmp_path, decode=mode)[0]
