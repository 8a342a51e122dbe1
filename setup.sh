#!/usr/bin/env bash
# Creates .venv and installs alphallm with everything its commands and tests use.
# torch goes in first, pinned: on a CPU machine that keeps pip from pulling a multi-GB CUDA build
# for torch, transformers or trl. GPU users: install your own torch build first; the package
# itself only asks for a range.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[train,ray,plot,dev]"
