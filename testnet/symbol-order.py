#!/usr/bin/env python3
"""Writes node/agora.order: the functions a node runs, hottest first.

    testnet/symbol-order.py [AGORA_BIN] [--also OTHER_BIN ...]

A release `agora` binary links its functions in the order this file lists
them (node/build.rs passes it to the linker). Most of an idle node's
resident memory is pages of its own code, and the kernel maps a
neighbourhood of pages around each one a process touches: with the code a
node runs spread over the whole 29 MB of `.text`, a node held ~60 % of it
resident. Laid out together, the same code fits in ~7 MB.

The list comes from the real binary at work: a testnet of two nodes
(`agora-testnet up`), a third node joining it under valgrind's callgrind,
which starts (calibration, first compile), provides (a job of no-op and
primes tasks from node 0) and requests (a job of its own), then stops.
Every function callgrind saw run in the binary is listed, by instructions
run. Names the next build no longer has are skipped by the linker, so a
stale list costs memory, never correctness; run this again after
dependency updates. A build with other features names the node's own
functions with other hashes: `--also` a binary of each such build (the
plain `cargo build --release -p agora-node`, which a device owner runs)
lists its names of the same functions next to the profiled ones. Needs valgrind, and the binary the testnet uses:
`cargo build --release -p agora-node --bin agora --features
fault-injection` (the default AGORA_BIN) and the examples built
(`cargo build --release --target wasm32-wasip1` in examples/).
"""

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
EXAMPLES = os.path.join(ROOT, "examples", "target", "wasm32-wasip1", "release")


def api(node_json):
    info = json.load(open(node_json))
    host, port = info["api"].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=600)
    headers = {"Authorization": "Bearer " + info["token"]}

    def req(method, path, body=None, ctype=None):
        h = dict(headers)
        if ctype:
            h["Content-Type"] = ctype
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data) if data else None

    return req


def run_job(node_json, module, inputs, fuel):
    """Submits one task per input and waits until the job ends."""
    req = api(node_json)
    m = req("PUT", "/v1/content", open(module, "rb").read())
    spec_inputs = []
    for k, data in enumerate(inputs):
        c = req("PUT", "/v1/content", data)
        spec_inputs.append({"name": f"t{k}", "id": c["id"], "size": c["size"], "estimate": fuel // 10})
    spec = {"module": m["id"], "module_size": m["size"], "inputs": spec_inputs, "fuel": fuel,
            "memory": 64 << 20, "deadline_ms": 600_000, "max_price_micros": 1_000_000,
            "replicas": 1, "seed": int(time.time())}
    job = req("POST", "/v1/jobs", json.dumps({"spec": spec, "dry_run": False}), "application/json")
    while True:
        s = req("GET", f"/v1/jobs/{job['id']}?wait_ms=10000&tasks=false")
        if s["state"] in ("done", "failed", "cancelled"):
            if s["state"] != "done":
                print(f"  the job ended {s['state']}: {s.get('error')}", file=sys.stderr)
            return s["state"]


def wait_for(path, seconds):
    deadline = time.time() + seconds
    while not os.path.exists(path):
        if time.time() > deadline:
            sys.exit(f"{path} did not appear within {seconds} s")
        time.sleep(0.5)


def callgrind_functions(out, binary):
    """Instructions run per function of `binary`, from a callgrind file
    (names compressed as `fn=(id) name`, costs as `line cost` lines)."""
    names, objs, obj_of, cost = {}, {}, {}, Counter()
    define = re.compile(r"^(c?fn|c?ob)=\((\d+)\)(?: (.*))?$")
    ob = fn = None
    after_calls = False
    for line in open(out, errors="replace"):
        line = line.rstrip("\n")
        m = define.match(line)
        if m:
            kind, i, name = m.group(1), int(m.group(2)), m.group(3)
            if kind.endswith("fn"):
                if name is not None:
                    names[i] = name
                if kind == "fn":
                    fn = i
                    obj_of[i] = ob
            else:
                if name is not None:
                    objs[i] = name
                if kind == "ob":
                    ob = i
            continue
        if line.startswith("calls="):
            after_calls = True  # the next cost line is the call's, inclusive
            continue
        if line[:1].isdigit() or line[:1] in "+-*":
            if after_calls:
                after_calls = False
                continue
            parts = line.split()
            if len(parts) >= 2 and fn is not None and parts[1].isdigit():
                cost[fn] += int(parts[1])
    real = os.path.realpath(binary)
    return [(c, names[f]) for f, c in cost.items()
            if c > 0 and f in names and os.path.realpath(objs.get(obj_of.get(f), "")) == real]


HASH = re.compile(r"17h[0-9a-f]{16}E$")
MAX_TWINS = 2


def twins(names, others):
    """`names` with, after each that an `others` binary lacks, that binary's
    functions that differ from it only in the hash (a legacy symbol's
    `17h…E`): the same function built with other features."""
    out, seen = [], set()
    extra = {n: [] for n in names}
    for other in others:
        nm = subprocess.run(["nm", "--defined-only", other], capture_output=True, text=True, check=True)
        has, by_path = set(), {}
        for line in nm.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tTwW":
                has.add(parts[2])
                by_path.setdefault(HASH.sub("", parts[2]), []).append(parts[2])
        for n in names:
            same = by_path.get(HASH.sub("", n), [])
            # A path many functions share is a generic one, instantiated
            # for types of their own: not this function's twin.
            if n not in has and HASH.search(n) and len(same) <= MAX_TWINS:
                extra[n] += same
    for name in names:
        for n in [name] + extra[name]:
            if n not in seen:
                seen.add(n)
                out.append(n)
    return out


def main():
    args = sys.argv[1:]
    others = []
    while "--also" in args:
        i = args.index("--also")
        if i + 1 == len(args):
            sys.exit("--also names a binary: --also target/release/agora")
        others.append(args[i + 1])
        del args[i : i + 2]
    binary = args[0] if args else os.path.join(TARGET, "release", "agora")
    testnet = os.path.join(TARGET, "release", "agora-testnet")
    for tool, hint in (("valgrind", "Debian's valgrind"),):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool} ({hint})")
    for f, hint in [(o, "build it, or leave out --also") for o in others] + [(binary, "cargo build --release -p agora-node --bin agora --features fault-injection"),
                    (testnet, "cargo build --release -p agora-testnet"),
                    (os.path.join(EXAMPLES, "noop.wasm"), "cargo build --release --target wasm32-wasip1 in examples/")]:
        if not os.path.exists(f):
            sys.exit(f"no {f}: build it first ({hint})")
    work = tempfile.mkdtemp(prefix="agora-order-")
    env = dict(os.environ, AGORA_BIN=binary)
    up = subprocess.Popen([testnet, "up", "--nodes", "2", "--dir", os.path.join(work, "net"), "--json"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    node = None
    try:
        lines = [up.stdout.readline() for _ in range(2)]
        if not all(lines):
            sys.exit(f"the testnet did not start: run `{testnet} up --nodes 2` to see why")
        nodes = [json.loads(line) for line in lines]
        # The third node joins as node 1 did: same bootstrap, issuer, settings.
        args = open(f"/proc/{nodes[1]['pid']}/cmdline", "rb").read().split(b"\0")[1:-1]
        args = [a.decode() for a in args]
        data_dir = os.path.join(work, "net", "node-callgrind")
        args[args.index("--data-dir") + 1] = data_dir
        out = os.path.join(work, "callgrind.out")
        node = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no",
                                 f"--callgrind-out-file={out}", binary] + args,
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "valgrind.log"), "w"))
        print("a node starts under callgrind (about a minute)...", file=sys.stderr)
        wait_for(os.path.join(data_dir, "node.json"), 600)
        time.sleep(20)  # its adverts reach node 0
        node0 = os.path.join(nodes[0]["data_dir"], "node.json")
        mine = os.path.join(data_dir, "node.json")
        primes = os.path.join(EXAMPLES, "primes.wasm")
        print("provides: no-op and primes tasks from node 0...", file=sys.stderr)
        run_job(node0, os.path.join(EXAMPLES, "noop.wasm"), [f"{k}\n".encode() for k in range(1500)], 10_000_000)
        if os.path.exists(primes):
            run_job(node0, primes, [json.dumps({"lo": k * 100_000, "hi": (k + 1) * 100_000}).encode() for k in range(12)], 1_000_000_000)
        print("requests: a job of its own...", file=sys.stderr)
        run_job(mine, os.path.join(EXAMPLES, "noop.wasm"), [f"{k}\n".encode() for k in range(100)], 10_000_000)
        time.sleep(5)
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=300)
        node = None
        funcs = callgrind_functions(out, binary)
        funcs.sort(key=lambda cf: -cf[0])
        names = twins([name for _, name in funcs], others)
        dest = os.path.join(ROOT, "node", "agora.order")
        with open(dest, "w") as f:
            f.write("".join(name + "\n" for name in names))
        print(f"{dest}: {len(funcs)} functions run, {len(names)} names", file=sys.stderr)
    finally:
        if node is not None:
            node.kill()
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            up.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
