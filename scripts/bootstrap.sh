#!/usr/bin/env bash
# Set up .venv with robust_zoo and everything its tests, training and demos use. Idempotent:
# a second run only checks what is installed. Needs Python >= 3.10 and the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
# torchattacks is the independent PGD reference of tests/test_attacks.py and
# benchmarks/bench_attacks.py. Its metadata pins requests~=2.25, which would downgrade requests
# under huggingface_hub, so it is installed without dependencies (it needs only torch).
.venv/bin/python -m pip install -q --no-deps "torchattacks==3.5.1"
# pyautoattack (the [eval] extra, part of [dev] above) is AutoAttack for
# `python -m robust_zoo.evaluate --autoattack`; checked here so a partial install is noticed.
.venv/bin/python -c "import pyautoattack" 2>/dev/null || .venv/bin/python -m pip install -q -e ".[eval]"
