#!/usr/bin/env python3
"""Writes node/agora.order: the functions a node runs, those it runs while
idle first.

    testnet/symbol-order.py [AGORA_BIN ...] [--also OTHER_BIN ...]

A release `agora` binary links its functions in the order this file lists
them (node/build.rs passes it to the linker). Most of an idle node's
resident memory is pages of its own code: the kernel maps a neighbourhood
of pages around each one a process touches (a whole page-cache folio, up
to 128 KB or more on recent kernels), and with the code a node runs spread
over the whole 29 MB of `.text`, a node held ~60 % of it resident. An idle
node also drops its mappings of the binary (node/src/memory.rs) and maps
again only what it then runs: laid out apart from the rest, that code is a
few folios.

The list comes from the real binary at work: a testnet of two nodes
(`agora-testnet up`), a third node joining it under valgrind's callgrind,
which starts (calibration, first compile), idles, provides (a job of no-op
and primes tasks from node 0) and requests (a job of its own), idles again,
then stops; callgrind's profile is dumped at each change of phase. The
functions run while idle come first, then those run at work, then the
rest (start-up, compiling, stopping), each group by instructions run.
Names the next build no longer has are skipped by the linker, so a stale
list costs memory, never correctness; run this again after dependency
updates. A build with other features names the node's own functions, and
generic ones instantiated with its types, with other hashes: give each
build to profile (the testnet's, `cargo build --release -p agora-node --bin
agora --features fault-injection`, the default; and the plain `cargo build
--release -p agora-node` a device owner runs, copied elsewhere first, as
the two share a path), and the list holds each one's idle functions, then
each one's work, then the rest. `--also` a build not profiled lists its
names of the profiled functions where they can be told apart. Needs
valgrind, the testnet's `agora-testnet` built, and the examples
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
    # callgrind marks a recursive call's level (`name'2`) and names code
    # without a symbol by its address (`0x…`).
    return [(c, RECURSION.sub("", names[f])) for f, c in cost.items()
            if c > 0 and f in names and not names[f].startswith("0x")
            and os.path.realpath(objs.get(obj_of.get(f), "")) == real]


RECURSION = re.compile(r"'\d+$")


IDLE_SECONDS = 30


def dump(pid, phase):
    """Has callgrind write what the node ran since the last dump."""
    subprocess.run(["callgrind_control", f"--dump={phase}", str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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
    binaries = args or [os.path.join(TARGET, "release", "agora")]
    testnet = os.path.join(TARGET, "release", "agora-testnet")
    for tool, hint in (("valgrind", "Debian's valgrind"),):
        if shutil.which(tool) is None:
            sys.exit(f"needs {tool} ({hint})")
    for f, hint in [(o, "build it, or leave out --also") for o in others] + \
                   [(b, "cargo build --release -p agora-node --bin agora --features fault-injection") for b in binaries] + \
                   [(testnet, "cargo build --release -p agora-testnet"),
                    (os.path.join(EXAMPLES, "noop.wasm"), "cargo build --release --target wasm32-wasip1 in examples/")]:
        if not os.path.exists(f):
            sys.exit(f"no {f}: build it first ({hint})")
    # Each binary's idle group, then each one's work, then the rest: a
    # build skips the other's names, and finds its own in the same order.
    profiles = []
    for binary in binaries:
        print(f"{binary}:", file=sys.stderr)
        profiles.append(profile(binary, testnet))
    funcs, listed = [], set()
    for phase in range(3):
        for groups in profiles:
            funcs += [n for n in groups[phase] if n not in listed]
            listed.update(groups[phase])
    names = twins(funcs, others)
    dest = os.path.join(ROOT, "node", "agora.order")
    with open(dest, "w") as f:
        f.write("".join(name + "\n" for name in names))
    print(f"{dest}: {len(funcs)} functions run, {len(names)} names", file=sys.stderr)


def profile(binary, testnet):
    """The functions of `binary` run while idle, at work and otherwise, each
    list by instructions run."""
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
        # Under another name the node compiles modules in its own process
        # (node::Options::new), not in an `agora compile-worker` child that
        # valgrind does not run: such a child would see the CPU's own
        # features, which valgrind's do not match, and its artifact would
        # not load in the node.
        profiled = os.path.join(work, "agora-profiled")
        try:
            os.link(binary, profiled)
        except OSError:
            shutil.copy2(binary, profiled)
        node = subprocess.Popen(["valgrind", "--tool=callgrind", "--demangle=no",
                                 f"--callgrind-out-file={out}", profiled] + args,
                                stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "valgrind.log"), "w"))
        print("a node starts under callgrind (about a minute)...", file=sys.stderr)
        wait_for(os.path.join(data_dir, "node.json"), 600)
        time.sleep(20)  # its adverts reach node 0
        node0 = os.path.join(nodes[0]["data_dir"], "node.json")
        mine = os.path.join(data_dir, "node.json")
        noop = os.path.join(EXAMPLES, "noop.wasm")
        primes = os.path.join(EXAMPLES, "primes.wasm")
        # A node compiles a module the first time it runs it, in a worker
        # process (this one in its own, see above): the first tasks of
        # each module go with the start-up, so that the compiler's code
        # is not counted as work.
        print("compiles the modules...", file=sys.stderr)
        run_job(node0, noop, [f"{k}\n".encode() for k in range(200)], 10_000_000)
        if os.path.exists(primes):
            run_job(node0, primes, [json.dumps({"lo": 0, "hi": 1000}).encode() for _ in range(12)], 1_000_000_000)
        time.sleep(10)  # the payments settle
        dump(node.pid, "start")
        print(f"idles for {IDLE_SECONDS} s...", file=sys.stderr)
        time.sleep(IDLE_SECONDS)
        dump(node.pid, "idle")
        print("provides: no-op and primes tasks from node 0...", file=sys.stderr)
        run_job(node0, noop, [f"{k}\n".encode() for k in range(1500)], 10_000_000)
        if os.path.exists(primes):
            run_job(node0, primes, [json.dumps({"lo": k * 100_000, "hi": (k + 1) * 100_000}).encode() for k in range(12)], 1_000_000_000)
        print("requests: a job of its own...", file=sys.stderr)
        run_job(mine, noop, [f"{k}\n".encode() for k in range(100)], 10_000_000)
        time.sleep(10)  # the payments settle
        dump(node.pid, "work")
        print(f"idles for {IDLE_SECONDS} s again...", file=sys.stderr)
        time.sleep(IDLE_SECONDS)
        dump(node.pid, "idle")
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=300)
        node = None
        # One file per dump, in order (`callgrind.out.1`…), then the last
        # one (`callgrind.out`, at the stop).
        phases = ["start", "idle", "work", "idle"]
        dumps = sorted((f for f in os.listdir(work) if f.startswith("callgrind.out.")),
                       key=lambda f: int(f.rsplit(".", 1)[1]))
        if len(dumps) != len(phases):
            sys.exit(f"callgrind wrote {len(dumps)} dumps, not {len(phases)}: see {work}/valgrind.log")
        runs = []
        for f in dumps + ["callgrind.out"]:
            run = Counter()
            for c, name in callgrind_functions(os.path.join(work, f), profiled):
                run[name] += c
            runs.append(run)
        start, idle1, work_, idle2, stop = runs
        # Idle is what ran in both idle windows: the tail of a job (late
        # payments, a checkpoint) may spill into one.
        idle = Counter({n: idle1[n] + idle2[n] for n in idle1.keys() & idle2.keys()})
        groups, listed = [], set()
        for phase, counts in (("idle", idle), ("work", work_ + idle1 + idle2), ("rest", start + stop)):
            group = [name for name, _ in counts.most_common() if name not in listed]
            listed.update(group)
            groups.append(group)
            print(f"  run at {phase}: {len(group)} functions", file=sys.stderr)
        return groups
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
