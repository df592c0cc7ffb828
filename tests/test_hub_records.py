"""The hub's records of verified files, the load() argument checks, and the trust guarantees of
the caches: deletion scope, cache keys, what "verified" means."""
from __future__ import annotations

import json

import pytest
import torch

import robust_zoo
from robust_zoo.errors import UsageError
from robust_zoo.fileio import sha256_file
from robust_zoo.hub import cache, records
from zoo import manifest, publish_upstream


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
