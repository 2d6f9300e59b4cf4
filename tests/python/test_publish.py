"""POST /publish through the standard library's HTTP clients (urllib.request
and http.client), with WebSocket members on the Python `websockets` client
(PROTOCOL.md section 9)."""

import http.client
import json
import time
import urllib.error
import urllib.request

from conftest import TIMEOUT, claims, mint, open_ws, request

# No proxy from the environment may stand between the test and the server.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def publisher(*patterns, **extra):
    return mint(claims("py-feed", pub=list(patterns), **extra))


def post(server, body, token=None):
    """POSTs `body` (bytes or a JSON-able value) with urllib; (status, JSON body)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{server.addr}/publish", data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with OPENER.open(req, timeout=TIMEOUT) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def assert_failure(answer, status, code):
    got_status, body = answer
    assert got_status == status, body
    assert body["success"] is False, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str), body


def joined(ws, room):
    ack, _ = request(ws, {"event": "room:join", "data": {"room": room}, "id": f"join-{room}"})
    assert ack["success"] is True, ack


def test_a_publish_reaches_members_with_its_seq(start_server):
    server = start_server("--presence-rooms", "presence-only")
    with open_ws(server, claims("py-a")) as a, open_ws(server, claims("py-b")) as b:
        joined(a, "py-news")
        joined(b, "py-news")
        status, body = post(
            server,
            {"room": "py-news", "event": "news:item", "data": {"title": "h\u00e9llo"}},
            publisher("py-*"),
        )
        assert (status, body) == (200, {"success": True, "results": [{"room": "py-news", "seq": 1}]})
        for ws in (a, b):
            message = json.loads(ws.recv(timeout=TIMEOUT))
            assert list(message) == ["event", "room", "data", "from", "seq", "ts"]
            assert message["event"] == "news:item"
            assert message["data"] == {"title": "h\u00e9llo"}
            assert (message["from"], message["seq"]) == ("py-feed", 1)
            assert abs(message["ts"] - time.time() * 1000) < 60_000


def test_a_batch_keeps_its_order(start_server):
    server = start_server("--presence-rooms", "presence-only", "--shards", "2")
    with open_ws(server, claims("py-member")) as member:
        joined(member, "py-1")
        joined(member, "py-2")
        sent = [("py-1", 1), ("py-2", 2), ("py-1", 3), ("py-1", 4)]
        status, body = post(
            server,
            {"messages": [{"room": r, "event": "n:x", "data": d} for r, d in sent]},
            publisher("py-*"),
        )
        assert status == 200, body
        assert body["results"] == [
            {"room": "py-1", "seq": 1},
            {"room": "py-2", "seq": 1},
            {"room": "py-1", "seq": 2},
            {"room": "py-1", "seq": 3},
        ]
        received = [json.loads(member.recv(timeout=TIMEOUT)) for _ in sent]
        in_room_1 = [(m["seq"], m["data"]) for m in received if m["room"] == "py-1"]
        assert in_room_1 == [(1, 1), (2, 3), (3, 4)]


def test_token_errors_are_401(start_server):
    server = start_server()
    message = {"room": "lobby", "event": "chat:message"}
    assert_failure(post(server, message), 401, "UNAUTHENTICATED")
    assert_failure(post(server, message, "not.a.token"), 401, "UNAUTHENTICATED")
    expired = mint({"sub": "py-feed", "exp": int(time.time()) - 60, "pub": ["*"]})
    assert_failure(post(server, message, expired), 401, "TOKEN_EXPIRED")


def test_rooms_outside_pub_are_403(start_server):
    server = start_server()
    batch = {"messages": [{"room": "prices:x", "event": "p:t"}, {"room": "lobby", "event": "p:t"}]}
    assert_failure(post(server, batch, publisher("prices:*")), 403, "FORBIDDEN")
    member = mint(claims("py-member", rooms=["*"]))
    assert_failure(post(server, {"room": "lobby", "event": "p:t"}, member), 403, "FORBIDDEN")


def test_bad_bodies_are_400(start_server):
    server = start_server()
    token = publisher("*")
    assert_failure(post(server, b"{nope", token), 400, "INVALID_MESSAGE")
    assert_failure(post(server, {"room": "lobby", "event": "room:join"}, token), 400, "VALIDATION_ERROR")
    assert_failure(post(server, {"messages": []}, token), 400, "VALIDATION_ERROR")


def test_a_body_over_the_limit_is_413(start_server):
    server = start_server("--max-message-size", "1KiB")
    big = {"room": "lobby", "event": "chat:message", "data": "x" * 2000}
    assert_failure(post(server, big, publisher("*")), 413, "PAYLOAD_TOO_LARGE")


def test_a_post_without_a_length_is_411(start_server):
    server = start_server()
    host, port = server.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.putrequest("POST", "/publish", skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {publisher('*')}")
        conn.endheaders()
        resp = conn.getresponse()
        answer = resp.status, json.loads(resp.read())
        assert resp.getheader("Connection") == "close"
    finally:
        conn.close()
    assert_failure(answer, 411, "LENGTH_REQUIRED")


def test_a_hundred_requests_over_one_keep_alive_connection(start_server):
    server = start_server()
    host, port = server.addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    headers = {"Authorization": f"Bearer {publisher('*')}", "Content-Type": "application/json"}
    sockets = set()
    try:
        for seq in range(1, 101):
            body = json.dumps({"room": "py-count", "event": "count:up", "data": seq})
            conn.request("POST", "/publish", body=body, headers=headers)
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read()) == {
                "success": True,
                "results": [{"room": "py-count", "seq": seq}],
            }
            assert resp.getheader("Connection") == "keep-alive"
            sockets.add(conn.sock.getsockname())
    finally:
        conn.close()
    assert len(sockets) == 1, "every request went over the same connection"
