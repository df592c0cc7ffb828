"""robust_zoo.load through the real huggingface_hub download path (loopback Hub)."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import torch

import robust_zoo
from robust_zoo.models import archs
from robust_zoo.hub import cache, sources
from robust_zoo.formats.upstream import CheckpointFormatError
from robust_zoo.hub.manifest import UnknownModelError
from zoo import (REPO, ckpt_bytes, manifest, publish_upstream, random_net, reference_logits,
                 served_entry)

ALL_ARCHS = archs.list_archs()
pytestmark = pytest.mark.usefixtures("no_backoff")


@pytest.mark.parametrize("arch", ALL_ARCHS)
def test_every_arch_loads_from_upstream_layout(hub_server, arch):
    """Each zoo arch, in the exact upstream key layout, loads through the Hub into a model whose
    outputs equal torchvision's with the same weights behind the same normalization."""
    entry, net = publish_upstream(hub_server, arch)
    model = robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)
    assert not model.training and model.arch == archs.get_arch(arch).name
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), reference_logits(net, x))
    bare = robust_zoo.load(entry["name"], manifest=manifest(entry), normalize=False)
    assert type(bare) is type(net)
    with torch.no_grad():
        assert torch.equal(bare((x - model.normalize.mean) / model.normalize.std), model(x))


def test_second_load_reads_no_pickle_and_no_network(hub_server, monkeypatch):
    entry, net = publish_upstream(hub_server, "resnet18")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    n = len(hub_server.requests)

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called on a warm load")

    monkeypatch.setattr(torch, "load", no_pickle)
    model = robust_zoo.load(entry["name"], manifest=m)
    assert len(hub_server.requests) == n
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model(x), reference_logits(net, x))


def test_load_by_arch_norm_eps_and_errors(hub_server):
    e1, _ = publish_upstream(hub_server, "resnet18", "linf", 4 / 255)
    e2, _ = publish_upstream(hub_server, "resnet18", "l2", 3.0, seed=1)
    m = manifest(e1, e2)
    model = robust_zoo.load(arch="resnet18", norm="linf", eps=4 / 255, manifest=m)
    assert model.entry.name == "resnet18_linf_eps4"
    with pytest.raises(UnknownModelError, match=r"ε values that exist: 4/255"):
        robust_zoo.load(arch="resnet18", norm="linf", eps=8 / 255, manifest=m)
    with pytest.raises(UnknownModelError, match="Closest names: resnet18_linf_eps4"):
        robust_zoo.load("resnet18_linf_eps4_0", manifest=m)
    assert robust_zoo.list_models(norm="l2", manifest=m) == ["resnet18_l2_eps3"]


def test_public_names_resolve_to_their_classes():
    assert robust_zoo.UnknownModelError is UnknownModelError
    assert robust_zoo.CheckpointFormatError is CheckpointFormatError
    assert robust_zoo.IntegrityError is sources.IntegrityError
    import importlib

    for name, module in robust_zoo._LAZY.items():    # every public name is its module's object
        assert getattr(robust_zoo, name) is getattr(
            importlib.import_module(f"robust_zoo.{module}"), name), name
    assert sorted(robust_zoo.__all__) == sorted([*robust_zoo._LAZY, "__version__"])


def test_sha_mismatch_is_refused_and_nothing_kept(hub_server, isolated_caches):
    entry, _ = publish_upstream(hub_server, "shufflenet_v2_x1_0")
    good = entry["files"][0]["sha256"]
    evil = ckpt_bytes(random_net("shufflenet_v2_x1_0", seed=7), "shufflenet_v2_x1_0")
    hub_server.tamper[f"{REPO}/{entry['files'][0]['filename']}"] = evil
    with pytest.raises(sources.IntegrityError) as ei:
        robust_zoo.load(entry["name"], manifest=manifest(entry))
    msg = str(ei.value)
    assert good in msg and entry["files"][0]["filename"] in msg and "actual" in msg
    blobs = list(isolated_caches["hf"].rglob("blobs/*"))
    assert not [b for b in blobs if b.is_file() and not b.name.endswith(".lock")]
    assert not (isolated_caches["robust_zoo"] / "converted").exists() or \
        not list((isolated_caches["robust_zoo"] / "converted").iterdir())


def test_corrupted_hub_cache_is_refetched(hub_server, isolated_caches):
    entry, net = publish_upstream(hub_server, "mobilenet_v2")
    m = manifest(entry)
    robust_zoo.load(entry["name"], manifest=m)
    # Damage both our converted copy and the Hub blob it came from.
    for conv in (isolated_caches["robust_zoo"] / "converted").glob("*.safetensors"):
        conv.write_bytes(conv.read_bytes()[:-10] + b"0123456789")
    blob = next(p for p in isolated_caches["hf"].rglob("blobs/*") if p.is_file())
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    gets = hub_server.count("GET")
    with pytest.warns(UserWarning, match="corrupted|damaged"):
        model = robust_zoo.load(entry["name"], manifest=m)
    assert hub_server.count("GET") == gets + 1
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model(x), reference_logits(net, x))


def test_offline_loads_from_cache_and_explains_when_not_cached(hub_server, monkeypatch):
    from huggingface_hub import constants

    cached, net = publish_upstream(hub_server, "resnet18")
    other, _ = publish_upstream(hub_server, "resnet18", "linf", 4 / 255, seed=3)
    m = manifest(cached, other)
    robust_zoo.load(cached["name"], manifest=m)
    # Only the Hub blob, not our converted copy: offline must still find it via refs/main.
    import shutil
    shutil.rmtree(cache.cache_dir() / "converted")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n = len(hub_server.requests)
    model = robust_zoo.load(cached["name"], manifest=m)
    assert len(hub_server.requests) == n
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model(x), reference_logits(net, x))
    with pytest.raises(sources.NotCachedError, match="robust-zoo download"):
        robust_zoo.load(other["name"], manifest=m)


def test_unpinned_file_checked_against_lfs_hash_with_warning(hub_server):
    entry, net = publish_upstream(hub_server, "resnet18", pin=False)
    with pytest.warns(sources.UnpinnedFileWarning, match="no sha256"):
        model = robust_zoo.load(entry["name"], manifest=manifest(entry))
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model(x), reference_logits(net, x))


def test_pinned_commit_revision(hub_server):
    entry, _ = publish_upstream(hub_server, "resnet18")
    entry["files"][0]["revision"] = hub_server.repos[REPO].commit
    robust_zoo.load(entry["name"], manifest=manifest(entry))
    entry["files"][0]["revision"] = "0" * 40
    entry["name"] = "resnet18_l2_eps3"
    hub_server.requests.clear()
    # A fresh cache key (different sha) so the converted copy is not used.
    entry["files"][0]["sha256"] = None
    with pytest.raises(sources.SourceUnavailableError, match="Revision"):
        robust_zoo.load(entry["name"], manifest=manifest(entry))


def test_two_processes_load_the_same_name_at_once(hub_server, subprocess_env, tmp_path):
    entry, net = publish_upstream(hub_server, "resnet18")
    mpath = tmp_path / "m.json"
    mpath.write_text(json.dumps(manifest(entry)))
    x = torch.rand(2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    code = ("import sys, torch, robust_zoo; m = robust_zoo.load(sys.argv[1], manifest=sys.argv[2],"
            " progress=False); x = torch.load(sys.argv[3]);"
            " torch.save(m(x).detach(), sys.argv[4])")
    procs = [subprocess.Popen([sys.executable, "-c", code, entry["name"], str(mpath),
                               str(tmp_path / "x.pt"), str(tmp_path / f"y{i}.pt")],
                              env=subprocess_env, stderr=subprocess.PIPE) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    ref = reference_logits(net, x)
    for i in range(2):
        assert torch.equal(torch.load(tmp_path / f"y{i}.pt"), ref)
    assert len(list((cache.cache_dir() / "converted").glob("*.safetensors"))) == 1
    assert hub_server.count("GET", entry["files"][0]["filename"]) == 1


def test_url_source_resumes_interrupted_download(hub_server, isolated_caches):
    net = random_net("resnet18")
    data = ckpt_bytes(net, "resnet18")
    url = hub_server.add_raw("r18.ckpt", data)
    hub_server.fail_after["/raw/r18.ckpt"] = len(data) // 5  # every GET is cut
    import hashlib
    entry = {"name": "resnet18_l2_eps1", "arch": "resnet18", "norm": "l2", "eps": 1.0,
             "files": [{"format": "robustness-ckpt", "url": url, "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()}]}
    with pytest.raises(sources.SourceUnavailableError, match="kept and resumed"):
        robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)
    assert not list(isolated_caches["robust_zoo"].rglob("r18.ckpt"))  # nothing half-written
    del hub_server.fail_after["/raw/r18.ckpt"]
    model = robust_zoo.load(entry["name"], manifest=manifest(entry), progress=False)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model(x), reference_logits(net, x))
    gets = [p for m, p in hub_server.requests if m == "GET"]
    # RETRIES attempts, each resuming where the last was cut, then one that completes
    assert gets == ["/raw/r18.ckpt"] * (sources.RETRIES + 1)


def test_fallback_to_next_file_when_first_is_missing(hub_server):
    entry, net = publish_upstream(hub_server, "resnet18")
    missing = dict(entry["files"][0], filename="nope.safetensors", format="safetensors")
    entry["files"].insert(0, missing)
    model = robust_zoo.load(entry["name"], manifest=manifest(entry))
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(model(x), reference_logits(net, x))


def test_not_a_robustness_checkpoint_names_expected_and_found_keys(hub_server):
    buf = io.BytesIO()
    torch.save({"weights": {"a": torch.zeros(1)}, "step": 3}, buf)
    entry = served_entry(hub_server, "odd.ckpt", buf.getvalue())
    with pytest.raises(CheckpointFormatError, match=r"expected a top-level 'model'.*found keys "
                                                    r"\['step', 'weights'\]"):
        robust_zoo.load(entry["name"], manifest=manifest(entry))


def test_wrong_arch_names_first_mismatching_keys(hub_server):
    entry, _ = publish_upstream(hub_server, "resnet18")
    entry["arch"] = "resnet50"
    with pytest.raises(CheckpointFormatError, match=r"does not hold a resnet50: missing \d+ keys "
                                                    r"\(first: \['layer1.0.conv3.weight'"):
        robust_zoo.load(entry["name"], manifest=manifest(entry))


def test_html_page_instead_of_checkpoint(hub_server):
    page = b"<!DOCTYPE html><html><body>Virus scan warning</body></html>"
    entry = served_entry(hub_server, "page.ckpt", page)
    with pytest.raises(CheckpointFormatError, match="HTML page"):
        robust_zoo.load(entry["name"], manifest=manifest(entry))


def test_code_executing_pickle_is_refused(hub_server, tmp_path):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"model": {}, "payload": Boom()}, buf)
    entry = served_entry(hub_server, "evil.ckpt", buf.getvalue())
    with pytest.raises(CheckpointFormatError, match="weights-only"):
        robust_zoo.load(entry["name"], manifest=manifest(entry))


def test_pretrained_false_touches_nothing(hub_server, isolated_caches):
    model = robust_zoo.load("wide_resnet50_2_l2_eps3", pretrained=False, num_classes=7)
    assert hub_server.requests == []
    assert not isolated_caches["robust_zoo"].exists()
    assert model(torch.rand(1, 3, 32, 32)).shape == (1, 7)
    assert model.num_classes == 7 and isinstance(model.get_classifier(), torch.nn.Linear)


def test_num_classes_device_dtype_and_transforms(hub_server):
    entry, net = publish_upstream(hub_server, "resnet18")
    model = robust_zoo.load(entry["name"], manifest=manifest(entry), num_classes=10,
                            dtype=torch.float64, device="cpu")
    assert model.get_classifier().out_features == 10
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(b.dtype == torch.float64 for b in model.normalize.buffers())
    assert torch.equal(model.model.conv1.weight, net.conv1.weight.double())
    from PIL import Image

    img = Image.new("RGB", (300, 280), (255, 0, 0))
    t = model.entry.transforms()(img)
    assert t.shape == (3, 224, 224) and t.max() == 1.0 and t.min() == 0.0
    tn = model.entry.transforms(normalize=True)(img)
    assert torch.allclose(tn[0], torch.full((224, 224), (1 - 0.485) / 0.229))


def test_loaded_parameters_train(hub_server):
    """Weights loaded with assign=True from safetensors are ordinary trainable parameters."""
    entry, _ = publish_upstream(hub_server, "resnet18")
    model = robust_zoo.load(entry["name"], manifest=manifest(entry), num_classes=3).train()
    assert all(p.requires_grad for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.model.conv1.weight.detach().clone()
    loss = torch.nn.functional.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.arange(4) % 3)
    loss.backward()
    opt.step()
    assert not torch.equal(before, model.model.conv1.weight)
