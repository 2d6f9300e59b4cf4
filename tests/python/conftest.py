"""Harness for the Python client tests: starts the real roomcast binary on an
ephemeral loopback port and mints HS256 tokens with hmac (independently of the
server's code). The binary is $ROOMCAST_BIN, else target/debug/roomcast."""

import base64
import contextlib
import hashlib
import hmac
import json
import os
import pathlib
import queue
import socket
import subprocess
import threading
import time

import pytest
from websockets.sync.client import connect

ROOT = pathlib.Path(__file__).resolve().parents[2]
SECRET = "py-test-secret-5d2e"
STARTUP_TIMEOUT = 20
TIMEOUT = 5
# A TLS handshake (through a proxy, too) on a machine busy with other test
# runs can take longer than a reply: bounded, but with room.
TLS_HANDSHAKE_TIMEOUT = 15


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server():
    """A throwaway redis-server on a free loopback port; yields its URL."""
    import redis

    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()


def roomcast_bin():
    return os.environ.get("ROOMCAST_BIN") or str(ROOT / "target" / "debug" / "roomcast")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims, secret=SECRET, alg="HS256"):
    """A JWT of `claims` signed with HMAC-SHA256 (the header names `alg`)."""
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def token(sub="py-user", ttl=3600):
    return mint({"sub": sub, "exp": int(time.time()) + ttl})


@contextlib.contextmanager
def open_ws(server, claims, compression="deflate"):
    """A connected client that has read its greeting; `compression=None`
    does not offer permessage-deflate (the library offers it by default)."""
    with connect(
        server.url("/ws"),
        additional_headers={"Authorization": f"Bearer {mint(claims)}"},
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        proxy=None,
        compression=compression,
    ) as ws:
        hello = json.loads(ws.recv(timeout=TIMEOUT))
        assert hello["event"] == "connection:established"
        yield ws


def claims(sub, **extra):
    return {"sub": sub, "exp": int(time.time()) + 3600, **extra}


def request(ws, message):
    """Sends `message` (which has an `id`) and returns its ack; other
    messages received meanwhile are returned too."""
    ws.send(json.dumps(message))
    others = []
    while True:
        reply = json.loads(ws.recv(timeout=TIMEOUT))
        if reply.get("event") == "ack" and reply.get("id") == message["id"]:
            return reply, others
        others.append(reply)


@contextlib.contextmanager
def slow_consumer(server, room):
    """A member of `room` with a tiny receive buffer that never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = server.addr.rsplit(":", 1)
    sock.connect((host, int(port)))
    with connect(
        server.url("/ws"),
        sock=sock,
        additional_headers={"Authorization": f"Bearer {mint(claims('py-slow'))}"},
        open_timeout=TIMEOUT,
        close_timeout=1,
        proxy=None,
        max_queue=1,
    ) as ws:
        json.loads(ws.recv(timeout=TIMEOUT))
        ack, _ = request(ws, {"event": "room:join", "data": {"room": room}, "id": "slow"})
        assert ack["success"] is True, ack
        yield ws


def _drain(stream, sink):
    for line in stream:
        sink.put(line)


class Server:
    """A running `roomcast serve`; `stop()` kills it by its own PID."""

    def __init__(self, *extra):
        cmd = [roomcast_bin(), "serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET, *extra]
        # None of the caller's ROOMCAST_* settings leak into the server under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_")}
        self.proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout = queue.Queue()
        self.stderr = queue.Queue()
        threading.Thread(target=_drain, args=(self.proc.stdout, self.stdout), daemon=True).start()
        threading.Thread(target=_drain, args=(self.proc.stderr, self.stderr), daemon=True).start()
        self.addr = self._wait_listening()

    def _wait_listening(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.stdout.get(timeout=max(left, 0.01))
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"no listening line within {STARTUP_TIMEOUT}s") from None
            if line.startswith("roomcast listening on "):
                return line.split()[-1]

    def url(self, path):
        return f"ws://{self.addr}{path}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def start_server():
    """Starts servers with extra flags; kills each one at the end of the test."""
    servers = []

    def start(*extra):
        server = Server(*extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
