"""The rpc and publish proxies (PROTOCOL.md section 13.2) against a backend
written with Python's http.server, which checks every request with the
signature snippet of docs/hooks.md, taken from the page itself."""

import http.server
import json
import re
import threading

import pytest

from conftest import ROOT, TIMEOUT, claims, open_ws, request

HOOK_SECRET = "py-hook-secret"


def snippet():
    """The `verify` function of docs/hooks.md, run as the page shows it."""
    page = (ROOT / "docs" / "hooks.md").read_text()
    code = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    scope = {}
    exec(code, scope)  # noqa: S102 - the documentation's own snippet
    return scope["verify"]


class Backend:
    """A local HTTP backend: `decide(body)` gives the JSON answer; every
    request's signature is checked with the documented snippet."""

    def __init__(self, decide):
        verify = snippet()
        self.requests = []
        self.unsigned = []
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers.get("X-Roomcast-Timestamp", "")
                signature = self.headers.get("X-Roomcast-Signature", "")
                if not verify(HOOK_SECRET.encode(), timestamp, signature, body):
                    backend.unsigned.append(body)
                # A tampered body or another secret must not pass.
                assert not verify(HOOK_SECRET.encode(), timestamp, signature, body + b" ")
                assert not verify(b"another", timestamp, signature, body)
                parsed = json.loads(body)
                backend.requests.append(parsed)
                answer = json.dumps(decide(parsed)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path="/"):
        host, port = self.httpd.server_address
        return f"http://{host}:{port}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def backend_with():
    backends = []

    def start(decide):
        backend = Backend(decide)
        backends.append(backend)
        return backend

    yield start
    for backend in backends:
        backend.close()


def test_the_documented_snippet_accepts_roomcasts_signature(start_server, backend_with):
    def decide(body):
        if body["method"] == "whoami":
            return {"result": {"user": body["user"], "asked": body["data"]}}
        return {"error": {"code": "NO_SUCH_METHOD", "message": body["method"]}}

    backend = backend_with(decide)
    server = start_server("--rpc-proxy", backend.url("/rpc"), "--hook-secret", HOOK_SECRET)
    with open_ws(server, claims("py-alice")) as ws:
        ack, _ = request(ws, {"event": "rpc:whoami", "data": {"x": [1, "é"]}, "id": 1})
        assert ack["success"] is True, ack
        assert ack["data"] == {"user": "py-alice", "asked": {"x": [1, "é"]}}
        ack, _ = request(ws, {"event": "rpc:nope", "id": 2})
        assert ack["success"] is False
        assert ack["error"] == {"code": "NO_SUCH_METHOD", "message": "nope"}
    assert len(backend.requests) == 2
    assert backend.unsigned == [], "every request passes the documented check"


def test_a_publish_proxy_replaces_what_members_see(start_server, backend_with):
    def decide(body):
        text = body["data"]["text"]
        if "spam" in text:
            return {"error": {"code": "SPAM", "message": "not here"}}
        return {"result": {"data": {"text": text.upper(), "checked": True}}}

    backend = backend_with(decide)
    server = start_server("--publish-proxy", backend.url(), "--hook-secret", HOOK_SECRET,
                          "--presence-rooms", "none")
    with open_ws(server, claims("py-alice")) as alice, open_ws(server, claims("py-bob")) as bob:
        for ws in (alice, bob):
            ack, _ = request(ws, {"event": "room:join", "data": {"room": "talk"}, "id": "j"})
            assert ack["success"] is True, ack
        ack, _ = request(alice, {"event": "chat:msg", "room": "talk",
                                 "data": {"text": "spam!"}, "id": "m1"})
        assert ack["error"]["code"] == "SPAM", ack
        ack, _ = request(alice, {"event": "chat:msg", "room": "talk",
                                 "data": {"text": "hello"}, "id": "m2"})
        assert ack["success"] is True, ack
        got = json.loads(bob.recv(timeout=TIMEOUT))
        assert got["event"] == "chat:msg"
        assert got["data"] == {"text": "HELLO", "checked": True}
    assert [r["data"]["text"] for r in backend.requests] == ["spam!", "hello"]
    assert backend.requests[0]["user"] == "py-alice"
    assert backend.requests[0]["room"] == "talk"
    assert backend.unsigned == []
