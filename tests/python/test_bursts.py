"""Bursts never cut a client that reads (PROTOCOL.md section 8).

A publisher sends room events in bursts of two and four times
`--max-write-buffer`, with pauses that keep its average rate within what a
Python client reads. The bound is about a client that falls behind, not about
how much arrived within one turn of the server's event loop, so under every
`--slow-consumer` policy a member that keeps reading gets every event, in
`seq` order, with no 4008, no `system:dropped` and no gap, also beside a
member that never reads, which meets its policy within the bound while the
server's memory stays flat."""

import json
import pathlib
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import claims, mint, open_ws, request, slow_consumer

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT = 5
BOUND = 256 * 1024
EVENT_DATA = "x" * 8000
EVENTS = 1000  # 8 MB, 30 bounds
# The average rate the publisher keeps to, well within what one Python
# client reads on this loopback (over 100 MB/s measured).
AVERAGE_BYTES_PER_SECOND = 40e6


class Reader:
    """A member that reads everything as it arrives, in its own process
    (`burst_reader.py`)."""

    def __init__(self, server, room):
        self.proc = subprocess.Popen(
            [
                sys.executable, str(HERE / "burst_reader.py"), server.url("/ws"),
                mint(claims("py-reader")), room, "burst:tick", str(EVENTS + 1),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"
        self.seqs, self.others, self.closed = [], [], None

    def finish(self):
        out, _ = self.proc.communicate(timeout=60)
        result = json.loads(out)
        self.seqs, self.others, self.closed = result["seqs"], result["others"], result["ended"]


def publish_in_bursts(publisher, room, burst_bytes):
    per_burst = max(1, burst_bytes // len(EVENT_DATA))
    pause = burst_bytes / AVERAGE_BYTES_PER_SECOND
    text = json.dumps({"event": "burst:tick", "room": room, "data": EVENT_DATA})
    for n in range(EVENTS):
        publisher.send(text)
        if n % per_burst == per_burst - 1:
            time.sleep(pause)
    # The publisher's own last event is acknowledged once all are sequenced.
    ack, _ = request(publisher, {"event": "burst:tick", "room": room, "data": 0, "id": "end"})
    assert ack["success"] is True, ack
    return ack["data"]["seq"]


def stats(server):
    with urllib.request.urlopen(f"http://{server.addr}/stats", timeout=TIMEOUT) as resp:
        return json.loads(resp.read())


def wait_for(condition, timeout=15):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def rss_bytes(server):
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def assert_got_everything(reader, last_seq):
    assert reader.closed is None, f"the reading member was cut: {reader.closed!r}"
    assert reader.seqs == list(range(1, EVENTS + 2)), (
        f"got {len(reader.seqs)} of {EVENTS}, first gap after "
        f"{next((s for a, s in zip(reader.seqs, reader.seqs[1:]) if s != a + 1), None)}"
    )
    assert "system:dropped" not in reader.others, reader.others
    assert last_seq == EVENTS + 1


def start(start_server, policy):
    return start_server(
        "--max-write-buffer", f"{BOUND}", "--slow-consumer", policy, "--shards", "2",
        "--presence-rooms", "none-here",
    )


@pytest.mark.parametrize("policy", ["close", "drop", "conflate"])
@pytest.mark.parametrize("bounds_per_burst", [2, 4])
def test_a_reading_member_gets_every_burst(start_server, policy, bounds_per_burst):
    server = start(start_server, policy)
    reader = Reader(server, "bursts")
    with open_ws(server, claims("py-feed", pub=["*"], rate=0)) as publisher:
        last_seq = publish_in_bursts(publisher, "bursts", bounds_per_burst * BOUND)
    reader.finish()
    assert_got_everything(reader, last_seq)
    figures = stats(server)["messages"]
    assert figures["dropped"] == 0 and figures["conflated"] == 0, figures
    assert stats(server)["connections_detail"]["slow_consumer_closes"] == 0


@pytest.mark.parametrize("policy", ["close", "drop", "conflate"])
def test_a_reading_member_beside_a_stalled_one_loses_nothing(start_server, policy):
    server = start(start_server, policy)
    reader = Reader(server, "mixed")
    with slow_consumer(server, "mixed") as stalled, open_ws(
        server, claims("py-feed", pub=["*"], rate=0)
    ) as publisher:
        rss_before = rss_bytes(server)
        last_seq = publish_in_bursts(publisher, "mixed", 4 * BOUND)
        reader.finish()
        assert_got_everything(reader, last_seq)
        # What the stalled member costs the server is about its bound (and
        # the allocator's slack), not the 8 MB published past it.
        growth = rss_bytes(server) - rss_before
        assert growth < 4 * BOUND + 1536 * 1024, f"RSS grew by {growth} B"
        check_stalled(stalled, policy)
        if policy == "close":
            # Counted once the socket is gone.
            wait_for(lambda: stats(server)["connections_detail"]["slow_consumer_closes"] == 1)
        elif policy == "drop":
            assert stats(server)["messages"]["dropped"] > 0
        else:
            assert stats(server)["messages"]["conflated"] > 0


def check_stalled(stalled, policy):
    """The stalled member, reading at last, sees what its policy promises."""
    seqs, dropped = [], 0
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            message = json.loads(stalled.recv(timeout=2))
            if message["event"] == "burst:tick":
                seqs.append(message["seq"])
            elif message["event"] == "system:dropped":
                dropped += message["data"]["count"]
            if seqs and seqs[-1] == EVENTS + 1:
                break
    except TimeoutError:
        pass
    except Exception as error:
        assert policy == "close", f"{policy}: the stalled member was closed: {error!r}"
        assert getattr(getattr(error, "rcvd", None), "code", None) == 4008, repr(error)
        return
    assert policy != "close", f"no 4008 after {len(seqs)} events"
    assert seqs == sorted(seqs) and len(seqs) < EVENTS + 1, (policy, len(seqs))
    if policy == "drop":
        assert dropped > 0 and len(seqs) + dropped == EVENTS + 1, (len(seqs), dropped)
