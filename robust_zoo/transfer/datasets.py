"""The paper's transfer data sets, as the transfer package names them: the implementation and
registry are ``robust_zoo.data.transfer_sets`` (data layer)."""
from __future__ import annotations

from ..data.transfer_sets import *  # noqa: F401,F403
from ..data.transfer_sets import TRANSFER_DATASETS, PAPER_DATASETS, __all__  # noqa: F401
