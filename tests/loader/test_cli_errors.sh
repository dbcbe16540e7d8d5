#!/bin/bash
# `inferd generate` on broken model folders: a clear message naming the file
# and the fault, exit status 1, no crash (the ASan build runs this too).
set -u
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
expect() { # expect NEEDLE CMD...
    local needle=$1; shift
    local out; out=$("$@" 2>&1); local rc=$?
    if [ $rc -ne 1 ] || [[ "$out" != *"$needle"* ]]; then
        echo "FAIL: $* -> rc=$rc, wanted '$needle' in: $out"; fails=$((fails + 1))
    else
        echo "ok: $needle"
    fi
}
cp -r tests/fixtures/models/qwen3 "$T/trunc"
truncate -s 100000 "$T/trunc/model.safetensors"
expect "model.safetensors: tensor '" "$INFERD" generate --model "$T/trunc" --prompt-ids 1,2
cp -r tests/fixtures/models/qwen3 "$T/arch"
sed -i 's/Qwen3ForCausalLM/Phi3ForCausalLM/' "$T/arch/config.json"
expect "unsupported architecture 'Phi3ForCausalLM'" "$INFERD" generate --model "$T/arch" --prompt-ids 1
cp -r tests/fixtures/models/qwen2 "$T/shard"
rm "$T/shard/model-00003-of-00005.safetensors"
expect "model-00003-of-00005.safetensors: No such file" "$INFERD" generate --model "$T/shard" --prompt-ids 1
cp -r tests/fixtures/models/llama "$T/shape"
sed -i 's/"intermediate_size": 160/"intermediate_size": 192/' "$T/shape/config.json"
expect "expected [192, 64] from config.json" "$INFERD" generate --model "$T/shape" --prompt-ids 1
expect "out of range" "$INFERD" generate --model tests/fixtures/models/llama --prompt-ids 1,99999
expect "no config.json" "$INFERD" generate --model "$T/none" --prompt-ids 1
[ $fails -eq 0 ]
