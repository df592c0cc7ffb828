"""What a program shows a person while it works: the one progress bar of the package."""
from __future__ import annotations

from typing import Any, Iterable


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kw: Any):
    """A tqdm bar over ``iterable`` (or a manual one, updated by the caller, when it is None).

    Disabled, it is still a bar object (``update``, ``set_postfix`` and ``close`` do nothing)
    that yields ``iterable`` unchanged, so callers need no second code path. ``kw`` goes to
    tqdm (``total``, ``desc``, ``unit``, ``leave``, ``initial``)."""
    from tqdm.auto import tqdm

    if iterable is not None and "total" not in kw and hasattr(iterable, "__len__"):
        kw["total"] = len(iterable)
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kw)
