#!/bin/sh
# Installs the Debian packages inferd needs to build (and, with --test, to run
# its test suite). Only packages that are missing are installed, so a machine
# that has them all does no network access at all.
set -e
PKGS="build-essential pkg-config libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev
libonig-dev libutf8proc-dev libopenblas-dev libssl-dev libsqlite3-dev libcmocka-dev
libedit-dev curl"
TEST_PKGS="python3 python3-jinja2 python3-requests python3-numpy valgrind tmux"
[ "$1" = "--test" ] && PKGS="$PKGS $TEST_PKGS"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ "$1" = "--test" ] && ! command -v npm >/dev/null 2>&1; then
    missing="$missing nodejs npm"
fi
if [ -n "$missing" ]; then
    echo "inferd: installing Debian packages:$missing"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
fi
