"""roomcast against an independent client: the Python `websockets` library."""

import json
import signal
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import SECRET, mint, token

TIMEOUT = 5
MAX = 64 * 1024


def open_ws(server, path="/ws", tok=None, **kwargs):
    headers = {"Authorization": f"Bearer {tok or token()}"}
    return connect(
        server.url(path),
        additional_headers=headers,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
        proxy=None,
        **kwargs,
    )


def recv_json(ws):
    return json.loads(ws.recv(timeout=TIMEOUT))


def test_connection_established_names_the_user(start_server):
    server = start_server("--ping-interval", "9s")
    with open_ws(server, tok=token("py-alice")) as ws:
        hello = recv_json(ws)
    assert hello["event"] == "connection:established"
    assert hello["data"]["userId"] == "py-alice"
    assert isinstance(hello["data"]["connId"], str) and hello["data"]["connId"]
    assert hello["data"]["pingInterval"] == 9000
    assert abs(hello["data"]["serverTime"] - time.time() * 1000) < 60_000


def test_ping_event_gets_pong_and_ack(start_server):
    server = start_server()
    with open_ws(server) as ws:
        recv_json(ws)
        ws.send(json.dumps({"event": "ping", "id": 1}))
        replies = [recv_json(ws), recv_json(ws)]
    by_event = {r["event"]: r for r in replies}
    assert set(by_event) == {"pong", "ack"}, replies
    assert isinstance(by_event["pong"]["data"]["serverTime"], int)
    assert by_event["ack"]["id"] == 1
    assert by_event["ack"]["success"] is True


def test_bare_ping_gets_pong(start_server):
    server = start_server()
    with open_ws(server) as ws:
        recv_json(ws)
        ws.send("ping")
        assert ws.recv(timeout=TIMEOUT) == "pong"


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, MAX])
def test_echo_text_and_binary_up_to_the_max(start_server, size):
    server = start_server("--echo")
    text = "é" * (size // 2) + "x" * (size % 2)
    data = bytes(i % 256 for i in range(size))
    with open_ws(server, "/echo") as ws:
        ws.send(text)
        assert ws.recv(timeout=TIMEOUT) == text
        ws.send(data)
        echoed = ws.recv(timeout=TIMEOUT)
    assert isinstance(echoed, bytes)
    assert echoed == data


def test_too_big_message_is_closed_1009(start_server):
    server = start_server("--echo")
    with open_ws(server, "/echo") as ws:
        ws.send("x" * (MAX + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


def test_missing_token_is_rejected_with_401(start_server):
    server = start_server()
    with pytest.raises(InvalidStatus) as rejected:
        connect(server.url("/ws"), open_timeout=TIMEOUT, proxy=None)
    response = rejected.value.response
    assert response.status_code == 401
    assert json.loads(response.body)["error"]["code"] == "UNAUTHENTICATED"


def test_expired_token_is_rejected_without_echoing_it(start_server):
    server = start_server()
    expired = mint({"sub": "py-user", "exp": int(time.time()) - 10})
    with pytest.raises(InvalidStatus) as rejected:
        open_ws(server, tok=expired)
    response = rejected.value.response
    assert response.status_code == 401
    body = response.body.decode()
    assert json.loads(body)["error"]["code"] == "TOKEN_EXPIRED"
    assert expired.split(".")[2] not in body
    assert SECRET not in body


def test_token_in_query_is_accepted(start_server):
    server = start_server()
    url = server.url(f"/ws?token={token('py-query')}")
    with connect(url, open_timeout=TIMEOUT, proxy=None) as ws:
        assert recv_json(ws)["data"]["userId"] == "py-query"


def test_roomcast_v1_subprotocol_is_selected(start_server):
    server = start_server()
    with open_ws(server, subprotocols=["chat", "roomcast.v1"]) as ws:
        assert ws.subprotocol == "roomcast.v1"
        assert recv_json(ws)["event"] == "connection:established"


def test_sigterm_closes_with_1001_and_exits_0(start_server):
    server = start_server()
    with open_ws(server) as ws:
        recv_json(ws)
        server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert server.proc.wait(timeout=15) == 0
