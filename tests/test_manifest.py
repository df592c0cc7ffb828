"""The shipped manifest: valid against its schema, complete, and consistent with the registry
and with RobustBench's own model zoo; the new entry fields, names, aliases and filters."""
from __future__ import annotations

import importlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import robust_zoo
from robust_zoo.errors import UsageError
from robust_zoo.models import archs
from robust_zoo.hub.manifest import (PACKAGE_MANIFEST, SCHEMA_PATH, AmbiguousModelError,
                                     ManifestError, UnknownModelError, entry_family,
                                     load_manifest, parse_manifest)
from robust_zoo.naming import eps_label, model_name, parse_name, upstream_filename
from robust_zoo.recipe import Recipe

import zoo

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = load_manifest()
SALMAN = [e.name for e in MANIFEST if e.paper == "Salman2020Do"]
NEW = [e.name for e in MANIFEST if e.paper != "Salman2020Do"]


def test_shipped_manifest_matches_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(PACKAGE_MANIFEST.read_text()), schema)


def test_schema_rejects_what_it_should():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    good = json.loads(PACKAGE_MANIFEST.read_text())["models"][0]
    for broken in (dict(good, name="resnet50/l2"), dict(good, norm="l3"),
                   dict(good, files=[dict(good["files"][0], sha256="abc")]),
                   dict(good, files=[dict(good["files"][0], url="https://x/y")])):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"schema_version": 1, "models": [broken]}, schema)


def test_zoo_is_complete():
    """Salman et al.: 67 checkpoints of the paper's table plus the two Linf baselines on the
    Hub; RobustBench: 25 Linf and 11 corruption entries besides the four Salman ids; Peng et al.:
    two RaResNets besides their RaWRN (Peng2023Robust)."""
    assert len(SALMAN) == 69 and len(MANIFEST) == 69 + 25 + 11 + 2
    assert {MANIFEST.get(n).arch for n in SALMAN} == set(archs.list_archs())
    l2, linf = (MANIFEST.filter(norm=n, paper="Salman2020Do") for n in ("l2", "linf"))
    assert len(l2) == 52 and len(linf) == 17
    assert len(MANIFEST.filter("wide_resnet50_4")) == 10
    assert MANIFEST.get("resnet50_l2_eps3").clean_top1 == 62.83
    aa = MANIFEST.get("resnet50_linf_eps4").metric("autoattack_top1")
    assert aa["value"] == 34.96 and aa["n_examples"] == 5000


@pytest.mark.parametrize("name", SALMAN)
def test_every_entry_resolves(name):
    e = MANIFEST.get(name)
    a = archs.get_arch(e.arch)
    assert name.isidentifier() and name == model_name(a.name, e.norm, e.eps)
    assert parse_name(name)[0] == a.name
    f = e.files[0]
    assert f.repo_id == "madrylab/robust-imagenet-models" and f.format == "robustness-ckpt"
    assert f.filename == upstream_filename(a.upstream_name, e.norm, e.eps)
    assert e.extra["num_params"] == a.num_params
    r = Recipe.from_dict(e.recipe)
    assert (r.arch, r.norm, r.eps) == (a.name, e.norm, e.eps)
    assert set(r.unknown).isdisjoint(r.unconfirmed)
    assert all(getattr(r, k) is None for k in r.unknown)


def test_upstream_file_names():
    assert upstream_filename("resnet50", "linf", 4 / 255) == "resnet50_linf_eps4.0.ckpt"
    assert upstream_filename("resnet50", "linf", 0.5 / 255) == "resnet50_linf_eps0.5.ckpt"
    assert upstream_filename("resnet50", "linf", 0) == "resnet50_linf_eps0.ckpt"
    assert upstream_filename("densenet", "l2", 3.0) == "densenet_l2_eps3.ckpt"
    assert upstream_filename("resnet18", "l2", 0.25) == "resnet18_l2_eps0.25.ckpt"
    assert eps_label("l2", 0.03) == "0_03" and eps_label("linf", 8 / 255) == "8"


def test_schema_and_parser_refuse_the_same_malformed_sections():
    """A malformed metric, recipe or preprocessing field fails the JSON Schema and the parser
    alike (the parser naming the field), so a manifest that validates loads."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    good = json.loads(PACKAGE_MANIFEST.read_text())["models"][0]
    metric, pre, rec = good["metrics"][0], good["preprocessing"], good["recipe"]
    for broken, field in (
            (dict(good, metrics=[{k: v for k, v in metric.items() if k != "value"}]),
             "metrics[0].value"),
            (dict(good, metrics=[dict(metric, norm="l2")]), "metrics[0].eps"),
            (dict(good, recipe=dict(rec, lr_warmup=5)), "recipe"),
            (dict(good, recipe=dict(rec, unknown=["warmup"])), "recipe.unknown"),
            (dict(good, preprocessing=dict(pre, resize=0)), "preprocessing.resize"),
            (dict(good, preprocessing=dict(pre, interpolation="sinc")),
             "preprocessing.interpolation"),
            (dict(good, preprocessing=dict(pre, resise=256)), "preprocessing.resise")):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"schema_version": 1, "models": [broken]}, schema)
        with pytest.raises(ManifestError, match=f"field '{re.escape(field)}'"):
            parse_manifest({"schema_version": 1, "models": [broken]})


def test_known_hashes_pinned():
    """38 Salman files from the Hub's LFS pointers and the RaResNet-50 hash its Hub page shows;
    nothing else publishes a sha256."""
    pinned = [e.name for e in MANIFEST if any(f.sha256 for f in e.files)]
    assert len(pinned) == 39 and "Peng2023Robust_RaResNet-50" in pinned
    assert MANIFEST.get("resnet50_linf_eps4").files[0].size == 204_818_947


def _script(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))
    return importlib.import_module(name)


def test_manifest_is_generated_from_its_script():
    """What ``scripts/build_manifest.py --check`` checks, in this process."""
    text = json.dumps(_script("build_manifest").build(), indent=2) + "\n"
    assert PACKAGE_MANIFEST.read_text() == text, "run python scripts/build_manifest.py"


def test_root_manifest_is_the_package_manifest():
    assert (ROOT / "weights_manifest.json").resolve() == PACKAGE_MANIFEST.resolve()


def test_user_manifest_errors_are_specific(tmp_path, monkeypatch):
    with pytest.raises(ManifestError, match="schema_version 2"):
        parse_manifest({"schema_version": 2, "models": []})
    with pytest.raises(ManifestError, match="has no 'files'"):
        parse_manifest({"schema_version": 1, "models": [{"name": "a", "arch": "resnet18",
                                                          "norm": "l2", "eps": 1}]})
    with pytest.raises(ManifestError, match="Unknown architecture 'resnet19'.*resnet18"):
        parse_manifest({"schema_version": 1, "models": [
            {"name": "a", "arch": "resnet19", "norm": "l2", "eps": 1, "files": []}]})
    with pytest.raises(ManifestError, match="duplicate model name"):
        e = {"name": "a", "arch": "resnet18", "norm": "l2", "eps": 1,
             "files": [{"format": "safetensors", "path": "a.safetensors"}]}
        parse_manifest({"schema_version": 1, "models": [e, e]})
    p = tmp_path / "m.json"
    p.write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(p)
    monkeypatch.setenv("ROBUST_ZOO_MANIFEST", str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="ROBUST_ZOO_MANIFEST"):
        load_manifest()


def test_model_table_is_generated_from_the_manifest():
    """What ``scripts/gen_model_table.py --check`` checks, in this process."""
    text = _script("gen_model_table").render()
    assert (ROOT / "docs" / "models.md").read_text() == text, \
        "run python scripts/gen_model_table.py"


# ----------------------------------------------------------------------------- RobustBench


def test_every_robustbench_imagenet_model_is_an_entry_an_alias_or_left_out():
    """RobustBench's own list (robustbench 1.1.1's imagenet_models): each id loads an entry that
    is listed under that threat model and claims its clean and robust accuracy, with the id in
    the record; what is left out is said (docs/models.md) and is no name."""
    zoo.robustbench()
    from robustbench.model_zoo.imagenet import imagenet_models

    left_out, seen = _script("build_manifest").LEFT_OUT, set()
    for threat, models in imagenet_models.items():
        tm = threat.value
        for rb_id in models:
            if rb_id in left_out:
                assert rb_id not in MANIFEST
                continue
            e = MANIFEST.get(rb_id)
            seen.add(e.name)
            assert tm in e.threat_models, (rb_id, e.threat_models)
            assert e.metric("clean_top1", robustbench_id=rb_id, threat_model=tm)
            robust = "autoattack_top1" if tm == "Linf" else "corruptions_top1"
            assert e.metric(robust, robustbench_id=rb_id, threat_model=tm), rb_id
    assert set(left_out) == {"Bai2024MixedNUTS"}
    assert len(seen) == 25 + 11 + 3       # the four Salman ids share three entries
    assert "Bai2024MixedNUTS" in (ROOT / "docs" / "models.md").read_text()


def test_files_are_the_ones_robustbench_loads():
    """Each RobustBench entry's files: the Drive id RobustBench downloads (as Drive's direct
    URL), the URL of the timm model it registers (XCiT, DeiT, AlexNet), torchvision's weights
    for Standard_R50; Peng2023Robust has the Hub file first and the Drive file second."""
    zoo.robustbench()
    import timm
    from robustbench.model_zoo.imagenet import imagenet_models
    from torchvision.models import ResNet50_Weights

    from robustbench.model_zoo.enums import ThreatModel

    drive = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"
    for rb_id, tm in _rb_entries():
        e, info = MANIFEST.get(rb_id), imagenet_models[ThreatModel(tm)][rb_id]
        if e.name != rb_id:
            continue          # an alias: the Salman entry's own files (the madrylab Hub repo)
        urls = [f.url for f in e.files if f.url]
        timm_name = f"{rb_id.lower().replace('-', '_')}_imagenet_{tm.lower()}"
        if info["gdrive_id"]:
            assert urls == [drive.format(info["gdrive_id"])], rb_id
        elif timm.is_model(timm_name):
            assert urls == [timm.models.get_pretrained_cfg(timm_name).url], rb_id
        else:
            assert rb_id == "Standard_R50" and urls == [ResNet50_Weights.IMAGENET1K_V1.url]
    assert MANIFEST.get("Peng2023Robust").files[0].repo_id == "poloclub/robust-principles"


def _rb_entries() -> list[tuple[str, str]]:
    return sorted({(m["robustbench_id"], m["threat_model"]) for e in MANIFEST
                   for m in e.metrics if m.get("robustbench_id")})


def test_preprocessing_is_robustbench_s_on_an_image():
    """``entry.transforms()`` gives the tensor RobustBench's own preprocessing of that model
    gives (``get_preprocessing``, as its benchmark calls it: Res256Crop224, Crop288, Res224,
    BicubicRes256Crop224, or the timm default_cfg of the models it builds through timm)."""
    zoo.robustbench()
    from PIL import Image
    from robustbench.data import get_preprocessing
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 333, 3), dtype=np.uint8))
    for rb_id, tm in _rb_entries():
        with torch.device("meta"):        # the timm route builds the model to read its cfg
            theirs = get_preprocessing(BenchmarkDataset.imagenet, ThreatModel(tm), rb_id, None)
        ours = MANIFEST.get(rb_id).transforms()(img)
        assert ours.shape == theirs(img).shape and torch.equal(ours, theirs(img)), rb_id


def test_normalization_is_where_robustbench_has_it():
    """Every RobustBench entry normalizes its [0, 1] inputs exactly as RobustBench's own model
    does: ImageNet's mean/std where its builder wraps the network in a normalization layer, the
    identity where it does not (the ConvStem ConvNeXts and ViT-B, Chen2024Data, MIMIR, XCiT)."""
    for rb_id, tm in _rb_entries():
        want = zoo.robustbench_normalization(zoo.robustbench_model(rb_id, tm))
        e = MANIFEST.get(rb_id)
        assert (e.mean, e.std) == want, rb_id


@pytest.mark.parametrize("name", NEW)
def test_new_entries_are_consistent_with_the_registry(name):
    """Arch, family, parameter count, threat model and licence of every new entry: what the
    registry, RobustBench's threat models and the sources say."""
    e = MANIFEST.get(name)
    a = archs.get_arch(e.arch)
    assert e.family == a.family == entry_family(e) and e.extra["num_params"] == a.num_params
    assert e.paper and name.startswith(e.paper) and e.recipe == {}
    assert e.citation or e.paper == "Standard"      # torchvision's weights: no paper
    assert (e.norm, e.eps) in (("linf", 4 / 255), ("none", 0.0), ("linf", 0.0))
    assert e.norm != "none" or e.threat_models == ("corruptions",)
    assert e.license in ("mit", "unknown") and e.extra["license_source"]
    assert e.license == "mit" or e.extra["license_source"].startswith("not stated")
    assert all(f.format == "torch-state-dict" for f in e.files)
    robust = e.metric("autoattack_top1") or e.metric("corruptions_top1")
    assert e.clean_top1 is not None and robust is not None and robust["source"]


# ----------------------------------------------------------------------------- names


def test_aliases_and_torch_hub_names_load_their_entry():
    """RobustBench's Salman2020Do_* ids are aliases (one entry, not two; not listed), and a
    RobustBench id's torch.hub spelling ('-' as '_') is the same entry."""
    assert MANIFEST.aliases() == {
        "Salman2020Do_R18": "resnet18_linf_eps4", "Salman2020Do_R50": "resnet50_linf_eps4",
        "Salman2020Do_50_2": "wide_resnet50_2_linf_eps4",
        "Salman2020Do_50_2_Linf": "wide_resnet50_2_linf_eps4"}
    assert set(MANIFEST.aliases()).isdisjoint(robust_zoo.list_models())
    assert robust_zoo.get_entry("Salman2020Do_50_2_Linf").threat_models == ("Linf", "corruptions")
    hub = MANIFEST.hub_names()
    assert len(hub) == len(MANIFEST) + 4 and all(h.isidentifier() for h in hub)
    assert hub["Singh2023Revisiting_ConvNeXt_T_ConvStem"] == \
        "Singh2023Revisiting_ConvNeXt-T-ConvStem"
    assert robust_zoo.get_entry("Tian2022Deeper_DeiT_S").name == "Tian2022Deeper_DeiT-S"
    model = robust_zoo.load("Salman2020Do_R50", pretrained=False, device="meta")
    assert model.entry.name == "resnet50_linf_eps4" and model.arch == "resnet50"
    with pytest.raises(UnknownModelError, match="Closest names: Salman2020Do_R50"):
        robust_zoo.get_entry("Salman2020Do_R05")


def test_list_models_filters_by_family_paper_and_threat_model():
    swin = robust_zoo.list_models(family="swin")
    assert len(swin) == 8 and all(MANIFEST.get(n).arch.startswith("swin") for n in swin)
    assert robust_zoo.list_models(paper="singh2023revisiting") == sorted(
        f"Singh2023Revisiting_{m}-ConvStem" for m in ("ConvNeXt-B", "ConvNeXt-L", "ConvNeXt-S",
                                                       "ConvNeXt-T", "ViT-B", "ViT-S"))
    corr = robust_zoo.list_models(threat_model="corruptions")
    assert len(corr) == 12
    assert {"Standard_R50", "wide_resnet50_2_linf_eps4", "AlexNet"} <= set(corr)
    assert len(robust_zoo.list_models(norm="none")) == 10
    assert robust_zoo.list_models(family="vit", threat_model="corruptions") == [
        "Tian2022Deeper_DeiT-B", "Tian2022Deeper_DeiT-S"]
    assert robust_zoo.list_models("resnet50", "linf", 4 / 255, threat_model="Linf") == [
        "Engstrom2019Robustness", "Wong2020Fast", "resnet50_linf_eps4"]
    assert robust_zoo.list_models(paper="Peng2023Robust") == [
        "Peng2023Robust", "Peng2023Robust_RaResNet-101", "Peng2023Robust_RaResNet-50"]
    with pytest.raises(UsageError, match="threat_model='l3'.*Linf, L2, corruptions"):
        robust_zoo.list_models(threat_model="l3")
    with pytest.raises(UsageError, match="paper='Singh2023'.*did you mean Singh2023Revisiting"):
        robust_zoo.list_models(paper="Singh2023")
    with pytest.raises(UsageError, match="family='convnxt'.*did you mean convnext"):
        robust_zoo.list_models(family="convnxt")


def test_arch_norm_eps_lookups_with_several_matches():
    """The canonical Salman entry where one matches; the only match; otherwise an error that
    lists every match."""
    assert robust_zoo.get_entry(arch="resnet50", norm="linf", eps=4 / 255).name == \
        "resnet50_linf_eps4"
    assert robust_zoo.get_entry(arch="convnext_tiny_convstem", norm="linf", eps=4 / 255).name == \
        "Singh2023Revisiting_ConvNeXt-T-ConvStem"
    with pytest.raises(AmbiguousModelError, match="3 models are swin_base linf eps=4/255: "
                       "Liu2023Comprehensive_Swin-B, Mo2022When_Swin-B, "
                       "RodriguezMunoz2024Characterizing_Swin-B"):
        robust_zoo.get_entry(arch="swin_base", norm="linf", eps=4 / 255)
    with pytest.raises(AmbiguousModelError,
                       match="7 models are resnet50 none eps=0: .*Geirhos2018_SIN,"):
        robust_zoo.load(arch="resnet50", norm="none", eps=0, pretrained=False)


# ----------------------------------------------------------------------------- fields


def _one(**fields) -> dict:
    e = {"name": "m", "arch": "resnet18", "norm": "linf", "eps": "4/255",
         "files": [{"format": "torch-state-dict", "url": "https://example.org/m.pt"}]}
    return {"schema_version": 1, "models": [{**e, **fields}]}


def test_new_fields_are_checked_by_name():
    """threat_model, aliases, norm "none", the RobustBench preprocessing forms and a URL file's
    name: a bad value fails the load naming the field (and the JSON Schema agrees)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    pre = {"resize": 256, "crop": 224, "mean": [0.5] * 3, "std": [0.5] * 3}
    url = "https://drive.usercontent.google.com/download?id=x"
    for fields, field in (
            ({"threat_model": "Linfinity"}, "threat_model"),
            ({"threat_model": ["Linf", "Linf"]}, "threat_model"),
            ({"aliases": ["bad name"]}, "aliases[0]"),
            ({"norm": "none", "eps": 0.1}, "eps"),
            ({"preprocessing": dict(pre, crop=None)}, "preprocessing.crop"),
            ({"preprocessing": dict(pre, resize=[224])}, "preprocessing.resize"),
            ({"files": [{"format": "torch-state-dict", "url": url, "filename": "a/b.pt"}]},
             "files[0].filename"),
            ({"metrics": [{"name": "clean_top1", "value": 50, "threat_model": "L3"}]},
             "metrics[0].threat_model"),
            ({"links": {"paper": "arxiv.org/abs/1"}}, "links.paper")):
        with pytest.raises(ManifestError, match=f"field '{re.escape(field)}'"):
            parse_manifest(_one(**fields))
        full = {**_one(**fields)["models"][0], "metrics": [], "preprocessing": pre,
                "license": None, "citation": None, "recipe": {}, **fields}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"schema_version": 1, "models": [full]}, schema)
    ok = parse_manifest(_one(norm="none", eps=0, threat_model="corruptions", aliases=["m2"],
                             preprocessing=dict(pre, resize=[224, 224], crop=None)))
    e = ok.get("m2")
    assert (e.name, e.eps_display, e.threat_models, e.input_size) == ("m", "-", ("corruptions",),
                                                                       224)
    assert e.crop_pct == 1.0 and MANIFEST.get("Tian2022Deeper_DeiT-S").crop_pct == 0.9032
    assert MANIFEST.get("Wong2020Fast").input_size == 288
    with pytest.raises(ManifestError, match="alias 'm' of 'n' is already the name"):
        parse_manifest({"schema_version": 1, "models": [
            _one()["models"][0], _one(name="n", aliases=["m"])["models"][0]]})
