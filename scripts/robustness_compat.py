"""Make MadryLab's ``robustness`` 1.2.1 importable beside current torch/torchvision, for the
maintainer checks that compare against it (never imported by the package or its tests)."""
from __future__ import annotations

import sys
import types


def prepare_robustness_import() -> None:
    """robustness imports ``torchvision.models.utils``, which torchvision removed in 0.13: a
    module stand-in (not a package, which would shadow the real torchvision) supplies the one
    function it uses. It also calls ``.cuda()`` unconditionally; on a CPU-only machine that
    becomes a no-op."""
    import torch
    import torch.hub
    import torchvision

    if "torchvision.models.utils" not in sys.modules:
        utils = types.ModuleType("torchvision.models.utils")
        utils.load_state_dict_from_url = torch.hub.load_state_dict_from_url
        sys.modules["torchvision.models.utils"] = utils
        torchvision.models.utils = utils
    if not torch.cuda.is_available():
        torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[assignment]
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[assignment]
