"""``robust-zoo pin``: complete a manifest's Hub files with the sha256, size and commit that the
Hub reports (its LFS metadata), and its unpinned URL files (GitHub releases, Google Drive) with
the sha256 and size of the file itself: the sha256 recorded when it was first downloaded into
the cache, or downloaded now when it is not there. Every later download is then checked
against a pinned hash.

Validate before writing: the manifest is read and validated first; every value the Hub answers
goes through ``robust_zoo.validate`` (a commit of 40 hex digits, a sha256, a byte count); the
pinned manifest is validated again as a whole and written atomically only when all of it is
valid. Otherwise nothing is written and the error names the value."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .. import validate
from ..errors import RobustZooError
from ..fileio import atomic_write_text
from ..validate import IntegrityError
from .manifest import PACKAGE_MANIFEST, ManifestError, parse_manifest


class PinError(RobustZooError, ValueError):
    """The Hub answered something that is not a valid pin; the manifest was not changed."""


def pin_manifest(manifest: str | Path | None = None, out: str | Path | None = None, *,
                 revision: str | None = None) -> int:
    """Fill ``sha256``/``size`` where null (Hub files: from the Hub's API; URL files: from the
    file, see the module doc) and pin ``revision`` to a commit; returns how many
    files changed. A pinned sha256 that the Hub contradicts is an error, never overwritten."""
    from huggingface_hub import HfApi

    src, data = _read(manifest)
    if revision is not None:
        validate.revision(revision, "--revision")
    api, trees = HfApi(), {}
    changed = 0
    parsed = parse_manifest(data, src)
    for m in data["models"]:
        for i, f in enumerate(m["files"]):
            if "url" in f and not f.get("sha256"):
                new = _pinned_url(parsed.get(m["name"]).files[i])
            elif "repo_id" in f:
                new = _pinned(api, trees, m["name"], f, revision or f.get("revision") or "main")
            else:
                continue
            if any(f.get(k) != v for k, v in new.items()):
                f.update(new)
                changed += 1
    try:
        parse_manifest(data, src)
    except ManifestError as e:
        raise PinError(f"{src} was not changed: the pinned manifest would not load ({e})") \
            from None
    atomic_write_text(out or src, json.dumps(data, indent=2) + "\n")
    return changed


def _read(manifest: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """The manifest file and its JSON, which must be a valid manifest before anything is
    asked of the Hub."""
    src = Path(manifest or PACKAGE_MANIFEST)
    if src.is_dir():
        src = src / "weights_manifest.json"
    try:
        data = validate.load_json(src.read_bytes(), str(src))
    except validate.JSONError as e:
        raise ManifestError(str(e)) from None
    parse_manifest(data, src)
    return src, data


def _ask(what: str, call: Callable[[], Any]) -> Any:
    """``call()``; an answer huggingface_hub cannot read (missing keys, wrong types, JSON that
    nests too deep) is a ``PinError`` naming what was asked. HTTP errors pass through."""
    try:
        return call()
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:
        if isinstance(e, RobustZooError):
            raise
        raise PinError(f"{what} is malformed ({type(e).__name__}: {str(e)[:200]}); the manifest "
                       "was not changed") from None


def _tree(api, trees: dict, repo: str, rev: str) -> tuple[str, dict[str, Any]]:
    """(commit, {path: file info}) of ``repo`` at ``rev``, the commit validated."""
    if (repo, rev) not in trees:
        what = f"the Hub's answer for {repo}@{rev}"
        commit = _ask(what, lambda: api.model_info(repo, revision=rev).sha)
        try:
            commit = validate.commit(commit, "sha")
            if validate.is_commit(rev) and commit != rev:
                raise validate.FieldError("sha", f"{commit!r} is another commit than the one "
                                          f"asked for ({rev})")
        except validate.FieldError as e:
            raise PinError(f"{what} is not valid: {e}; the manifest was not changed") from None
        files = _ask(f"the Hub's file list of {repo}@{commit}", lambda: {
            x.path: x for x in api.list_repo_tree(repo, revision=commit, recursive=True)})
        trees[repo, rev] = (commit, files)
    return trees[repo, rev]


def _pinned(api, trees: dict, name: str, f: dict, rev: str) -> dict[str, Any]:
    """The pinned ``sha256``, ``size`` and ``revision`` of Hub file ``f`` of entry ``name``,
    each validated; a pin the Hub contradicts is an ``IntegrityError``."""
    commit, files = _tree(api, trees, f["repo_id"], rev)
    where = f"hf://{f['repo_id']}@{commit}/{f['filename']}"
    info = files.get(f["filename"])
    if info is None or not hasattr(info, "size"):
        raise FileNotFoundError(f"{name}: {f['filename']} is not a file in {f['repo_id']} at "
                                f"{commit}")
    try:
        lfs = getattr(info, "lfs", None)
        sha = validate.sha256_hex(lfs.sha256 if lfs else None, "lfs.sha256")
        size = validate.optional_size(info.size, "size")
        if size is None:
            raise validate.FieldError("size", "is null; the Hub reports a file's size")
    except (validate.FieldError, AttributeError) as e:
        raise PinError(f"{name}: the Hub's answer for {where} is not valid: {e}; the manifest "
                       "was not changed") from None
    if f.get("sha256") and sha and f["sha256"] != sha:
        raise IntegrityError(f"{name}: the manifest pins {f['sha256']} but the Hub has {sha} "
                             f"for {f['filename']} at {commit}; refusing to re-pin")
    return {"sha256": f.get("sha256") or sha, "size": size, "revision": commit}


def _pinned_url(spec) -> dict[str, Any]:
    """The ``sha256`` and ``size`` of unpinned URL file ``spec``: recorded when it was first
    downloaded into the cache (fetched now when it is not there)."""
    import warnings

    from .sources import UnpinnedFileWarning, fetch_verified, recorded_sha256

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpinnedFileWarning)   # being pinned right now
        v = fetch_verified(spec, verify="auto", progress=False)
    return {"sha256": recorded_sha256(spec), "size": v.path.stat().st_size}
