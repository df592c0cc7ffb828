"""The paper's transfer data sets: ``robust_zoo.data.transfer_sets`` under the name the
transfer package has always exported (implementation and registry live in the data layer)."""
from __future__ import annotations

from ..data.transfer_sets import *  # noqa: F401,F403
from ..data.transfer_sets import DATASETS, PAPER_DATASETS, __all__  # noqa: F401
