"""roomcast behind the shipped proxy configurations (deploy/nginx,
deploy/haproxy): the real nginx and HAProxy from Debian, unprivileged on a
loopback port with a throwaway certificate, terminating TLS in front of two
roomcast nodes of one cluster (one Redis). Only the places in the shipped
files change (tests/python/deploy_configs.py). Skipped, with the reason,
where the proxy is not installed (scripts/test.sh installs both)."""

import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import deploy_configs
from conftest import TIMEOUT, TLS_HANDSHAKE_TIMEOUT, claims, free_port, mint, request

PROXIES = {
    "nginx": lambda exe, conf: [exe, "-c", str(conf), "-g", "daemon off;"],
    "haproxy": lambda exe, cfg: [exe, "-f", str(cfg), "-db"],
}


def proxy_executable(kind):
    """Debian installs both in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(kind, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


class Proxy:
    """A running proxy on https://localhost:port in front of `servers`."""

    def __init__(self, kind, executable, servers):
        self.servers = servers
        # Not under pytest's 0700 tmp_path: nginx's workers drop to `nobody`.
        self.dir = tempfile.mkdtemp(prefix=f"roomcast-{kind}-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        render = {"nginx": deploy_configs.render_nginx, "haproxy": deploy_configs.render_haproxy}[kind]
        conf = render(self.dir, self.port, [s.addr for s in servers])
        self.context = ssl.create_default_context(cafile=os.path.join(self.dir, "cert.pem"))
        self.proc = subprocess.Popen(
            PROXIES[kind](executable, conf), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self._wait_healthy()

    def _wait_healthy(self):
        deadline = time.monotonic() + 15
        while True:
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except (OSError, urllib.error.URLError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"proxy did not come up: {self.proc.stderr.read()}")
            time.sleep(0.1)

    def url(self, scheme, path):
        return f"{scheme}://localhost:{self.port}{path}"

    def get(self, path):
        try:
            with urllib.request.urlopen(self.url("https", path), context=self.context, timeout=TIMEOUT) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def post(self, path, body, jwt):
        req = urllib.request.Request(
            self.url("https", path), data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {jwt}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, context=self.context, timeout=TIMEOUT) as r:
            return r.status, json.loads(r.read())

    def ws(self, jwt, query=False):
        """A wss:// client through the proxy; the token in the header or the query.

        A `408` is the proxy's own answer to a client that did not send its
        request within the proxy's `timeout http-request` (10 s), which this
        test client has been seen to do once in a while on a loaded machine
        (the stall is on the client's side of the proxy; roomcast never saw
        the request): one more attempt is made for it, and only for it."""
        path, headers = ("/ws?token=" + jwt, {}) if query else ("/ws", {"Authorization": f"Bearer {jwt}"})
        for attempt in (1, 2):
            try:
                return connect(
                    self.url("wss", path), ssl=self.context, additional_headers=headers,
                    open_timeout=TLS_HANDSHAKE_TIMEOUT, close_timeout=TIMEOUT, proxy=None,
                )
            except InvalidStatus as refused:
                if refused.response.status_code != 408 or attempt == 2:
                    raise

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(params=sorted(PROXIES))
def proxy(request, start_server, redis_server):
    kind = request.param
    executable = proxy_executable(kind)
    if executable is None:
        pytest.skip(f"{kind} is not installed (apt-get install {kind})")
    servers = [start_server("--redis", redis_server, "--log-level", "warn") for _ in range(2)]
    proxy = Proxy(kind, executable, servers)
    yield proxy
    proxy.stop()


def connections(server):
    """roomcast_connections of one node, read on its own port (not proxied)."""
    with urllib.request.urlopen(f"http://{server.addr}/metrics", timeout=TIMEOUT) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("roomcast_connections "):
                return int(float(line.split()[1]))
    raise AssertionError("no roomcast_connections")


def next_event(ws, event):
    while True:
        message = json.loads(ws.recv(timeout=TIMEOUT))
        if message.get("event") == event:
            return message


def test_healthz_through_the_proxy(proxy):
    status, body = proxy.get("/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


def test_metrics_and_stats_are_not_served_on_the_public_side(proxy):
    assert proxy.get("/metrics")[0] == 404
    assert proxy.get("/stats")[0] == 404


def test_rooms_over_wss_spread_over_both_nodes_without_stickiness(proxy):
    with contextlib.ExitStack() as stack:
        members = [stack.enter_context(proxy.ws(mint(claims(f"member-{i}")), query=i % 2 == 1)) for i in range(4)]
        for i, ws in enumerate(members):
            assert json.loads(ws.recv(timeout=TIMEOUT))["event"] == "connection:established"
            ack, _ = request(ws, {"event": "room:join", "id": f"j{i}", "data": {"room": "lobby"}})
            assert ack["success"] is True, ack
        # Round-robin: each node holds some of the members.
        assert [connections(s) >= 1 for s in proxy.servers] == [True, True]

        publisher = members[0]
        ack, _ = request(publisher, {"event": "chat:message", "room": "lobby", "id": "p", "data": {"text": "hi"}})
        assert ack["success"] is True, ack
        for ws in members[1:]:
            message = next_event(ws, "chat:message")
            assert (message["data"], message["from"]) == ({"text": "hi"}, "member-0")


def test_post_publish_through_the_proxy_reaches_a_member(proxy):
    with proxy.ws(mint(claims("reader"))) as ws:
        json.loads(ws.recv(timeout=TIMEOUT))
        ack, _ = request(ws, {"event": "room:join", "id": "j", "data": {"room": "prices:btc"}})
        assert ack["success"] is True, ack
        jwt = mint(claims("feed", pub=["prices:*"]))
        status, body = proxy.post("/publish", {"room": "prices:btc", "event": "price:tick", "data": 7}, jwt)
        assert (status, body["success"]) == (200, True), body
        message = next_event(ws, "price:tick")
        assert (message["data"], message["from"]) == (7, "feed")


def test_a_bad_token_is_still_refused_with_401(proxy):
    for jwt in (mint(claims("x"), secret="not-the-secret"), "garbage"):
        with pytest.raises(InvalidStatus) as refused:
            proxy.ws(jwt)
        assert refused.value.response.status_code == 401
