"""``robust-zoo pin``: complete a manifest's Hub files with the sha256, size and commit that the
Hub reports (its LFS metadata), so every later download is checked against a pinned hash."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text
from .manifest import PACKAGE_MANIFEST
from ..validate import IntegrityError


def pin_manifest(manifest: str | Path | None = None, out: str | Path | None = None, *,
                 revision: str | None = None) -> int:
    """Fill ``sha256``/``size`` where null and pin ``revision`` to a commit; returns how many
    files changed. A pinned sha256 that the Hub contradicts is an error, never overwritten."""
    from huggingface_hub import HfApi

    src = Path(manifest or PACKAGE_MANIFEST)
    if src.is_dir():
        src = src / "weights_manifest.json"
    data = json.loads(src.read_text())
    api = HfApi()
    trees: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    changed = 0
    for m in data["models"]:
        for f in m["files"]:
            if "repo_id" not in f:
                continue
            rev = revision or f.get("revision") or "main"
            key = (f["repo_id"], rev)
            if key not in trees:
                commit = api.model_info(f["repo_id"], revision=rev).sha
                files = {x.path: x for x in api.list_repo_tree(f["repo_id"], revision=commit,
                                                               recursive=True)}
                trees[key] = (commit, files)
            commit, files = trees[key]
            info = files.get(f["filename"])
            if info is None:
                raise FileNotFoundError(f"{m['name']}: {f['filename']} is not in {f['repo_id']} "
                                        f"at {commit}")
            sha = info.lfs.sha256 if getattr(info, "lfs", None) else None
            if f.get("sha256") and sha and f["sha256"] != sha:
                raise IntegrityError(f"{m['name']}: the manifest pins {f['sha256']} but the Hub "
                                     f"has {sha} for {f['filename']} at {commit}; refusing to "
                                     "re-pin")
            new = {"sha256": f.get("sha256") or sha, "size": info.size, "revision": commit}
            if any(f.get(k) != v for k, v in new.items()):
                f.update(new)
                changed += 1
    atomic_write_text(out or src, json.dumps(data, indent=2) + "\n")
    return changed
