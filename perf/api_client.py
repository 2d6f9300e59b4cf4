#!/usr/bin/env python3
"""Server API timing client for perf/api.sh (Python 3 standard library only).

Three modes, each against servers already running on 127.0.0.1:

  latency   N users, each with 1 or 2 WebSocket connections (alternating) on
            --ws-port; then --iterations times, user k % N: `subscribe` to
            room A, `subscribe` to room B, `disconnect` (all on --api-port,
            over one keep-alive HTTP connection), then the user reconnects.
            Every call is timed client-side (request written to reply fully
            read); reconnects and the draining of the WebSocket connections
            happen between calls, outside the timings.
  rooms     --conns connections spread over --ws-ports, each joining
            --rooms-per-conn distinct rooms (pipelined `room:join`), then
            --calls `rooms` calls on --api-port: reply time and size.
  contend   the setup of `rooms`, then --reps rounds of two `roomcast bench`
            fan-out runs (the same arguments), one with the API idle and one
            with `rooms` called back to back for the whole run; the order
            alternates per round. Delivery p99 of each, and their ratio.

Prints one JSON object. Loopback only; every loop is bounded by its count
and every socket read by a timeout.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import time

LINGER_RST = struct.pack("ii", 1, 0)
TIMEOUT = 10.0


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def token(secret, sub):
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps({"sub": sub, "iat": now, "exp": now + 3600, "rooms": ["*"]}).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary_ms(ns):
    ms = [v / 1e6 for v in ns]
    return {"n": len(ms), "p50": pct(ms, 50), "p90": pct(ms, 90), "p99": pct(ms, 99),
            "max": max(ms) if ms else None, "mean": statistics.fmean(ms) if ms else None}


def thread_cpu_ns(pids):
    """{"<node>/<thread name>": scheduler runtime ns} of every thread of pids."""
    out = {}
    for pid in pids:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/comm") as f:
                    name = f.read().strip()
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns = int(f.read().split()[0])
            except OSError:
                continue
            key = f"{pid}/{name}"
            out[key] = out.get(key, 0) + ns
    return out


# ------------------------------------------------------------ WebSocket ----

class WS:
    """A blocking WebSocket client connection on /ws (text frames only)."""

    def __init__(self, port, tok):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /ws?token={tok} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")
        first = json.loads(self.next_text())
        assert first["event"] == "connection:established", first
        self.conn_id = first["data"]["connId"]
        self.closed = False

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk

    def _frame(self):
        """(opcode, payload) of the next complete frame in buf, or None."""
        b = self.buf
        if len(b) < 2:
            return None
        n, off = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, off = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, off = struct.unpack(">Q", b[2:10])[0], 10
        if len(b) < off + n:
            return None
        self.buf = b[off + n:]
        return b[0] & 0x0F, b[off:off + n]

    def next_text(self):
        while True:
            f = self._frame()
            if f is None:
                self._fill()
                continue
            op, payload = f
            if op == 9:
                self._pong(payload)
            if op == 1:
                return payload
            if op == 8:
                self.closed = True
                raise ConnectionError("close frame")

    def _pong(self, payload):
        # Unanswered pings get a connection aborted after --ping-timeout.
        if not self.closed:
            self._send(0x8A, payload)

    def send_text(self, text):
        self._send(0x81, text.encode())

    def _send(self, first, data):
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack(">BB", first, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", first, 0xFE, n)
        else:
            head = struct.pack(">BBQ", first, 0xFF, n)
        masked = bytes(c ^ mask[i & 3] for i, c in enumerate(data))
        self.sock.sendall(head + mask + masked)

    def drain(self):
        """Reads what is there without waiting; frames are dropped."""
        # A socket with a timeout waits before a recv even with
        # MSG_DONTWAIT, so ask poll first.
        while select.select([self.sock], [], [], 0)[0]:
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionError:
                chunk = b""
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
        while (f := self._frame()) is not None:
            if f[0] == 9:
                self._pong(f[1])

    def close(self):
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        self.sock.close()


# ----------------------------------------------------------------- HTTP ----

class Api:
    """One keep-alive HTTP/1.1 connection for POST /api/<method>."""

    def __init__(self, port, key):
        self.port, self.key = port, key
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def call(self, method, params):
        """(status, body bytes, ns from the first byte sent to the last read)."""
        body = json.dumps(params).encode()
        req = (f"POST /api/{method} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {self.key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        t0 = time.perf_counter_ns()
        self.sock.sendall(req)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length is None:
            raise RuntimeError(f"no Content-Length: {head!r}")
        chunks, have = [rest], len(rest)
        while have < length:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("API connection closed")
            chunks.append(chunk)
            have += len(chunk)
        t1 = time.perf_counter_ns()
        data = b"".join(chunks)
        self.buf = data[length:]
        return int(head.split()[1]), data[:length], t1 - t0

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("API connection closed")
        self.buf += chunk


# -------------------------------------------------------------- latency ----

def latency(args):
    users = [f"lat{i}" for i in range(args.users)]
    toks = {u: token(args.secret, u) for u in users}
    per_user = {u: 1 + (i % 2) for i, u in enumerate(users)} if args.conns_per_user == 0 \
        else {u: args.conns_per_user for u in users}
    conns = {u: [WS(args.ws_port, toks[u]) for _ in range(per_user[u])] for u in users}
    api = Api(args.api_port, args.key)
    times = {"subscribe": [], "disconnect": []}
    reconnect_ns, wrong, missing, statuses = [], {"subscribe": 0, "disconnect": 0}, 0, {}

    def drain_all():
        for cs in conns.values():
            for c in cs:
                c.drain()

    # Warm-up: one round of calls not counted.
    for it in range(-min(args.users, 50), args.iterations):
        u = users[it % args.users]
        for method, params in (("subscribe", {"user": u, "room": "lat:a"}),
                               ("subscribe", {"user": u, "room": "lat:b"}),
                               ("disconnect", {"user": u, "code": 4000})):
            drain_all()
            status, body, ns = api.call(method, params)
            statuses[status] = statuses.get(status, 0) + 1
            result = json.loads(body).get("result", {}) if status == 200 else {}
            if it >= 0:
                times[method].append(ns)
                wrong[method] += result.get("connections") != per_user[u]
                missing += "missingNodes" in result
        t0 = time.perf_counter_ns()
        for c in conns[u]:
            c.close()
        conns[u] = [WS(args.ws_port, toks[u]) for _ in range(per_user[u])]
        reconnect_ns.append(time.perf_counter_ns() - t0)
    out = {"mode": "latency", "users": args.users,
           "connections": sum(per_user.values()), "iterations": args.iterations,
           "subscribe_ms": summary_ms(times["subscribe"]),
           "disconnect_ms": summary_ms(times["disconnect"]),
           "reconnect_ms": summary_ms(reconnect_ns),
           "wrong_counts": wrong, "missing_nodes_replies": missing,
           "statuses": {str(k): v for k, v in statuses.items()}}
    for cs in conns.values():
        for c in cs:
            c.close()
    return out


# ---------------------------------------------------------------- rooms ----

def setup_rooms(args):
    """--conns connections over --ws-ports, each in --rooms-per-conn rooms."""
    ports = [int(p) for p in args.ws_ports.split(",")]
    t0 = time.perf_counter()
    conns = []
    for i in range(args.conns):
        conns.append(WS(ports[i % len(ports)], token(args.secret, f"member{i}")))
    refused = 0
    batch = 500
    for start in range(0, args.rooms_per_conn, batch):
        stop = min(start + batch, args.rooms_per_conn)
        for i, c in enumerate(conns):
            for r in range(start, stop):
                room = f"room:{i * args.rooms_per_conn + r:07d}"
                c.send_text(json.dumps({"event": "room:join", "data": {"room": room}, "id": r}))
        for c in conns:
            acks = 0
            while acks < stop - start:
                msg = json.loads(c.next_text())
                if msg.get("event") == "ack":
                    acks += 1
                    refused += not msg.get("success")
    return conns, {"setup_seconds": time.perf_counter() - t0, "joins": args.conns * args.rooms_per_conn,
                   "refused_joins": refused}


def rooms_call(api, params=None, parse=True):
    status, body, ns = api.call("rooms", params or {})
    result = json.loads(body).get("result", {}) if status == 200 and parse else {}
    return status, len(body), ns, result


def rooms(args):
    conns, setup = setup_rooms(args)
    api = Api(args.api_port, args.key)
    rooms_call(api)  # warm-up
    ns, sizes, entries, truncated, statuses = [], [], [], 0, {}
    pids = [int(p) for p in args.server_pids.split(",")] if args.server_pids else []
    cpu_before = thread_cpu_ns(pids)
    for _ in range(args.calls):
        for c in conns:
            c.drain()
        status, size, t, result = rooms_call(api)
        statuses[status] = statuses.get(status, 0) + 1
        ns.append(t)
        sizes.append(size)
        entries.append(len(result.get("rooms", [])))
        truncated += result.get("truncated") is True
    cpu_after = thread_cpu_ns(pids)
    # Server CPU per call, per thread: how long each shard is kept busy.
    cpu_ms_per_call = {k: round((cpu_after.get(k, 0) - v) / 1e6 / args.calls, 3)
                       for k, v in cpu_before.items() if cpu_after.get(k, 0) - v > 0}
    # A pattern matching 100 rooms still scans every room of every shard.
    pat_ns, pat_entries = [], None
    for _ in range(args.calls):
        status, _, t, result = rooms_call(api, {"pattern": "room:00001*"})
        statuses[status] = statuses.get(status, 0) + 1
        pat_ns.append(t)
        pat_entries = len(result.get("rooms", []))
    _, _, _, info = (lambda r: (r[0], len(r[1]), r[2], json.loads(r[1]).get("result")))(api.call("info", {}))
    for c in conns:
        c.close()
    return {"mode": "rooms", **setup, "calls": args.calls, "reply_ms": summary_ms(ns),
            "reply_bytes": {"median": statistics.median(sizes), "max": max(sizes)},
            "entries": {"median": statistics.median(entries), "max": max(entries)},
            "truncated_replies": truncated, "server_cpu_ms_per_call": cpu_ms_per_call,
            "statuses": {str(k): v for k, v in statuses.items()},
            "pattern_100_reply_ms": summary_ms(pat_ns), "pattern_100_entries": pat_entries,
            "info": info}


def contend(args):
    conns, setup = setup_rooms(args)
    bench = args.bench.split()
    runs = []
    for rep in range(args.reps):
        order = ["idle", "rooms"] if rep % 2 == 0 else ["rooms", "idle"]
        for cond in order:
            # The server closes an idle keep-alive connection: a fresh one per run.
            api = Api(args.api_port, args.key)
            proc = subprocess.Popen(bench, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            ns = []
            deadline = time.monotonic() + args.bench_timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if cond == "rooms":
                    # Not parsed: the client shares the 2 cores with the servers.
                    _, _, t, _ = rooms_call(api, parse=False)
                    ns.append(t)
                    time.sleep(args.interval)
                else:
                    time.sleep(0.05)
                for c in conns:
                    c.drain()
            if proc.poll() is None:
                proc.kill()
            out, _ = proc.communicate(timeout=30)
            line = out.decode().strip().splitlines()
            r = json.loads(line[-1]) if line else {}
            runs.append({"rep": rep, "cond": cond, "rooms_calls": len(ns),
                         "rooms_reply_ms": summary_ms(ns) if ns else None,
                         "latency_us": r.get("latency_us"), "lost": r.get("lost"),
                         "messages_per_second": r.get("messages_per_second"),
                         "server_cpu_us_per_message": (r.get("server") or {}).get("cpu_us_per_message")})
            print(json.dumps(runs[-1]), file=sys.stderr)
    if args.close_after:
        # Every member connection reset at once mid-run: each leaves its
        # rooms, 100,000 leaves in all, while the fan-out goes on.
        proc = subprocess.Popen(bench, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(args.close_after)
        t0 = time.perf_counter()
        # Members alternate over --ws-ports: even indexes on the first node.
        for i, c in enumerate(conns):
            if args.close_on == "all" or (i % 2 == 0) == (args.close_on == "a"):
                c.close()
        conns = [c for i, c in enumerate(conns)
                 if not (args.close_on == "all" or (i % 2 == 0) == (args.close_on == "a"))]
        api = Api(args.api_port, args.key)
        rooms_left, empty_s = None, None
        while time.perf_counter() - t0 < 30:
            status, body, _ = api.call("info", {})
            rooms_left = sum(n["rooms"] for n in json.loads(body)["result"]["nodes"]) if status == 200 else None
            if rooms_left == (0 if args.close_on == "all" else args.rooms_per_conn * len(conns)):
                empty_s = time.perf_counter() - t0
                break
            time.sleep(0.02)
        out, _ = proc.communicate(timeout=args.bench_timeout)
        line = out.decode().strip().splitlines()
        r = json.loads(line[-1]) if line else {}
        runs.append({"rep": args.reps, "cond": "close", "rooms_calls": 0, "rooms_reply_ms": None,
                     "latency_us": r.get("latency_us"), "lost": r.get("lost"),
                     "messages_per_second": r.get("messages_per_second"),
                     "server_cpu_us_per_message": (r.get("server") or {}).get("cpu_us_per_message"),
                     "closed_after_s": args.close_after, "closed_on": args.close_on, "seconds_until_no_rooms": empty_s,
                     "rooms_left": rooms_left})
        print(json.dumps(runs[-1]), file=sys.stderr)
    for c in conns:
        c.close()
    med = {}
    for cond in ("idle", "rooms"):
        rs = [r for r in runs if r["cond"] == cond and r["latency_us"]]
        med[cond] = {k: statistics.median([r["latency_us"][k] for r in rs]) / 1000 for k in ("p50", "p99")} if rs else None
    ratios = []
    for rep in range(args.reps):
        pair = {r["cond"]: r for r in runs if r["rep"] == rep and r["latency_us"]}
        if len(pair) == 2:
            ratios.append(pair["rooms"]["latency_us"]["p99"] / pair["idle"]["latency_us"]["p99"])
    return {"mode": "contend", **setup, "bench": args.bench, "interval": args.interval, "runs": runs, "median_ms": med,
            "p99_ratio_per_rep": ratios,
            "p99_ratio_median": statistics.median(ratios) if ratios else None}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["latency", "rooms", "contend"])
    p.add_argument("--api-port", type=int, required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--ws-port", type=int, help="latency: the users' node")
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--conns-per-user", type=int, default=0, help="0: 1 and 2 alternating")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--ws-ports", help="rooms/contend: members' nodes, comma-separated")
    p.add_argument("--conns", type=int, default=20)
    p.add_argument("--rooms-per-conn", type=int, default=5000)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--server-pids", help="rooms: node PIDs, for CPU per call per thread")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--bench", help="contend: the roomcast bench command line (--json)")
    p.add_argument("--interval", type=float, default=0, help="contend: pause between rooms calls (s)")
    p.add_argument("--close-after", type=float, default=0,
                   help="contend: one more run, resetting every member connection after this many s")
    p.add_argument("--close-on", choices=["all", "a", "b"], default="all",
                   help="contend: reset the members on every node, or only on the first (a) or second (b) of --ws-ports")
    p.add_argument("--bench-timeout", type=float, default=120)
    args = p.parse_args()
    print(json.dumps({"latency": latency, "rooms": rooms, "contend": contend}[args.mode](args)))


if __name__ == "__main__":
    main()
