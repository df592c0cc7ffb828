"""Faults a download or a weight file can have, and what each must end in: bounded waiting
(trickles, stalls, rate limits, names that do not resolve, another process's lock), weights of
any precision loaded as the entry's dtype and integer tensors refused by name, leftovers of
killed conversions removed, and file metadata that disagrees with the manifest said aloud.

The bounds are configured short (``ROBUST_ZOO_STALL_TIMEOUT`` 0.5 s) so that every test here
takes seconds."""
from __future__ import annotations

import copy
import fcntl
import hashlib
import io
import json
import os
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch

import robust_zoo
from robust_zoo.cli import commands as cli
from robust_zoo.errors import UsageError
from robust_zoo.fileio import hash_file
from robust_zoo.formats.safetensors_file import read_metadata, save_weights
from robust_zoo.formats.upstream import to_robustness
from robust_zoo.hub import cache, network, sources
from robust_zoo.hub.factory import NormalizationWarning
from robust_zoo.hub.manifest import FileSpec
from robust_zoo.models.archs import IMAGENET_MEAN, IMAGENET_STD
from robust_zoo.validate import CheckpointFormatError
from zoo import (REPO, X, manifest, publish_upstream, random_net, reference_logits,
                 safetensors_entry, write_manifest)

STALL = 0.5


@pytest.fixture
def server(hub_server, no_backoff, monkeypatch):
    """The loopback Hub (emptied, faults reset, no retry waits); bounds of half a second."""
    monkeypatch.setenv("ROBUST_ZOO_STALL_TIMEOUT", str(STALL))
    monkeypatch.setenv("ROBUST_ZOO_MIN_BYTES_PER_S", "2000")
    monkeypatch.setenv("ROBUST_ZOO_MAX_RETRY_AFTER", "5")
    return hub_server


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """Every time.sleep of the client side, recorded instead of slept (the loopback server
    waits on events, not time.sleep)."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def _spec(server, source: str, data: bytes | None = None) -> FileSpec:
    """A pinned 200 kB file served as a Hub file or a plain URL."""
    data = os.urandom(200_000) if data is None else data
    sha = hashlib.sha256(data).hexdigest()
    if source == "hub":
        server.add_file("org/small", "f.bin", data)
        return FileSpec(format="safetensors", repo_id="org/small", filename="f.bin", sha256=sha,
                        size=len(data))
    return FileSpec(format="safetensors", url=server.add_raw("f.bin", data), sha256=sha,
                    size=len(data))


def _fails_within(seconds: float, spec: FileSpec, match: str) -> str:
    start = time.monotonic()
    with pytest.raises(sources.SourceUnavailableError, match=match) as e:
        sources.fetch(spec, progress=False)
    assert time.monotonic() - start < seconds
    return str(e.value)


# ----------------------------------------------------------------------------- bounded waiting

@pytest.mark.parametrize("source", ["hub", "url"])
def test_a_trickling_server_ends_as_too_slow_within_the_bound(server, source):
    spec = _spec(server, source)
    server.fault("f.bin", "trickle", rate=64)
    msg = _fails_within(4 * STALL + 2, spec, "too slowly")
    assert "bytes/s" in msg and "ROBUST_ZOO_MIN_BYTES_PER_S" in msg


@pytest.mark.parametrize("source", ["hub", "url"])
def test_a_slow_but_live_link_is_not_cut(server, source):
    data = os.urandom(30_000)
    spec = _spec(server, source, data)
    server.fault("f.bin", "trickle", rate=20_000)    # 1.5 s at ten times the minimum
    assert sources.fetch(spec, progress=False).read_bytes() == data


@pytest.mark.parametrize("source,method", [("hub", "HEAD"), ("hub", "GET"), ("url", "GET")])
def test_a_server_that_never_answers_fails_within_the_stall_timeout(server, source, method):
    spec = _spec(server, source)
    server.fault("f.bin", "stall", method=method)
    msg = _fails_within(2 * STALL + 2, spec, f"no byte for {STALL:g} s")
    assert "ROBUST_ZOO_STALL_TIMEOUT" in msg


@pytest.mark.parametrize("source", ["hub", "url"])
def test_a_retry_after_above_the_cap_names_the_rate_limit_and_the_wait(server, sleeps, source):
    spec = _spec(server, source)
    server.fault("f.bin", "status", method="any", code=429, headers={"Retry-After": "3600"})
    msg = _fails_within(5, spec, "rate limited")
    assert "3600 s" in msg and "ROBUST_ZOO_MAX_RETRY_AFTER" in msg
    assert sleeps == [] and server.count(contains="f.bin") == 1


@pytest.mark.parametrize("source", ["hub", "url"])
def test_a_persistent_429_ends_in_rate_limited_not_a_connection_problem(server, sleeps,
                                                                         source):
    spec = _spec(server, source)
    server.fault("f.bin", "status", method="any", code=429, headers={"Retry-After": "2"})
    msg = _fails_within(5, spec, f"still rate limited after {sources.RETRIES} attempts")
    assert "connection" not in msg.lower()
    assert sleeps == [2.0] * (sources.RETRIES - 1)     # waited as the server asked


@pytest.mark.parametrize("source", ["hub", "url"])
def test_a_429_within_the_cap_is_waited_out(server, sleeps, source):
    spec = _spec(server, source)
    server.fault("f.bin", "status", times=1, method="any", code=429,
                 headers={"Retry-After": "3"})
    assert sources.fetch(spec, progress=False).stat().st_size == spec.size
    assert sleeps == [3.0]


@pytest.mark.parametrize("source", ["hub", "url"])
def test_a_host_name_that_does_not_resolve_fails_at_once(server, sleeps, monkeypatch, source):
    from huggingface_hub import constants

    spec = _spec(server, source)
    if source == "hub":
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            "http://robust-zoo-test.invalid/{repo_id}/resolve/{revision}/"
                            "{filename}")
    else:
        spec = FileSpec(format="safetensors", url="http://robust-zoo-test.invalid/f.bin",
                        sha256=spec.sha256)
    _fails_within(5, spec, "robust-zoo-test.invalid.*does not resolve")
    assert sleeps == []                                 # not retried


def test_the_bounds_are_read_from_the_environment_and_checked(monkeypatch):
    for var in ("ROBUST_ZOO_STALL_TIMEOUT", "ROBUST_ZOO_MIN_BYTES_PER_S",
                "ROBUST_ZOO_MAX_RETRY_AFTER"):
        monkeypatch.delenv(var, raising=False)
    assert network.limits() == network.Limits(network.STALL_TIMEOUT, network.MIN_BYTES_PER_S,
                                              network.MAX_RETRY_AFTER)
    monkeypatch.setenv("ROBUST_ZOO_MIN_BYTES_PER_S", "0")      # 0: no throughput rule
    assert network.limits().min_rate == 0
    for bad in ("abc", "-1", "0", "nan"):
        monkeypatch.setenv("ROBUST_ZOO_STALL_TIMEOUT", bad)
        with pytest.raises(UsageError, match="ROBUST_ZOO_STALL_TIMEOUT"):
            network.limits()


def _hold(lock: Path) -> int:
    """Hold ``lock`` as another process would: an flock on a descriptor of its own (closing
    the descriptor releases it)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_process_waiting_for_another_s_download_says_so(server, monkeypatch):
    spec = _spec(server, "hub")
    sources.fetch(spec, progress=False)
    [lock] = (cache.cache_dir() / "locks").glob("*.lock")
    monkeypatch.setattr(cache, "LOCK_NOTICE_SECONDS", 0.2)
    threading.Timer(0.9, os.close, (_hold(lock),)).start()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert sources.fetch(spec, progress=False).stat().st_size == spec.size
    said = [str(w.message) for w in caught if issubclass(w.category, cache.LockWaitWarning)]
    assert len(said) >= 2
    assert all(f"downloading {spec.describe()}" in m and str(lock) in m for m in said)
    assert said[0].endswith("0.2 s so far.") and said[-1] != said[0]


# ----------------------------------------------------------------------------- what loads, runs

@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_weights_of_any_float_precision_load_as_float32_and_run(tmp_path, dtype):
    net = random_net("resnet18")
    stored = copy.deepcopy(net).to(dtype)        # num_batches_tracked stays int64
    m = write_manifest(tmp_path / "m.json", safetensors_entry(tmp_path, "r18", stored, "resnet18"))
    assert robust_zoo.download("r18", manifest=m)["r18"].is_file()
    model = robust_zoo.load("r18", manifest=m)
    sd = model.model.state_dict()
    assert {v.dtype for k, v in sd.items() if "num_batches" not in k} == {torch.float32}
    assert sd["bn1.num_batches_tracked"].dtype == torch.int64
    ref = copy.deepcopy(stored).float()
    with torch.no_grad():
        assert torch.allclose(model(X), reference_logits(ref, X), atol=1e-5)
    asked = robust_zoo.load("r18", manifest=m, dtype=torch.float64)
    assert asked.model.conv1.weight.dtype == torch.float64
    assert asked(X.double()).dtype == torch.float64


def test_an_integer_tensor_where_a_float_belongs_is_refused_by_name(tmp_path):
    net = random_net("resnet18")
    entry = safetensors_entry(tmp_path, "r18", net, "resnet18")
    sd = dict(net.state_dict())
    sd["fc.weight"] = sd["fc.weight"].round().to(torch.int64)
    save_weights(sd, tmp_path / "r18.safetensors", arch="resnet18", num_classes=1000)
    entry["files"][0].update(sha256=hash_file(tmp_path / "r18.safetensors")[0],
                             size=(tmp_path / "r18.safetensors").stat().st_size)
    m = write_manifest(tmp_path / "m.json", entry)
    for call in (lambda: robust_zoo.load("r18", manifest=m),
                 lambda: robust_zoo.download("r18", manifest=m)):
        with pytest.raises(CheckpointFormatError, match=r"fc\.weight: file torch\.int64"):
            call()


def _int_checkpoint(net) -> bytes:
    ckpt = to_robustness(net.state_dict(), "resnet18")
    for k in ("module.model.fc.weight", "module.attacker.model.fc.weight"):
        ckpt["model"][k] = ckpt["model"][k].round().to(torch.int64)
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def test_an_upstream_checkpoint_with_integer_weights_is_refused_at_conversion(server,
                                                                              isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    data = _int_checkpoint(net)
    f = entry["files"][0]
    f.update(sha256=server.add_file(REPO, f["filename"], data), size=len(data))
    with pytest.raises(CheckpointFormatError, match=r"fc\.weight: file torch\.int64"):
        robust_zoo.load(entry["name"], manifest=manifest(entry))
    assert not list(cache.converted_dir().glob("*.safetensors"))     # nothing cached


def test_a_cached_copy_with_integer_weights_is_refused_at_load(server, isolated_caches):
    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    [copy_path] = cache.converted_dir().glob("*.safetensors")
    meta = read_metadata(copy_path)
    sd = dict(net.state_dict())
    sd["fc.weight"] = sd["fc.weight"].round().to(torch.int64)
    save_weights(sd, copy_path, **{k: v for k, v in meta.items()
                                   if k not in ("format", "mean", "std")},
                 mean=json.loads(meta["mean"]), std=json.loads(meta["std"]))
    side = copy_path.with_suffix(".json")
    sha, fast, size = hash_file(copy_path)
    side.write_text(json.dumps(dict(json.loads(side.read_text()), sha256=sha, xxh3_128=fast,
                                    size=size)))
    with pytest.raises(CheckpointFormatError, match=r"fc\.weight: file torch\.int64"):
        robust_zoo.load(entry["name"], manifest=m)


# ----------------------------------------------------------------------------- leftovers

def test_a_killed_conversion_s_tmp_is_removed_by_the_next_load_or_verify(server, tmp_path,
                                                                         capsys):
    entry, net = publish_upstream(server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    [copy_path] = cache.converted_dir().glob("*.safetensors")
    key = copy_path.stem
    left = [cache.converted_dir() / f".{key}.safetensors.k1ll3d.tmp",
            cache.converted_dir() / f".{key}.json.k1ll3d.tmp"]
    for p in left:                      # as a SIGTERM mid-conversion leaves them: fresh
        p.write_bytes(b"\0" * 1000)
    held = _hold(cache.cache_dir() / "locks" / f"{cache.conversion_lock(key)}.lock")
    robust_zoo.load(entry["name"], manifest=m)     # a conversion in progress: its files stay
    assert all(p.exists() for p in left)
    os.close(held)
    model = robust_zoo.load(entry["name"], manifest=m)
    assert not any(p.exists() for p in left)
    with torch.no_grad():
        assert torch.equal(model(X), reference_logits(net, X))
    for p in left:
        p.write_bytes(b"\0" * 1000)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(m))
    assert cli.main(["verify", "--manifest", str(path)]) == 0
    assert not any(p.exists() for p in left)


# ----------------------------------------------------------------------------- normalization

def test_file_and_manifest_normalization_that_disagree_warn_naming_both(tmp_path):
    net = random_net("resnet18")
    entry = safetensors_entry(tmp_path, "r18", net, "resnet18")
    path = tmp_path / "r18.safetensors"
    save_weights(net.state_dict(), path, arch="resnet18", num_classes=1000,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    entry["files"][0].update(sha256=hash_file(path)[0], size=path.stat().st_size)
    with pytest.warns(NormalizationWarning) as caught:
        model = robust_zoo.load("r18", manifest=write_manifest(tmp_path / "m.json", entry))
    msg = str(caught[0].message)
    assert "[0.5, 0.5, 0.5]" in msg and "[0.25, 0.25, 0.25]" in msg
    assert str(list(IMAGENET_MEAN)) in msg and "manifest's" in msg
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(IMAGENET_STD))
    same = safetensors_entry(tmp_path, "same", net, "resnet18")
    with warnings.catch_warnings():
        warnings.simplefilter("error", NormalizationWarning)
        robust_zoo.load("same", manifest=write_manifest(tmp_path / "m2.json", same))
