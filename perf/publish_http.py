#!/usr/bin/env python3
"""POST /publish over one keep-alive connection: N requests of B messages
each, sequentially, against a roomcast server on loopback. Prints requests
and messages per second and, with --server-pid, the server's CPU time per
request and per message (utime+stime of all its threads, from /proc).

    python3 perf/publish_http.py --port 8080 --token "$T" --requests 2000 --batch 1 --server-pid $SP

With --connections K, K keep-alive connections (one thread each) share the
requests, each sending its next request once the last was answered. Every
request's latency (send to full response) gives the p50 and p99 reported.

Start the server with `--publish-rate 0` (or give the token a `rate` of 0):
otherwise requests past 1,000 messages per second are answered 429.

Only loopback addresses are accepted; the run is bounded by --requests."""

import argparse
import http.client
import ipaddress
import json
import os
import statistics
import sys
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def body(batch, n):
    message = {"room": f"bench-{n % 16}", "event": "bench:tick", "data": {"n": n}}
    if batch == 1:
        return json.dumps(message)
    return json.dumps({"messages": [dict(message, data={"n": n, "i": i}) for i in range(batch)]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token", required=True, help="a token whose pub claim covers bench-*")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=1, help="messages per request (1: single form)")
    ap.add_argument("--connections", type=int, default=1, help="keep-alive connections in parallel")
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        sys.exit("publish_http.py: only loopback targets")
    if not 1 <= args.requests <= 1_000_000 or not 1 <= args.batch <= 1000:
        sys.exit("publish_http.py: --requests 1..1000000, --batch 1..1000")
    if not 1 <= args.connections <= 256:
        sys.exit("publish_http.py: --connections 1..256")

    bodies = [body(args.batch, n).encode() for n in range(min(args.requests, 256))]
    headers = {"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"}
    latencies, failures = [], []

    def send(first):
        conn = http.client.HTTPConnection(args.host, args.port, timeout=10)
        mine = []
        for n in range(first, args.requests, args.connections):
            sent = time.monotonic()
            conn.request("POST", "/publish", body=bodies[n % len(bodies)], headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            mine.append(time.monotonic() - sent)
            if resp.status != 200:
                failures.append(f"request {n}: {resp.status} {payload[:200]!r}")
                break
        conn.close()
        latencies.extend(mine)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(args.connections)]
    cpu0 = cpu_seconds(args.server_pid) if args.server_pid else None
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    if failures:
        sys.exit(f"publish_http.py: {failures[0]}")
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    result = {
        "requests": args.requests,
        "batch": args.batch,
        "seconds": round(elapsed, 3),
        "requests_per_s": round(args.requests / elapsed),
        "messages_per_s": round(args.requests * args.batch / elapsed),
        "connections": args.connections,
        "p50_ms": round(cuts[49] * 1000, 3),
        "p99_ms": round(cuts[98] * 1000, 3),
    }
    if cpu0 is not None:
        cpu = cpu_seconds(args.server_pid) - cpu0
        result["server_cpu_us_per_request"] = round(cpu * 1e6 / args.requests, 2)
        result["server_cpu_us_per_message"] = round(cpu * 1e6 / (args.requests * args.batch), 3)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")


if __name__ == "__main__":
    main()
