"""Lazy package attributes and the package's former module paths.

``import robust_zoo`` stays cheap: submodules load on first use. Modules that moved into the
layer packages stay importable under their documented former names (``robust_zoo.archs`` is
``robust_zoo.models.archs``, the same module object), through one table, ``MOVED``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any, Callable

# former path → home; each former path is one documented in an earlier release
MOVED = {
    "robust_zoo.archs": "robust_zoo.models.archs",
    "robust_zoo.manifest": "robust_zoo.hub.manifest",
    "robust_zoo.weights": "robust_zoo.formats.safetensors_file",
    "robust_zoo.convert": "robust_zoo.formats.upstream",
    "robust_zoo.detection": "robust_zoo.transfer.detection",
    "robust_zoo.quickstart": "robust_zoo.cli.quickstart",
}


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``package.<table[name]>`` when ``name`` is first
    read, and caches the attribute on the package. A module path with a leading dot is
    relative to the package's parent (``".data.transforms"`` from ``robust_zoo.transfer``)."""
    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(f".{table[name]}", package), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves a former module path to the module at its home (the same object, so a
    ``monkeypatch`` or ``isinstance`` through either name sees the other)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass

    def get_code(self, fullname):
        """What ``python -m <former path>`` runs (runpy asks): the home, as ``__main__``."""
        return compile(f"import runpy\nrunpy.run_module({MOVED[fullname]!r}, "
                       "run_name='__main__', alter_sys=True)\n", f"<{fullname}>", "exec")


def install_moved_finder() -> None:
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
