"""Shared fixtures: an isolated cache per test and a loopback Hugging Face Hub.

``HF_ENDPOINT`` must be set before ``huggingface_hub`` is first imported (it reads its settings
at import time), so the server starts when this file is imported. So do the session's own
caches: what runs outside a test (module and session fixtures, their child processes) never
reads or writes the user's.
"""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

# OpenMP threads spin while they wait; with tests that start worker processes (torchrun, two
# loaders at once) on a 2-core machine, spinning threads starve the ones doing work (a 0.4 s
# forward took up to 47 s). Passive waiting costs nothing measurable when cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from hubserver import HubServer  # noqa: E402

_SERVER = HubServer().start()
os.environ["HF_ENDPOINT"] = _SERVER.url
os.environ["HF_HUB_DISABLE_XET"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.pop("HF_HUB_OFFLINE", None)
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
_SESSION_CACHES = Path(tempfile.mkdtemp(prefix="robust-zoo-tests-"))
atexit.register(shutil.rmtree, _SESSION_CACHES, ignore_errors=True)
os.environ["ROBUST_ZOO_CACHE"] = str(_SESSION_CACHES / "rz-cache")
os.environ["HF_HOME"] = str(_SESSION_CACHES / "hf-home")
os.environ["HF_HUB_CACHE"] = str(_SESSION_CACHES / "hf-home" / "hub")
os.environ.pop("ROBUST_ZOO_MANIFEST", None)


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    """Each test gets empty robust_zoo and Hugging Face caches and the default manifest."""
    from huggingface_hub import constants

    hf = tmp_path / "hf-cache"
    rz = tmp_path / "rz-cache"
    monkeypatch.setenv("ROBUST_ZOO_CACHE", str(rz))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.delenv("ROBUST_ZOO_MANIFEST", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return {"hf": hf, "robust_zoo": rz}


@pytest.fixture
def hub_server():
    """The loopback Hub, emptied (files, faults, recorded requests) for this test and after it."""
    _SERVER.clear()
    yield _SERVER
    _SERVER.clear()


@pytest.fixture
def no_backoff(monkeypatch):
    """Retries of transient network errors without the waits between them."""
    from robust_zoo.hub import sources

    monkeypatch.setattr(sources, "BACKOFF_SECONDS", 0.0)


@pytest.fixture
def no_fetch(monkeypatch):
    """Fetching any manifest file fails the test (what pretrained=False must never do):
    ``fetch_verified`` is the one way to a file, from the Hub, a URL or a path."""
    from robust_zoo.hub import sources

    def fetch(*a, **k):
        raise AssertionError("a file was fetched: pretrained=False touched the network or cache")

    monkeypatch.setattr(sources, "fetch_verified", fetch)


@pytest.fixture(scope="session")
def quickstart_fast(tmp_path_factory) -> Path:
    """The output folder of one ``robust-zoo quickstart --fast`` run (both models trained 3
    epochs, attacked, transferred, plotted), shared by the session: test_quickstart checks the
    run, test_representations studies its two models."""
    from robust_zoo.cli import quickstart

    out = tmp_path_factory.mktemp("qs") / "quickstart"
    assert quickstart.main(["--out", str(out), "--fast", "--no-progress"]) == 0
    return out


@pytest.fixture
def subprocess_env(isolated_caches):
    """Environment for child processes that must see the same server and caches."""
    env = dict(os.environ)
    env.update(HF_ENDPOINT=_SERVER.url, HF_HUB_CACHE=str(isolated_caches["hf"]),
               ROBUST_ZOO_CACHE=str(isolated_caches["robust_zoo"]), HF_HUB_DISABLE_XET="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return env


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A private single-node SLURM cluster for the session (``zoo.SlurmCluster``: its ``env``
    points the clients at it; ``squeue``/``scontrol``/``scancel``/``wait_state`` wrappers),
    stopped by pid at the end. Skips, naming what is missing, where it cannot start; under
    ``CI=true`` that is a failure instead."""
    import zoo

    reason = zoo.missing_slurm()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    cluster = zoo.SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def slurm_env(slurm, monkeypatch):
    """The private cluster with this process's environment pointed at it (``SLURM_CONF``) and
    ``PYTHONPATH`` naming this checkout and tests/, so that jobs (which inherit the environment
    sbatch sees, with the test's own caches) import this robust_zoo and the test helpers. The
    jobs a test leaves are cancelled after it."""
    for k, v in slurm.env.items():
        monkeypatch.setenv(k, v)
    here = Path(__file__).resolve().parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(here.parent), str(here)]))
    yield slurm
    slurm.cancel_all()
