#!/usr/bin/env python3
"""Open N idle WebSocket connections to a local roomcast server and measure
what they cost the server: CPU time per handshake and resident memory per
idle connection.

Python 3 standard library only (raw non-blocking sockets + epoll via the
select module, the selectors module's Linux backend without its bookkeeping).

    perf/connect_idle.py --url-port PORT --token JWT --conns N --server-pid PID \
        [--path /ws] [--in-flight 256] [--hold 3] [--json]

Steps:
  (a) read the server's CPU time (utime+stime, all threads, /proc/PID/stat)
      and RSS (VmRSS, /proc/PID/status);
  (b) open N connections, at most --in-flight handshakes at a time: TCP
      connect, GET PATH?token=JWT with a random Sec-WebSocket-Key, wait for
      "101" (Sec-WebSocket-Accept is checked) and, on /ws, for the first
      frame (connection:established, whose connId tells the shard);
  (c) report handshakes/s (wall clock) and server CPU µs per handshake
      (CPU delta / N); hold the connections idle for --hold seconds, then
      report server RSS and RSS per connection ((after - before) / N);
  (d) close everything (RST, so no TIME_WAIT piles up on the client).

Load only ever goes to 127.0.0.1; the run is bounded by --conns and by
--timeout (seconds for the connect phase), and stops by itself.
"""

import argparse
import base64
import errno
import hashlib
import json
import os
import select
import socket
import struct
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LINGER_RST = struct.pack("ii", 1, 0)


# ---------------------------------------------------------------- /proc ----

def proc_cpu_seconds(pid):
    """utime + stime of the whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # The command name may contain spaces: fields start after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def proc_threads_cpu(pid):
    """{thread name: cpu seconds} per thread, from the scheduler's runtime
    (/proc/PID/task/TID/schedstat, nanoseconds) when available, else from
    utime+stime in clock ticks. Names are made unique with the tid."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        name = data[data.index(b"(") + 1:data.rindex(b")")].decode(errors="replace")
        fields = data[data.rindex(b")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        try:
            with open(f"{base}/{tid}/schedstat") as f:
                cpu = int(f.read().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            pass
        key = name if name not in out else f"{name}/{tid}"
        out[key] = cpu
    return out


def listen_overflows():
    """TcpExt ListenOverflows of this network namespace (system-wide, so
    other processes' listeners count too): SYNs dropped because an accept
    queue was full, each costing the client a 1 s SYN retransmission."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2]):
            if names.startswith("TcpExt:"):
                row = dict(zip(names.split()[1:], values.split()[1:]))
                return int(row["ListenOverflows"])
    except (OSError, KeyError, ValueError):
        pass
    return None


# ------------------------------------------------------------ handshake ----

class Conn:
    __slots__ = ("sock", "state", "buf", "accept", "shard")

    def __init__(self, sock, accept):
        self.sock = sock
        self.state = 0  # 0 connecting, 1 waiting for response, 2 done
        self.buf = b""
        self.accept = accept
        self.shard = None


def parse_first_frame(data):
    """(payload, total length) of a complete unmasked server frame, or None."""
    if len(data) < 2:
        return None
    n = data[1] & 0x7F
    pos = 2
    if n == 126:
        if len(data) < 4:
            return None
        n = struct.unpack_from(">H", data, 2)[0]
        pos = 4
    elif n == 127:
        if len(data) < 10:
            return None
        n = struct.unpack_from(">Q", data, 2)[0]
        pos = 10
    if len(data) < pos + n:
        return None
    return data[pos:pos + n], pos + n


def shard_of(payload):
    """The shard index from connection:established's connId (id >> 40)."""
    try:
        conn_id = json.loads(payload)["data"]["connId"]
        return int(conn_id, 16) >> 40
    except (ValueError, KeyError, TypeError):
        return None


def run_connects(port, token, path, n, in_flight, timeout):
    """Opens n connections; returns (open sockets, per-shard counts, errors).

    Raw epoll (selectors' bookkeeping costs more than the server's work at
    these rates). On loopback a non-blocking connect() is usually complete
    by the time it returns, so the request is sent right away; only if that
    send finds the socket not yet connected do we wait for EPOLLOUT.
    """
    want_frame = path == "/ws"
    # An empty token sends none, so a --connect-proxy decides (perf/hooks.sh).
    target = f"{path}?token={token}" if token else path
    head_prefix = (f"GET {target} HTTP/1.1\r\n"
                   f"Host: 127.0.0.1:{port}\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ").encode()
    addr = ("127.0.0.1", port)
    ep = select.epoll()
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    conns = {}  # fd -> Conn, handshakes in flight
    done = []
    shards = {}
    errors = {}
    started = 0
    deadline = time.monotonic() + timeout
    urandom, b64, sha1 = os.urandom, base64.b64encode, hashlib.sha1

    def fail(fd, why):
        errors[why] = errors.get(why, 0) + 1
        conn = conns.pop(fd)
        try:
            ep.unregister(fd)
        except OSError:
            pass
        conn.sock.close()

    def try_send(conn):
        """True if the request went out; False if still connecting."""
        key = b64(urandom(16))
        try:
            conn.sock.send(head_prefix + key + b"\r\n\r\n")
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as e:
            if e.errno in (errno.ENOTCONN, errno.EAGAIN):
                return False
            raise
        conn.accept = b64(sha1(key + GUID).digest())
        conn.state = 1
        return True

    while (started < n or conns) and time.monotonic() < deadline:
        while started < n and len(conns) < in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(s, None)
            started += 1
            fd = s.fileno()
            rc = s.connect_ex(addr)
            if rc not in (0, errno.EINPROGRESS):
                why = f"connect:{errno.errorcode.get(rc, rc)}"
                errors[why] = errors.get(why, 0) + 1
                s.close()
                continue
            conns[fd] = conn
            try:
                sent = try_send(conn)
            except OSError as e:
                ep.register(fd, EPOLLIN)
                fail(fd, f"send:{errno.errorcode.get(e.errno, e.errno)}")
                continue
            ep.register(fd, EPOLLIN if sent else EPOLLOUT)
        for fd, ev in ep.poll(1.0):
            conn = conns.get(fd)
            if conn is None:
                continue
            s = conn.sock
            if conn.state == 0:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(fd, f"connect:{errno.errorcode.get(err, err)}")
                    continue
                try:
                    if not try_send(conn):
                        continue
                except OSError as e:
                    fail(fd, f"send:{errno.errorcode.get(e.errno, e.errno)}")
                    continue
                ep.modify(fd, EPOLLIN)
                continue
            try:
                chunk = s.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                fail(fd, f"recv:{errno.errorcode.get(e.errno, e.errno)}")
                continue
            if not chunk:
                fail(fd, "eof")
                continue
            buf = conn.buf + chunk if conn.buf else chunk
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                conn.buf = buf
                continue
            if not buf.startswith(b"HTTP/1.1 101"):
                fail(fd, "status:" + buf[9:12].decode(errors="replace"))
                continue
            if conn.accept not in buf[:end]:
                fail(fd, "bad-accept")
                continue
            if want_frame:
                frame = parse_first_frame(buf[end + 4:])
                if frame is None:
                    conn.buf = buf
                    continue
                sh = shard_of(frame[0])
                shards[sh] = shards.get(sh, 0) + 1
            ep.unregister(fd)
            del conns[fd]
            conn.state = 2
            conn.buf = b""
            done.append(s)
    if conns:
        errors["timeout"] = errors.get("timeout", 0) + len(conns)
        for conn in conns.values():
            conn.sock.close()
    ep.close()
    return done, shards, errors


def masked_text_frame(payload):
    """A client text frame (FIN, masked) carrying payload (< 126 bytes)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def join_all(socks, room, timeout):
    """Sends room:join on every socket and waits for every ack; returns acks seen."""
    frame = masked_text_frame(json.dumps(
        {"event": "room:join", "data": {"room": room}, "id": 1}).encode())
    ep = select.epoll()
    waiting = {}
    for s in socks:
        s.send(frame)
        ep.register(s.fileno(), select.EPOLLIN)
        waiting[s.fileno()] = (s, b"")
    deadline = time.monotonic() + timeout
    acked = 0
    while waiting and time.monotonic() < deadline:
        for fd, _ in ep.poll(0.5):
            s, buf = waiting[fd]
            try:
                buf += s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            if b'"event":"ack"' in buf:
                acked += 1
                ep.unregister(fd)
                del waiting[fd]
            else:
                waiting[fd] = (s, buf)
    ep.close()
    return acked


# ----------------------------------------------------------------- main ----

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url-port", type=int, required=True, help="server port on 127.0.0.1")
    ap.add_argument("--token", required=True, help="JWT for ?token= (empty: no token)")
    ap.add_argument("--conns", type=int, required=True, help="connections to open")
    ap.add_argument("--server-pid", type=int, required=True, help="server process id")
    ap.add_argument("--path", default="/ws", help="/ws (default) or /echo")
    ap.add_argument("--in-flight", type=int, default=256, help="handshakes in flight at once")
    ap.add_argument("--hold", type=float, default=3.0, help="seconds to hold the idle connections")
    ap.add_argument("--timeout", type=float, default=120.0, help="bound on the connect phase (s)")
    ap.add_argument("--json", action="store_true", help="also print one JSON object")
    ap.add_argument("--join", metavar="ROOM", help="after connecting, every connection joins ROOM (/ws)")
    args = ap.parse_args()
    if args.conns < 1 or args.conns > 19000:
        ap.error("--conns must be 1..19000 (open-file limit 20,000 per process)")

    pid = args.server_pid
    cpu0 = proc_cpu_seconds(pid)
    threads0 = proc_threads_cpu(pid)
    rss0 = proc_rss_bytes(pid)
    overflows0 = listen_overflows()

    t0 = time.perf_counter()
    socks, shards, errors = run_connects(args.url_port, args.token, args.path,
                                         args.conns, args.in_flight, args.timeout)
    wall = time.perf_counter() - t0
    cpu1 = proc_cpu_seconds(pid)
    threads1 = proc_threads_cpu(pid)
    overflows1 = listen_overflows()
    ok = len(socks)
    joined = join_all(socks, args.join, args.timeout) if args.join else None

    time.sleep(args.hold)
    rss1 = proc_rss_bytes(pid)
    cpu2 = proc_cpu_seconds(pid)

    for s in socks:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        except OSError:
            pass
        s.close()

    denom = max(ok, 1)
    result = {
        "path": args.path,
        "conns_requested": args.conns,
        "conns_open": ok,
        "joined": joined,
        "errors": errors,
        "connect_wall_s": round(wall, 4),
        "handshakes_per_s": round(ok / wall, 1) if wall > 0 else None,
        "server_cpu_s": round(cpu1 - cpu0, 3),
        "server_cpu_us_per_handshake": round((cpu1 - cpu0) * 1e6 / denom, 2),
        # Same delta from the per-thread scheduler runtimes (ns resolution;
        # utime+stime only moves in 1/CLK_TCK steps).
        "server_cpu_us_per_handshake_ns": round(
            (sum(threads1.values()) - sum(threads0.values())) * 1e6 / denom, 2),
        "in_flight": args.in_flight,
        "listen_overflows": (overflows1 - overflows0) if overflows0 is not None else None,
        "server_cpu_idle_hold_s": round(cpu2 - cpu1, 3),
        "hold_s": args.hold,
        "rss_before_bytes": rss0,
        "rss_after_bytes": rss1,
        "rss_per_conn_bytes": round((rss1 - rss0) / denom, 1),
        "rss_per_conn_kib": round((rss1 - rss0) / denom / 1024, 3),
        "shard_conns": {str(k): v for k, v in sorted(shards.items(), key=lambda kv: str(kv[0]))},
        "thread_cpu_s": {k: round(threads1.get(k, 0) - threads0.get(k, 0), 3)
                         for k in sorted(threads1)},
        "clk_tck": CLK_TCK,
    }
    print(f"{ok}/{args.conns} {args.path} connections in {wall:.2f}s: "
          f"{result['handshakes_per_s']} handshakes/s, "
          f"server CPU {result['server_cpu_us_per_handshake']} us/handshake "
          f"(schedstat {result['server_cpu_us_per_handshake_ns']}); "
          f"idle RSS {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB = "
          f"{result['rss_per_conn_bytes']:.0f} B ({result['rss_per_conn_kib']:.2f} KiB)/conn; "
          f"shards {result['shard_conns']}; listen overflows {result['listen_overflows']}; "
          f"errors {errors or 'none'}",
          file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))
    return 0 if ok == args.conns else 1


if __name__ == "__main__":
    sys.exit(main())
