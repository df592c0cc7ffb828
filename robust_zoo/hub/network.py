"""Bounded waiting for every download: a stall timeout, a minimum throughput, a cap on the wait
a rate limit may ask for, and no retries when a host name does not resolve.

Settings, read from the environment at each download (``limits()``):

* ``ROBUST_ZOO_STALL_TIMEOUT`` (seconds, default 60): the longest a download waits for a byte,
  whether connecting, for an answer (a HEAD that never answers) or in the body.
* ``ROBUST_ZOO_MIN_BYTES_PER_S`` (default 4096; 0 turns the rule off): the least average rate
  of a body over each span of ``ROBUST_ZOO_STALL_TIMEOUT`` seconds. A server that trickles a
  few bytes at a time never stalls, so this is what ends it: at the default, a live link of
  32 kbit/s passes and a 64 bytes/s trickle ends after about one span.
* ``ROBUST_ZOO_MAX_RETRY_AFTER`` (seconds, default 60): the longest ``Retry-After`` of an HTTP
  429 this package waits before trying again; a server that asks for more ends the download
  with an error that names the rate limit and the wait it asked for.

A bound that ends a download raises an ``Abort`` (never an error of the HTTP client, so no
client retries it); ``sources`` turns it into a ``SourceUnavailableError`` that says which
bound it was. URL downloads (requests) apply the bounds in their own loop (``Meter``); Hub
downloads go through huggingface_hub's shared httpx client, whose transport is wrapped so that
requests made inside ``bounded()`` get them. Requests that other code in the process makes
through huggingface_hub are passed through unchanged. The bodies of Xet-stored Hub files are
moved by ``hf_xet`` with its own timeouts (``HF_HUB_DISABLE_XET=1`` puts them under these
bounds too).
"""
from __future__ import annotations

import contextvars
import email.utils
import functools
import math
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from ..errors import UsageError

STALL_TIMEOUT = 60.0        # seconds without a byte
MIN_BYTES_PER_S = 4096.0    # least average rate over each STALL_TIMEOUT span of a body
MAX_RETRY_AFTER = 60.0      # longest Retry-After waited

_ENV = {"stall": ("ROBUST_ZOO_STALL_TIMEOUT", STALL_TIMEOUT, False),
        "min_rate": ("ROBUST_ZOO_MIN_BYTES_PER_S", MIN_BYTES_PER_S, True),
        "max_retry_after": ("ROBUST_ZOO_MAX_RETRY_AFTER", MAX_RETRY_AFTER, True)}

__all__ = ["Limits", "limits", "Abort", "Stalled", "TooSlow", "RateLimited", "Unresolved",
           "Meter", "bounded", "retry_after", "unresolved", "STALL_TIMEOUT", "MIN_BYTES_PER_S",
           "MAX_RETRY_AFTER"]


@dataclass(frozen=True)
class Limits:
    stall: float             # seconds without a byte
    min_rate: float          # bytes/s over each ``stall`` span of a body (0: no rule)
    max_retry_after: float   # longest Retry-After waited


def limits() -> Limits:
    """The bounds in force: each environment variable above if set, else its default."""
    values = {}
    for field, (var, default, zero_ok) in _ENV.items():
        text = os.environ.get(var, "").strip()
        try:
            value = float(text) if text else default
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
            raise UsageError(f"{var}={text!r}: pass a number of seconds or bytes/s "
                             f"{'>= 0' if zero_ok else '> 0'} (default {default:g})")
        values[field] = value
    return Limits(**values)


class Abort(Exception):
    """A download ended by one of the bounds (the message says which and why)."""


class Stalled(Abort):
    """No byte for ``Limits.stall`` seconds."""


class TooSlow(Abort):
    """A body arriving slower than ``Limits.min_rate``."""


class Unresolved(Abort):
    """The host name does not resolve: retrying within seconds would not change that."""


class RateLimited(Abort):
    """HTTP 429; ``wait`` is the Retry-After the server sent (None: none)."""

    def __init__(self, message: str, wait: float | None):
        super().__init__(message)
        self.wait = wait


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date)."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def rate_limited(url: str, headers: Mapping[str, str]) -> RateLimited:
    wait = retry_after(headers)
    asked = f"; it asks to wait {wait:g} s (Retry-After)" if wait is not None else ""
    return RateLimited(f"rate limited by {url} (HTTP 429 Too Many Requests){asked}", wait)


def unresolved(e: BaseException) -> bool:
    """``e`` (or an error it wraps) is a failure to resolve a host name."""
    todo, seen = [e], set()
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, socket.gaierror) or type(x).__name__ == "NameResolutionError":
            return True
        todo += [x.__cause__, x.__context__, getattr(x, "reason", None)]
        todo += [a for a in getattr(x, "args", ()) if isinstance(a, BaseException)]
    return False


def unresolved_error(host: str, e: BaseException) -> Unresolved:
    return Unresolved(f"the host name {host!r} does not resolve ({str(e).splitlines()[0][:200]}"
                      "): check the address, your DNS and proxy settings (not retried)")


class Meter:
    """Counts a body's bytes and raises ``TooSlow`` when a span of ``stall`` seconds brought
    fewer than ``min_rate`` bytes per second on average."""

    def __init__(self, lim: Limits, what: str):
        self.lim, self.what = lim, what
        self.start, self.bytes = time.monotonic(), 0

    def add(self, n: int) -> None:
        now = time.monotonic()
        self.bytes += n
        span = now - self.start
        if span < self.lim.stall:
            return
        rate = self.bytes / span
        if self.lim.min_rate and rate < self.lim.min_rate:
            raise TooSlow(f"{self.what} arrived too slowly: {self.bytes} bytes in {span:.1f} s "
                          f"({rate:.0f} bytes/s), under the minimum of "
                          f"{self.lim.min_rate:g} bytes/s (ROBUST_ZOO_MIN_BYTES_PER_S)")
        self.start, self.bytes = now, 0


def stalled(what: str, lim: Limits, doing: str) -> Stalled:
    return Stalled(f"{what}: no byte for {lim.stall:g} s {doing} "
                   "(ROBUST_ZOO_STALL_TIMEOUT); the server or the link stalled")


# ----------------------------------------------------------------------------- the Hub's client

_BOUNDS: contextvars.ContextVar[tuple[Limits, str] | None] = contextvars.ContextVar(
    "robust_zoo_bounds", default=None)


@contextmanager
def bounded(what: str) -> Iterator[Limits]:
    """huggingface_hub's requests made inside get the bounds (``what`` names the file)."""
    lim = limits()
    _install()
    token = _BOUNDS.set((lim, what))
    try:
        yield lim
    finally:
        _BOUNDS.reset(token)


def _install() -> None:
    """Wrap the transports of every client huggingface_hub's factory makes (once; again if
    someone has set another factory since)."""
    import huggingface_hub
    from huggingface_hub.utils import _http

    factory = _http._GLOBAL_CLIENT_FACTORY
    if getattr(factory, "robust_zoo_bounded", False):
        return
    wrap = _transport_class()

    def bounded_factory():
        client = factory()
        client._transport = wrap(client._transport)
        client._mounts = {p: t if t is None else wrap(t) for p, t in client._mounts.items()}
        return client

    bounded_factory.robust_zoo_bounded = True  # type: ignore[attr-defined]
    huggingface_hub.set_client_factory(bounded_factory)


@functools.lru_cache(maxsize=None)
def _transport_class() -> type:
    """The httpx transport that applies the bounds to requests made inside ``bounded()``
    (built on first use: httpx is imported only for Hub downloads)."""
    try:
        import httpx2 as httpx
    except ImportError:  # huggingface_hub before its httpx fork
        import httpx  # type: ignore[no-redef]

    class MeteredStream(httpx.SyncByteStream):
        """A body that counts its bytes (``Meter``); a read timeout is ``Stalled``."""

        def __init__(self, inner: Any, lim: Limits, what: str):
            self.inner, self.meter, self.lim, self.what = inner, Meter(lim, what), lim, what

        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in self.inner:
                    self.meter.add(len(chunk))
                    yield chunk
            except httpx.TimeoutException:
                raise stalled(self.what, self.lim, "in the body") from None

        def close(self) -> None:
            self.inner.close()

    class Bounded(httpx.BaseTransport):
        def __init__(self, inner: Any):
            self.inner = inner

        def handle_request(self, request: Any) -> Any:
            bounds = _BOUNDS.get()
            if bounds is None:
                return self.inner.handle_request(request)
            lim, what = bounds
            request.extensions["timeout"] = dict.fromkeys(("connect", "read", "write", "pool"),
                                                          lim.stall)
            try:
                response = self.inner.handle_request(request)
            except httpx.TimeoutException:
                raise stalled(what, lim, f"waiting for {request.url.host} to answer a "
                              f"{request.method}") from None
            except httpx.ConnectError as e:
                if unresolved(e):
                    raise unresolved_error(request.url.host, e) from None
                raise
            if response.status_code == 429:
                response.close()
                raise rate_limited(str(request.url.copy_with(query=None)), response.headers)
            response.stream = MeteredStream(response.stream, lim, what)
            return response

        def close(self) -> None:
            self.inner.close()

        def __enter__(self):
            self.inner.__enter__()
            return self

        def __exit__(self, *exc: Any) -> None:
            self.inner.__exit__(*exc)

    return Bounded
