#!/usr/bin/env bash
# What a node with nothing to do costs: CPU time, wake-ups (context
# switches of all its threads) and, with strace, its fsyncs (each one a
# device cache flush on ext4, even with nothing to write).
#
#   testnet/idle-cost.sh [AGORA_BINARY] [SECONDS]
#
# Starts one node alone on loopback in a fresh data directory, lets it
# calibrate and settle for 20 s, then measures for SECONDS (default 40) and
# stops it (about SECONDS + 30 s). AGORA_BINARY defaults to target/release/agora (build it first:
# `cargo build --release -p agora-node --bin agora`). Linux only (/proc).
set -euo pipefail

bin=${1:-target/release/agora}
secs=${2:-40}
[ -x "$bin" ] || { echo "no agora binary at $bin" >&2; exit 1; }
dir=$(mktemp -d /tmp/agora-idle.XXXXXX)
"$bin" node --data-dir "$dir" --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 >"$dir/node.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
sleep 20
kill -0 $pid 2>/dev/null || { echo "the node stopped; its log:" >&2; cat "$dir/node.log" >&2; exit 1; }

switches() { cat /proc/$pid/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s }'; }
ticks() { awk '{ print $14 + $15 }' /proc/$pid/stat; }
hz=$(getconf CLK_TCK)

t0=$(ticks); c0=$(switches)
sleep "$secs"
t1=$(ticks); c1=$(switches)
awk -v t=$((t1 - t0)) -v hz="$hz" -v s="$secs" -v c=$((c1 - c0)) 'BEGIN {
    printf "over %d s: CPU %.0f ms (%.2f %% of a core), %d context switches (%.0f a second)\n",
        s, t * 1000 / hz, t * 100 / hz / s, c, c / s
}'
# Then the fsyncs, apart: strace stops the node at every system call it
# makes, which would count in the figures above.
if command -v strace >/dev/null; then
    n=$( (timeout 10 strace -f -c -e trace=fsync,fdatasync -p $pid 2>&1 || true) |
        awk '$NF == "fsync" || $NF == "fdatasync" { n += $4 } END { print n + 0 }')
    echo "over the next 10 s: $n fsyncs"
else
    echo "fsyncs not counted: strace is not installed"
fi
