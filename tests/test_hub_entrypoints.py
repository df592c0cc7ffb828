"""torch.hub (source="local"), the robust-zoo CLI, export → robust_zoo/timm, and pin."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import robust_zoo
from robust_zoo.models import archs
from robust_zoo.cli import commands as cli
from robust_zoo.fileio import sha256_file
from robust_zoo.hub import sources
from robust_zoo.hub.manifest import load_manifest
from zoo import REPO, ckpt_bytes, manifest, publish_upstream, reference_logits

ROOT = Path(__file__).resolve().parents[1]


def test_torch_hub_list_help_load(tmp_path, monkeypatch):
    # torch.hub.list/help read GitHub repos only; with a pinned ref and the repo already in the
    # hub cache they make no request (the offline path the README documents).
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    (tmp_path / "robust-zoo_robust_zoo_main").symlink_to(ROOT)
    repo = "robust-zoo/robust_zoo:main"
    names = torch.hub.list(repo, trust_repo=True, skip_validation=True)
    assert sorted(names) == sorted(load_manifest().hub_names())
    doc = torch.hub.help(repo, "resnet50_linf_eps4", trust_repo=True, skip_validation=True)
    assert "linf" in doc and "4/255" in doc and "63.86" in doc
    model = torch.hub.load(str(ROOT), "resnet50_linf_eps4", source="local", pretrained=False,
                           num_classes=10, trust_repo=True)
    assert isinstance(model, robust_zoo.RobustModel) and model.num_classes == 10


@pytest.mark.parametrize("hub_name, name, arch", [
    ("Singh2023Revisiting_ConvNeXt_T_ConvStem", "Singh2023Revisiting_ConvNeXt-T-ConvStem",
     "convnext_tiny_convstem"),
    ("Debenedetti2022Light_XCiT_S12", "Debenedetti2022Light_XCiT-S12", "xcit_s12"),
    ("Peng2023Robust_RaResNet_50", "Peng2023Robust_RaResNet-50", "ra_resnet50"),
    ("Salman2020Do_R18", "resnet18_linf_eps4", "resnet18")])
def test_torch_hub_entry_points_of_robustbench_ids(hub_name, name, arch, no_fetch):
    """A RobustBench id's entry point ('-' written '_') and an alias load their entry; its help
    names the entry, threat model and accuracy."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    doc = getattr(hubconf, hub_name).__doc__
    entry = load_manifest().get(name)
    assert f"arch={arch}" in doc and f"{entry.clean_top1:.2f}" in doc and "Linf" in doc
    model = torch.hub.load(str(ROOT), hub_name, source="local", pretrained=False, device="meta",
                           trust_repo=True)
    assert model.entry.name == name and model.arch == arch
    assert next(model.parameters()).is_meta


def test_torch_hub_load_pretrained_equals_robust_zoo_load(hub_server, tmp_path, monkeypatch):
    entry, net = publish_upstream(hub_server, "resnet18", "l2", 3.0)
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest(entry)))
    model = torch.hub.load(str(ROOT), "resnet18_l2_eps3", source="local", manifest=str(mpath),
                           trust_repo=True)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), reference_logits(net, x))


def run_cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robust_zoo.cli", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_cli_list_info_and_errors(capsys):
    assert cli.main(["list", "--arch", "resnet18", "--norm", "linf"]) == 0
    out = capsys.readouterr().out
    assert "resnet18_linf_eps4" in out and "52.49" in out and "6 models" in out
    assert cli.main(["list", "--eps", "4/255", "--paper", "Salman2020Do", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["resnet18_linf_eps4", "resnet50_linf_eps4",
                                                   "wide_resnet50_2_linf_eps4"]
    assert cli.main(["info", "resnet50_l2_eps3"]) == 0
    out = capsys.readouterr().out
    assert "62.83" in out and "380b14e6" in out and "cached: no" in out
    assert cli.main(["info", "resnet50_l2_eps3.0"]) == 2
    assert "Closest names: resnet50_l2_eps3" in capsys.readouterr().err


def test_cli_list_filters_the_new_families(capsys):
    assert cli.main(["list", "--family", "xcit"]) == 0
    out = capsys.readouterr().out
    assert "Debenedetti2022Light_XCiT-L12  xcit_l12  Linf    4/255  73.76  47.60" in out
    assert out.endswith("3 models\n")
    assert cli.main(["list", "--threat-model", "corruptions", "--family", "vit"]) == 0
    out = capsys.readouterr().out
    assert "Tian2022Deeper_DeiT-B  deit_base   corruptions  -    81.38  67.55 (C)" in out
    assert cli.main(["list", "--norm", "none", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 10
    assert cli.main(["list", "--threat-model", "Linf2"]) == 2
    assert "invalid choice: 'Linf2'" in capsys.readouterr().err
    assert cli.main(["list", "--family", "convnxt"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: family='convnxt' matches no entry; families: alexnet, convnext")
    assert err.endswith("did you mean convnext?\n") and err.count("\n") == 1


def test_cli_info_of_a_robustbench_model(capsys):
    """`robust-zoo info` shows the accuracies with their source, the files' source URL, the
    licence and its source, the paper and the pin state."""
    assert cli.main(["info", "Singh2023Revisiting_ConvNeXt-T-ConvStem"]) == 0
    out = capsys.readouterr().out
    src = ("source: RobustBench model_info/imagenet/Linf/Singh2023Revisiting_ConvNeXt-T-ConvStem"
           ".json (RobustBench/robustbench@78fcc9e)")
    assert "clean_top1            72.72  imagenet-1k val n=5,000\n" + " " * 23 + src in out
    assert "autoattack_top1       49.46  imagenet-1k val Linf eps 4/255 n=5,000" in out
    assert ("1. https://drive.usercontent.google.com/download?id=1-FjtOF6LJ3-bf4VezsmWwncCxYSx-USP"
            "&export=download&confirm=t  format=torch-state-dict") in out
    assert "unpinned: no published sha256; the sha256 of the first download is recorded" in out
    assert "licence:       mit (RobustBench LICENSE" in out
    assert ("paper:         Singh2023Revisiting | Revisiting Adversarial Training for ImageNet: "
            "Architectures, Training and Generalization across Threat Models | "
            "https://arxiv.org/abs/2303.01870") in out
    assert "preprocessing: BicubicRes256Crop224: resize 256 (bicubic), center crop 224" in out
    assert "cached: no" in out
    assert cli.main(["info", "Salman2020Do_50_2_Linf"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("wide_resnet50_2_linf_eps4\n")
    assert "threat model:  Linf/corruptions" in out
    assert "corruptions_top1      36.09  imagenet-c val" in out
    assert "aliases:       Salman2020Do_50_2, Salman2020Do_50_2_Linf" in out
    assert cli.main(["info", "Peng2023Robust"]) == 0
    out = capsys.readouterr().out
    assert "1. hf://poloclub/robust-principles@main/ra_wrn101_2_imagenet.pt" in out
    assert "unpinned: checked against the sha256 the Hub reports" in out
    assert "pgd_top1              51.03  imagenet-1k val Linf eps 4/255 100 steps" in out


def test_cli_info_reports_the_sha256_recorded_on_first_download(hub_server, tmp_path, capsys):
    """An unpinned URL file, once downloaded and its sha256 recorded, is reported with it."""
    from robust_zoo.hub import records

    data = b"weights" * 100
    url = hub_server.add_raw("m.pt", data)
    entry = {"name": "m", "arch": "resnet18", "norm": "linf", "eps": "4/255",
             "files": [{"format": "torch-state-dict", "url": url}]}
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest(entry)))
    spec = load_manifest(mpath).get("m").files[0]
    with pytest.warns(sources.UnpinnedFileWarning):
        path = sources.fetch(spec, progress=False)
    sha = records.file_sha256(path)
    assert sha == hashlib.sha256(data).hexdigest()
    assert cli.main(["info", "m", "--manifest", str(mpath)]) == 0
    assert f"unpinned: sha256 {sha} recorded on first download" in capsys.readouterr().out


def test_cli_download_verify_convert(hub_server, subprocess_env, isolated_caches, tmp_path,
                                    capsys, monkeypatch):
    from huggingface_hub import constants

    from robust_zoo.formats.safetensors_file import load_weights

    entry, net = publish_upstream(hub_server, "mnasnet1_0")
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest(entry)))
    # the program in a fresh interpreter once; the other commands in this process (the same
    # caches and server)
    r = run_cli("download", entry["name"], "--manifest", str(mpath), "--quiet", env=subprocess_env)
    assert r.returncode == 0, r.stderr
    local = Path(r.stdout.split(": ", 1)[1].strip())
    assert local.is_file() and local.suffix == ".safetensors", r.stdout
    assert cli.main(["verify", "--manifest", str(mpath)]) == 0
    assert f"{entry['name']}: ok" in capsys.readouterr().out
    # a damaged converted copy is rebuilt from the verified Hub blob, and said so
    conv = next((isolated_caches["robust_zoo"] / "converted").glob("*.safetensors"))
    good = {k: v.clone() for k, v in load_weights(conv)[0].items()}  # load_file mmaps
    conv.write_bytes(conv.read_bytes()[:-4] + b"oops")
    assert cli.main(["verify", entry["name"], "--manifest", str(mpath)]) == 0
    assert "repaired: Discarding a damaged" in capsys.readouterr().out
    assert all(torch.equal(v, good[k]) for k, v in load_weights(conv)[0].items())
    # offline with the blob corrupted too: nothing to repair from, so it is removed and reported
    conv.unlink()
    blob = next(p for p in isolated_caches["hf"].rglob("blobs/*") if p.is_file())
    blob.write_bytes(blob.read_bytes()[:-4] + b"oops")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cli.main(["verify", entry["name"], "--manifest", str(mpath)]) == 1
    assert "MISMATCH" in capsys.readouterr().out and not blob.exists()

    ckpt = tmp_path / "x.ckpt"
    ckpt.write_bytes(ckpt_bytes(net, "mnasnet1_0"))
    out = tmp_path / "x.safetensors"
    assert cli.main(["convert", str(ckpt), "--arch", "mnasnet", "--out", str(out)]) == 0
    assert "sha256" in capsys.readouterr().out
    sd, meta = load_weights(out)
    assert meta["arch"] == "mnasnet1_0" and torch.equal(sd["layers.0.weight"],
                                                        net.state_dict()["layers.0.weight"])
    assert cli.main(["convert", str(ckpt), "--arch", "resnet18", "--out",
                     str(tmp_path / "y")]) == 2
    assert "does not hold a resnet18" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("arch", [a for a in archs.list_archs() if archs.get_arch(a).timm])
def test_timm_builds_the_same_keys_and_shapes(arch):
    """The timm architecture + model_args an export's config.json names has our exact keys."""
    timm = pytest.importorskip("timm")
    spec = archs.get_arch(arch).timm
    with torch.device("meta"):
        tm = timm.create_model(spec["architecture"], pretrained=False, **spec.get("model_args", {}))
    ours = {k: tuple(v.shape) for k, v in archs.build(arch, device="meta").state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in tm.state_dict().items()}
    assert theirs == ours        # the same keys and shapes: timm's strict load_state_dict fits


def test_export_loads_with_robust_zoo_and_timm(hub_server, tmp_path, monkeypatch):
    arch = "resnet18"
    entry, net = publish_upstream(hub_server, arch, "linf", 4 / 255)
    out = tmp_path / "export"
    published = robust_zoo.export(entry["name"], out, manifest=manifest(entry),
                                  repo_id="robust-zoo/test-export", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json",
                                                     "model.safetensors"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: robust_zoo") and "4/255" in card
    x = torch.rand(2, 3, 32, 32)
    ref = reference_logits(net, x)
    local = robust_zoo.load(str(out))
    assert torch.equal(local(x), ref) and local.entry.norm == "linf"
    # the same folder as a Path, as timm's local-dir: and as a bare relative name
    monkeypatch.chdir(tmp_path)
    for ref_ in (out, f"local-dir:{out}", "export"):
        assert torch.equal(robust_zoo.load(ref_)(x), ref), ref_
    with pytest.raises(robust_zoo.UnknownModelError, match="no config.json"):
        robust_zoo.load(f"local-dir:{tmp_path / 'nothing'}")
    # upload the folder to the loopback Hub and load it by repo id
    for p in out.iterdir():
        hub_server.add_file("robust-zoo/test-export", p.name, p.read_bytes())
    remote = robust_zoo.load("hf-hub:robust-zoo/test-export")
    assert torch.equal(remote(x), ref)
    assert published["files"][0]["sha256"] == sha256_file(out / "model.safetensors")
    timm = pytest.importorskip("timm")
    tm = timm.create_model("hf-hub:robust-zoo/test-export", pretrained=True).eval()
    cfg = tm.pretrained_cfg
    assert tuple(cfg["mean"]) == (0.485, 0.456, 0.406)
    assert tuple(cfg["std"]) == (0.229, 0.224, 0.225)
    with torch.no_grad():
        assert torch.allclose(tm((x - local.normalize.mean) / local.normalize.std), ref,
                              atol=1e-5)


def test_pin_fills_hashes_from_the_hub(hub_server, tmp_path):
    e1, _ = publish_upstream(hub_server, "resnet18", pin=False)
    e1["files"][0]["size"] = None
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest(e1)))
    assert cli.main(["pin", "--manifest", str(mpath)]) == 0
    f = json.loads(mpath.read_text())["models"][0]["files"][0]
    data = hub_server.repos[REPO].files[f["filename"]]
    assert f["sha256"] == hashlib.sha256(data).hexdigest()
    assert f["size"] == len(data) and f["revision"] == hub_server.repos[REPO].commit
    # the pinned manifest loads without the unpinned warning, at the pinned commit
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", sources.UnpinnedFileWarning)
        robust_zoo.load(e1["name"], manifest=mpath)
    # a pinned hash the Hub contradicts is an error, not silently re-pinned
    f["sha256"] = "0" * 64
    mpath.write_text(json.dumps({"schema_version": 1, "models": [dict(e1, files=[f])]}))
    assert cli.main(["pin", "--manifest", str(mpath)]) == 1


@pytest.mark.parametrize("program, prog, flag", [
    ("quickstart", "robust-zoo quickstart", "--fast"),
    ("train", "python -m robust_zoo.train", "--from-manifest"),
    ("evaluate", "python -m robust_zoo.evaluate", "--autoattack"),
    ("transfer", "python -m robust_zoo.transfer", "--dataset"),
    ("viz", "robust-zoo viz", "--compare")])
def test_cli_forwards_to_programs(program, prog, flag, capsys):
    """``robust-zoo PROGRAM --help`` is that program's own help, not robust-zoo's."""
    assert cli.main([program, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {prog}") and flag in out
