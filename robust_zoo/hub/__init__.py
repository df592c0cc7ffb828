"""The zoo as files: which models exist, where their files come from, and how a name becomes a
verified state dict on disk.

* ``manifest``: ``weights_manifest.json`` as validated data (``Entry``, ``FileSpec``).
* ``cache``: the cache folder (where, what lives in it), its locks and the cleanup of leftovers.
* ``records``: records of verified files (size, sha256, fast digest, the pin they were checked
  against) and the check of a file against its pin.
* ``network``: bounded waiting for downloads (stall timeout, minimum throughput, the cap on a
  rate limit's wait, no retries for host names that do not resolve).
* ``sources``: fetching one manifest file (Hugging Face Hub, plain URL, local path), verified
  against its pinned sha256, with retries.
* ``loading``: the load step: a fetched file → a content-checked state dict (upstream pickles
  converted once into cached safetensors).
* ``factory``: ``load``, ``get_entry``, ``list_models``, ``download`` (timm's ``_factory``).
* ``pin``: completing a manifest with the hashes the Hub reports.
* ``publish``: ``export``, a Hub-ready folder with its model card.
"""
from __future__ import annotations

from .._lazy import lazy_getattr as _lazy_getattr

_LAZY = {
    "load": "factory", "get_entry": "factory", "list_models": "factory", "download": "factory",
    "load_state_dict": "factory",
    "Entry": "manifest", "FileSpec": "manifest", "Manifest": "manifest",
    "load_manifest": "manifest", "ManifestError": "manifest", "UnknownModelError": "manifest",
    "fetch": "sources", "fetch_verified": "sources", "NotCachedError": "sources",
    "SourceUnavailableError": "sources", "UnpinnedFileWarning": "sources",
    "verify_file": "records", "IntegrityError": "records", "UnverifiableError": "loading",
    "cache_dir": "cache", "CacheWriteError": "cache",
    "pin_manifest": "pin", "export": "publish", "model_card": "publish",
}
__all__ = sorted(_LAZY)

__getattr__ = _lazy_getattr(__name__, _LAZY)
