#!/bin/bash
# Runs every test of the suite against one build folder and prints a summary
# line "N passed, N failed". Unit tests are the cmocka binaries
# BUILD/tests/<module>/test_*; end-to-end tests are the scripts
# tests/<module>/test_*.{sh,py,mjs}, which find the binary in $INFERD.
# Usage: tests/run.sh BUILD [NAME-FILTER]
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build}
FILTER=${2:-}
export INFERD="$PWD/$BUILD/inferd" INFERD_BUILD="$PWD/$BUILD"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# The suite shares 2 cores with itself and with builds: OpenMP threads that
# spin at barriers would starve the thread they wait for.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
LOGDIR="$BUILD/test-logs"
mkdir -p "$LOGDIR"
pass=0; fail=0; failed=()
run_one() {
    local name=$1; shift
    local log="$LOGDIR/$(echo "$name" | tr '/' '_').log"
    local t0=$(date +%s)
    if "$@" >"$log" 2>&1; then
        pass=$((pass + 1)); echo "PASS $name ($(( $(date +%s) - t0 ))s)"
    else
        fail=$((fail + 1)); failed+=("$name"); echo "FAIL $name ($(( $(date +%s) - t0 ))s)"
        tail -n 40 "$log" | sed 's/^/    /'
    fi
}
for bin in "$BUILD"/tests/*/test_*; do
    [ -x "$bin" ] && [ -f "$bin" ] || continue
    name=${bin#"$BUILD"/}
    [ -n "$FILTER" ] && [[ "$name" != *"$FILTER"* ]] && continue
    run_one "$name" "$bin"
done
for s in tests/*/test_*.sh tests/*/test_*.py tests/*/test_*.mjs; do
    [ -f "$s" ] || continue
    [ -n "$FILTER" ] && [[ "$s" != *"$FILTER"* ]] && continue
    case "$s" in
        *.sh) run_one "$s" bash "$s" ;;
        *.py) run_one "$s" /usr/bin/python3 "$s" ;;
        *.mjs) run_one "$s" node "$s" ;;
    esac
done
echo
[ $fail -gt 0 ] && printf 'failed: %s\n' "${failed[@]}"
echo "$pass passed, $fail failed"
[ $pass -gt 0 ] || { echo "no test ran: the suite is empty or the filter matched nothing"; exit 1; }
[ $fail -eq 0 ]
