"""The package's error family: every error robust_zoo raises on bad input or a bad file is a
``RobustZooError``, so a command-line front end maps all of them to one message and exit 2.

Each concrete error also derives from the built-in class a caller would naturally catch
(``ValueError`` for bad values, ``KeyError`` for unknown names, ``OSError`` for files), so code
written against the built-ins keeps working.
"""
from __future__ import annotations

import errno
import os


class RobustZooError(Exception):
    """Base of every error robust_zoo raises for bad input, bad files or unavailable sources."""


class UsageError(RobustZooError, ValueError):
    """An argument value that is not valid (the message says what is valid)."""


def message(e: BaseException) -> str:
    """The one line a command line prints for ``e``: its message, without the traceback that a
    DataLoader worker wraps around an error it re-raises in the main process, with an OS
    error's ``[Errno N]`` left out, and the lines of a multi-line message joined."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if "Original Traceback" in text:
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and (head.endswith("Error") or head.endswith("Exception")) else last
    elif isinstance(e, OSError) and e.strerror and e.filename is not None:
        # a rename names its destination, the path the person gave; a folder that cannot be
        # made because a file is in its place is "not a directory", as the OS says one level on
        path = str(e.filename2 if e.filename2 is not None else e.filename)
        what = e.strerror
        if isinstance(e, FileExistsError) and not os.path.isdir(path):
            what = os.strerror(errno.ENOTDIR)
        text = f"{what}: {path}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    out = lines[0] if lines else type(e).__name__
    for ln in lines[1:]:
        out += (" " if out.endswith(":") else "; ") + ln
    return out
