#!/usr/bin/env bash
# One command for every GPU measurement (training img/s per precision/layout/compile, PGD-10 vs
# torchattacks, loader, feature extraction, attack memory, cudnn/TF32/pinned-copy toggles):
#   bash benchmarks/gpu_suite.sh [--out gpu_suite.md]        # CUDA, full sizes, <= 8 min
#   bash benchmarks/gpu_suite.sh --device cpu --quick        # every path at tiny sizes on a CPU
# Extra arguments go to benchmarks/gpu_suite.py (see --help). The table is printed and written
# to --out (default gpu_suite.md in the current folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec timeout 480 "$PY" benchmarks/gpu_suite.py "$@"
