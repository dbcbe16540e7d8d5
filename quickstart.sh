#!/bin/sh
# Quick start, command 1: install build dependencies, build inferd, and serve
# the bundled demo model on http://127.0.0.1:8000 (override with PORT=...).
set -e
cd "$(dirname "$0")"
tools/install-deps.sh
make -j"$(nproc)" build/inferd
MODEL="${MODEL:-models/demo}"
[ -d "$MODEL" ] || MODEL=tests/fixtures/models/qwen3
exec build/inferd serve "$MODEL" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" "$@"
