"""The hub's records of verified files, the load() argument checks, and the trust guarantees of
the caches: deletion scope, cache keys, what "verified" means."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import robust_zoo
from robust_zoo.cli import commands as cli
from robust_zoo.errors import UsageError
from robust_zoo.fileio import sha256_file
from robust_zoo.hub import cache, records, sources
from zoo import ckpt_bytes, manifest, publish_upstream, random_net, same

def sha256_file_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetched_files_and_converted_copies_have_records_of_one_format(hub_server,
                                                                       isolated_caches):
    entry, _ = publish_upstream(hub_server, "resnet18")
    pin = entry["files"][0]["sha256"]
    robust_zoo.load(entry["name"], manifest=manifest(entry))
    blob = next(p for p in isolated_caches["hf"].rglob("snapshots/*/*"))
    copy = next(cache.converted_dir().glob("*.safetensors"))
    fetched, converted = records.read(blob), records.read(copy)
    assert fetched.sha256 == fetched.pinned == pin == sha256_file(blob)
    assert converted.pinned == pin and converted.sha256 == sha256_file(copy)
    assert converted.size == copy.stat().st_size
    # a record of other bytes (another size) is no record of this file
    where = records.record_path(copy)
    d = json.loads(where.read_text())
    where.write_text(json.dumps(dict(d, size=d["size"] + 1)))
    assert records.read(copy) is None


# ----------------------------------------------------------------------------- load() arguments

def _snapshot(*roots) -> dict:
    """Every file under ``roots``: its bytes and mtime."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for r in roots if r.exists()
            for p in sorted(r.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_load_refuses_a_misspelt_verify_mode_before_touching_the_cache(hub_server,
                                                                       isolated_caches):
    """A user who asks for a re-hash ("Always") gets an error, not the cached copy unchecked."""
    entry, _ = publish_upstream(hub_server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    before, n = _snapshot(*isolated_caches.values()), len(hub_server.requests)
    with pytest.raises(UsageError, match=r"verify='Always'.*did you mean 'always'"):
        robust_zoo.load(entry["name"], manifest=m, verify="Always")
    with pytest.raises(UsageError, match="verify="):
        robust_zoo.download(entry["name"], manifest=m, verify="ALWAYS")
    assert _snapshot(*isolated_caches.values()) == before and len(hub_server.requests) == n


@pytest.mark.parametrize("kw,match", [
    (dict(verify=None), "verify=None"),
    (dict(device="gpu"), "device='gpu' is not a device"),
    (dict(device=f"cuda:{torch.cuda.device_count()}"), "CUDA device"),
    (dict(dtype=torch.int64), "dtype=torch.int64: pass a floating"),
    (dict(dtype="float16"), "did you mean torch.float16"),
    (dict(num_classes=-1), "num_classes=-1"),
    (dict(num_classes=2.5), "num_classes=2.5"),
    (dict(num_classes=True), "num_classes=True"),
    (dict(normalize="no"), "normalize='no'"),
    (dict(pretrained="no"), "pretrained='no'"),
    (dict(local_files_only="yes"), "local_files_only='yes'"),
    (dict(arch="resnet18"), "either a name or arch=/norm=/eps=, not both"),
    (dict(name=None, arch="resnet18", norm="l2"), "all of arch=, norm= and eps="),
    (dict(name=None, arch="resnet18", norm="l3", eps=3), "Unknown norm 'l3'"),
    (dict(name=None, arch="resnet17", norm="l2", eps=3), "Unknown architecture 'resnet17'"),
    (dict(name=None, arch="resnet18", norm="l2", eps="nan"), "eps='nan'"),
    (dict(name=7), "name=7 is not a model name"),
])
def test_load_checks_every_argument_before_reading_or_writing(hub_server, isolated_caches, kw,
                                                              match):
    entry, _ = publish_upstream(hub_server, "resnet18")
    kw = dict(dict(name=entry["name"]), **kw)
    with pytest.raises(UsageError, match=match):
        robust_zoo.load(manifest=manifest(entry), progress=False, **kw)
    assert hub_server.requests == []
    assert not any(p.exists() for p in isolated_caches.values())


# ----------------------------------------------------------------------------- deletion scope

def _plant_symlinks(roots, outside: Path) -> dict[Path, bytes]:
    """Replace every file under ``roots`` by a symlink to a copy outside the caches (the data
    files' copies with one byte flipped, so that every check fails and every repair runs);
    returns the outside files and their bytes. huggingface_hub's own lock files (``.locks``)
    are left as they are: it refuses a symlinked lock (ELOOP), which is its business."""
    planted = {}
    for i, p in enumerate(f for r in roots for f in sorted(r.rglob("*"))
                          if f.is_file() and not f.is_symlink() and ".locks" not in f.parts):
        data = bytearray(p.read_bytes())
        if p.suffix in (".safetensors", ".ckpt") or p.parent.name == "blobs":
            data[len(data) // 2] ^= 0xFF
        target = outside / f"{i}-{p.name}"
        target.write_bytes(bytes(data))
        p.unlink()
        p.symlink_to(target)
        planted[target] = bytes(data)
    return planted


def test_repairs_delete_inside_the_caches_never_a_symlinks_target(hub_server, isolated_caches,
                                                                  tmp_path, monkeypatch,
                                                                  capsys):
    """A cache file that is a symlink (a blob, a converted copy, a download, a record, a lock,
    a partial download) is removed or replaced as the link it is; its target is left alone."""
    from huggingface_hub import constants

    monkeypatch.setattr(sources, "BACKOFF_SECONDS", 0.0)
    hub_entry, hub_net = publish_upstream(hub_server, "resnet18")
    url_net = random_net("resnet18", seed=1)
    data = ckpt_bytes(url_net, "resnet18")
    url_entry = {"name": "resnet18_l2_eps1", "arch": "resnet18", "norm": "l2", "eps": 1.0,
                 "files": [{"format": "robustness-ckpt", "url": hub_server.add_raw("r.ckpt", data),
                            "size": len(data), "sha256": sha256_file_bytes(data)}]}
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest(hub_entry, url_entry)))
    for e in (hub_entry, url_entry):
        robust_zoo.load(e["name"], manifest=mpath, progress=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = _plant_symlinks(isolated_caches.values(), outside)
    part = next(cache.cache_dir().glob("downloads/*/r.ckpt")).with_name("r.ckpt.part")
    (outside / "part").write_bytes(data[:1000])
    part.symlink_to(outside / "part")
    planted[outside / "part"] = data[:1000]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cli.main(["verify", "--manifest", str(mpath)]) == 1
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.warns(UserWarning):
        for e, net in ((hub_entry, hub_net), (url_entry, url_net)):
            assert same(robust_zoo.load(e["name"], manifest=mpath, verify="always",
                                        progress=False), net)
    assert {p: p.read_bytes() for p in planted if p.exists()} == planted


# ----------------------------------------------------------------------------- cache keys

@pytest.mark.parametrize("change,match", [
    (dict(name="resnet18_l2_eps3_mirror"), None),
    (dict(arch="resnet50"), "does not hold a resnet50"),
    (dict(num_classes=10), r"fc.weight: file \(1000, 512\) vs resnet18 \(10, 512\)"),
    (dict(preprocessing={"mean": [0.5] * 3, "std": [0.5] * 3}), "another input normalization"),
])
def test_converted_copies_are_keyed_by_every_input_of_the_conversion(hub_server, change, match):
    """An entry that shares a source with a converted one but differs in its name,
    architecture, head or normalisation misses the cache: it is converted (or refused) on its
    own, never served the other entry's copy."""
    entry, net = publish_upstream(hub_server, "resnet18")
    robust_zoo.load(entry["name"], manifest=manifest(entry))
    changed = dict(entry, **change)
    if match is None:
        model = robust_zoo.load(changed["name"], manifest=manifest(changed))
        assert same(model, net) and model.entry.name == changed["name"]
        assert len(list(cache.converted_dir().glob("*.safetensors"))) == 2
    else:
        with pytest.raises(robust_zoo.CheckpointFormatError, match=match):
            robust_zoo.load(changed["name"], manifest=manifest(changed))


# ----------------------------------------------------------------------------- "verified"

def _verified_once(hub_server, tmp_path):
    entry, net = publish_upstream(hub_server, "resnet18")
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest(entry)))
    robust_zoo.load(entry["name"], manifest=mpath)
    return entry, mpath


def test_verify_says_per_entry_what_it_hashed_and_against_what(hub_server, tmp_path, capsys):
    """"Verified" means hashed against a pin: verify names the file it hashed, its sha256 and
    the pin, and that the converted copy equals a fresh conversion of it."""
    entry, mpath = _verified_once(hub_server, tmp_path)
    assert cli.main(["verify", "--manifest", str(mpath)]) == 0
    out = capsys.readouterr().out
    blob = next((tmp_path / "hf-cache").rglob("snapshots/*/*"))
    assert f"{entry['name']}: ok" in out and "all cached files verified" in out
    assert f"hashed {blob}: sha256 {entry['files'][0]['sha256']} = the manifest's pin" in out
    copy = next(cache.converted_dir().glob("*.safetensors"))
    assert f"converted copy {copy} = a fresh conversion of it" in out


def test_a_converted_copy_without_its_source_is_unverifiable_yet_downloadable(
        hub_server, isolated_caches, tmp_path, monkeypatch, capsys):
    """With the Hub cache cleared, the converted copy cannot be re-hashed against the pin:
    verify reports it unverifiable (exit 1, never "all cached files verified", even when the
    copy and its record were replaced by other weights), load(verify="always") refuses it,
    and download, which reads what a later load reads, still hands it out."""
    import shutil

    from huggingface_hub import constants

    from robust_zoo.fileio import hash_file
    from robust_zoo.formats.safetensors_file import read_weights, save_weights

    entry, mpath = _verified_once(hub_server, tmp_path)
    name, pin = entry["name"], entry["files"][0]["sha256"]
    copy = next(cache.converted_dir().glob("*.safetensors"))
    shutil.rmtree(isolated_caches["hf"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert robust_zoo.download(name, manifest=mpath) == {name: copy}
    # other weights in place of the copy, its record rewritten to match
    meta, about = read_weights(copy).metadata, records.read(copy).about
    save_weights(random_net("resnet18", seed=3).state_dict(), copy, arch="resnet18",
                 num_classes=1000, **{k: v for k, v in meta.items()
                                      if k not in ("format", "arch", "num_classes", "mean", "std")})
    records.write(copy, *hash_file(copy), pin, **about)
    assert cli.main(["verify", "--manifest", str(mpath)]) == 1
    out = capsys.readouterr().out
    assert f"{name}: UNVERIFIABLE" in out and "all cached files verified" not in out
    assert "could not be verified" in out
    with pytest.raises(sources.NotCachedError, match="nothing to re-hash against the pin"):
        robust_zoo.load(name, manifest=mpath, verify="always")
