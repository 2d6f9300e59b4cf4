"""Helpers for perf/hooks.sh.

  hooks_util.py threads PID        one JSON object: {thread name: CPU ns},
                                   from /proc/PID/task/*/schedstat (ns
                                   resolution), threads of one name summed,
                                   and "total"
  hooks_util.py report FILE        the tables of a perf/hooks.sh run (JSONL)
"""
import glob
import json
import statistics
import sys


def threads(pid):
    out = {}
    for task in glob.glob(f"/proc/{pid}/task/*"):
        try:
            name = open(f"{task}/comm").read().strip()
            ns = int(open(f"{task}/schedstat").read().split()[0])
        except OSError:
            continue
        out[name] = out.get(name, 0) + ns
    out["total"] = sum(out.values())
    return out


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x):
    return f"{x:.0f}" if abs(x) >= 1000 else f"{x:.4g}"


def cell(v):
    return f"{fmt(med(v))} ({rng(v)})" if med(v) is not None else "-"


def rng(xs):
    xs = [x for x in xs if x is not None]
    return f"{fmt(min(xs))}-{fmt(max(xs))}" if xs else "-"


def table(title, header, groups, keys):
    """One markdown table: a row per (label, runs) group, the median and
    min-max of each key over the group's runs."""
    print(f"## {title}")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for label, rs in groups:
        if rs:
            cols = [[r.get(k) for r in rs] for k in keys]
            print(f"| {label} | {len(rs)} | " + " | ".join(cell(v) for v in cols) + " |")


def pair_ratios(rows, base, test, keys):
    """test/base per key within each pair, and the median of those."""
    ratios = {k: [] for k in keys}
    for p in sorted({r["pair"] for r in rows}):
        a = [r for r in rows if r["pair"] == p and r["mode"] == base]
        b = [r for r in rows if r["pair"] == p and r["mode"] == test]
        for k in keys:
            if a and b and a[0][k]:
                ratios[k].append(round(b[0][k] / a[0][k], 3))
    for k, v in ratios.items():
        if v:
            print(f"{test}/{base} {k}: median of pair ratios {med(v):.3g} (pairs {v})")
    print()


def shards_us(r, per):
    n = r[per]
    return round(sum(v for k, v in r["threads_us"].items() if k.startswith("shard")) / n, 3) if n else None


def report(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    pub = [r for r in rows if r["part"] == "publish"]
    for r in pub:
        r["shards_us_per_msg"] = shards_us(r, "sent")
    if pub:
        table("publish proxy: fan-out at a fixed rate, proxy off/on alternated",
              ["mode", "runs", "sent", "p50 us", "p99 us", "server CPU us/msg",
               "shards us/msg", "hooks thread us/msg", "backend CPU us/msg"],
              [(m, [r for r in pub if r["mode"] == m]) for m in ("off", "on")],
              ["sent", "p50", "p99", "cpu_us_per_msg", "shards_us_per_msg", "hooks_us_per_msg",
               "backend_us_per_msg"])
        pair_ratios(pub, "off", "on", ["p50", "p99", "cpu_us_per_msg"])
    wh = [r for r in rows if r["part"] == "webhook"]
    for r in wh:
        r["shards_us_per_msg"] = shards_us(r, "sent")
    if wh:
        keys = sorted({(r["mode"], r["rate"]) for r in wh}, key=lambda k: (k[1], k[0]))
        table("webhook room.message (rate 0: as fast as the bench goes)",
              ["mode, offered rate", "runs", "msgs/s sent", "events/s delivered",
               "server CPU us/msg", "shards us/msg", "webhooks thread us/event",
               "backend CPU us/event", "mean batch", "dropped"],
              [(f"{m}, {rate}", [r for r in wh if (r["mode"], r["rate"]) == (m, rate)])
               for m, rate in keys],
              ["sent_per_s", "events_per_s", "cpu_us_per_msg", "shards_us_per_msg",
               "webhooks_us_per_event", "backend_us_per_event", "mean_batch", "dropped"])
        sizes = {}
        for r in wh:
            for k, v in (r.get("sizes") or {}).items():
                sizes[int(k)] = sizes.get(int(k), 0) + v
        if sizes:
            top = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
            print("batch sizes over all runs (size: batches):",
                  ", ".join(f"{k}: {v}" for k, v in top), f"(of {sum(sizes.values())} batches)")
        print()
    co = [r for r in rows if r["part"] == "connect"]
    if co:
        table("handshakes: JWT against connect proxy, alternated",
              ["mode", "runs", "handshakes/s", "server CPU us/handshake",
               "hooks thread us/handshake", "backend CPU us/handshake", "errors"],
              [(m, [r for r in co if r["mode"] == m]) for m in ("jwt", "proxy")],
              ["handshakes_per_s", "cpu_us", "hooks_us", "backend_us", "errors"])
        pair_ratios(co, "jwt", "proxy", ["handshakes_per_s", "cpu_us"])


if __name__ == "__main__":
    if sys.argv[1] == "threads":
        print(json.dumps(threads(int(sys.argv[2]))))
    elif sys.argv[1] == "report":
        report(sys.argv[2])
