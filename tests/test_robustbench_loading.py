"""RobustBench's and Peng et al.'s checkpoints ("torch-state-dict" files) through robust_zoo.load:
every layout RobustBench's loader reads, weights-only unpickling, unpinned files recorded on
first download and pinned by ``robust-zoo pin``, Google Drive's HTML pages refused by name, and
the logits of RobustBench's own models after its own loading."""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os

import numpy as np
import pytest
import torch

import robust_zoo
from robust_zoo.cli import commands as cli
from robust_zoo.hub import sources
from robust_zoo.models import archs
from robust_zoo.validate import CheckpointFormatError

from zoo import (BIG_NET, MEAN, STD, manifest, random_net, random_state_dict, same, served_entry,
                 write_manifest)

pytestmark = pytest.mark.usefixtures("no_backoff")
DRIVE_HOST = "drive.usercontent.google.com"
DRIVE = f"http://{DRIVE_HOST}/download?id=1T2Fvi1eCJTeAOEzrH_4TAIwO8HTOYVyn&export=download" \
        "&confirm=t"


def saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def layouts(sd: dict) -> dict[str, dict]:
    """The layouts RobustBench's loader reads, with what training scripts store beside."""
    norm = {"normalize.mean": MEAN.clone(), "normalize.std": STD.clone()}
    return {
        "bare": dict(sd),
        "state_dict+module.": {"state_dict": {"module." + k: v for k, v in sd.items()},
                               "epoch": 89, "args": argparse.Namespace(lr=0.1, arch="resnet18"),
                               "best_acc1": np.float64(52.9)},
        "model+model.+normalize": {"model": {**norm, **{"model." + k: v for k, v in sd.items()}},
                                   "epoch": np.int64(3)},
        "module.model.": {"module.model." + k: v for k, v in sd.items()},
    }


def rb_entry(hub_server, data: bytes, **fields) -> dict:
    return served_entry(hub_server, "rb.pt", data, fmt="torch-state-dict", norm="linf",
                        eps=4 / 255, **fields)


@pytest.mark.parametrize("layout", list(layouts({})))
def test_every_robustbench_layout_loads(hub_server, layout):
    """Each layout, served from the Hub as a torch-state-dict, loads into the network it was
    saved from: the same logits behind the same normalization."""
    net = random_net("resnet18")
    entry = rb_entry(hub_server, saved(layouts(net.state_dict())[layout]))
    model = robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)
    assert same(model, net)


def test_second_load_reads_the_converted_copy_only(hub_server, monkeypatch):
    net = random_net("resnet18")
    entry = rb_entry(hub_server, saved({"state_dict": net.state_dict()}))
    robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("unpickled on a warm load"))
    assert same(robust_zoo.load(entry["name"], manifest=manifest(entry)), net)


class Payload:
    """A class of this test module: unpickling an instance would import and build it."""

    def __init__(self):
        self.x = 1


def _system_payload(marker):
    class Reduce:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return Reduce()


@pytest.mark.parametrize("kind", ["os.system", "class instance"])
def test_pickle_with_a_code_global_is_refused_and_nothing_runs(hub_server, tmp_path, kind):
    marker = tmp_path / "ran"
    sd = random_net("resnet18").state_dict()
    extra = _system_payload(marker) if kind == "os.system" else Payload()
    entry = rb_entry(hub_server, saved({"state_dict": sd, "extra": extra}))
    needs = r"(posix|os)\.system" if kind == "os.system" else r"test_robustbench_loading\.Payload"
    with pytest.raises(CheckpointFormatError, match=rf"weights-only.*needs {needs}, which could "
                                                    r"run code.*nothing in it was executed"):
        robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)
    assert not marker.exists()


def test_keys_of_no_known_layout_name_the_first_unmatched(hub_server):
    sd = random_net("resnet18").state_dict()
    entry = rb_entry(hub_server, saved({"backbone." + k: v for k, v in sd.items()}))
    with pytest.raises(CheckpointFormatError, match=r"does not fit resnet18: missing \d+ keys "
                       r"\(first: \['conv1.weight'.*unexpected keys \(first: "
                       r"\['backbone.conv1.weight'.*read as RobustBench does"):
        robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)


def test_normalization_buffers_of_another_normalization_are_refused(hub_server):
    sd = random_net("resnet18").state_dict()
    data = saved({"normalize.mean": torch.full((1, 3, 1, 1), 0.5),
                  "normalize.std": STD.clone(), **{"model." + k: v for k, v in sd.items()}})
    entry = rb_entry(hub_server, data)
    with pytest.raises(CheckpointFormatError, match=r"normalize.mean is \[0.5, 0.5, 0.5\], but "
                                                    r"the entry normalizes with \[0.485"):
        robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)


# ----------------------------------------------------------------------------- Google Drive

@pytest.fixture
def drive(hub_server, monkeypatch):
    """Google Drive's download host, played by the loopback server as an HTTP proxy."""
    monkeypatch.setenv("HTTP_PROXY", hub_server.url)
    monkeypatch.setenv("NO_PROXY", "")
    return hub_server


def drive_entry(size: int | None = None) -> dict:
    return {"name": "Engstrom2019Robustness", "arch": "resnet18", "norm": "linf",
            "eps": 4 / 255, "files": [{"format": "torch-state-dict", "url": DRIVE,
                                       "sha256": None, "size": size}]}


@pytest.mark.parametrize("served", ["html content type", "html body"])
def test_drive_html_page_is_refused_by_name_and_not_kept(drive, isolated_caches, served):
    page = (b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head>"
            b"<body>Too many users have viewed or downloaded this file recently.</body></html>")
    drive.add_raw(f"{DRIVE_HOST}/download", page if served == "html body" else b"\0" * 64)
    if served == "html content type":
        drive.fault(DRIVE_HOST, "html")
    with pytest.raises(sources.SourceUnavailableError,
                       match=r"Google Drive returned an HTML page instead of the checkpoint: "
                             r".*quota.*confirm.*Nothing was kept\. Try later, or download it "
                             r"by hand"):
        robust_zoo.load("Engstrom2019Robustness", manifest=manifest(drive_entry()),
                        progress=False)
    assert drive.count("GET", DRIVE_HOST) == 1          # refused, not retried
    assert not [p for p in isolated_caches["robust_zoo"].rglob("*") if p.is_file()
                and "downloads" in p.parts]


# ----------------------------------------------------------------------------- unpinned files

def test_unpinned_url_file_recorded_reported_and_pinned(drive, tmp_path, capsys):
    """First download: its sha256 is recorded (a warning says so) and later loads read the
    converted copy without the network; ``info`` reports it unpinned with that sha256; ``pin``
    writes it into the manifest, and the pinned entry loads without downloading again."""
    net = random_net("resnet18")
    data = saved({"state_dict": net.state_dict()})
    sha = hashlib.sha256(data).hexdigest()
    drive.add_raw(f"{DRIVE_HOST}/download", data)
    path = write_manifest(tmp_path / "m.json", drive_entry())
    with pytest.warns(sources.UnpinnedFileWarning, match=f"recorded sha256 {sha}"):
        assert same(robust_zoo.load("Engstrom2019Robustness", manifest=path), net)
    gets = drive.count("GET", DRIVE_HOST)
    assert same(robust_zoo.load("Engstrom2019Robustness", manifest=path), net)
    assert cli.main(["info", "Engstrom2019Robustness", "--manifest", str(path)]) == 0
    assert f"unpinned: sha256 {sha} recorded on first download" in capsys.readouterr().out
    assert cli.main(["verify", "Engstrom2019Robustness", "--manifest", str(path)]) == 0
    assert f"sha256 {sha} = the sha256 recorded on its first download" in capsys.readouterr().out
    assert cli.main(["pin", "--manifest", str(path)]) == 0
    pinned = json.loads(path.read_text())["models"][0]["files"][0]
    assert (pinned["sha256"], pinned["size"]) == (sha, len(data))
    assert same(robust_zoo.load("Engstrom2019Robustness", manifest=path), net)
    assert drive.count("GET", DRIVE_HOST) == gets == 1


def test_pin_downloads_an_unpinned_url_file_not_in_the_cache(drive, tmp_path):
    data = saved(random_net("resnet18").state_dict())
    drive.add_raw(f"{DRIVE_HOST}/download", data)
    path = write_manifest(tmp_path / "m.json", drive_entry())
    assert cli.main(["pin", "--manifest", str(path)]) == 0
    pinned = json.loads(path.read_text())["models"][0]["files"][0]
    assert pinned["sha256"] == hashlib.sha256(data).hexdigest()


def test_changed_unpinned_file_in_the_cache_is_downloaded_again(drive, tmp_path):
    net = random_net("resnet18")
    data = saved(net.state_dict())
    drive.add_raw(f"{DRIVE_HOST}/download", data)
    entry = drive_entry()
    with pytest.warns(sources.UnpinnedFileWarning):
        path = sources.fetch(robust_zoo.get_entry("Engstrom2019Robustness",
                                                  manifest=manifest(entry)).files[0])
    path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.warns(UserWarning) as caught:
        sources.fetch(robust_zoo.get_entry("Engstrom2019Robustness",
                                           manifest=manifest(entry)).files[0], verify="always")
    assert any("corrupted; downloading it again" in str(w.message) for w in caught)
    assert path.read_bytes() == data and drive.count("GET", DRIVE_HOST) == 2


# ----------------------------------------------------------------------------- fidelity

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# One RobustBench model per architecture family, the smallest member: (id, threat model, zoo
# arch, input side, the file's layout). Each layout is one RobustBench's loader reads.
FIDELITY = [
    ("Engstrom2019Robustness", "Linf", "resnet50", 64, "state_dict+module."),
    ("Singh2023Revisiting_ConvNeXt-T-ConvStem", "Linf", "convnext_tiny_convstem", 64, "bare"),
    ("Singh2023Revisiting_ViT-S-ConvStem", "Linf", "vit_small_convstem", 224, "module.model."),
    ("Liu2023Comprehensive_Swin-B", "Linf", "swin_base", 224, "older timm"),
    ("Debenedetti2022Light_XCiT-S12", "Linf", "xcit_s12", 64, "state_dict"),
    ("Tian2022Deeper_DeiT-S", "corruptions", "deit_small", 224, "bare"),
    ("AlexNet", "corruptions", "alexnet", 64, "module."),
    ("Peng2023Robust", "Linf", "ra_wrn101_2", 64, "state_dict+module."),
]


def _bare(model: torch.nn.Module) -> tuple[dict, tuple, tuple]:
    """Random weights for RobustBench's network (built on the meta device) without its
    ``normalize_model`` wrapper, and the mean/std it normalizes with: ImageNet's where it has
    the wrapper or (RaWRN) normalization buffers, else none ((0, 0, 0), (1, 1, 1))."""
    children = dict(model.named_children())
    if set(children) == {"normalize", "model"}:
        return random_state_dict(children["model"]), *IMAGENET
    sd = random_state_dict(model)
    if "normalization.mean" in sd:          # RaWRN normalizes inside; its buffers stay
        sd["normalization.mean"], sd["normalization.std"] = map(torch.tensor, IMAGENET)
        return sd, *IMAGENET
    return sd, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def _older_timm_swin(sd: dict) -> dict:
    """A Swin state dict as timm < 0.9 saved it (downsampling at the end of a stage, a bare
    ``head``): what timm's checkpoint_filter_fn converts, as RobustBench's loader does."""
    import re

    def old(k: str) -> str:
        k = re.sub(r"layers\.(\d+)\.downsample",
                   lambda m: f"layers.{int(m.group(1)) - 1}.downsample", k)
        return k.replace("head.fc.", "head.")

    return {old(k): v for k, v in sd.items()}


def _in_layout(sd: dict, layout: str) -> dict:
    if layout == "older timm":
        return _older_timm_swin(sd)
    if layout == "bare":
        return dict(sd)
    if layout == "state_dict":
        return {"state_dict": dict(sd), "epoch": 299,
                "args": argparse.Namespace(model="xcit_small_12_p16_224", lr=1e-3)}
    prefix = {"module.": "module.", "module.model.": "module.model.",
              "state_dict+module.": "module."}[layout]
    out = {prefix + k: v for k, v in sd.items()}
    return {"state_dict": out, "epoch": 89} if "+" in layout else out


def _robustbench_loaded(rb, model_id: str, threat: str, folder, path):
    """RobustBench's model with the weights at ``path``, as RobustBench loads it: ``load_model``
    for its own files (read from ``folder/imagenet/<threat>/<id>.pt``, no download); for the
    models it loads through timm (XCiT, DeiT, AlexNet), timm's pretrained loading of the same
    registered name with the file in place of the release URL."""
    import timm

    timm_name = f"{model_id.lower().replace('-', '_')}_imagenet_{threat.lower()}"
    if timm.is_model(timm_name):
        return timm.create_model(timm_name, pretrained=True,
                                 pretrained_cfg_overlay={"file": str(path)}).eval()
    return rb.utils.load_model(model_id, model_dir=folder, dataset="imagenet",
                               threat_model=threat).eval()


@pytest.mark.slow
@pytest.mark.parametrize("model_id,threat,arch,side,layout", FIDELITY,
                         ids=[f[0] for f in FIDELITY])
def test_logits_equal_robustbench_after_its_own_loading(hub_server, tmp_path, model_id, threat,
                                                        arch, side, layout):
    """RobustBench's model of each family with random weights, saved in a layout RobustBench
    reads and served from the loopback Hub: robust_zoo.load gives RobustBench's logits on the
    same [0, 1] inputs (max abs difference <= 1e-5, fp32). Networks over BIG_NET parameters are
    saved in half precision, which both loaders cast to the same float32 values."""
    from zoo import robustbench, robustbench_model

    rb = robustbench()
    sd, mean, std = _bare(robustbench_model(model_id, threat))
    if sum(v.numel() for v in sd.values()) > BIG_NET:   # half the bytes to write and read
        sd = {k: v.half() if v.dtype == torch.float32 and not k.startswith("normalization.")
              else v for k, v in sd.items()}
    data = saved(_in_layout(sd, layout))
    path = tmp_path / "imagenet" / threat / f"{model_id}.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    entry = rb_entry(hub_server, data, arch=arch, name=model_id,
                     preprocessing={"mean": list(mean), "std": list(std)})
    ours = robust_zoo.load(model_id, manifest=manifest(entry), progress=False)
    theirs = _robustbench_loaded(rb, model_id, threat, tmp_path, path)
    x = torch.rand(2 if side < 224 else 1, 3, side, side,
                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = theirs(x), ours(x)
    assert want.shape == got.shape == (x.shape[0], 1000)
    assert want.abs().max() > 1e-3        # not a degenerate output
    assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.filterwarnings("ignore:torch.meshgrid")      # MIMIR's own Swin code
@pytest.mark.parametrize("model_id,arch", [("Xu2024MIMIR_Swin-B", "swin_base_mimir"),
                                           ("Amini2024MeanSparse_ConvNeXt-L",
                                            "convnext_large_meansparse")])
def test_custom_modules_convert_on_the_meta_device(model_id, arch):
    """The models with RobustBench's own modules and no full comparison above (too large for
    the time budget): their state dict as RobustBench's file holds it converts to exactly the
    zoo architecture's keys and shapes (MIMIR's older Swin layout through timm's filter)."""
    from robust_zoo.formats.torch_state_dict import from_state_dict
    from zoo import robustbench_model

    model = robustbench_model(model_id)
    children = dict(model.named_children())
    net = children["model"] if set(children) == {"normalize", "model"} else model
    sd = {"module." + k: v for k, v in net.state_dict().items()}
    conv = from_state_dict({"state_dict": sd}, arch, source=model_id)
    expected = archs.build(arch, device="meta").state_dict()
    assert {k: v.shape for k, v in conv.state_dict.items()} == \
        {k: v.shape for k, v in expected.items()}


def test_allowed_types_are_allowed_for_the_read_only(tmp_path):
    """The harmless types are allowed while a torch-state-dict file is read, never after, and
    a type the user allowed before stays allowed."""
    from robust_zoo.formats.torch_state_dict import read_state_dict_file

    path = tmp_path / "f.pt"
    path.write_bytes(saved({"args": argparse.Namespace(a=1), "w": torch.zeros(1)}))
    before = set(torch.serialization.get_safe_globals())
    assert read_state_dict_file(path)["args"].a == 1
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(Exception, match="argparse.Namespace"):
        torch.load(path, weights_only=True)
    with torch.serialization.safe_globals([argparse.Namespace]):
        read_state_dict_file(path)
        assert argparse.Namespace in torch.serialization.get_safe_globals()


class _Scaled(torch.nn.Module):
    """A layer whose scale is computed at construction and kept out of its state dict."""

    def __init__(self, num_classes: int = 1000, weights=None):
        super().__init__()
        self.fc = torch.nn.Linear(3, num_classes)
        self.register_buffer("scale", torch.arange(1.0, 4.0), persistent=False)

    def forward(self, x):
        return self.fc(x.mean((2, 3)) * self.scale)


def test_buffers_no_state_dict_holds_are_computed_on_the_cpu(hub_server, monkeypatch):
    """A module without timm's init_non_persistent_buffers gets its computed buffers from a
    build on the CPU, not left on the meta device."""
    arch = archs.Arch("scaled_test_net", _Scaled, "fc", 3, "", False, 4000, family="test")
    monkeypatch.setitem(archs._ARCHS, arch.name, arch)
    torch.manual_seed(0)
    net = _Scaled().eval()
    entry = rb_entry(hub_server, saved(net.state_dict()), arch=arch.name)
    model = robust_zoo.load(entry["name"], manifest=manifest(entry), normalize=False)
    assert torch.equal(model.scale, torch.arange(1.0, 4.0))
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), net(x))
