"""The paper's transfer data sets: ``robust_zoo.data.transfer_sets`` under the transfer
package's name (implementation and registry live in the data layer)."""
from __future__ import annotations

from ..data.transfer_sets import *  # noqa: F401,F403
from ..data.transfer_sets import TRANSFER_DATASETS, PAPER_DATASETS, __all__  # noqa: F401
