#!/usr/bin/env python3
"""Tables (medians over runs) from perf/api.sh's raw JSON lines.

    python3 perf/api_report.py perf/results/api-<timestamp>.jsonl [...]
"""

import json
import statistics
import sys

rows = [json.loads(l) for path in sys.argv[1:] for l in open(path) if l.strip()]
print("raw: " + ", ".join(sys.argv[1:]))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def span(xs):
    xs = [x for x in xs if x is not None]
    return f"{min(xs):.3f}-{max(xs):.3f}" if xs else "-"


lat = [r for r in rows if r.get("mode") == "latency"]
if lat:
    print("\n| config | call | calls per run | p50 ms | p99 ms | max ms (worst run) | runs | wrong counts | missingNodes |")
    print("|---|---|---|---|---|---|---|---|---|")
    for config in ("single", "cluster-local", "cluster-cross"):
        rs = [r for r in lat if r["config"] == config]
        if not rs:
            continue
        for call in ("subscribe", "disconnect"):
            k = f"{call}_ms"
            p50s = [r[k]["p50"] for r in rs]
            p99s = [r[k]["p99"] for r in rs]
            print(f"| {config} | {call} | {rs[0][k]['n']} | {med(p50s):.3f} ({span(p50s)}) | "
                  f"{med(p99s):.3f} ({span(p99s)}) | {max(r[k]['max'] for r in rs):.2f} | {len(rs)} | "
                  f"{sum(r['wrong_counts'][call] for r in rs)} | {sum(r['missing_nodes_replies'] for r in rs)} |")

rooms = [r for r in rows if r.get("mode") == "rooms"]
if rooms:
    print("\n| figure | median of runs | runs |")
    print("|---|---|---|")
    def line(name, xs, fmt="{:.1f}"):
        print(f"| {name} | {fmt.format(med(xs))} | {', '.join(fmt.format(x) for x in xs)} |")
    line("rooms with members (info, both nodes)", [sum(n["rooms"] for n in r["info"]["nodes"]) for r in rooms], "{:,.0f}")
    line("setup: 100,000 room:join (s)", [r["setup_seconds"] for r in rooms])
    line("`rooms` reply p50 (ms)", [r["reply_ms"]["p50"] for r in rooms])
    line("`rooms` reply p99 (ms)", [r["reply_ms"]["p99"] for r in rooms])
    line("`rooms` reply size (bytes)", [r["reply_bytes"]["median"] for r in rooms], "{:,.0f}")
    line("entries in the reply", [r["entries"]["median"] for r in rooms], "{:,.0f}")
    line("replies with truncated: true", [r["truncated_replies"] for r in rooms], "{:.0f}")
    line("`rooms` with a pattern matching 100 rooms, p50 (ms)", [r["pattern_100_reply_ms"]["p50"] for r in rooms])
    threads = sorted({k.split("/", 1)[1] for r in rooms for k in r["server_cpu_ms_per_call"]})
    for node, idx in (("A (called)", 0), ("B", 1)):
        for t in threads:
            xs = []
            for r in rooms:
                pids = sorted({k.split("/")[0] for k in r["server_cpu_ms_per_call"]}, key=int)
                if idx < len(pids):
                    xs.append(r["server_cpu_ms_per_call"].get(f"{pids[idx]}/{t}", 0.0))
            line(f"server CPU per call, node {node} {t} (ms)", xs, "{:.2f}")

for r in rows:
    if r.get("mode") != "contend":
        continue
    print(f"\n{r['config']}: rooms calls every {r['interval']} s; bench: {r['bench'].split(' bench ', 1)[1]}")
    print("| rep | condition | rooms calls | rooms reply p50 ms | delivery p50 ms | delivery p99 ms | deliveries/s | lost | server CPU µs/delivery |")
    print("|---|---|---|---|---|---|---|---|---|")
    for x in r["runs"]:
        lu = x["latency_us"] or {}
        rr = x["rooms_reply_ms"] or {}
        print(f"| {x['rep']} | {x['cond']} | {x['rooms_calls']} | {rr.get('p50') or 0:.1f} | "
              f"{lu.get('p50', 0) / 1000:.2f} | {lu.get('p99', 0) / 1000:.2f} | "
              f"{x['messages_per_second'] or 0:,.0f} | {x['lost']} | {x['server_cpu_us_per_message']} |")
        if x["cond"] == "close":
            print(f"(close: the member connections on {x.get('closed_on', 'all')} reset {x['closed_after_s']} s after the bench started; "
                  f"their rooms gone after {x['seconds_until_no_rooms']} s)")
    m = r["median_ms"]
    print(f"median p99: idle {m['idle']['p99']:.2f} ms, rooms {m['rooms']['p99']:.2f} ms; "
          f"p99 ratio per pair {', '.join(f'{x:.2f}' for x in r['p99_ratio_per_rep'])}; "
          f"median ratio {r['p99_ratio_median']:.2f}")
