#!/usr/bin/env python3
"""Tables of perf/redis-topologies.sh from its raw JSON lines (stdlib only).

  python3 perf/topologies_report.py perf/results/redis-topologies-<timestamp>.jsonl
"""

import json
import statistics
import sys


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def span(xs):
    return f"{min(xs):.2f}-{max(xs):.2f}" if xs else "-"


def groups(rows, field, keys):
    """(key, rows with that key) for each key that has rows, in order."""
    for key in keys:
        rs = [r for r in rows if r[field] == key]
        if rs:
            yield key, rs


def paired(rows, field, a, b, label, value):
    """a/b ratios of `value`, each from the same run number (side by side)."""
    by_run = lambda key: {r["run"]: r for r in rows if r[field] == key}
    ra, rb = by_run(a), by_run(b)
    runs = sorted(set(ra) & set(rb))
    if not runs:
        return
    ratios = [value(ra[n]) / value(rb[n]) for n in runs]
    print(f"{a} / {b} {label}, run by run: {', '.join(f'{x:.2f}' for x in ratios)}; median {med(ratios):.2f}")


def pubsub_table(rows):
    batches = sorted({r["batch"] for r in rows})
    print(f"\npipelined batches of {', '.join(map(str, batches))} publishes")
    print("\n| mode | Redis CPU µs/message (all 3 masters) | range | /proc/PID/stat µs/message | per master µs/message | publishes handled per master (median) | messages/s |")
    print("|---|---|---|---|---|---|---|")
    for mode, rs in groups(rows, "mode", ("classic", "sharded")):
        cpu = [r["redis_cpu_us_per_message"] for r in rs]
        each = [med([r["redis_cpu_us_per_message_per_master"][i] for r in rs]) for i in range(len(rs[0]["handled_per_master"]))]
        handled = [med([r["handled_per_master"][i] for r in rs]) for i in range(len(rs[0]["handled_per_master"]))]
        print(f"| {mode} (`{rs[0]['command']}`) | {med(cpu):.2f} | {span(cpu)} | "
              f"{med([r['redis_cpu_us_per_message_proc_stat'] for r in rs]):.2f} | "
              f"{' / '.join(f'{c:.2f}' for c in each)} | "
              f"{' / '.join(f'{h:,.0f}' for h in handled)} (of {rs[0]['messages']:,}) | "
              f"{med([r['messages_per_second'] for r in rs]):,.0f} |")
    print()
    paired(rows, "mode", "classic", "sharded", "Redis CPU per message", lambda r: r["redis_cpu_us_per_message"])


def fanout_table(rows):
    print("\n| topology | deliveries/s | server CPU µs/delivery | Redis CPU µs/room message | range | p50 ms | p99 ms | lost | out of order |")
    print("|---|---|---|---|---|---|---|---|---|")
    calls, shares, io = {}, {}, {}
    for topology, rs in groups(rows, "topology", ("standalone-base", "standalone", "cluster-1", "cluster")):
        redis = [r["redis_cpu_us_per_message"] for r in rs]
        print(f"| {topology} | {med([r['messages_per_second'] for r in rs]):,.0f} | "
              f"{med([r['server']['cpu_us_per_message'] for r in rs]):.3f} | {med(redis):.1f} | {span(redis)} | "
              f"{med([r['latency_us']['p50'] for r in rs]) / 1000:.1f} | {med([r['latency_us']['p99'] for r in rs]) / 1000:.1f} | "
              f"{sum(r['lost'] for r in rs)} | {sum(r['out_of_order'] for r in rs)} |")
        # Per run, the calls of every server together per room message; then the median.
        names = sorted({k for r in rs for s in r["redis_servers"] for k in s["calls"]})
        shares[topology] = [
            med([r["redis_servers"][i]["calls"].get("fcall", 0) / r["redis_window_messages"] for r in rs])
            for i in range(len(rs[0]["redis_servers"]))
        ]
        # Reads a server processed (one per client socket read, so per wake-up
        # and connection), all servers together, per room message.
        io[topology] = [
            med([sum(s.get("io", {}).get(k, 0) for s in r["redis_servers"]) / r["redis_window_messages"] for r in rs])
            for k in ("reads_processed", "writes_processed")
        ]
        calls[topology] = {
            k: med([sum(s["calls"].get(k, 0) for s in r["redis_servers"]) / r["redis_window_messages"] for r in rs]) for k in names
        }
    print()
    for topology, per in calls.items():
        print(f"{topology}: Redis calls per room message, all servers: "
              f"{', '.join(f'{k} {v:.2f}' for k, v in per.items() if v >= 0.01)}; "
              f"share of the FCALLs per server: {' / '.join(f'{x:.2f}' for x in shares[topology])}; "
              f"socket reads {io[topology][0]:.2f} and writes {io[topology][1]:.2f} per room message")
    paired(rows, "topology", "cluster", "standalone", "Redis CPU per room message", lambda r: r["redis_cpu_us_per_message"])
    paired(rows, "topology", "cluster", "standalone", "server CPU per delivery", lambda r: r["server"]["cpu_us_per_message"])
    paired(rows, "topology", "cluster-1", "standalone", "Redis CPU per room message", lambda r: r["redis_cpu_us_per_message"])
    paired(rows, "topology", "cluster", "cluster-1", "Redis CPU per room message", lambda r: r["redis_cpu_us_per_message"])
    paired(rows, "topology", "standalone", "standalone-base", "Redis CPU per room message", lambda r: r["redis_cpu_us_per_message"])
    paired(rows, "topology", "standalone", "standalone-base", "server CPU per delivery", lambda r: r["server"]["cpu_us_per_message"])


def main():
    rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    print(f"raw: {sys.argv[1]}")
    pubsub = [r for r in rows if r["part"] == "pubsub"]
    if pubsub:
        pubsub_table(pubsub)
    fanout = [r for r in rows if r["part"] == "fanout"]
    if fanout:
        fanout_table(fanout)


if __name__ == "__main__":
    main()
