"""The `roomcast.msgpack` subprotocol (PROTOCOL.md section 14) with the
`websockets` library and the `msgpack` package, independent of the
server's own codec: a MessagePack client joins, publishes and receives
MessagePack maps in binary frames, JSON and MessagePack members of one
room see the same events, a text frame closes such a connection with
1003, and bin and ext values are refused with VALIDATION_ERROR while the
connection stays open."""

import contextlib
import json

import msgpack
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import TIMEOUT, claims, mint, open_ws, request

PROTOCOL = "roomcast.msgpack"
# Non-ASCII, an integer past 2^53, a float, nil, nesting.
DATA = {"text": "héllo – 東京 😀", "big": 2**60 + 1, "price": 67001.25, "none": None, "deep": [[{"ok": True}]]}


class Packed:
    """A `/ws` client that chose `roomcast.msgpack`: every message a
    MessagePack map in a binary frame."""

    def __init__(self, ws):
        self.ws = ws

    def send(self, message):
        self.ws.send(msgpack.packb(message, use_bin_type=True))

    def recv(self):
        frame = self.ws.recv(timeout=TIMEOUT)
        assert isinstance(frame, bytes), f"not a binary frame: {frame!r}"
        return msgpack.unpackb(frame, raw=False)

    def recv_event(self, event):
        """The next message named `event`, skipping presence."""
        while True:
            message = self.recv()
            if message.get("event") == event:
                return message
            assert message["event"].startswith("presence:"), message

    def request(self, message):
        """Sends `message` (which has an `id`) and returns its ack."""
        self.send(message)
        while True:
            reply = self.recv()
            if reply.get("event") == "ack" and reply.get("id") == message["id"]:
                return reply


@contextlib.contextmanager
def open_packed(server, sub):
    """A MessagePack client that has read its greeting."""
    with connect(
        server.url("/ws"),
        additional_headers={"Authorization": f"Bearer {mint(claims(sub))}"},
        subprotocols=[PROTOCOL],
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        proxy=None,
    ) as ws:
        assert ws.subprotocol == PROTOCOL, "the 101 chooses MessagePack"
        client = Packed(ws)
        hello = client.recv()
        assert hello["event"] == "connection:established", hello
        yield client


def join(client, room):
    ack = client.request({"event": "room:join", "data": {"room": room}, "id": 1})
    assert ack["success"] is True, ack
    assert ack["id"] == 1, "an integer id stays an integer"


def json_event(ws, event, others=()):
    """The first message named `event`: among `others` (received while
    waiting for an ack), else the next one."""
    for message in others:
        if message.get("event") == event:
            return message
    while True:
        message = json.loads(ws.recv(timeout=TIMEOUT))
        if message.get("event") == event:
            return message


def error_code(reply):
    return (reply.get("error") or reply["data"])["code"]


def test_a_msgpack_client_joins_publishes_and_receives_msgpack(start_server):
    server = start_server()
    with open_packed(server, "py-mp") as client:
        join(client, "lobby")
        client.send({"event": "chat:msg", "room": "lobby", "data": DATA, "id": "p1", "echo": True})
        got = [client.recv(), client.recv()]
        ack = next(m for m in got if m["event"] == "ack")
        event = next(m for m in got if m["event"] == "chat:msg")
        assert ack["id"] == "p1" and ack["success"] is True, ack
        assert event["data"] == DATA
        assert event["seq"] == ack["data"]["seq"]
        assert event["from"] == "py-mp"
        assert list(event) == ["event", "room", "data", "from", "seq", "ts"]


def test_json_and_msgpack_members_see_the_same_events(start_server):
    server = start_server()
    with open_packed(server, "py-mp") as client:
        join(client, "mixed")
        with open_ws(server, claims("py-js"), compression=None) as ws:
            ack, _ = request(ws, {"event": "room:join", "data": {"room": "mixed"}, "id": "j"})
            assert ack["success"] is True, ack
            # A JSON publisher's event, both ways.
            message = {"event": "feed:tick", "room": "mixed", "data": DATA, "id": "t1", "echo": True}
            _, others = request(ws, message)
            as_json = json_event(ws, "feed:tick", others)
            as_packed = client.recv_event("feed:tick")
            assert as_packed == as_json
            assert as_packed["data"] == DATA
            # A MessagePack publisher's event reaches the JSON member.
            client.request({"event": "feed:tock", "room": "mixed", "data": DATA, "id": 2})
            seen = json_event(ws, "feed:tock")
            assert seen["data"] == DATA
            assert seen["from"] == "py-mp"


def test_a_text_frame_closes_a_msgpack_connection_with_1003(start_server):
    server = start_server()
    with open_packed(server, "py-mp") as client, pytest.raises(ConnectionClosed) as closed:
        client.ws.send(json.dumps({"event": "ping"}))
        while True:
            client.ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003, closed.value


@pytest.mark.parametrize(
    "value",
    [b"\x01\x02", msgpack.ExtType(1, b"x"), msgpack.Timestamp(1, 0)],
    ids=["bin", "ext", "timestamp ext"],
)
def test_bin_and_ext_values_are_a_validation_error(start_server, value):
    server = start_server()
    with open_packed(server, "py-mp") as client:
        join(client, "r")
        client.send({"event": "chat:msg", "room": "r", "data": {"v": value}, "id": "x"})
        reply = client.recv_event("error")
        assert error_code(reply) == "VALIDATION_ERROR", reply
        pong = client.request({"event": "ping", "id": "alive"})
        assert pong["success"] is True, "the connection lives on"
