"""Rooms through the Python `websockets` client: join, publish, the ack with
its seq, and delivery to another member (PROTOCOL.md sections 6 and 7)."""

import json
import time

from conftest import TIMEOUT, claims, open_ws, request


def test_join_publish_ack_and_receive(start_server):
    server = start_server("--presence-rooms", "presence-only")
    with open_ws(server, claims("py-alice")) as alice, open_ws(server, claims("py-bob")) as bob:
        for ws, i in ((alice, "j1"), (bob, "j2")):
            ack, _ = request(ws, {"event": "room:join", "data": {"room": "py-room"}, "id": i})
            assert ack["success"] is True, ack
            assert ack["data"]["room"] == "py-room"
            assert isinstance(ack["data"]["epoch"], str)
            assert ack["data"]["messages"] == []

        data = '{"text" : "h\\u00e9llo", "n": [1, 2.50]}'
        alice.send('{"event":"chat:message","room":"py-room","data":' + data + ',"id":7}')
        ack = json.loads(alice.recv(timeout=TIMEOUT))
        assert ack == {"event": "ack", "id": 7, "success": True, "data": {"seq": 1}}

        raw = bob.recv(timeout=TIMEOUT)
        assert raw.startswith(
            '{"event":"chat:message","room":"py-room","data":' + data + ',"from":"py-alice","seq":1,"ts":'
        ), raw
        message = json.loads(raw)
        assert list(message) == ["event", "room", "data", "from", "seq", "ts"]
        assert message["data"] == {"text": "h\u00e9llo", "n": [1, 2.5]}
        assert abs(message["ts"] - time.time() * 1000) < 60_000


def test_publisher_with_pub_claim_and_late_joiner_gets_the_last_value(start_server):
    server = start_server()
    feed_claims = claims("py-feed", rooms=[], pub=["prices:*"])
    with open_ws(server, feed_claims) as feed:
        for i in (1, 2):
            ack, _ = request(
                feed, {"event": "price:tick", "room": "prices:eur", "data": {"p": i}, "id": i}
            )
            assert ack["success"] is True, ack
            assert ack["data"] == {"seq": i}
    with open_ws(server, claims("py-late")) as late:
        ack, _ = request(
            late, {"event": "room:join", "data": {"room": "prices:eur", "history": 1}, "id": "h"}
        )
        assert ack["success"] is True, ack
        assert ack["data"]["seq"] == 2
        [last] = ack["data"]["messages"]
        assert last["data"] == {"p": 2}
        assert last["from"] == "py-feed"
        assert last["seq"] == 2
