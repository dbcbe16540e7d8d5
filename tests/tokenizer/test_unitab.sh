#!/bin/bash
# tokenizer/tk_unitab.c is generated: regenerating it from Debian's
# unicode-data must give the committed file byte for byte, and the tables
# must agree with the reference's recorded behaviour (--check). Skipped
# (exit 0 with a note) where unicode-data is not installed: the build does
# not need it, only this check and the generator do.
set -eu -o pipefail
cd "$(dirname "$0")/../.."
if [ ! -f /usr/share/unicode/Scripts.txt ]; then
    echo "SKIP: /usr/share/unicode (Debian package unicode-data) is not installed"
    exit 0
fi
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
/usr/bin/python3 tools/unicode/gen_tables.py --out "$tmp" --check tests/fixtures/tokenizer/unicode_ref.json
if ! cmp -s "$tmp" tokenizer/tk_unitab.c; then
    echo "FAIL: tokenizer/tk_unitab.c differs from what tools/unicode/gen_tables.py generates:"
    diff "$tmp" tokenizer/tk_unitab.c | head -20
    exit 1
fi
echo "tokenizer/tk_unitab.c is up to date and matches the reference"
