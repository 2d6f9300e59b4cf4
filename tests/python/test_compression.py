"""permessage-deflate through the Python `websockets` client, which offers
it by default (PROTOCOL.md section 11): on a `--compression on` server the
client negotiates it, a room's messages reach it compressed, and a client
that declined compression in the same room receives the same messages
uncompressed. That the frames really are compressed is read from the
server's own count of bytes written (`roomcast_bytes_sent_total`)."""

import contextlib
import json
import urllib.request

from websockets.extensions.permessage_deflate import PerMessageDeflate

from conftest import TIMEOUT, claims, open_ws, request


def bytes_sent(addr):
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=TIMEOUT) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("roomcast_bytes_sent_total "):
                return int(float(line.split()[1]))
    raise AssertionError("no roomcast_bytes_sent_total")


@contextlib.contextmanager
def member(server, sub, room, compression, **extra):
    """A client in `room`; `compression="deflate"` offers permessage-deflate
    (the library's default), `None` does not."""
    with open_ws(server, claims(sub, **extra), compression) as ws:
        ack, _ = request(ws, {"event": "room:join", "data": {"room": room}, "id": "j"})
        assert ack["success"] is True, ack
        yield ws


def feed(server):
    """A publisher allowed every room, itself in a room of its own."""
    return member(server, "py-feed", "feed-only", "deflate", pub=["*"])


def price_update(i):
    levels = [[67000 - k * 0.5 - i, round(0.1 + (k * 7 % 13) / 10, 4)] for k in range(40)]
    return {"sym": "BTC-USD", "i": i, "bids": levels}


def bytes_for_one_message(server, publisher, receiver, room, i):
    """What the server writes to deliver message `i` to `room`, whose only
    member `receiver` is not the publisher, and the ack; counted once the
    member has the message (returned too), so nothing is still in flight.
    The count also holds the first scrape's own response, so a scrape's size
    measured the same way is taken off."""
    before = bytes_sent(server.addr)
    scrape = bytes_sent(server.addr) - before
    before = bytes_sent(server.addr)
    ack, _ = request(publisher, {"event": "price:tick", "room": room, "data": price_update(i), "id": i})
    assert ack["success"] is True, ack
    received = json.loads(receiver.recv(timeout=TIMEOUT))
    return bytes_sent(server.addr) - before - scrape, received


def test_room_messages_reach_compressing_and_plain_clients_alike(start_server):
    server = start_server("--compression", "on", "--presence-rooms", "none", "--shards", "2")
    with (
        member(server, "py-zip", "prices:btc", "deflate") as zipped,
        member(server, "py-plain", "prices:btc", None) as plain,
        feed(server) as publisher,
    ):
        [extension] = zipped.protocol.extensions
        assert isinstance(extension, PerMessageDeflate)
        # The server never keeps a context: both sides start afresh per message.
        assert extension.remote_no_context_takeover and extension.local_no_context_takeover
        assert plain.protocol.extensions == []

        sent = []
        for i in range(1, 6):
            message = {"event": "price:tick", "room": "prices:btc", "data": price_update(i), "id": i}
            ack, _ = request(publisher, message)
            assert ack["success"] is True, ack
            sent.append(price_update(i))
        got_zipped = [json.loads(zipped.recv(timeout=TIMEOUT)) for _ in sent]
        got_plain = [json.loads(plain.recv(timeout=TIMEOUT)) for _ in sent]
        assert [m["data"] for m in got_zipped] == sent
        assert got_zipped == got_plain
        assert [m["seq"] for m in got_zipped] == [1, 2, 3, 4, 5]


def test_a_compressing_member_costs_fewer_bytes_on_the_wire(start_server):
    # One shard: the scrapes and the members share it, so every byte it
    # wrote is counted before it reads the next scrape.
    server = start_server("--compression", "on", "--presence-rooms", "none", "--shards", "1")
    with (
        member(server, "py-zip", "room-zip", "deflate") as zipped,
        member(server, "py-plain", "room-plain", None) as plain,
        feed(server) as publisher,
    ):
        # Each count includes the publisher's small ack; the room message
        # itself is about 750 bytes of JSON.
        to_plain, got_plain = bytes_for_one_message(server, publisher, plain, "room-plain", 1)
        to_zipped, got_zipped = bytes_for_one_message(server, publisher, zipped, "room-zip", 1)
        assert to_plain > 700, to_plain
        assert to_zipped < to_plain * 0.6, (to_zipped, to_plain)
        assert got_zipped["data"] == price_update(1)
        assert got_plain["data"] == price_update(1)
