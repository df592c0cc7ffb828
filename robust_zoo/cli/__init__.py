"""The command-line front end: ``robust-zoo`` (``commands``), its ``viz`` pictures and the
offline ``quickstart``."""
from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """``robust-zoo``'s entry point."""
    from .commands import main as _main

    return _main(argv)
