"""roomcast over TLS (section 11) with Python's own TLS stack (OpenSSL through
the `ssl` module): `wss://` rooms with the `websockets` client and an
`https://` POST /publish, against a throwaway certificate made by the
`openssl` command for this test."""

import json
import ssl
import subprocess
import urllib.request

import pytest
from websockets.sync.client import connect

from conftest import TIMEOUT, TLS_HANDSHAKE_TIMEOUT, claims, mint, request


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(start_server, certificate):
    cert, key = certificate
    server = start_server("--tls-cert", str(cert), "--tls-key", str(key))
    context = ssl.create_default_context(cafile=str(cert))
    port = server.addr.rsplit(":", 1)[1]
    return server, context, port


def test_rooms_over_wss_and_publish_over_https(tls_server):
    server, context, port = tls_server
    with connect(
        f"wss://localhost:{port}/ws",
        ssl=context,
        additional_headers={"Authorization": f"Bearer {mint(claims('py-wss'))}"},
        open_timeout=TLS_HANDSHAKE_TIMEOUT,
        close_timeout=TIMEOUT,
        proxy=None,
    ) as ws:
        assert ws.socket.version() in ("TLSv1.3", "TLSv1.2")
        hello = json.loads(ws.recv(timeout=TIMEOUT))
        assert hello["event"] == "connection:established"
        ack, _ = request(ws, {"event": "room:join", "id": "j", "data": {"room": "quotes"}})
        assert ack["success"] is True, ack

        body = json.dumps({"room": "quotes", "event": "quote:tick", "data": {"px": 7}}).encode()
        publish = urllib.request.Request(
            f"https://localhost:{port}/publish",
            data=body,
            headers={
                "Authorization": f"Bearer {mint(claims('feed', pub=['quotes']))}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(publish, context=context, timeout=TIMEOUT) as response:
            assert response.status == 200

        event = json.loads(ws.recv(timeout=TIMEOUT))
        assert event["event"] == "quote:tick" and event["data"] == {"px": 7}, event


def test_a_client_that_does_not_trust_the_certificate_is_refused_by_itself(tls_server):
    _, _, port = tls_server
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(f"wss://localhost:{port}/ws", ssl=ssl.create_default_context(),
                open_timeout=TLS_HANDSHAKE_TIMEOUT, proxy=None)
