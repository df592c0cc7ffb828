"""What a program shows a person: the one progress bar of the package, and the one way every
command line (``robust-zoo`` and its programs) runs and reports an error.

A program is ``main = command(_main)`` with ``_main(argv) -> int`` building its parser with
``ArgumentParser``: bad input of any kind ends as one line ``error: <message>`` on stderr and
exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from typing import Any, Callable, Iterable, Sequence

from .errors import RobustZooError, UsageError, message

# what a person can fix: bad arguments, unknown names, files and folders (missing, read-only,
# a file where a folder must be, a full disk), all of the package's own errors
INPUT_ERRORS = (RobustZooError, ValueError, KeyError, OSError)


def progress(iterable: Iterable | None = None, *, enabled: bool = True, **kw: Any):
    """A tqdm bar over ``iterable`` (or a manual one, updated by the caller, when it is None).

    Disabled, it is still a bar object (``update``, ``set_postfix`` and ``close`` do nothing)
    that yields ``iterable`` unchanged, so callers need no second code path. ``kw`` goes to
    tqdm (``total``, ``desc``, ``unit``, ``leave``, ``initial``)."""
    from tqdm.auto import tqdm

    if iterable is not None and "total" not in kw and hasattr(iterable, "__len__"):
        kw["total"] = len(iterable)
    return tqdm(iterable, disable=not enabled, dynamic_ncols=True, **kw)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors (a bad number, a missing or unknown flag, an invalid choice)
    raise ``UsageError`` instead of printing the usage block, so that ``run_main`` reports them
    like every other bad input: one line naming the flag. ``--help`` is unchanged."""

    def error(self, message: str):
        # "argument --epochs: --epochs must be ..." says the flag once
        text = re.sub(r"^argument (\S+): (?=\1\b)", "", message)
        raise UsageError(f"{text} (see {self.prog} --help)")


def is_input_error(e: BaseException) -> bool:
    """True for an error a person causes and can fix (``INPUT_ERRORS``), also when a DataLoader
    worker raised it: torch re-raises a worker's error as its own class, or as RuntimeError
    when that class cannot be rebuilt from a message."""
    if isinstance(e, INPUT_ERRORS):
        return True
    return isinstance(e, RuntimeError) and "DataLoader worker" in str(e)


def report_error(e: BaseException) -> None:
    """The one line a command prints for ``e``: ``error: <message>`` on stderr."""
    print(f"error: {message(e)}", file=sys.stderr, flush=True)


def run_main(main_fn: Callable[[list[str]], "int | None"],
             argv: Sequence[str] | None = None) -> int:
    """Run a program's ``main_fn(argv)`` and return its exit status: its own (``None`` is 0),
    argparse's for ``--help`` (0), or 2 after ``report_error`` for an input error
    (``is_input_error``). Other exceptions are bugs and propagate with their traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(main_fn(argv) or 0)
    except SystemExit as e:                              # --help / --version: argparse exits 0
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        raise
    except Exception as e:
        if not is_input_error(e):
            raise
        report_error(e)
        return 2


def command(main_fn: Callable[[list[str]], "int | None"]) -> Callable[..., int]:
    """``main = command(_main)``: a program's entry point, ``main(argv=None) -> exit status``
    (``sys.argv[1:]`` when ``argv`` is None), run through ``run_main``."""
    @functools.wraps(main_fn)
    def main(argv: Sequence[str] | None = None) -> int:
        return run_main(main_fn, argv)

    return main
