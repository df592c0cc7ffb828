"""Fault injection on the load path: tampered and rotted caches, malformed records, a misbehaving
Hub or mirror, full and read-only disks, hostile files and manifests, file modes; and the
bit-identity of loaded weights with torchvision's, whatever the file layout."""
from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from pathlib import Path

import pytest
import torch

import robust_zoo
from robust_zoo.models import archs
from robust_zoo.cli import commands as cli
from robust_zoo.hub import cache, sources
from robust_zoo.formats import upstream as rz_convert
from robust_zoo import fileio as rz_io
from robust_zoo.formats import safetensors_file as rz_weights
from robust_zoo.errors import RobustZooError
from robust_zoo.hub.manifest import FileSpec, ManifestError, parse_manifest
from robust_zoo.formats.safetensors_file import read_weights, save_weights
from zoo import (REPO, ckpt_bytes, manifest, publish_upstream, random_net, same,
                 safetensors_entry, served_entry)

@pytest.fixture
def server(hub_server, no_backoff, monkeypatch):
    """The loopback Hub (emptied, faults reset), with no retry waits."""
    monkeypatch.setattr(time, "sleep", lambda s: None)   # huggingface_hub's own resume waits
    return hub_server


def converted_files(rz: Path) -> tuple[Path, Path]:
    out = next((rz / "converted").glob("*.safetensors"))
    return out, out.with_suffix(".json")


def rewrite_converted_with_sidecar(out: Path, side: Path, state_dict, meta: dict) -> None:
    """Replace the converted copy with ``state_dict`` under ``meta`` and re-record its hashes
    in the sidecar: a rewrite that keeps the cache's own records consistent."""
    save_weights(state_dict, out, arch="resnet18", num_classes=1000,
                 **{k: v for k, v in meta.items()
                    if k not in ("format", "arch", "num_classes", "mean", "std")})
    sha, fast, size = rz_io.hash_file(out)
    rec = json.loads(side.read_text())
    rec.update(sha256=sha, xxh3_128=fast, size=size)
    side.write_text(json.dumps(rec))


def rewrite_keeping_stat(path: Path, data: bytes) -> None:
    st = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


# ----------------------------------------------------------------------------- integrity

def test_same_size_replacement_of_converted_copy_with_mtime_kept_is_caught(
        server, isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    out, _ = converted_files(isolated_caches["robust_zoo"])
    other = random_net("resnet18", seed=5)
    tmp = out.with_name("other.safetensors")
    save_weights(other.state_dict(), tmp, arch="resnet18", num_classes=1000,
                 **{k: v for k, v in read_weights(out).metadata.items()
                    if k not in ("format", "arch", "num_classes", "mean", "std")})
    assert tmp.stat().st_size == out.stat().st_size
    rewrite_keeping_stat(out, tmp.read_bytes())
    tmp.unlink()
    with pytest.warns(UserWarning, match="Discarding a damaged converted checkpoint"):
        model = robust_zoo.load(entry["name"], manifest=m)
    assert same(model, net)


def test_bit_flip_in_converted_copy_with_mtime_kept_is_caught(server, isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    out, _ = converted_files(isolated_caches["robust_zoo"])
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    rewrite_keeping_stat(out, bytes(data))
    n = len(server.requests)
    with pytest.warns(UserWarning, match="changed on disk since it was verified"):
        model = robust_zoo.load(entry["name"], manifest=m)
    assert same(model, net) and len(server.requests) == n   # rebuilt from the cached blob


def test_same_size_replacement_of_hub_safetensors_blob_is_caught(server, isolated_caches,
                                                                tmp_path):
    net = random_net("resnet18")
    entry = safetensors_entry(tmp_path, "resnet18_l2_eps3", net, "resnet18", server=server)
    m = manifest(entry)
    assert same(robust_zoo.load(entry["name"], manifest=m), net)
    blob = next(p for p in isolated_caches["hf"].rglob("blobs/*") if p.is_file())
    evil = save_weights(random_net("resnet18", seed=9).state_dict(), blob.with_name("x"),
                        arch="resnet18", num_classes=1000)
    assert evil.stat().st_size == blob.stat().st_size
    rewrite_keeping_stat(blob, evil.read_bytes())
    evil.unlink()
    gets = server.count("GET")
    with pytest.warns(UserWarning, match="changed on disk|corrupted"):
        model = robust_zoo.load(entry["name"], manifest=m)
    assert same(model, net) and server.count("GET") == gets + 1   # fetched again


def test_rewritten_sidecar_and_copy_are_caught_by_verify_always(server, isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    out, side = converted_files(isolated_caches["robust_zoo"])
    meta = read_weights(out).metadata
    evil = random_net("resnet18", seed=3)
    rewrite_converted_with_sidecar(out, side, evil.state_dict(), meta)
    with pytest.warns(UserWarning, match="not what the verified source converts to"):
        model = robust_zoo.load(entry["name"], manifest=m, verify="always")
    assert same(model, net)
    assert same(robust_zoo.load(entry["name"], manifest=m), net)   # the copy was repaired


def test_embedded_source_sha256_is_compared_with_the_pin(server, isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    out, side = converted_files(isolated_caches["robust_zoo"])
    sd, meta = rz_weights.load_weights(out)
    rewrite_converted_with_sidecar(out, side, sd, dict(meta, source_sha256="f" * 64))
    with pytest.warns(UserWarning, match="converted from 'f{64}'"):
        assert same(robust_zoo.load(entry["name"], manifest=m), net)


def test_verify_always_and_cli_verify_rehash_the_source_blob(server, isolated_caches,
                                                             capsys, monkeypatch):
    from huggingface_hub import constants

    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    mpath = isolated_caches["robust_zoo"].parent / "m.json"
    mpath.write_text(json.dumps(m))
    robust_zoo.load(entry["name"], manifest=m)
    blob = next(p for p in isolated_caches["hf"].rglob("blobs/*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    rewrite_keeping_stat(blob, bytes(data))
    # auto trusts the (intact) converted copy; always re-hashes the source behind it
    assert same(robust_zoo.load(entry["name"], manifest=m), net)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert cli.main(["verify", "--manifest", str(mpath)]) == 1
    out = capsys.readouterr().out
    assert f"{entry['name']}: MISMATCH" in out and "sha256 mismatch" in out
    assert not blob.exists()


@pytest.mark.parametrize("bad", ["[]", '{"sha256": 5}', "[1]", "not json", '{"v": 2}', ""])
def test_malformed_markers_and_sidecars_are_treated_as_absent_and_healed(server, isolated_caches,
                                                                         bad):
    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    rz = isolated_caches["robust_zoo"]
    markers = list((rz / "verified").glob("*.json"))
    _, side = converted_files(rz)
    assert markers
    for p in markers + [side]:
        p.write_text(bad)
    with pytest.warns(UserWarning, match="Discarding a damaged converted checkpoint"):
        assert same(robust_zoo.load(entry["name"], manifest=m), net)
    assert same(robust_zoo.load(entry["name"], manifest=m), net)
    for p in list((rz / "verified").glob("*.json")) + [side]:
        rec = json.loads(p.read_text())
        assert isinstance(rec, dict) and len(rec["sha256"]) == 64 and len(rec["xxh3_128"]) == 32


def test_cli_verify_continues_past_a_bad_entry(server, isolated_caches, capsys):
    page = b"<!DOCTYPE html><html><body>sign in</body></html>"
    bad = served_entry(server, "page.ckpt", page, eps=1.0)
    good, net = publish_upstream(server, "resnet18", "l2", 3.0)
    mpath = isolated_caches["robust_zoo"].parent / "m.json"
    mpath.write_text(json.dumps(manifest(bad, good)))
    with pytest.raises(robust_zoo.CheckpointFormatError):
        robust_zoo.load(bad["name"], manifest=mpath)     # its blob is now cached
    robust_zoo.load(good["name"], manifest=mpath)
    assert cli.main(["verify", "--manifest", str(mpath)]) == 1
    out = capsys.readouterr().out
    assert "resnet18_l2_eps1: FAILED (CheckpointFormatError" in out
    assert "resnet18_l2_eps3: ok" in out


# ----------------------------------------------------------------------------- alignment

VARIANTS = [("aligned", {"note": "x"})] + [("safetensors", {"note": "y" * k}) for k in (1, 22, 45)]


@pytest.mark.parametrize("arch", [a for a in archs.list_archs()
                                  if archs.get_arch(a).num_params < 12_000_000])
def test_loaded_weights_are_aligned_and_bit_identical_to_torchvision(arch, tmp_path):
    """Whatever the header length (entry names, metadata) and writer, every loaded tensor is
    64-byte aligned and the outputs equal torchvision's with load_state_dict of the same
    weights, bit for bit. The small archs have every kind of tensor and the odd sizes (the
    big ones load bit-identically in test_loader's walk of every arch)."""
    from safetensors.torch import save_file

    net = random_net(arch, num_classes=10)
    ref = archs.build(arch, 10).eval()
    ref.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref((x - 0.45) / 0.226)
    for writer, meta in VARIANTS:
        path = tmp_path / f"{writer}.safetensors"
        if writer == "aligned":
            save_weights(net.state_dict(), path, arch=arch, num_classes=10, **meta)
        else:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path),
                      metadata=dict(meta, format="robust_zoo", arch=arch, num_classes="10"))
        entry = {"name": f"{arch}_l2_eps3", "arch": arch, "norm": "l2", "eps": 3.0,
                 "num_classes": 10, "files": [{"format": "safetensors", "path": str(path),
                                               "sha256": rz_io.sha256_file(path)}]}
        model = robust_zoo.load(entry["name"], manifest=manifest(entry), normalize=False)
        tensors = list(model.state_dict().values())
        assert all(t.data_ptr() % 64 == 0 for t in tensors if t.numel()), writer
        with torch.no_grad():
            assert torch.equal(model((x - 0.45) / 0.226), want), (writer, meta)
        del model
        path.unlink()


def test_aligned_files_need_no_copy_and_load_with_safetensors(tmp_path):
    from safetensors.torch import load_file

    net = random_net("resnet50")
    path = save_weights(net.state_dict(), tmp_path / "w.safetensors", arch="resnet50",
                        num_classes=1000, name="a" * 13)
    loaded = read_weights(path)
    big = [k for k, v in net.state_dict().items() if v.numel() * v.element_size() % 64 == 0]
    # only the few tensors whose size is not a multiple of 64 bytes (biases, counters) may
    # need a copy; the 64-byte multiples (all conv/linear weights) are views of the map
    assert loaded.copied <= len(net.state_dict()) - len(big) < len(big) // 4
    theirs = load_file(str(path))
    assert set(theirs) == set(net.state_dict())
    assert all(torch.equal(theirs[k], v) for k, v in net.state_dict().items())


# ----------------------------------------------------------------------------- downloads

def test_hub_drop_mid_body_is_retried(server):
    entry, net = publish_upstream(server, "resnet18")
    server.fault(entry["files"][0]["filename"], "drop", times=2)
    assert same(robust_zoo.load(entry["name"], manifest=manifest(entry)), net)


@pytest.mark.parametrize("kind", ["drop", "length", "status"])
def test_hub_persistent_faults_end_in_source_unavailable(server, isolated_caches, kind):
    server.add_file("org/small", "f.safetensors", os.urandom(200_000))
    server.fault("f.safetensors", kind)
    spec = FileSpec(format="safetensors", repo_id="org/small", filename="f.safetensors")
    with pytest.raises(sources.SourceUnavailableError, match="could not be downloaded"):
        sources.fetch(spec, progress=False)
    assert not [p for p in isolated_caches["hf"].rglob("blobs/*") if p.is_file()
                and not p.name.endswith(".incomplete")]


def test_hub_500_once_is_retried(server):
    entry, net = publish_upstream(server, "resnet18")
    server.fault(entry["files"][0]["filename"], "status", times=1, code=503)
    assert same(robust_zoo.load(entry["name"], manifest=manifest(entry)), net)


def test_hub_html_with_200_is_refused_and_not_kept(server, isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    server.fault(entry["files"][0]["filename"], "html", times=1)
    with pytest.raises((sources.IntegrityError, sources.SourceUnavailableError)):
        robust_zoo.load(entry["name"], manifest=manifest(entry))
    assert not [p for p in isolated_caches["hf"].rglob("blobs/*") if p.is_file()
                and not p.name.endswith(".incomplete")]
    assert same(robust_zoo.load(entry["name"], manifest=manifest(entry)), net)


def _url_entry(server, name="r18.ckpt"):
    net = random_net("resnet18")
    data = ckpt_bytes(net, "resnet18")
    url = server.add_raw(name, data)
    return {"name": "resnet18_l2_eps1", "arch": "resnet18", "norm": "l2", "eps": 1.0,
            "files": [{"format": "robustness-ckpt", "url": url, "size": len(data),
                       "sha256": hashlib.sha256(data).hexdigest()}]}, net


@pytest.mark.parametrize("ctype", ["text/html", "application/octet-stream"])
def test_url_html_page_with_200_is_not_kept_or_resumed(server, isolated_caches, ctype):
    entry, net = _url_entry(server)
    # a partial download exists, and the server then answers with a page (ignoring Range)
    server.fault("/raw/r18.ckpt", "drop", times=sources.RETRIES, at=3_000_000)
    with pytest.raises(sources.SourceUnavailableError, match="kept and resumed"):
        robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)
    server.faults.clear()
    # with no telling content type, the HTML prefix must be recognised
    server.fault("/raw/r18.ckpt", "html", times=1, ctype=ctype)
    with pytest.raises(sources.SourceUnavailableError, match="HTML page"):
        robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)
    assert not list(isolated_caches["robust_zoo"].rglob("*.part"))
    assert same(robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False), net)


def test_hostile_revision_is_refused_and_nothing_is_written_outside(server, tmp_path):
    entry, _ = publish_upstream(server, "resnet18")
    server.any_revision = True
    before = set(tmp_path.parent.iterdir())
    entry["files"][0]["revision"] = "../../../../escaped"
    with pytest.raises(ManifestError, match=r"'resnet18_l2_eps3'.*files\[0\]\.revision"):
        robust_zoo.load(entry["name"], manifest=manifest(entry))
    spec = FileSpec(format="robustness-ckpt", repo_id=REPO, filename=entry["files"][0]["filename"],
                    revision="../../../../escaped")
    with pytest.raises(sources.SourceUnavailableError, match="revision"):
        sources.fetch(spec)
    with pytest.raises(robust_zoo.UnknownModelError, match="revision"):
        robust_zoo.load("hf-hub:org/repo@../../../../escaped")
    assert set(tmp_path.parent.iterdir()) == before
    assert not list(tmp_path.rglob("escaped"))


def test_stale_leftovers_are_cleaned_by_the_next_download(server, isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    from huggingface_hub.file_download import repo_folder_name

    rz = isolated_caches["robust_zoo"]
    blobs = isolated_caches["hf"] / repo_folder_name(repo_id=REPO, repo_type="model") / "blobs"
    old = time.time() - 2 * cache.STALE_SECONDS
    stale = [blobs / ("a" * 64 + ".incomplete"), rz / "converted" / ".x.safetensors.abc.tmp",
             rz / "downloads" / ("b" * 64) / "f.ckpt.part"]
    fresh = blobs / ("c" * 64 + ".incomplete")
    for p in stale + [fresh]:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x" * 100)
    for p in stale:
        os.utime(p, (old, old))
    assert same(robust_zoo.load(entry["name"], manifest=manifest(entry)), net)
    assert not any(p.exists() for p in stale)
    assert fresh.exists()          # may belong to a download in progress


# ----------------------------------------------------------------------------- disks

def test_valid_cache_loads_when_nothing_in_it_can_be_written(server, isolated_caches,
                                                            monkeypatch):
    """As root permissions do not stop writes, so the cache is made unwritable structurally:
    files where its lock and marker folders must be; and every atomic write fails."""
    import shutil

    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    rz = isolated_caches["robust_zoo"]
    for d in ("locks", "verified"):
        shutil.rmtree(rz / d)
        (rz / d).write_text("not a folder")

    def no_write(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(robust_zoo.fileio, "atomic_write_bytes", no_write)
    monkeypatch.setattr(rz_io.tempfile, "mkstemp", no_write)
    assert same(robust_zoo.load(entry["name"], manifest=m), net)
    assert same(robust_zoo.load(entry["name"], manifest=m, verify="always"), net)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_valid_cache_loads_from_a_read_only_folder(server, isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    rz = isolated_caches["robust_zoo"]
    dirs = [p for p in rz.rglob("*") if p.is_dir()] + [rz]
    for d in dirs:
        d.chmod(0o555)
    try:
        assert same(robust_zoo.load(entry["name"], manifest=m), net)
    finally:
        for d in dirs:
            d.chmod(0o755)


def test_unwritable_cache_gives_a_cache_write_error(server, isolated_caches):
    entry, _ = publish_upstream(server, "resnet18")
    rz = isolated_caches["robust_zoo"]
    rz.mkdir(parents=True)
    (rz / "converted").write_text("a file where a folder must be")
    with pytest.raises(cache.CacheWriteError, match="a file is where a folder must be") as ei:
        robust_zoo.load(entry["name"], manifest=manifest(entry))
    assert isinstance(ei.value, RobustZooError) and "ROBUST_ZOO_CACHE" in str(ei.value)


def test_full_disk_gives_a_cache_write_error(server, monkeypatch):
    import contextlib
    import errno

    entry, _ = publish_upstream(server, "resnet18")

    @contextlib.contextmanager
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(robust_zoo.formats.safetensors_file, "atomic_path", full)
    with pytest.raises(cache.CacheWriteError, match="the disk is full"):
        robust_zoo.load(entry["name"], manifest=manifest(entry))


# ----------------------------------------------------------------------------- hostile input

def _st_file(tmp_path, header: bytes, data: bytes = b"", n: int | None = None) -> Path:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(struct.pack("<Q", len(header) if n is None else n) + header + data)
    return p


@pytest.mark.parametrize("header,data,n,match", [
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}', b"\0" * 4, None, "truncated"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]', b"\0" * 8, None, "not valid JSON"),
    (b'{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', b"\0" * 8, None, "needs 12"),
    (b'{"a":{"dtype":"X9","shape":[2],"data_offsets":[0,8]}}', b"\0" * 8, None, "dtype 'X9'"),
    (b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
     b'"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', b"\0" * 12, None, "overlapping"),
    (b'{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', b"\0" * 8, None, "shape"),
    (b'[1, 2]', b"", None, "not a JSON object"),
    (b'{}', b"", 10**12, "over the"),
    (b'{"__metadata__":{"a":1}}', b"", None, "strings to strings"),
])
def test_malformed_safetensors_is_refused_with_a_reason(tmp_path, header, data, n, match):
    p = _st_file(tmp_path, header, data, n)
    with pytest.raises(robust_zoo.CheckpointFormatError, match=match):
        read_weights(p)
    entry = {"name": "resnet18_l2_eps3", "arch": "resnet18", "norm": "l2", "eps": 3.0,
             "files": [{"format": "safetensors", "path": str(p), "sha256": rz_io.sha256_file(p)}]}
    with pytest.raises(robust_zoo.CheckpointFormatError):
        robust_zoo.load(entry["name"], manifest=manifest(entry))


@pytest.mark.parametrize("n", [1_000_000, 150_000])
def test_header_with_huge_tensor_count_is_refused_quickly(tmp_path, n):
    one = b'"t%07d":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}'
    header = b"{" + b",".join(one % i for i in range(n)) + b"}"
    p = _st_file(tmp_path, header)
    t = time.perf_counter()
    with pytest.raises(robust_zoo.CheckpointFormatError, match="limit"):
        read_weights(p)
    assert time.perf_counter() - t < 1.0


def _export(tmp_path, server) -> Path:
    entry, _ = publish_upstream(server, "resnet18")
    out = tmp_path / "export"
    robust_zoo.export(entry["name"], out, manifest=manifest(entry), progress=False)
    return out


@pytest.mark.parametrize("field,value,match", [
    ("num_classes", -3, "robust_zoo.num_classes"),
    ("arch", None, "robust_zoo.arch"),
    ("preprocessing", {"mean": [0.5, 0.5]}, "robust_zoo.preprocessing.mean"),
    ("preprocessing", {"std": [0.2, 0.0, 0.2]}, "robust_zoo.preprocessing.std"),
    ("eps", "nan", "robust_zoo.eps"),
    ("sha256", "abc", "robust_zoo.sha256"),
])
def test_hostile_export_config_is_refused_at_load_naming_the_field(server, tmp_path, field,
                                                                   value, match):
    out = _export(tmp_path, server)
    cfg = json.loads((out / "config.json").read_text())
    cfg["robust_zoo"][field] = value
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ManifestError, match=match):
        robust_zoo.load(str(out))


def test_export_with_hostile_weight_metadata_is_refused(server, tmp_path):
    out = _export(tmp_path, server)
    sd, meta = rz_weights.load_weights(out / "model.safetensors")
    sd = {k: v.clone() for k, v in sd.items()}
    save_weights(sd, out / "model.safetensors", arch="resnet18", num_classes=1000,
                 mean=(0.5, 0.5))
    cfg = json.loads((out / "config.json").read_text())
    cfg["robust_zoo"]["sha256"] = rz_io.sha256_file(out / "model.safetensors")
    cfg["robust_zoo"]["size"] = (out / "model.safetensors").stat().st_size
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(robust_zoo.CheckpointFormatError, match="metadata.mean"):
        robust_zoo.load(str(out))


def test_cli_info_of_a_missing_hub_repo_is_a_clear_error(server, capsys):
    rc = cli.main(["info", "hf-hub:org/missing"])
    err = capsys.readouterr().err
    assert rc != 0 and "hf-hub:org/missing" in err and "Traceback" not in err
    assert "robust-zoo export" in err


@pytest.mark.parametrize("field,value,match", [
    ("repo_id", None, r"files\[0\]\.repo_id.*null"),
    ("repo_id", "a/b/c", r"files\[0\]\.repo_id"),
    ("filename", "../x.ckpt", r"files\[0\]\.filename"),
    ("filename", "/etc/passwd", r"files\[0\]\.filename"),
    ("sha256", "zz", r"files\[0\]\.sha256"),
    ("sha256", 5, r"files\[0\]\.sha256"),
    ("revision", "main/../../x", r"files\[0\]\.revision"),
    ("size", -1, r"files\[0\]\.size"),
])
def test_manifest_file_fields_are_validated_at_parse_time(field, value, match):
    entry = {"name": "resnet18_l2_eps3", "arch": "resnet18", "norm": "l2", "eps": 3,
             "files": [{"format": "robustness-ckpt", "repo_id": REPO, "filename": "a.ckpt",
                        "revision": "main", "sha256": None}]}
    entry["files"][0][field] = value
    with pytest.raises(ManifestError, match=r"'resnet18_l2_eps3'.*" + match):
        parse_manifest(manifest(entry))


@pytest.mark.parametrize("field,value", [("num_classes", 0), ("num_classes", 2.5),
                                         ("num_classes", True), ("eps", -1), ("eps", "inf"),
                                         ("eps", "4/0"), ("eps", None)])
def test_manifest_entry_numbers_are_validated(field, value):
    entry = {"name": "n", "arch": "resnet18", "norm": "l2", "eps": 3,
             "files": [{"format": "safetensors", "path": "x.safetensors"}], field: value}
    with pytest.raises(ManifestError, match=f"'n'.*{field}"):
        parse_manifest(manifest(entry))


def test_pickles_are_refused_on_a_torch_with_the_exploitable_unpickler(server, monkeypatch,
                                                                       tmp_path):
    entry, _ = publish_upstream(server, "resnet18")
    net = random_net("resnet18", seed=2)
    st = safetensors_entry(tmp_path, "resnet18_l2_eps1", net, "resnet18", eps=1.0,
                           server=server)
    monkeypatch.setattr(torch, "__version__", "2.9.1")
    with pytest.raises(rz_convert.UnsafeTorchError, match="GHSA-63cw-57p8-fm3p"):
        robust_zoo.load(entry["name"], manifest=manifest(entry, st))
    assert same(robust_zoo.load(st["name"], manifest=manifest(entry, st)), net)


# ----------------------------------------------------------------------------- file modes

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_respect_the_umask(server, isolated_caches, tmp_path, umask, mode):
    entry, _ = publish_upstream(server, "resnet18")
    old = os.umask(umask)
    try:
        robust_zoo.load(entry["name"], manifest=manifest(entry))
        robust_zoo.export(entry["name"], tmp_path / "exp", manifest=manifest(entry),
                          progress=False)
    finally:
        os.umask(old)
    out, side = converted_files(isolated_caches["robust_zoo"])
    files = [out, side, *(tmp_path / "exp").iterdir(),
             *(isolated_caches["robust_zoo"] / "verified").glob("*.json")]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == \
        {p.name: oct(mode) for p in files}
