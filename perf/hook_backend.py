"""A minimal backend for perf/hooks.sh: HTTP/1.1 keep-alive on loopback, every
answer (status line, headers and body) in one write, so no answer waits on
TCP's delayed acknowledgements.

  POST /  (any path)  -> 200 with ANSWER (default {"result":{}}); a body with
                         "events" (a webhook batch) is counted: requests,
                         events and the batch size distribution
  GET /stats          -> those counts as JSON
  GET /reset          -> zero them

python3 perf/hook_backend.py --port-file FILE [--answer JSON]
Prints nothing; writes the port it bound (127.0.0.1:0) to FILE.
"""
import argparse
import asyncio
import collections
import json

STATS = {"requests": 0, "batches": 0, "events": 0}
SIZES = collections.Counter()


def reply(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class Backend(asyncio.Protocol):
    def __init__(self, answer: bytes):
        self.answer = reply(answer)
        self.buf = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        out = []
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                break
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            out.append(self.handle(head.split(" ", 2), body))
        if out:
            self.transport.write(b"".join(out))

    def handle(self, request_line, body):
        method, path = request_line[0], request_line[1]
        if method == "GET" and path == "/stats":
            s = dict(STATS, sizes={str(k): v for k, v in sorted(SIZES.items())})
            return reply(json.dumps(s).encode())
        if method == "GET" and path == "/reset":
            for k in STATS:
                STATS[k] = 0
            SIZES.clear()
            return reply(b"{}")
        STATS["requests"] += 1
        if body.startswith(b'{"events"'):
            n = body.count(b'"type":"')
            STATS["batches"] += 1
            STATS["events"] += n
            SIZES[n] += 1
        return self.answer


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--answer", default='{"result":{}}')
    args = ap.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Backend(args.answer.encode()), "127.0.0.1", 0,
                                      backlog=1024)
    with open(args.port_file, "w") as f:
        f.write(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
