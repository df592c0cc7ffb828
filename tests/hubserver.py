"""A Hugging Face Hub stand-in on 127.0.0.1 for tests.

It answers what ``huggingface_hub.hf_hub_download`` asks (HEAD and GET on
``/{org}/{repo}/resolve/{revision}/{file}`` with ``X-Repo-Commit``, ``ETag``/``X-Linked-Etag``,
``X-Linked-Size``, ``Content-Length``; 404 + ``X-Error-Code`` for missing repos, revisions and
files), so the real client code runs: cache layout, etags, revisions, offline mode. Plain URLs
under ``/raw/<name>`` serve the same bytes with HTTP Range support, for the ``url`` source. As
an HTTP proxy (``HTTP_PROXY`` set to its URL) it answers ``http://<host>/<path>`` with the raw
file ``<host>/<path>`` (``add_raw``), so a test can stand in for another host (Google Drive).

Tests can make it lie (``tamper``: serve other bytes under the advertised sha256), fail
(``fail_after``: cut a GET after N bytes), misbehave in the ways real servers and mirrors do
(``fault``: drop the connection mid-body, advertise a wrong Content-Length, answer 500 or 429
with a Retry-After, serve an HTML page with 200, trickle the body at a few bytes per second,
never answer; ``any_revision``: answer every revision string as the current commit) and count
requests (``requests``).
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)   # of each file, hashed once


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.raw: dict[str, bytes] = {}
        self.tamper: dict[str, bytes] = {}      # "org/repo/file" -> bytes served instead
        self.fail_after: dict[str, int] = {}    # path -> bytes to send before cutting a GET
        self.requests: list[tuple[str, str]] = []
        self.faults: list[dict] = []
        self.any_revision = False
        self._lock = threading.Lock()
        self._released = threading.Event()     # set: stalled and trickling answers end
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                server._handle(self, head=True)

            def do_GET(self):
                server._handle(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "HubServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_file(self, repo_id: str, filename: str, data: bytes) -> str:
        """Serve ``data``; returns its sha256. The repo's commit changes with its content."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo(commit=""))
            repo.files[filename] = data
            repo.sha256[filename] = hashlib.sha256(data).hexdigest()
            h = hashlib.sha1(repo_id.encode())
            for name in sorted(repo.files):
                h.update(name.encode() + bytes.fromhex(repo.sha256[name]))
            repo.commit = h.hexdigest()
        return repo.sha256[filename]

    def add_raw(self, name: str, data: bytes) -> str:
        self.raw[name] = data
        return f"{self.url}/raw/{name}"

    def fault(self, contains: str, kind: str, times: int | None = None, method: str = "GET",
              **kw) -> None:
        """Misbehave on requests whose path contains ``contains``, the first ``times`` of them
        (None: all), for ``method`` "GET", "HEAD" or "any". ``kind``: "drop" (send ``at``
        bytes of the body, default half, then close the connection), "length" (advertise
        ``delta`` more bytes than sent, then close), "status" (answer ``code``, default 500,
        with extra ``headers``, e.g. Retry-After), "html" (an HTML page with 200, Content-Type
        ``ctype``, default text/html), "trickle" (send the body at ``rate`` bytes/s, default
        64), "stall" (send nothing until the server is cleared)."""
        assert kind in ("drop", "length", "status", "html", "trickle", "stall"), kind
        assert method in ("GET", "HEAD", "any"), method
        self.faults.append(dict(kw, contains=contains, kind=kind, left=times, method=method))

    def _take_fault(self, path: str, method: str) -> dict | None:
        with self._lock:
            for f in self.faults:
                if (f["contains"] in path and f["method"] in (method, "any")
                        and (f["left"] is None or f["left"] > 0)):
                    if f["left"] is not None:
                        f["left"] -= 1
                    return f
        return None

    def clear(self) -> None:
        self._released.set()                  # ends the answers that stall or trickle
        self._released = threading.Event()
        self.repos.clear()
        self.raw.clear()
        self.tamper.clear()
        self.fail_after.clear()
        self.requests.clear()
        self.faults.clear()
        self.any_revision = False
        self.api_lies = {}

    def count(self, method: str | None = None, contains: str = "") -> int:
        return sum(1 for m, p in self.requests if (method is None or m == method) and contains in p)

    # ------------------------------------------------------------------ request handling
    def _send(self, h, status, headers, body=b"", head=False, cut=None):
        fault = None if status >= 400 else self._take_fault(unquote(h.path.split("?")[0]),
                                                             "HEAD" if head else "GET")
        if fault is not None:
            kind = fault["kind"]
            if kind == "status":
                code = fault.get("code", 500)
                return self._send_plain(h, code, fault.get("headers", {}),
                                        b"" if head else f"{code} error".encode())
            if kind == "stall":
                self._released.wait(120)
                h.close_connection = True
                return
            if kind == "trickle" and not head:
                return self._trickle(h, status, headers, body, fault.get("rate", 64))
            if kind == "html":
                page = (b"<!DOCTYPE html><html><head><title>Sign in</title></head><body>"
                        b"Please sign in to continue.</body></html>")
                ctype = fault.get("ctype", "text/html; charset=utf-8")
                return self._send_plain(h, 200, {"Content-Type": ctype}, page)
            if kind == "drop":
                cut = fault.get("at", len(body) // 2)
            if kind == "length":
                h.send_response(status)
                for k, v in headers.items():
                    h.send_header(k, str(v))
                h.send_header("Content-Length", str(len(body) + fault.get("delta", 1000)))
                h.end_headers()
                h.wfile.write(body)
                h.wfile.flush()
                h.close_connection = True
                return
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, str(v))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            if cut is not None:
                h.wfile.write(body[:cut])
                h.wfile.flush()
                h.close_connection = True
                return
            h.wfile.write(body)

    def _trickle(self, h, status, headers, body, rate):
        """The whole answer announced, its body sent ``rate`` bytes per second, until it ends,
        the client goes away or the server is cleared."""
        released = self._released
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, str(v))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.close_connection = True
        piece = max(1, rate // 8)
        try:
            for i in range(0, len(body), piece):
                h.wfile.write(body[i:i + piece])
                h.wfile.flush()
                if released.wait(piece / rate):
                    return
        except OSError:   # the client gave up
            return

    def _send_plain(self, h, status, headers, body):
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, str(v))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _error(self, h, code, commit=None, head=False):
        headers = {"X-Error-Code": code, "X-Error-Message": code}
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(h, 404, headers, b"" if head else code.encode(), head)

    def _handle(self, h, head):
        path = unquote(h.path.split("?")[0])
        if path.startswith("http://"):     # asked as a proxy: the raw file "<host>/<path>"
            path = "/raw/" + path[len("http://"):]
        self.requests.append(("HEAD" if head else "GET", path))
        if path.startswith("/raw/"):
            return self._raw(h, path[len("/raw/"):], head)
        if path.startswith("/api/models/"):
            return self._api(h, path[len("/api/models/"):].split("/"), head)
        parts = path.lstrip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(h, "RepoNotFound", head=head)
        repo_id, rev, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(h, "RepoNotFound", head=head)
        if rev not in ("main", repo.commit) and not self.any_revision:
            return self._error(h, "RevisionNotFound", head=head)
        if filename not in repo.files:
            return self._error(h, "EntryNotFound", repo.commit, head)
        sha = repo.sha256[filename]
        body = self.tamper.get(f"{repo_id}/{filename}", repo.files[filename])
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{sha}"', "X-Linked-Etag": f'"{sha}"',
                   "X-Linked-Size": len(body), "Accept-Ranges": "bytes"}
        self._send(h, 200, headers, body, head, self.fail_after.get(path))

    def _api(self, h, parts, head):
        """``/api/models/{org}/{repo}/revision/{rev}`` and ``.../tree/{rev}`` (what HfApi's
        model_info and list_repo_tree read)."""
        repo = self.repos.get("/".join(parts[:2]))
        if repo is None or len(parts) < 4 or (parts[3] not in ("main", repo.commit)
                                              and not self.any_revision):
            return self._error(h, "RepoNotFound" if repo is None else "RevisionNotFound", head=head)
        if parts[2] == "revision":
            body = {"id": "/".join(parts[:2]), "sha": repo.commit,
                    "siblings": [{"rfilename": n} for n in sorted(repo.files)]}
        elif parts[2] == "tree":
            body = [{"type": "file", "path": n, "size": len(d),
                     "oid": hashlib.sha1(d).hexdigest(),
                     "lfs": {"oid": repo.sha256[n], "size": len(d),
                             "pointerSize": 134}} for n, d in sorted(repo.files.items())]
        else:
            return self._error(h, "RepoNotFound", head=head)
        self._send(h, 200, {"Content-Type": "application/json"}, self._api_body(parts[2], body),
                   head)

    def _raw(self, h, name, head):
        data = self.raw.get(name)
        if data is None:
            return self._send(h, 404, {}, b"not found", head)
        rng = h.headers.get("Range")
        cut = self.fail_after.get(f"/raw/{name}")
        if rng and rng.startswith("bytes="):
            start = int(rng[len("bytes="):].split("-")[0])
            if start >= len(data):
                return self._send(h, 416, {}, b"", head)
            return self._send(h, 206,
                              {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                              data[start:], head, cut)
        self._send(h, 200, {"Accept-Ranges": "bytes"}, data, head, cut)

    # ------------------------------------------------------------------ hostile API answers
    api_lies: dict = {}     # "revision" | "tree" -> (body or None, fields); see lie_in_api

    def lie_in_api(self, kind: str, body: bytes | None = None, **fields) -> None:
        """Make the API answer hostile: ``kind`` "revision" (what ``model_info`` reads) or
        "tree" (``list_repo_tree``). ``fields`` are merged into the answer (into every file of a
        tree; ``lfs`` replaces a file's LFS record), or ``body`` replaces it whole (JSON nested
        too deep, garbage). ``clear()`` ends it."""
        assert kind in ("revision", "tree"), kind
        self.api_lies = dict(self.api_lies, **{kind: (body, fields)})

    def _api_body(self, kind: str, answer) -> bytes:
        import json

        body, fields = self.api_lies.get(kind, (None, {}))
        if body is not None:
            return body
        if fields:
            answer = ([dict(f, **fields) for f in answer] if isinstance(answer, list)
                      else dict(answer, **fields))
        return json.dumps(answer).encode()
