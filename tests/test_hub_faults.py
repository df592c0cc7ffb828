"""Faults a download or a weight file can have, and what each must end in: bounded waiting
(trickles, stalls, rate limits, names that do not resolve, another process's lock).

The bounds are configured short (``ROBUST_ZOO_STALL_TIMEOUT`` 0.5 s) so that every test here
takes seconds."""
from __future__ import annotations

import fcntl
import hashlib
import os
import threading
import time
import warnings
from pathlib import Path

import pytest

from robust_zoo.errors import UsageError
from robust_zoo.hub import cache, network, sources
from robust_zoo.hub.manifest import FileSpec

STALL = 0.5


@pytest.fixture
def server(hub_server, monkeypatch):
    """The loopback Hub, its faults reset before and after; bounds of half a second."""
    monkeypatch.setenv("ROBUST_ZOO_STALL_TIMEOUT", str(STALL))
    monkeypatch.setenv("ROBUST_ZOO_MIN_BYTES_PER_S", "2000")
    monkeypatch.setenv("ROBUST_ZOO_MAX_RETRY_AFTER", "5")
    monkeypatch.setattr(sources, "BACKOFF_SECONDS", 0.0)
    hub_server.clear()
    yield hub_server
    hub_server.clear()


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
