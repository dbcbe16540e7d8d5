#!/bin/bash
# The device run that wrote tests/fixtures/tokenizer/ (one call, ~25 s):
# the Unicode probe (unicode_ref.json) and every tokenizer fixture (format 2).
# Inputs, copied to DIR (= .cache/<name>/ of the main checkout, carried):
#   DIR/tok/<name>/tokenizer.json.gz + tokenizer_config.json for the seven npm
#   tokenizers (gzip keeps the carry small), DIR/corpus.jsonl, and this
#   folder's tokenizer_golden.py and tokenizer_unicode_golden.py.
# Usage on the device: bash DIR/tokenizer_device.sh DIR   (writes to $OUT:
#   unicode_ref.json, gold.tar.gz = <name>.jsonl, models/, report.json)
set -o pipefail
D=${1:-.cache/tok3}
W=$(mktemp -d)
mkdir -p "$W/tok"
for d in "$D"/tok/*; do
    n=$(basename "$d"); mkdir -p "$W/tok/$n"
    gunzip -c "$d/tokenizer.json.gz" > "$W/tok/$n/tokenizer.json"
    cp "$d/tokenizer_config.json" "$W/tok/$n/"
done
python3 -c "import tokenizers, sys; print('tokenizers', tokenizers.__version__, sys.version)"
PYTHONUNBUFFERED=1 python3 "$D/tokenizer_unicode_golden.py" --out "$OUT/unicode_ref.json" > "$OUT/unicode.log" 2>&1 &
P=$!
PYTHONUNBUFFERED=1 python3 "$D/tokenizer_golden.py" golden --corpus "$D/corpus.jsonl" --tokenizers "$W/tok" \
    --out "$W/gold" 2>&1 | tee "$OUT/golden.log"
wait $P; echo "unicode probe rc=$?"
tail -3 "$OUT/unicode.log"
tar czf "$OUT/gold.tar.gz" -C "$W" gold
ls -la "$OUT"
