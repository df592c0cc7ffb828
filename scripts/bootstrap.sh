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
# robustbench is the reference of the fidelity tests (tests/test_families.py and the loader's):
# its own ImageNet model builders and loader, run against ours. It pins timm==1.0.9 and
# gdown==5.1.0, which would downgrade timm, so it is installed without dependencies, plus what
# its imports need, at the versions the tests were run with (setuptools<81 still ships the
# pkg_resources it imports).
.venv/bin/python -m pip install -q --no-deps "robustbench==1.1.1"
.venv/bin/python -m pip install -q "gdown==6.5.1" "geotorch==0.4.0" "torchdiffeq==0.2.5" \
    "beautifulsoup4==4.15.0" "soupsieve==4.1.3" "setuptools==80.10.2" "pandas==3.1.1"
# submitit (the [cluster] extra, part of [dev] above) is how --launcher slurm submits jobs.
.venv/bin/python -c "import submitit" 2>/dev/null || .venv/bin/python -m pip install -q -e ".[cluster]"
# The SLURM tests start a private single-node cluster (tests/conftest.py: slurm): they need
# Debian's slurm-wlm and munge. Installed here when missing and this machine allows it (root
# with apt-get); elsewhere those tests skip, naming what is missing (under CI=true they fail).
if command -v sbatch >/dev/null && [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/munged ]; then
    :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing slurm-wlm and munge for the SLURM tests (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null \
        || { apt-get update -q >/dev/null && \
             DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; }
else
    echo "bootstrap: skipped slurm-wlm and munge (needs root and apt-get); the SLURM tests" \
         "will skip (install them: apt-get install slurm-wlm munge)"
fi
