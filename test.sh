#!/bin/sh
# Quick start, command 2: install build and test dependencies, build inferd,
# and run the whole test suite — once normally, then again built with
# AddressSanitizer and UndefinedBehaviorSanitizer.
set -e
cd "$(dirname "$0")"
tools/install-deps.sh --test
tests/npm-install.sh
make -j"$(nproc)" tests
tests/run.sh build
make -j"$(nproc)" SAN=1 tests
tests/run.sh build-san
