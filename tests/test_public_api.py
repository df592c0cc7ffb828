"""Every public name resolves: the package root's ``__all__``, every lazy table (``_LAZY``) and
every module's ``__all__``, and the former module paths (``robust_zoo._lazy.MOVED``) import as
the very modules at their homes."""
from __future__ import annotations

import importlib
import pkgutil

import pytest

import robust_zoo
from robust_zoo._lazy import MOVED

MODULES = ["robust_zoo"] + sorted(
    m.name for m in pkgutil.walk_packages(robust_zoo.__path__, "robust_zoo.")
    if m.name.rsplit(".", 1)[-1] != "__main__")          # importing a __main__ runs its program
LAZY_PACKAGES = ["robust_zoo"] + [f"robust_zoo.{p}" for p in
                                  ("engine", "train", "transfer", "hub", "formats", "evaluate")]


def test_the_walk_sees_every_layer():
    assert {"robust_zoo.hub.factory", "robust_zoo.formats.upstream", "robust_zoo.models.archs",
            "robust_zoo.engine.loop", "robust_zoo.evaluate.run", "robust_zoo.cli.commands",
            "robust_zoo.transfer.detection"} <= set(MODULES)
    assert all(importlib.import_module(p)._LAZY for p in LAZY_PACKAGES)


@pytest.mark.parametrize("module", MODULES)
def test_every_name_in_all_resolves(module):
    mod = importlib.import_module(module)
    names = getattr(mod, "__all__", [])
    assert len(set(names)) == len(names), f"{module}.__all__ names something twice"
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not have: {missing}"


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_lazy_name_is_the_object_at_its_home(package):
    pkg = importlib.import_module(package)
    for name, home in pkg._LAZY.items():
        value = getattr(pkg, name)            # an AttributeError names the broken entry
        assert value is getattr(importlib.import_module(f".{home}", package), name), name
    public = set(getattr(pkg, "__all__", ()))
    assert not public - set(pkg._LAZY) - set(vars(pkg)), "__all__ names neither lazy nor defined"


def test_the_root_exports_what_users_call_and_nothing_it_cannot_give():
    assert sorted(robust_zoo.__all__) == sorted([*robust_zoo._LAZY, "__version__"])
    for name in ("load", "list_models", "get_entry", "download", "export", "RobustModel",
                 "RobustZooError", "UnknownModelError", "IntegrityError"):
        assert name in robust_zoo.__all__, name
    exported = [getattr(robust_zoo, n) for n in robust_zoo.__all__]
    errors = [e for e in exported if isinstance(e, type) and issubclass(e, Exception)
              and not issubclass(e, Warning)]
    assert len(errors) >= 8 and all(issubclass(e, robust_zoo.RobustZooError) for e in errors)
    assert set(dir(robust_zoo)) == set(robust_zoo.__all__)
    with pytest.raises(AttributeError, match="has no attribute 'nonexistent'"):
        robust_zoo.nonexistent


@pytest.mark.parametrize("former, home", sorted(MOVED.items()))
def test_former_module_paths_import_as_their_homes(former, home):
    assert importlib.import_module(former) is importlib.import_module(home)
    leaf = former.rsplit(".", 1)[1]
    # ``from robust_zoo import archs``, the form the former docs used
    assert getattr(__import__("robust_zoo", fromlist=[leaf]), leaf) is \
        importlib.import_module(home)
