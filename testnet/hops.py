#!/usr/bin/env python3
"""Where a one-task job's time goes, hop by hop, from the nodes' own logs.

Nodes started with `RUST_LOG=warn,hop=debug` log each hop of a job's path
(SPEC.md §8.2, "Orders"): the job submitted, the order sent and received,
the run queued for a blocking thread, started and ended, the receipt sent
and received (as a request, or in the order's answer for an interactive
task), and the job's waiting client answered. Run one-task jobs one
after another (the bench's latency part, or any client), then:

    testnet/hops.py REQUESTER_LOG PROVIDER_LOG [PROVIDER_LOG...]

prints the median, 90th percentile and mean of each segment in µs. Every
node must run on this machine (one clock). Jobs that overlap, or that go
through calls for offers instead of an order, are skipped.
"""

import re
import sys
from datetime import datetime

EVENT = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z.*?"
    r"(api call in|api call out|job submitted|job answered|request out [\w+]+|request in [\w+]+|answer out Ran|answer in Ran"
    r"|run queued|run starts|run ends)"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# (who, event, name of the segment that ends with it), for each way a
# receipt comes back: in the order's answer (an interactive task run at
# once, SPEC.md §8.1), or as a request of its own.
HEAD = [
    ("R", "request out Order", "requester: place, sign, to the network"),
    ("P", "request in Order", "order on the wire"),
    ("P", "run queued", "provider: admit, agree, queue the run"),
    ("P", "run starts", "blocking thread wakes"),
    ("P", "run ends", "run (instantiate, execute, hash)"),
]
PATHS = {
    "the receipt in the order's answer": HEAD + [
        ("P", "answer out Ran", "provider: sign the receipt, to the network"),
        ("R", "answer in Ran", "answer on the wire"),
        ("R", "job answered", "requester: verify, answer the client"),
    ],
    "the receipt as a request": HEAD + [
        ("P", "request out Receipt", "provider: sign the receipt, to the network"),
        ("R", "request in Receipt", "receipt on the wire"),
        ("R", "job answered", "requester: verify, answer the client"),
    ],
}
LONGEST_US = 1_000_000


def is_event(ev, who, what):
    """Whether `ev` is `what` at `who`; a request sent or received in a
    batch (`request out Order+Pay`) counts for each of its kinds."""
    if ev[1] != who:
        return False
    if not what.startswith("request "):
        return ev[2] == what
    head, _, kinds = ev[2].rpartition(" ")
    want_head, _, want_kind = what.rpartition(" ")
    return head == want_head and want_kind in kinds.split("+")


def events(path, who):
    out = []
    try:
        f = open(path, errors="replace")
    except OSError as e:
        sys.exit(f"cannot read the node log {path}: {e.strerror} (give the node.log of each node, requester first)")
    with f:
        for line in f:
            m = EVENT.search(ANSI.sub("", line))
            if m:
                t = datetime.fromisoformat(m.group(1)[:26])
                out.append((t.timestamp() * 1e6, who, m.group(2)))
    return out


def spans_of(evs, i, path):
    """The spans of `path` for the job submitted at `evs[i]`, or None."""
    t0 = evs[i][0]
    j, prev, spans = i + 1, t0, []
    for want_who, want, _ in path:
        # Another job submitted before this one's path is complete: they
        # overlap, and which event is whose cannot be told.
        while j < len(evs) and not is_event(evs[j], want_who, want):
            if (evs[j][1], evs[j][2]) == ("R", "job submitted"):
                return None
            j += 1
        if j >= len(evs):
            return None
        spans.append(evs[j][0] - prev)
        prev = evs[j][0]
    return spans if prev - t0 < LONGEST_US else None


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    evs = events(sys.argv[1], "R")
    for p in sys.argv[2:]:
        evs += events(p, "P")
    evs.sort()
    found = {name: [] for name in PATHS}
    for i, (_, who, what) in enumerate(evs):
        if who != "R" or what != "job submitted":
            continue
        for name, path in PATHS.items():
            spans = spans_of(evs, i, path)
            if spans is not None:
                found[name].append(spans)
                break
    if not any(found.values()):
        sys.exit("no complete job path found: were the nodes started with RUST_LOG=warn,hop=debug?")

    def row(name, v):
        v = sorted(v)
        p50, p90 = v[len(v) // 2], v[int(len(v) * 0.9)]
        print(f"{name:45s} {p50:7.0f} {p90:7.0f} {sum(v) / len(v):7.0f}")

    for name, jobs in found.items():
        if not jobs:
            continue
        print(f"{len(jobs)} jobs with {name}; µs: {'p50':>7s} {'p90':>7s} {'mean':>7s}")
        for k, (_, _, segment) in enumerate(PATHS[name]):
            row(segment, [spans[k] for spans in jobs])
        row("submitted to answered", [sum(spans) for spans in jobs])
    api = api_spans([e for e in evs if e[1] == "R"])
    if api:
        print(f"{len(api)} calls of POST /v1/jobs?wait_ms= at the requester; µs:")
        for k, segment in enumerate(API):
            row(segment, [spans[k] for spans in api if spans[k] is not None])


# The requester's API around each job: from the handler's start to the
# driver's submission, from the driver's answer to the handler's, and from
# the handler's answer to the next call's start (the answer's encoding,
# HTTP both ways, the client).
API = [
    "api: parse, to the driver, submit",
    "driver's answer to the handler",
    "answer out, client, next call in",
]


def api_spans(evs):
    """Per call: the three segments of `API` (the last None for the last
    call), from the requester's events in time order."""
    want = ["api call in", "job submitted", "job answered", "api call out"]
    out, k, times = [], 0, []
    for t, _, what in evs:
        if what == want[k]:
            times.append(t)
            k += 1
            if k == len(want):
                if out:
                    gap = times[0] - out[-1][3]
                    out[-1][2] = gap if gap < LONGEST_US else None
                out.append([times[1] - times[0], times[3] - times[2], None, times[3]])
                k, times = 0, []
        elif what == "api call in":
            k, times = 1, [t]
    return [o[:3] for o in out]


if __name__ == "__main__":
    main()
