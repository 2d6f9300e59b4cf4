"""GET /metrics read with the reference Prometheus text-format parser
(`prometheus_client.parser`), and GET /stats, after a scripted sequence:
three clients connect and join, ten messages are published, one token is
refused and one slow consumer is closed. Every figure is compared with what
that sequence must have produced."""

import json
import time
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from conftest import claims, mint, open_ws, request, slow_consumer

TIMEOUT = 5


def scrape(addr, path="/metrics"):
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=TIMEOUT) as resp:
        assert resp.status == 200
        return resp.headers.get("Content-Type"), resp.read().decode()


def metrics(addr):
    """{(sample name, frozenset of labels): value} and {family name: type}."""
    content_type, text = scrape(addr)
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    samples, types = {}, {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def wait_for(addr, name, expected, **labels):
    """Polls /metrics until `name` reaches `expected` (shards publish their
    counters as they go, so a scrape can trail the client by a moment)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        samples, _ = metrics(addr)
        got = value(samples, name, **labels)
        if got == expected or time.monotonic() > deadline:
            assert got == expected, f"{name}{labels}: {got} != {expected}"
            return samples
        time.sleep(0.05)


def test_metrics_follow_a_scripted_sequence(start_server):
    server = start_server(
        "--max-message-size", "16KiB", "--max-write-buffer", "16KiB", "--shards", "2",
        "--presence-rooms", "no-presence-here",
    )
    addr = server.addr
    samples, types = metrics(addr)
    assert types["roomcast_connections"] == "gauge"
    assert types["roomcast_publishes"] == "counter"
    assert types["roomcast_handshake_duration_seconds"] == "histogram"
    assert types["roomcast_fanout_duration_seconds"] == "histogram"
    assert value(samples, "roomcast_connections") == 0
    assert value(samples, "roomcast_publishes_total") == 0

    publisher = claims("py-pub", pub=["*"], rate=0)
    with open_ws(server, publisher) as alice, open_ws(server, claims("py-bob")) as bob, open_ws(
        server, claims("py-carol")
    ) as carol:
        for i, ws in enumerate((alice, bob, carol)):
            ack, _ = request(ws, {"event": "room:join", "data": {"room": "m-room"}, "id": i})
            assert ack["success"] is True, ack
        samples = wait_for(addr, "roomcast_connections", 3)
        assert value(samples, "roomcast_users") == 3
        assert value(samples, "roomcast_rooms") == 1
        assert value(samples, "roomcast_connections_opened_total") == 3
        assert sum(v for (n, _), v in samples.items() if n == "roomcast_shard_connections") == 3
        assert value(samples, "roomcast_handshake_duration_seconds_count") == 3

        for n in range(10):
            ack, _ = request(
                alice, {"event": "chat:message", "room": "m-room", "data": n, "id": f"p{n}"}
            )
            assert ack["data"] == {"seq": n + 1}, ack
        for ws in (bob, carol):
            got = [json.loads(ws.recv(timeout=TIMEOUT))["data"] for _ in range(10)]
            assert got == list(range(10))
        samples = wait_for(addr, "roomcast_deliveries_total", 20)
        assert value(samples, "roomcast_publishes_total") == 10
        assert value(samples, "roomcast_messages_received_total") == 13  # 3 joins, 10 events
        assert value(samples, "roomcast_fanout_duration_seconds_count") >= 10
        assert value(samples, "roomcast_bytes_received_total") > 0
        assert value(samples, "roomcast_bytes_sent_total") > 0
        # The shards' CPU time is read at their sweeps, at most a second apart.
        deadline = time.monotonic() + TIMEOUT
        while True:
            samples, _ = metrics(addr)
            busy = [v for (n, _), v in samples.items() if n == "roomcast_shard_busy_seconds_total"]
            ratios = [v for (n, _), v in samples.items() if n == "roomcast_shard_busy_ratio"]
            if sum(busy) > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(busy) == 2 and sum(busy) > 0, busy
        assert all(0 <= r <= 1 for r in ratios), ratios
        inbox = [v for (n, _), v in samples.items() if n == "roomcast_shard_inbox"]
        assert len(inbox) == 2 and all(v >= 0 for v in inbox), inbox

        bad = mint(claims("py-mallory"), secret="not-the-secret")
        try:
            connect(server.url("/ws"), additional_headers={"Authorization": f"Bearer {bad}"},
                    open_timeout=TIMEOUT, proxy=None)
            raise AssertionError("a token signed with the wrong secret was accepted")
        except Exception as refused:  # websockets raises InvalidStatus
            assert "401" in str(refused), refused
        wait_for(addr, "roomcast_handshake_rejections_total", 1, reason="UNAUTHENTICATED")

        sent = 0
        with slow_consumer(server, "m-slow"):
            blob = "x" * 8000
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                for _ in range(20):
                    alice.send(json.dumps({"event": "feed:tick", "room": "m-slow", "data": blob}))
                    sent += 1
                samples, _ = metrics(addr)
                if value(samples, "roomcast_slow_consumer_closes_total") == 1:
                    break
            wait_for(addr, "roomcast_connections_closed_total", 1, code="4008")
        # Acked after every earlier message of alice's was sequenced.
        ack, _ = request(alice, {"event": "feed:tick", "room": "m-slow", "data": 0, "id": "last"})
        sent += 1
        assert ack["data"] == {"seq": sent}, ack
        samples, _ = metrics(addr)
        assert value(samples, "roomcast_slow_consumer_closes_total") == 1
        assert value(samples, "roomcast_connections") == 3
        assert value(samples, "roomcast_connections_opened_total") == 4
        assert value(samples, "roomcast_publishes_total") == 10 + sent
        assert value(samples, "roomcast_rooms") == 2
        for reason in ("TOKEN_EXPIRED", "ORIGIN_FORBIDDEN", "SERVER_BUSY"):
            assert value(samples, "roomcast_handshake_rejections_total", reason=reason) == 0

        _, body = scrape(addr, "/stats")
        stats = json.loads(body)
        assert stats["connections"] == 3
        assert stats["users"] == 3
        assert stats["rooms"] == 2
        assert isinstance(stats["uptime_seconds"], int)
        assert stats["messages"]["publishes"] == 10 + sent
        assert stats["connections_detail"]["closed_by_code"]["4008"] == 1
        assert stats["handshake_rejections"]["UNAUTHENTICATED"] == 1
        assert [s["shard"] for s in stats["shards"]] == [0, 1]
        assert stats["config"]["max_write_buffer"] == 16 * 1024
        assert "py-test-secret" not in body

    samples = wait_for(addr, "roomcast_connections", 0)
    assert value(samples, "roomcast_users") == 0
    assert value(samples, "roomcast_connections_closed_total", code="1000") == 3


def test_metrics_bind_moves_metrics_and_stats_off_the_public_port(start_server):
    server = start_server("--metrics-bind", "127.0.0.1:0")
    metrics_addr = None
    deadline = time.monotonic() + TIMEOUT
    while metrics_addr is None and time.monotonic() < deadline:
        line = server.stdout.get(timeout=TIMEOUT)
        if line.startswith("roomcast metrics on "):
            metrics_addr = line.split()[-1]
    assert metrics_addr and metrics_addr != server.addr
    samples, _ = metrics(metrics_addr)
    assert value(samples, "roomcast_connections") == 0
    for path in ("/metrics", "/stats"):
        try:
            urllib.request.urlopen(f"http://{server.addr}{path}", timeout=TIMEOUT)
            raise AssertionError(f"{path} still served on the public port")
        except urllib.error.HTTPError as err:
            assert err.code == 404
            assert json.loads(err.read())["error"]["code"] == "NOT_FOUND"


def test_api_calls_read_by_the_reference_parser(start_server):
    key = "py-metrics-key-8c1f"
    server = start_server("--api-key", key)
    addr = server.addr
    req = urllib.request.Request(
        f"http://{addr}/api/info", data=b"{}", method="POST", headers={"X-API-Key": key}
    )
    with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
        assert resp.status == 200
    samples = wait_for(addr, "roomcast_api_requests_total", 1, method="info", status="200")
    _, types = metrics(addr)
    assert types["roomcast_api_requests"] == "counter"
    assert types["roomcast_api_request_duration_seconds"] == "histogram"
    assert value(samples, "roomcast_api_requests_total", method="unknown", status="other") == 0
    duration = "roomcast_api_request_duration_seconds"
    assert value(samples, f"{duration}_count", method="info") == 1
    assert value(samples, f"{duration}_bucket", method="info", le="+Inf") == 1
    assert value(samples, f"{duration}_sum", method="info") > 0
    assert value(samples, f"{duration}_count", method="publish") == 0
    assert (f"{duration}_count", frozenset({("method", "unknown")})) not in samples
    _, body = scrape(addr, "/stats")
    assert json.loads(body)["api"]["info"]["by_status"]["200"] == 1
