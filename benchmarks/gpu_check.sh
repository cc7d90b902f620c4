#!/usr/bin/env bash
# One GPU's first check (issue 31): the CUDA-only tests, MobileNetV1 and V3-Large against timm's, Fashion-MNIST time
# to 94%, each step capped, results under $OUT (summary.json, summary.md, gpu_check.log, ...). Under 8 minutes on
# one H100/H200. See benchmarks/gpu_check.py for the steps, the files and the options.
#
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh             # on the GPU machine (the device tool sets OUT)
#   OUT=/tmp/dry bash benchmarks/gpu_check.sh --dry-run   # the same steps tiny on the CPU
#
# Python: the project's .venv when there is one, else python3 (the GPU machine's, which holds torch and timm).
# Nothing is installed and nothing downloaded: pip and the Hugging Face hub are told to stay offline.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
    py=$PYTHON
elif [ -x .venv/bin/python ]; then
    py=.venv/bin/python
else
    py=python3
fi
if ! command -v "$py" >/dev/null; then
    echo "gpu_check: error: no Python ($py); set PYTHON=/path/to/python" >&2
    exit 2
fi
export OUT="${OUT:-runs/gpu_check}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PIP_NO_INDEX=1 HF_HUB_OFFLINE=1
exec "$py" benchmarks/gpu_check.py --out "$OUT" "$@"
