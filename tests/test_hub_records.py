"""The hub's records of verified files, the load() argument checks, and the trust guarantees of
the caches: deletion scope, cache keys, what "verified" means."""
from __future__ import annotations

import json

import robust_zoo
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
