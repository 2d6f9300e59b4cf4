"""A room member that reads everything as it arrives, run as its own process
so that no thread of the test (the publisher above all) competes with it for
the interpreter: `python burst_reader.py URL TOKEN ROOM EVENT COUNT`.

It joins ROOM, prints `ready`, reads until it has COUNT events named EVENT
(or the connection ends, or nothing comes for 30 s) and prints one JSON line:
the `seq`s received, the other events' names and how the reading ended."""

import json
import sys

from websockets.sync.client import connect


def main(url, token, room, event, count):
    seqs, others, ended = [], [], None
    with connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=5,
        proxy=None,
        max_size=None,
        max_queue=None,
    ) as ws:
        json.loads(ws.recv(timeout=5))
        ws.send(json.dumps({"event": "room:join", "data": {"room": room}, "id": "join"}))
        while json.loads(ws.recv(timeout=5)).get("id") != "join":
            pass
        print("ready", flush=True)
        try:
            while len(seqs) < count:
                message = json.loads(ws.recv(timeout=30))
                if message["event"] == event:
                    seqs.append(message["seq"])
                else:
                    others.append(message["event"])
        except Exception as error:  # a close or a time-out ends the reading
            ended = repr(error)
    print(json.dumps({"seqs": seqs, "others": others, "ended": ended}), flush=True)


if __name__ == "__main__":
    url, token, room, event, count = sys.argv[1:]
    main(url, token, room, event, int(count))
