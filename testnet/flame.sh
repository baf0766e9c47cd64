#!/usr/bin/env bash
# A flame graph of the bench's throughput run: where the requester's and
# the providers' CPU goes while one job of tiny tasks runs on four
# providers (`bench --only-network`'s throughput part).
#
#   testnet/flame.sh [OUT_DIR]
#
# Needs `perf` (Debian: linux-perf) and inferno (`cargo install inferno`),
# and the right to profile other processes (root, or
# kernel.perf_event_paranoid <= 1). Builds the release binaries first,
# unless AGORA_BIN names the `agora` to profile (its `agora-testnet` is
# taken from the same directory).
#
# Writes to OUT_DIR (default testnet-out/flame-YYYYMMDD-HHMMSS):
#   flame.svg      the flame graph; each stack starts with the node's role
#                  (requester, provider-1..4), then the thread's name
#   folded.txt     the same stacks, folded (one line per stack and count)
#   bench.log      the bench's own figures for the run profiled
#
# Stacks are unwound from DWARF call frame information (release builds
# keep it), so no special build is needed. Settings: FLAME_TASKS (tasks of the job, 12000),
# FLAME_SECONDS (seconds sampled, 6), FLAME_HZ (samples per second, 299).
set -euo pipefail

cd "$(dirname "$0")/.."
out=${1:-testnet-out/flame-$(date +%Y%m%d-%H%M%S)}
tasks=${FLAME_TASKS:-12000}
secs=${FLAME_SECONDS:-6}
hz=${FLAME_HZ:-299}

for tool in perf inferno-collapse-perf inferno-flamegraph curl; do
    command -v "$tool" > /dev/null || {
        echo "flame.sh needs $tool (perf: apt-get install linux-perf; inferno: cargo install inferno)" >&2
        exit 1
    }
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -n "${AGORA_BIN:-}" ]; then
    bin=$(dirname "$AGORA_BIN")
    for b in "$AGORA_BIN" "$bin/agora-testnet"; do
        [ -x "$b" ] || { echo "flame.sh: $b is not an executable (AGORA_BIN names the agora binary; agora-testnet must sit beside it)" >&2; exit 1; }
    done
else
    cargo build --release -q -p agora-node -p agora-testnet
    bin=${CARGO_TARGET_DIR:-target}/release
fi

"$bin/agora-testnet" bench --only-network --scale-nodes 0 --advert-rounds 0 --e2e-jobs 0 \
    --tasks "$tasks" --dir "$out/nodes" > "$out/bench.log" 2>&1 &
bench=$!
trap 'kill $bench 2> /dev/null || true' EXIT

# Sample the throughput job only: once the testnet is up, wait for the
# requester (node 0) to list a job of $tasks tasks, then let it ramp up.
pid_of() { pgrep -f -- "--data-dir $out/nodes/latency/node-$1( |\$)" | head -1; }
field() { sed -n "s/.*\"$1\": *\"\([^\"]*\)\".*/\1/p" "$2" | head -1; }
api=
for _ in $(seq 600); do
    kill -0 $bench 2> /dev/null || { cat "$out/bench.log" >&2; exit 1; }
    info=$out/nodes/latency/node-0/node.json
    if [ -z "$api" ] && [ -f "$info" ]; then
        api=$(field api "$info")
        token=$(field token "$info")
    fi
    if [ -n "$api" ] &&
        curl -sf -H "Authorization: Bearer $token" "http://$api/v1/jobs" | grep -q "\"tasks\":$tasks,"; then
        break
    fi
    sleep 0.25
done
sleep 1

declare -A role
pids=()
for i in 0 1 2 3 4; do
    p=$(pid_of "$i")
    [ -n "$p" ] || { echo "node-$i is not running" >&2; exit 1; }
    pids+=("$p")
    if [ "$i" = 0 ]; then role[$p]=requester; else role[$p]=provider-$i; fi
done

perf record -q -F "$hz" --call-graph dwarf,16384 -o "$out/perf.data" \
    -p "$(IFS=,; echo "${pids[*]}")" -- sleep "$secs" 2> /dev/null
wait $bench || true
trap - EXIT

# Inlined frames are left out: resolving them takes `perf script` minutes.
perf script -i "$out/perf.data" --no-inline -F comm,pid,tid,time,period,event,ip,sym,dso 2> /dev/null |
    inferno-collapse-perf --pid > "$out/folded.pid.txt"
# "thread-PID;frames count" -> "role;thread;frames count"
roles=$(for p in "${!role[@]}"; do echo "$p ${role[$p]}"; done)
awk -v roles="$roles" '
    BEGIN { n = split(roles, r, "\n"); for (i = 1; i <= n; i++) { split(r[i], kv, " "); name[kv[1]] = kv[2] } }
    {
        first = substr($0, 1, index($0, ";") - 1)
        pid = first; sub(/.*-/, "", pid)
        thread = first; sub(/-[0-9]+$/, "", thread)
        print (pid in name ? name[pid] : "other") ";" thread substr($0, index($0, ";"))
    }' "$out/folded.pid.txt" > "$out/folded.txt"
rm -f "$out/folded.pid.txt" "$out/perf.data"
inferno-flamegraph --title "agora: throughput run, $tasks tiny tasks, 4 providers" \
    < "$out/folded.txt" > "$out/flame.svg"

grep "throughput:" "$out/bench.log" || true
echo "flame graph: $out/flame.svg"
