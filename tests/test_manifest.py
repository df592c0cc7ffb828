"""The shipped manifest: valid against its schema, complete, and consistent with the registry."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from robust_zoo.models import archs
from robust_zoo.hub.manifest import (PACKAGE_MANIFEST, SCHEMA_PATH, ManifestError, load_manifest,
                                 parse_manifest)
from robust_zoo.naming import eps_label, model_name, parse_name, upstream_filename
from robust_zoo.recipe import Recipe

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = load_manifest()


def test_shipped_manifest_matches_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(PACKAGE_MANIFEST.read_text()), schema)


def test_schema_rejects_what_it_should():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    good = json.loads(PACKAGE_MANIFEST.read_text())["models"][0]
    for broken in (dict(good, name="resnet50-l2"), dict(good, norm="l3"),
                   dict(good, files=[dict(good["files"][0], sha256="abc")]),
                   dict(good, files=[dict(good["files"][0], url="https://x/y")])):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"schema_version": 1, "models": [broken]}, schema)


def test_zoo_is_complete():
    """67 checkpoints of the paper's table plus the two Linf baselines on the Hub."""
    assert len(MANIFEST) == 69
    assert {e.arch for e in MANIFEST} == set(archs.list_archs())
    assert len(MANIFEST.filter(norm="l2")) == 52 and len(MANIFEST.filter(norm="linf")) == 17
    assert len(MANIFEST.filter("wide_resnet50_4")) == 10
    assert MANIFEST.get("resnet50_l2_eps3").clean_top1 == 62.83
    aa = MANIFEST.get("resnet50_linf_eps4").metric("autoattack_top1")
    assert aa["value"] == 34.96 and aa["n_examples"] == 5000


@pytest.mark.parametrize("name", MANIFEST.names())
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
    pinned = [e for e in MANIFEST if e.files[0].sha256]
    assert len(pinned) == 38
    assert MANIFEST.get("resnet50_linf_eps4").files[0].size == 204_818_947


def test_manifest_is_generated_from_its_script():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_manifest.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


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
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_model_table.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
