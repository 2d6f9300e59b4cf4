#!/usr/bin/env python3
"""Smoke test for the benchmark peers (Python 3 stdlib only).

    python3 perf/peers/check.py ws  -- COMMAND...   # a peer with /echo and /room/<name>
    python3 perf/peers/check.py sio -- COMMAND...   # the Socket.IO peer

Starts COMMAND with the extra argument `0` (any free port), reads its
`listening on 127.0.0.1:PORT` line, checks the shared semantics
(perf/peers/README.md), then sends SIGTERM and requires exit status 0 within
3 s. Talks only to 127.0.0.1. Prints each check and `N passed, N failed`;
exits non-zero on any failure. With -v it also prints every frame of the
Socket.IO exchange.
"""

import base64
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
VERBOSE = False


class WS:
    """A minimal blocking WebSocket client (masks its frames, reads whole frames)."""

    def __init__(self, port, path, name="?"):
        self.name = name
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        self.sio_pings = None  # Socket.IO: a count, and `2` is answered with `3`
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"{path}: closed during handshake")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            raise ConnectionError(f"{path}: HTTP {self.status}")

    def send(self, opcode, payload, fin=True):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        if VERBOSE and opcode == TEXT:
            print(f"    {self.name} -> {payload.decode()}")
        self.sock.sendall(head + mask + masked)

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError from None
            if not chunk:
                raise ConnectionError("EOF")
            self.buf += chunk

    def recv(self, timeout=3.0):
        """Returns (fin, opcode, payload); TimeoutError if nothing arrives."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._recv(deadline)
            if self.sio_pings is not None and frame == (True, TEXT, b"2"):
                self.sio_pings += 1
                self.send(TEXT, "3")
                continue
            return frame

    def _recv(self, deadline):
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        if b1 & 0x80:
            raise AssertionError("server frame is masked")
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n, deadline)
        payload, self.buf = self.buf[off : off + n], self.buf[off + n :]
        if VERBOSE and b0 & 0x0F == TEXT:
            print(f"    {self.name} <- {payload.decode()}")
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def silent(self, timeout=0.3):
        """True if no frame arrives within `timeout`."""
        try:
            self.recv(timeout)
        except TimeoutError:
            return True
        return False

    def close(self, code=1000):
        self.send(CLOSE, struct.pack("!H", code))
        _, op, payload = self.recv()
        assert op == CLOSE, f"expected a close reply, got opcode {op}"
        try:  # the server then closes the TCP connection
            self._need(len(self.buf) + 1, time.monotonic() + 3)
            raise AssertionError("data after the close reply")
        except ConnectionError:
            pass
        self.sock.close()
        return payload

    def abort(self):
        self.sock.close()


results = []


def check(name, fn):
    try:
        fn()
        results.append(True)
        print(f"ok    {name}")
    except Exception as e:  # noqa: BLE001 - report any failure
        results.append(False)
        print(f"FAIL  {name}: {type(e).__name__}: {e}")


def expect(ws, opcode, payload, timeout=3.0):
    fin, op, got = ws.recv(timeout)
    if isinstance(payload, str):
        payload = payload.encode()
    assert fin and op == opcode, f"{ws.name}: expected opcode {opcode}, got {op} fin={fin}"
    assert got == payload, f"{ws.name}: payload {got[:60]!r}... != {payload[:60]!r}..."


def ws_checks(port):
    q = "?token=abc.def.ghi"

    def echo():
        c = WS(port, "/echo" + q, "echo")
        c.send(TEXT, "hello, peer")
        expect(c, TEXT, "hello, peer")
        blob = bytes(range(256)) * 4
        c.send(BINARY, blob)
        expect(c, BINARY, blob)
        big = os.urandom(70000)  # 64-bit length
        c.send(BINARY, big)
        expect(c, BINARY, big)
        c.send(TEXT, "é" * 100)  # 16-bit length, multi-byte UTF-8
        expect(c, TEXT, "é" * 100)
        c.send(TEXT, "frag-", fin=False)
        c.send(0x0, "mented", fin=True)
        expect(c, TEXT, "frag-mented")
        c.send(PING, b"pp")
        expect(c, PONG, b"pp")
        payload = c.close(1000)
        assert payload[:2] == struct.pack("!H", 1000), f"close reply {payload!r}"

    def room():
        a, b, c = (WS(port, "/room/x" + q, n) for n in "abc")
        d = WS(port, "/room/y" + q, "d")
        time.sleep(0.1)  # joins are done by the time the 101 is read, but be safe
        a.send(TEXT, "from a")
        expect(b, TEXT, "from a")
        expect(c, TEXT, "from a")
        assert a.silent(), "the sender got its own message back"
        assert d.silent(), "another room got the message"
        blob = os.urandom(3000)
        b.send(BINARY, blob)
        expect(a, BINARY, blob)
        expect(c, BINARY, blob)
        assert b.silent(), "the sender got its own message back"
        d.send(TEXT, "alone in y")
        assert d.silent() and a.silent(0.05), "a lone member heard something"
        # A member that vanishes without a close frame does not disturb the rest.
        a.abort()
        time.sleep(0.1)
        for i in range(20):
            b.send(TEXT, f"m{i}")
        for i in range(20):
            expect(c, TEXT, f"m{i}")
        c.send(PING, b"")
        expect(c, PONG, b"")
        b.close()
        c.close()
        d.close()

    def not_found():
        try:
            WS(port, "/nope" + q)
        except ConnectionError as e:
            assert "HTTP 4" in str(e), str(e)
        else:
            raise AssertionError("/nope was upgraded")

    check("/echo: text, binary, 16/64-bit lengths, fragments, ping, close", echo)
    check("/room/x: to the others, not the sender, not room y; a vanished member", room)
    check("/nope: refused", not_found)


def sio_checks(port):
    def connect(name, path, auth=None):
        c = WS(port, path, name)
        c.sio_pings = 0
        fin, op, p = c.recv()
        assert op == TEXT and p[:1] == b"0", f"open packet {p!r}"
        opened = json.loads(p[1:])
        c.send(TEXT, "40" if auth is None else "40" + json.dumps(auth, separators=(",", ":")))
        return c, opened

    base = "/socket.io/?EIO=4&transport=websocket&token=abc"

    def exchange():
        a, opened = connect("A", base + "&room=x")
        assert opened["upgrades"] == [] and "pingInterval" in opened, opened
        _, _, p = a.recv()
        assert p.startswith(b'40{"sid":'), p
        b, _ = connect("B", base + "&room=x")
        assert b.recv()[2].startswith(b'40{"sid":')
        c, _ = connect("C", base, auth={"room": "x"})  # room in the CONNECT auth
        assert c.recv()[2].startswith(b'40{"sid":')
        d, _ = connect("D", base + "&room=y")
        assert d.recv()[2].startswith(b'40{"sid":')
        a.send(TEXT, '42["msg","hello"]')
        expect(b, TEXT, '42["msg","hello"]')
        expect(c, TEXT, '42["msg","hello"]')
        assert a.silent(), "the sender got its own msg"
        assert d.silent(), "room y got the msg"
        b.send(TEXT, '42["msg",{"seq":1,"body":"x"}]')
        expect(a, TEXT, '42["msg",{"seq":1,"body":"x"}]')
        expect(c, TEXT, '42["msg",{"seq":1,"body":"x"}]')
        assert b.silent()
        # A binary payload: a BINARY_EVENT header with a placeholder, then the
        # attachment as a binary frame; relayed to the others the same way.
        blob = os.urandom(1000)
        a.send(TEXT, '451-["msg",{"_placeholder":true,"num":0}]')
        a.send(BINARY, blob)
        for x in (b, c):
            expect(x, TEXT, '451-["msg",{"_placeholder":true,"num":0}]')
            expect(x, BINARY, blob)
        assert a.silent()
        a.send(TEXT, '42["echo","ping me"]')
        expect(a, TEXT, '42["echo","ping me"]')
        assert b.silent(0.1) and c.silent(0.1)
        # Heartbeat: the server pings (`2`), recv() answers `3`; after more
        # than pingInterval + pingTimeout the connection must still work.
        wait = (opened["pingInterval"] + opened["pingTimeout"]) / 1000 + 0.5
        assert wait < 10, "run with PEER_PING_INTERVAL_MS=500 PEER_PING_TIMEOUT_MS=1000"
        end = time.monotonic() + wait
        while time.monotonic() < end:  # keep every client answering pings
            for x in (a, b, c, d):
                assert x.silent(0.05), f"{x.name} got something"
        assert d.sio_pings >= 2, f"{d.sio_pings} pings in {wait:.1f} s"
        d.send(TEXT, '42["echo","still here"]')
        expect(d, TEXT, '42["echo","still here"]')
        # Leaving: Socket.IO DISCONNECT `41`, then the WebSocket close.
        a.send(TEXT, "41")
        a.close()
        b.send(TEXT, '42["msg","after a left"]')
        expect(c, TEXT, '42["msg","after a left"]')
        c.abort()
        b.close()
        d.close()

    def no_room():
        c, _ = connect("E", base)
        _, _, p = c.recv()
        assert p == b'44{"message":"room required"}', p
        c.abort()

    check("socket.io: open, connect (query and auth room), msg to others, echo, ping/pong", exchange)
    check("socket.io: no room is refused with 44", no_room)


def main():
    global VERBOSE
    args = sys.argv[1:]
    if "-v" in args:
        VERBOSE = True
        args.remove("-v")
    if len(args) < 3 or args[0] not in ("ws", "sio") or args[1] != "--":
        sys.exit(__doc__)
    kind, cmd = args[0], args[2:] + ["0"]
    env = dict(os.environ)
    if kind == "sio":  # a fast heartbeat, so that the check sees several pings
        env.setdefault("PEER_PING_INTERVAL_MS", "500")
        env.setdefault("PEER_PING_TIMEOUT_MS", "1000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening on 127.0.0.1:"):
            sys.exit(f"no listening line from {cmd}: {line!r}")
        port = int(line.rsplit(":", 1)[1])
        print(f"{' '.join(cmd)}: {line.strip()}")
        (ws_checks if kind == "ws" else sio_checks)(port)
        held = WS(port, "/echo" if kind == "ws" else "/socket.io/?EIO=4&transport=websocket&room=z")

        def sigterm():
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=3)
            assert rc == 0, f"exit status {rc}"
            print(f"      exited 0 in {time.monotonic() - t0:.3f} s with a connection open")

        check("SIGTERM: exit 0 promptly", sigterm)
        held.abort()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
