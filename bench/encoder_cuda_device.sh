#!/bin/bash
# One call on the GPU machine (through the `device` tool) for the encoders:
# unpacks the `make dist` bundle and runs tests/cuda/test_encoder_cuda.py
# --bench (golden fixtures on --device cuda, GPU against CPU, memcheck,
# serve --device cuda, bert-base-shaped timing). Logs go to $OUT (or
# /tmp/out).
#
#   bench/encoder_cuda_device.sh BUNDLE.tar.gz
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUNDLE=$(realpath "$1")
O=${OUT:-/tmp/out}
mkdir -p "$O" /tmp/dist
source "$ROOT/bench/bundle_env.sh" /tmp/dist
cd "$ROOT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$O/machine.txt"
PYTHONUNBUFFERED=1 timeout "${ENCODER_TIMEOUT:-280}" python3 tests/cuda/test_encoder_cuda.py --bench \
    2>&1 | tee "$O/encoder_cuda.log"
echo "test_encoder_cuda exit ${PIPESTATUS[0]}"
