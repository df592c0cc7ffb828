"""The package's error family: every error robust_zoo raises on bad input or a bad file is a
``RobustZooError``, so a command-line front end maps all of them to one message and exit 2.

Each concrete error also derives from the built-in class a caller would naturally catch
(``ValueError`` for bad values, ``KeyError`` for unknown names, ``OSError`` for files), so code
written against the built-ins keeps working.
"""
from __future__ import annotations


class RobustZooError(Exception):
    """Base of every error robust_zoo raises for bad input, bad files or unavailable sources."""


class UsageError(RobustZooError, ValueError):
    """An argument value that is not valid (the message says what is valid)."""


def message(e: BaseException) -> str:
    """The text a command line prints for ``e``: its message, without the traceback that a
    DataLoader worker wraps around an error it re-raises in the main process."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if "Original Traceback" in text:
        last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and (head.endswith("Error") or head.endswith("Exception")) else last
    return text
