#!/usr/bin/env python3
"""Classic PUBLISH against sharded SPUBLISH on a running Redis Cluster.

Python 3 stdlib only (raw RESP over sockets). Channels are chosen so each
master owns the same number of them; every channel has one subscriber
connection on the master that owns its slot, and every message is sent to
that master too, so both modes see the same commands on the same sockets and
differ only in what Redis does with a publish: a classic PUBLISH in a cluster
is also sent over the cluster bus to every other node, an SPUBLISH stays on
its shard.

Each mode publishes --messages messages round-robin over the channels, in
pipelined batches; after each batch the subscribers are read until they have
every message of it, so no output buffer grows without bound. Redis CPU is
the sum of utime + stime of every redis-server (/proc/PID/stat, clock ticks,
and getrusage from INFO cpu, to the microsecond) over the mode's window, less
the idle rate measured just before. The messages each master handled come
from its INFO commandstats (publishes it executed) and CLUSTER INFO
(publishes it received over the bus). Modes alternate run by run; one JSON
line per mode and run.

  python3 perf/cluster_pubsub.py --ports 7001,7002,7003 --pids 11,12,13 \
      --messages 100000 --runs 5 --channels 30 --size 64
"""

import argparse
import json
import os
import socket
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def crc16(data):
    """CRC16-CCITT (XMODEM), the hash of Redis Cluster's key slots."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot_of(key):
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16(raw) % 16384


def command(*args):
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class Conn:
    """A blocking RESP connection for setup and statistics calls."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b"-"):
            if kind == b"-":
                raise RuntimeError(rest.decode())
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind in (b"*", b">"):
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RuntimeError(f"unexpected RESP {line!r}")

    def call(self, *args):
        self.sock.sendall(command(*args))
        return self.reply()

    def info(self, section):
        text = self.call("INFO", section).decode()
        return dict(l.split(":", 1) for l in text.splitlines() if ":" in l and not l.startswith("#"))


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def rusage_seconds(conns):
    """Each redis-server's CPU seconds (getrusage, from INFO cpu)."""
    out = []
    for c in conns:
        i = c.info("cpu")
        out.append(float(i["used_cpu_user"]) + float(i["used_cpu_sys"]))
    return out


def handled(conn):
    """What one master has handled so far: publishes executed, bus messages."""
    stats = conn.info("commandstats")
    calls = lambda name: int(dict(kv.split("=") for kv in stats.get(f"cmdstat_{name}", "calls=0").split(","))["calls"])
    cluster = dict(l.split(":", 1) for l in conn.call("CLUSTER", "INFO").decode().splitlines() if ":" in l)
    bus = lambda key: int(cluster.get(key, 0))
    return {
        "publish_calls": calls("publish"),
        "spublish_calls": calls("spublish"),
        "bus_publish_received": bus("cluster_stats_messages_publish_received"),
        "bus_publish_sent": bus("cluster_stats_messages_publish_sent"),
        "bus_publishshard_received": bus("cluster_stats_messages_publishshard_received"),
        "bus_publishshard_sent": bus("cluster_stats_messages_publishshard_sent"),
        "bus_received_total": bus("cluster_stats_messages_received"),
        "bus_sent_total": bus("cluster_stats_messages_sent"),
    }


def owners(conn, ports):
    """Slot ranges to the index (in `ports`) of the master that owns them."""
    ranges = []
    for entry in conn.call("CLUSTER", "SLOTS"):
        port = int(entry[2][1])
        ranges.append((int(entry[0]), int(entry[1]), ports.index(port)))
    return ranges


def pick_channels(ranges, masters, per_master):
    """Channel names spread over the slots, the same number per master."""
    chosen = [[] for _ in range(masters)]
    i = 0
    while any(len(c) < per_master for c in chosen):
        name = f"bench:room:{i}"
        slot = slot_of(name)
        owner = next(o for lo, hi, o in ranges if lo <= slot <= hi)
        if len(chosen[owner]) < per_master:
            chosen[owner].append(name)
        i += 1
    return chosen


def drain(subs, marker, want, deadline):
    """Reads the subscriber sockets until they have `want` more messages."""
    got = 0
    keep = len(marker) - 1
    while got < want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"subscribers got {got} of {want} messages")
        for s in subs:
            try:
                chunk = s["sock"].recv(1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                raise ConnectionError("a subscriber was closed")
            data = s["tail"] + chunk
            got += data.count(marker)
            # A marker split over two reads is counted once, with the next read.
            s["tail"] = data[-keep:] if not data.endswith(marker) else b""
    return got


def run_mode(mode, masters, pubs, subs, channels, args, pids):
    verb, marker = ("PUBLISH", b"$7\r\nmessage\r\n") if mode == "classic" else ("SPUBLISH", b"$8\r\nsmessage\r\n")
    payload = b"x" * args.size
    flat = [(owner, ch) for owner, names in enumerate(channels) for ch in names]
    order = [flat[i % len(flat)] for i in range(len(flat) * args.interleave)]
    # Idle rate first (cluster bus heartbeats, cron), over the same kind of window.
    t0, r0, k0 = time.monotonic(), rusage_seconds(masters), cpu_ticks(pids)
    time.sleep(args.idle)
    t1, r1, k1 = time.monotonic(), rusage_seconds(masters), cpu_ticks(pids)
    idle_each = [(b - a) / (t1 - t0) for a, b in zip(r0, r1)]
    idle_r, idle_k = sum(idle_each), (k1 - k0) / (t1 - t0)
    before = [handled(m) for m in masters]
    t0, r0, k0 = time.monotonic(), rusage_seconds(masters), cpu_ticks(pids)
    sent = received = 0
    while sent < args.messages:
        batch = min(args.batch, args.messages - sent)
        out = [[] for _ in masters]
        for i in range(batch):
            owner, ch = order[(sent + i) % len(order)]
            out[owner].append(command(verb, ch, payload))
        expected = [len(o) for o in out]
        for owner, cmds in enumerate(out):
            if cmds:
                pubs[owner].sock.sendall(b"".join(cmds))
        for owner, n in enumerate(expected):
            for _ in range(n):
                if pubs[owner].reply() != 1:
                    raise RuntimeError(f"{verb} reached no subscriber")
        received += drain(subs, marker, batch, time.monotonic() + 30)
        sent += batch
    publish_s = time.monotonic() - t0
    # The bus forwards asynchronously: the window ends once no master's
    # counts move any more (bounded), so the other masters' work is in it.
    after = [handled(m) for m in masters]
    for _ in range(40):
        time.sleep(0.05)
        now = [handled(m) for m in masters]
        if now == after:
            break
        after = now
    t1, r1, k1 = time.monotonic(), rusage_seconds(masters), cpu_ticks(pids)
    window = t1 - t0
    per_master = [{k: a[k] - b[k] for k in a} for a, b in zip(after, before)]
    busy_each = [(b - a) - i * window for a, b, i in zip(r0, r1, idle_each)]
    busy_r = sum(busy_each)
    busy_k = ((k1 - k0) - idle_k * window) / TICKS
    return {
        "mode": mode,
        "command": verb,
        "messages": sent,
        "received": received,
        "channels": len(flat),
        "size": args.size,
        "window_s": window,
        "batch": args.batch,
        "messages_per_second": sent / publish_s,
        "redis_cpu_us_per_message": busy_r * 1e6 / sent,
        "redis_cpu_us_per_message_proc_stat": busy_k * 1e6 / sent,
        "redis_idle_cpu_per_second": idle_r,
        "redis_cpu_us_per_message_per_master": [b * 1e6 / sent for b in busy_each],
        # Publishes a master executed plus those the bus brought it.
        "handled_per_master": [
            m["publish_calls"] + m["spublish_calls"] + m["bus_publish_received"] + m["bus_publishshard_received"]
            for m in per_master
        ],
        "per_master": per_master,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ports", required=True, help="the masters' client ports, comma-separated")
    p.add_argument("--pids", required=True, help="every redis-server's PID, comma-separated")
    p.add_argument("--messages", type=int, default=100000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--channels", type=int, default=30, help="spread evenly over the masters")
    p.add_argument("--size", type=int, default=64, help="payload bytes")
    p.add_argument("--batch", type=int, default=300, help="messages pipelined before reading")
    p.add_argument("--interleave", type=int, default=1)
    p.add_argument("--idle", type=float, default=2.0, help="seconds of idle CPU measured before each mode")
    p.add_argument("--modes", default="classic,sharded")
    args = p.parse_args()
    ports = [int(x) for x in args.ports.split(",")]
    pids = [int(x) for x in args.pids.split(",")]
    masters = [Conn(port) for port in ports]
    channels = pick_channels(owners(masters[0], ports), len(ports), max(args.channels // len(ports), 1))
    pubs = [Conn(port) for port in ports]
    subs = []
    for mode in args.modes.split(","):
        verb = "SUBSCRIBE" if mode == "classic" else "SSUBSCRIBE"
        for owner, names in enumerate(channels):
            for ch in names:
                c = Conn(ports[owner])
                c.call(verb, ch)
                c.sock.setblocking(False)
                subs.append({"mode": mode, "sock": c.sock, "tail": b""})
    for run in range(1, args.runs + 1):
        for mode in args.modes.split(","):
            r = run_mode(mode, masters, pubs, [s for s in subs if s["mode"] == mode], channels, args, pids)
            r["run"] = run
            print(json.dumps(r), flush=True)
            print(f"cluster-pubsub: run {run}, {mode}: {r['redis_cpu_us_per_message']:.2f} µs/message, "
                  f"handled per master {r['handled_per_master']}", file=sys.stderr)


if __name__ == "__main__":
    main()
