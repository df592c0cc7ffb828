"""Input from outside the package (manifests, export folders, weight files, the Hub's answers,
the user's own files) is validated before it is used, and nothing it drives can crash with a
traceback, write what was not validated or overwrite what the package did not write."""
from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path

import pytest

from robust_zoo import validate
from robust_zoo.cli import commands as cli
from robust_zoo.hub.manifest import ManifestError, load_manifest

from zoo import write_manifest

DEEP = 100_000      # far past the interpreter's recursion limit


def _run(argv, capsys) -> tuple[int, str, str]:
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ----------------------------------------------------------------------------- JSON depth

def test_parsers_never_recurse_without_a_bound_manifest(tmp_path, capsys):
    """A manifest nested 100 000 levels deep is refused by every command that reads it: exit 2,
    one line naming the file, no RecursionError."""
    p = tmp_path / "deep.json"
    p.write_text('{"schema_version": 1, "models": [' + "[" * DEEP + "]" * DEEP + "]}")
    for argv in (["list"], ["info", "m"], ["download", "m"], ["verify"]):
        rc, _, err = _run([*argv, "--manifest", p], capsys)
        assert rc == 2 and str(p) in err and "levels deep" in err, err
        assert "Traceback" not in err and "Recursion" not in err
    with pytest.raises(ManifestError, match="over the limit of 64"):
        load_manifest(p)


def test_parsers_never_recurse_without_a_bound_export_config(tmp_path):
    import robust_zoo

    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text('{"robust_zoo": ' + "{\"a\": " * DEEP + "1"
                                          + "}" * DEEP + "}")
    with pytest.raises(ManifestError, match="config.json.*levels deep"):
        robust_zoo.load(f"local-dir:{tmp_path}")


def test_parsers_never_recurse_without_a_bound_safetensors_header(tmp_path):
    from robust_zoo.formats.safetensors_file import read_weights

    header = ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": '
              + "[" * DEEP + "]" * DEEP + "}}").encode()
    p = tmp_path / "deep.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    with pytest.raises(validate.CheckpointFormatError, match="header.*levels deep"):
        read_weights(p)


def test_json_depth_is_measured_outside_strings_in_linear_time():
    assert validate.json_depth('{"a": [1, {"b": "[[[[{{{"}], "c": "\\"]]"}') == 3
    assert validate.load_json('{"k": "' + "[" * 1000 + '"}', "doc") == {"k": "[" * 1000}
    assert validate.load_json("[" * 64 + "]" * 64, "doc") is not None
    with pytest.raises(validate.JSONError, match="doc nests arrays/objects 65 levels"):
        validate.load_json("[" * 65 + "]" * 65, "doc")
    with pytest.raises(validate.JSONError, match="doc is not valid JSON"):
        validate.load_json('{"a": 1', "doc")
    # hostile text of megabytes (a quadratic scan would take hours): unterminated strings full
    # of escapes, brackets, both
    for hostile in ('"\\"' * (1 << 20), "[" * (4 << 20), '["' * (2 << 20)):
        t0 = time.perf_counter()
        with pytest.raises(validate.JSONError):
            validate.load_json(hostile, "hostile")
        assert time.perf_counter() - t0 < 5


def test_nested_cache_record_is_treated_as_absent(tmp_path):
    from robust_zoo.hub import records

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    where = records.record_path(f)
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text("[" * DEEP + "]" * DEEP)
    assert records.read(f) is None


# ----------------------------------------------------------------------------- manifest fields

def _entry(**fields) -> dict:
    return {"name": "m", "arch": "resnet18", "norm": "l2", "eps": 3,
            "files": [{"format": "safetensors", "path": "m.safetensors", "sha256": None}],
            **fields}


BAD_FIELDS = [
    (dict(metrics=[{"name": "clean_top1"}]), "metrics[0].value"),
    (dict(metrics=[{"value": 50.0}]), "metrics[0].name"),
    (dict(metrics=[{"name": "pgd_top1", "value": 30.0, "norm": "l2"}]), "metrics[0].eps"),
    (dict(metrics=[{"name": "pgd_top1", "value": 30.0, "eps": 3}]), "metrics[0].norm"),
    (dict(metrics=[{"name": "autoattack_top1", "value": 30.0}]), "metrics[0].norm"),
    (dict(metrics=[{"name": "clean_top1", "value": "62.8"}]), "metrics[0].value"),
    (dict(metrics=[{"name": "clean_top1", "value": 162.8}]), "metrics[0].value"),
    (dict(metrics=[{"name": "pgd_top1", "value": 3, "norm": "l3", "eps": 1}]), "metrics[0].norm"),
    (dict(metrics=[{"name": "clean_top1", "value": 1, "n_examples": 0}]),
     "metrics[0].n_examples"),
    (dict(metrics=[{"name": "clean_top1", "value": 1, "attack": "pgd"}]), "metrics[0].attack"),
    (dict(metrics={"name": "clean_top1"}), "metrics"),
    (dict(recipe={"arch": "resnet18", "lr_warmup": 5}), "recipe"),
    (dict(recipe={"arch": "resnet18", "lr": -1}), "recipe"),
    (dict(recipe={"arch": "resnet18", "unknown": [1, 2]}), "recipe.unknown"),
    (dict(recipe={"arch": "resnet18", "unconfirmed": "lr"}), "recipe.unconfirmed"),
    (dict(recipe={"arch": "resnet18", "source": {"lr": 3}}), "recipe.source"),
    (dict(recipe={"arch": ["resnet18"]}), "recipe.arch"),
    (dict(preprocessing={"resize": 0}), "preprocessing.resize"),
    (dict(preprocessing={"crop": 22.5}), "preprocessing.crop"),
    (dict(preprocessing={"interpolation": "sinc"}), "preprocessing.interpolation"),
    (dict(preprocessing={"resise": 256}), "preprocessing.resise"),
    (dict(preprocessing={"input_range": [1, 0]}), "preprocessing.input_range"),
    (dict(preprocessing={"normalize_in_model": "yes"}), "preprocessing.normalize_in_model"),
    (dict(upstream="madrylab"), "upstream"),
    (dict(provenance=[1]), "provenance"),
    (dict(num_params=-1), "num_params"),
    (dict(license=["mit"]), "license"),
]


@pytest.mark.parametrize("fields,field", BAD_FIELDS, ids=[f for _, f in BAD_FIELDS])
def test_every_manifest_field_is_validated_at_parse_time(tmp_path, capsys, fields, field):
    """A malformed field fails when the manifest is loaded (ManifestError naming the entry and
    the field), and every command that reads the manifest exits 2 with that one line."""
    p = write_manifest(tmp_path / "m.json", _entry(**fields))
    with pytest.raises(ManifestError, match=rf"entry 'm': field '{re.escape(field)}'"):
        load_manifest(p)
    for argv in (["list"], ["info", "m"], ["export", "m", tmp_path / "out"]):
        rc, _, err = _run([*argv, "--manifest", p], capsys)
        assert rc == 2 and f"field '{field}'" in err and "Traceback" not in err, err


def test_valid_sections_parse_and_drive_the_commands(tmp_path, capsys):
    """What passes validation works downstream: the card shows the metrics, the transforms use
    the preprocessing, the recipe reads back as a Recipe."""
    from robust_zoo.hub.publish import model_card, timm_config
    from robust_zoo.recipe import Recipe

    e = load_manifest(write_manifest(tmp_path / "m.json", _entry(
        metrics=[{"name": "clean_top1", "value": 50.0},
                 {"name": "pgd_top1", "value": 20.0, "norm": "Linf", "eps": "4/255",
                  "n_examples": 100, "attack": {"name": "pgd", "steps": 10}}],
        preprocessing={"resize": 40, "crop": 32, "interpolation": "bicubic"},
        recipe={"arch": "resnet18", "norm": "l2", "eps": 3, "unknown": ["precision"],
                "precision": None, "source": {"lr": "paper"}}))).get("m")
    assert e.metric("pgd_top1")["norm"] == "linf" and e.metric("pgd_top1")["eps"] == 4 / 255
    card = model_card(e)
    assert "| pgd_top1 | 20.00 | Linf ε=4/255 | 100 |" in card and "precision" in card
    assert timm_config(e)["pretrained_cfg"]["crop_pct"] == 0.8
    assert "bicubic" in repr(e.transforms()) and Recipe.from_dict(e.recipe).arch == "resnet18"
    rc, out, _ = _run(["list", "--manifest", tmp_path / "m.json"], capsys)
    assert rc == 0 and "50.00" in out


# ----------------------------------------------------------------------------- pin

def _hub_manifest(hub_server, tmp_path) -> tuple[Path, str, bytes]:
    data = b"weights" * 100
    sha = hub_server.add_file("org/repo", "w.ckpt", data)
    p = write_manifest(tmp_path / "m.json", _entry(files=[
        {"format": "robustness-ckpt", "repo_id": "org/repo", "filename": "w.ckpt",
         "revision": "main", "sha256": None}]))
    return p, sha, data


HOSTILE = [
    (dict(kind="tree", lfs={"oid": "not-a-sha", "size": 700, "pointerSize": 134}), "not-a-sha"),
    (dict(kind="tree", size=-7), "-7"),
    (dict(kind="tree", size="700"), "'700'"),
    (dict(kind="revision", sha="../../.."), "../../.."),
    (dict(kind="revision", sha="main"), "'main' is not a commit"),
    (dict(kind="revision", sha=None), "None is not a commit"),
    (dict(kind="tree", lfs={"oid": "0" * 64}), "malformed (KeyError"),
    (dict(kind="tree", body=b"[" * DEEP + b"]" * DEEP), "malformed (RecursionError"),
    (dict(kind="revision", body=b"<html>sign in</html>"), "malformed"),
]


@pytest.mark.parametrize("lie,named", HOSTILE, ids=[n for _, n in HOSTILE])
def test_pin_validates_every_hub_value_before_writing(hub_server, tmp_path, capsys, lie, named):
    """A hostile Hub API answer (a revision that is a path, a sha that is not one, a negative
    size, a malformed or too deeply nested answer): exit 2 naming the value, the manifest byte
    for byte as it was."""
    p, _, _ = _hub_manifest(hub_server, tmp_path)
    before = p.read_bytes()
    hub_server.any_revision = True     # a hostile server answers whatever revision it made up
    hub_server.lie_in_api(**lie)
    rc, out, err = _run(["pin", "--manifest", p], capsys)
    assert rc == 2 and named in err and "Traceback" not in err, (rc, out, err)
    assert p.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir() if x.name.startswith("m.")) == ["m.json"]


def test_pin_writes_what_the_hub_answers_when_valid(hub_server, tmp_path, capsys):
    p, sha, data = _hub_manifest(hub_server, tmp_path)
    rc, out, err = _run(["pin", "--manifest", p, "--out", tmp_path / "pinned.json"], capsys)
    assert rc == 0 and "pinned 1 file(s)" in out, err
    f = load_manifest(tmp_path / "pinned.json").get("m").files[0]
    assert (f.sha256, f.size, f.revision) == (sha, len(data), hub_server.repos["org/repo"].commit)


@pytest.mark.parametrize("doc", [{"schema_version": 1}, {"models": []}, [],
                                 {"schema_version": 1, "models": [{"name": "m"}]}])
def test_pin_refuses_a_manifest_that_does_not_load(hub_server, tmp_path, capsys, doc):
    p = tmp_path / "m.json"
    p.write_text(json.dumps(doc))
    rc, _, err = _run(["pin", "--manifest", p], capsys)
    assert rc == 2 and (str(p) in err or "manifest entry" in err), err
    assert "Traceback" not in err and "KeyError" not in err
    assert json.loads(p.read_text()) == doc


# ----------------------------------------------------------------------------- own input

def _run_folder(tmp_path) -> Path:
    """A folder laid out as a training run leaves it: model.safetensors, the manifest that
    pins it, a README of its own."""
    from robust_zoo.formats.safetensors_file import save_weights
    from robust_zoo.hub.manifest import Entry, Manifest
    from robust_zoo.models import archs

    run = tmp_path / "run"
    run.mkdir()
    w = save_weights(archs.build("mini_resnet", 2).state_dict(), run / "model.safetensors",
                     arch="mini_resnet", num_classes=2)
    Manifest([Entry.for_weights(w, name="mini_l2_eps1", arch="mini_resnet", norm="l2", eps=1.0,
                                num_classes=2)]).write(run / "weights_manifest.json")
    (run / "README.md").write_text("# my run\n")
    return run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def test_export_never_overwrites_its_own_source(tmp_path, capsys):
    """`robust-zoo export NAME RUN_DIR` into the run's own folder: refused, exit 2, every file
    of the run as it was (the run still loads against its sha256)."""
    import robust_zoo

    run = _run_folder(tmp_path)
    before = _snapshot(run)
    for extra in ([], ["--force"]):
        rc, _, err = _run(["export", "mini_l2_eps1", run, "--manifest",
                           run / "weights_manifest.json", *extra], capsys)
        assert rc == 2 and "model.safetensors, the weights mini_l2_eps1 is exported from" in err
        assert _snapshot(run) == before
    robust_zoo.load("mini_l2_eps1", manifest=run / "weights_manifest.json", verify="always")


def test_export_refuses_a_folder_holding_another_model(tmp_path, capsys):
    run = _run_folder(tmp_path)
    m = run / "weights_manifest.json"
    for other in ("weights_manifest.json", "model.safetensors", "weights.ckpt"):
        target = tmp_path / f"t-{other}"
        target.mkdir()
        (target / other).write_bytes(b"someone else's model")
        for extra in ([], ["--force"]):
            rc, _, err = _run(["export", "mini_l2_eps1", target, "--manifest", m, *extra], capsys)
            assert rc == 2 and f"holds another model ({other})" in err, err
        assert _snapshot(target) == {other: b"someone else's model"}


def test_export_asks_for_force_before_replacing_a_users_files(tmp_path, capsys):
    """A README.md or config.json that export did not write (or that was edited since) is
    replaced only with --force; files it wrote itself are replaced freely."""
    run = _run_folder(tmp_path)
    m = run / "weights_manifest.json"
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("# my notes\n")
    (out / "config.json").write_text('{"mine": true}')
    (out / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    before = _snapshot(out)
    rc, _, err = _run(["export", "mini_l2_eps1", out, "--manifest", m], capsys)
    assert rc == 2 and "config.json and README.md" in err and "--force" in err, err
    assert _snapshot(out) == before
    rc, _, err = _run(["export", "mini_l2_eps1", out, "--manifest", m, "--force"], capsys)
    assert rc == 0, err
    assert sorted(_snapshot(out)) == [".gitattributes", "README.md", "config.json",
                                      "model.safetensors"]
    rc, _, err = _run(["export", "mini_l2_eps1", out, "--manifest", m], capsys)
    assert rc == 0, err                     # its own files: no --force needed
    (out / "README.md").write_text((out / "README.md").read_text() + "\nmy edit\n")
    rc, _, err = _run(["export", "mini_l2_eps1", out, "--manifest", m], capsys)
    assert rc == 2 and "README.md" in err and "edited" in err, err
    assert (out / "README.md").read_text().endswith("my edit\n")
    # an export folder re-exported into itself: its source
    rc, _, err = _run(["export", f"local-dir:{out}", out], capsys)
    assert rc == 2 and "the weights" in err, err


@pytest.mark.parametrize("how", ["same path", "symlink", "hardlink", "relative"])
def test_convert_never_overwrites_its_input(tmp_path, capsys, monkeypatch, how):
    from robust_zoo.models import archs

    from zoo import ckpt_bytes

    ckpt = tmp_path / "a.ckpt"
    data = ckpt_bytes(archs.build("mini_resnet", 2), "mini_resnet")
    ckpt.write_bytes(data)
    out = {"same path": ckpt, "symlink": tmp_path / "link.ckpt",
           "hardlink": tmp_path / "hard.ckpt", "relative": Path("sub/../a.ckpt")}[how]
    if how == "symlink":
        out.symlink_to(ckpt)
    if how == "hardlink":
        out.hardlink_to(ckpt)
    if how == "relative":
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path)
    rc, _, err = _run(["convert", ckpt, "--arch", "mini_resnet", "--out", out], capsys)
    assert rc == 2 and "is the checkpoint being converted" in err, err
    assert ckpt.read_bytes() == data
    rc, out_text, err = _run(["convert", ckpt, "--arch", "mini_resnet", "--out",
                              tmp_path / "a.safetensors"], capsys)
    assert rc == 0 and "mini_resnet, 2 classes" in out_text, err


# ----------------------------------------------------------------------------- model card

@pytest.mark.parametrize("license", ["mit\nevil: injected", "mit\n---\n# body",
                                     'a" , x: "y', "[gpl, {k: v}]", "café ☃ \\ \t#x",
                                     "mit\u2028evil: x\x85k: v\r\nz: 1", None])
def test_model_card_front_matter_cannot_be_injected(license):
    """A license or data set name written into the card's YAML front matter stays one value:
    the front matter parses back to the same keys, with the strings as they were."""
    yaml = pytest.importorskip("yaml")
    from robust_zoo.hub.manifest import parse_manifest
    from robust_zoo.hub.publish import model_card

    dataset = "digits]\nowner: mallory"
    e = parse_manifest({"schema_version": 1, "models": [_entry(
        license=license, recipe={"arch": "resnet18", "dataset": dataset})]}).get("m")
    card = model_card(e)
    assert card.startswith("---\n")
    front = card.split("\n---\n", 1)[0][len("---\n"):]
    meta = yaml.safe_load(front)
    assert set(meta) == {"library_name", "license", "tags", "datasets", "pipeline_tag"}, front
    assert meta["license"] == (license or "other") and meta["datasets"] == [dataset]
    assert len(front.splitlines()) == 5
