#!/usr/bin/env bash
# Create .venv and install loraclf with its test and quickstart extras.
# torch is installed first and pinned: the CPU build (2.13.0) lies on these
# machines' disk; left free, pip would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q "torch==${TORCH_VERSION}"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import loraclf, torch, transformers, peft; print('loraclf', loraclf.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__)"
