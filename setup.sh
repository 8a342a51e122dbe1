#!/usr/bin/env bash
# Creates .venv and installs alphallm with everything its commands and tests use.
# torch goes in first, pinned, so that installing transformers or trl keeps it instead of pulling
# another build. The pin alone does not choose the CPU build: pip takes it from this machine's wheel
# directory; elsewhere set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for it (a plain PyPI
# install on Linux is the multi-GB CUDA build). GPU users: install your own torch build first; the
# package itself only asks for a range.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null ||
    .venv/bin/pip install -q "torch==2.13.0" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/pip install -q -e ".[train,ray,plot,dev]"
