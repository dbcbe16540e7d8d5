#!/bin/bash
# `inferd run` with the bundled demo model, driven like a person would: in a
# terminal (tmux), a two-turn chat, then /bye; also one-shot and piped use.
# The answers must be poems: mostly Chinese characters.
set -u
export LANG=C.UTF-8 LC_ALL=C.UTF-8
MODEL=${MODEL:-models/demo}
S=inferd-run-test-$$
fails=0
cjk() { /usr/bin/python3 -c 'import sys; print(sum(1 for ch in sys.stdin.read() if "\u4e00" <= ch <= "\u9fff"))'; }
check() { # check WHAT TEXT MIN
    local n; n=$(printf '%s' "$2" | cjk)
    if [ "$n" -ge "$3" ]; then echo "ok: $1 ($n CJK characters)"; else echo "FAIL: $1: $n CJK characters (< $3) in: $2"; fails=$((fails + 1)); fi
}
command -v tmux >/dev/null || { echo "tmux is not installed (tools/install-deps.sh --test installs it)"; exit 1; }
trap 'tmux kill-session -t $S 2>/dev/null' EXIT
tmux -u new-session -d -s $S -x 160 -y 60 "$INFERD run $MODEL --seed 7 --max-tokens 96; echo EXITED \$?; sleep 30"
wait_for() { # wait_for NTH-PROMPT: until ">>> " has appeared N times
    for _ in $(seq 600); do
        [ "$(tmux capture-pane -p -S - -t $S | grep -c '^>>>')" -ge "$1" ] && return 0
        sleep 0.1
    done
    echo "FAIL: no prompt #$1 after 60 s:"; tmux capture-pane -p -S - -t $S; return 1
}
wait_for 1 || exit 1
tmux send-keys -t $S "写一首关于春天的诗" Enter
wait_for 2 || exit 1
tmux send-keys -t $S "再写一首关于明月的诗" Enter
wait_for 3 || exit 1
screen=$(tmux capture-pane -p -S - -t $S)
echo "$screen"
a1=$(printf '%s\n' "$screen" | awk '/^>>> 写一首/{f=1;next} /^>>>/{f=0} f')
a2=$(printf '%s\n' "$screen" | awk '/^>>> 再写一首/{f=1;next} /^>>>/{f=0} f')
check "first answer" "$a1" 10
check "second answer" "$a2" 10
tmux send-keys -t $S "/bye" Enter
for _ in $(seq 100); do
    tmux capture-pane -p -t $S | grep -q '^EXITED 0' && break
    sleep 0.1
done
if tmux capture-pane -p -t $S | grep -q '^EXITED 0'; then echo "ok: /bye quits"; else echo "FAIL: /bye did not end inferd run"; tmux capture-pane -p -t $S; fails=$((fails + 1)); fi

out=$("$INFERD" run "$MODEL" "题目：静夜思" --seed 1 --max-tokens 96 </dev/null)
check "one-shot prompt" "$out" 10
out=$(echo "写一首关于秋风的诗" | "$INFERD" run "$MODEL" --seed 1 --max-tokens 96)
check "piped stdin" "$out" 10
err() { # err WHAT NEEDLE CMD...: exit status 1 or 2 and the reason on stderr
    local what=$1 needle=$2; shift 2
    local o; o=$("$@" </dev/null 2>&1); local rc=$?
    if [ $rc -ne 0 ] && [[ "$o" == *"$needle"* ]]; then echo "ok: $what"; else echo "FAIL: $what: rc=$rc $o"; fails=$((fails + 1)); fi
}
err "missing folder" "does not exist" "$INFERD" run /nonexistent/dir hi
err "repo not cached offline" "not in the cache" env HF_HUB_OFFLINE=1 HF_HOME="$(mktemp -d)" "$INFERD" run nobody/nothing hi
err "bad flag" "--temperature must be" "$INFERD" run "$MODEL" --temperature -1 hi
[ $fails -eq 0 ]
