#!/usr/bin/env python3
"""Prints the median (and its 95% interval) of every criterion benchmark
found under TARGET/criterion/*/**/new/estimates.json, plus throughput when
criterion recorded one. Python 3 stdlib only.

    perf/criterion_medians.py [target]
"""
import json
import os
import sys


def fmt_ns(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3f} {unit}"
    return f"{ns:.2f} ns"


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target")
    root = os.path.join(target, "criterion")
    rows = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        bench = {}
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                bench = json.load(f)
        except OSError:
            pass
        name = bench.get("full_id") or os.path.relpath(os.path.dirname(dirpath), root)
        med = est["median"]
        thr = ""
        tp = bench.get("throughput") or {}
        if "Bytes" in tp:
            thr = f"{tp['Bytes'] / med['point_estimate'] * 1e9 / 2**30:.2f} GiB/s"
        elif "BytesDecimal" in tp:
            thr = f"{tp['BytesDecimal'] / med['point_estimate']:.2f} GB/s"
        elif "Elements" in tp:
            thr = f"{tp['Elements'] / med['point_estimate'] * 1e3:.2f} M elem/s"
        ci = med["confidence_interval"]
        rows.append((name, fmt_ns(med["point_estimate"]),
                     f"{fmt_ns(ci['lower_bound'])} - {fmt_ns(ci['upper_bound'])}", thr))
    rows.sort()
    print("| benchmark | median | 95% CI of median | throughput at median |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
