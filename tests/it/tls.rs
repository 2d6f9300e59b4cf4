//! TLS on the public port (`docs/protocol.md` section 11): `wss://` and
//! `https://` with a throwaway certificate made for each test, bad input
//! on the TLS port (plaintext, garbage, a truncated ClientHello that never
//! finishes), the metrics that count it, and the certificate reload on
//! SIGHUP that keeps established connections.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::{Message, WebSocket};

use common::pki::Authority;
use common::rooms::Claims;
use common::token::token;
use common::{READ_TIMEOUT, Server, metric, wait_for_stdout, wait_until};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A certificate authority of its own and a `localhost` certificate it
/// signed, written as PEM files (the hooks client's tests use it too).
pub(crate) struct Pki {
    ca: CertificateDer<'static>,
    /// The authority's certificate as PEM, for clients that read a file.
    pub(crate) ca_file: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl Pki {
    pub(crate) fn new(dir: &Path, name: &str) -> Pki {
        let authority = Authority::new(dir, name);
        let leaf = authority.issue(dir, name, &["localhost"]);
        Pki {
            ca: authority.der.clone(),
            ca_file: authority.file,
            cert: leaf.cert,
            key: leaf.key,
        }
    }

    /// A client that trusts only this authority.
    fn client(&self) -> Arc<ClientConfig> {
        client_config(&self.ca, None)
    }
}

fn client_config(
    ca: &CertificateDer<'static>,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions = match version {
        Some(version) => vec![version],
        None => rustls::ALL_VERSIONS.to_vec(),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

pub(crate) fn temp_dir() -> PathBuf {
    common::pki::temp_dir("tls")
}

/// A TLS server with `/echo`, its plaintext metrics port and its PKI.
struct TlsServer {
    server: Server,
    metrics: SocketAddr,
    pki: Pki,
    dir: PathBuf,
}

impl TlsServer {
    fn start(extra: &[&str]) -> TlsServer {
        let dir = temp_dir();
        let pki = Pki::new(&dir, "server");
        let mut args = vec![
            "--echo",
            "--metrics-bind",
            "127.0.0.1:0",
            "--tls-cert",
            pki.cert.to_str().unwrap(),
            "--tls-key",
            pki.key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let server = Server::start(&args);
        let line = wait_for_stdout(&server, "roomcast metrics on ");
        let metrics = line.trim().parse().unwrap();
        TlsServer {
            server,
            metrics,
            pki,
            dir,
        }
    }

    fn connect_with(&self, config: Arc<ClientConfig>) -> Result<TlsStream, std::io::Error> {
        let tcp = TcpStream::connect(self.server.addr())?;
        tcp.set_read_timeout(Some(READ_TIMEOUT))?;
        tcp.set_write_timeout(Some(READ_TIMEOUT))?;
        let name = ServerName::try_from("localhost").unwrap();
        let session = ClientConnection::new(config, name).unwrap();
        let mut stream = StreamOwned::new(session, tcp);
        // Drive the handshake now, so a refused certificate fails here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(stream)
    }

    fn connect(&self) -> TlsStream {
        self.connect_with(self.pki.client()).expect("TLS handshake")
    }

    fn wss(&self, path: &str, token: &str) -> WebSocket<TlsStream> {
        let url = format!("wss://localhost:{}{path}", self.server.addr().port());
        let request = tungstenite::http::Request::builder()
            .uri(url)
            .header("Host", "localhost")
            .header("Authorization", format!("Bearer {token}"))
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header(
                "Sec-WebSocket-Key",
                tungstenite::handshake::client::generate_key(),
            )
            .body(())
            .unwrap();
        let (ws, response) = tungstenite::client(request, self.connect()).unwrap();
        assert_eq!(response.status(), 101);
        ws
    }

    fn failures(&self, reason: &str) -> f64 {
        let series = format!("roomcast_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        metric(self.metrics, &series)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 request with `Connection: close`; the whole response.
fn https(stream: &mut TlsStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // The server closes after the response; without close_notify on a
        // kept-alive socket rustls reports an unexpected EOF.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the response: {e}"),
    }
    String::from_utf8(response).unwrap()
}

fn echo_round_trip(ws: &mut WebSocket<TlsStream>, message: Message) {
    ws.send(message.clone()).unwrap();
    assert_eq!(ws.read().unwrap(), message);
}

#[test]
fn wss_echoes_small_and_large_messages_over_tls_1_3_and_1_2() {
    let tls = TlsServer::start(&[]);
    let mut ws = tls.wss("/echo", &token("alice"));
    echo_round_trip(&mut ws, Message::text("hello over TLS"));
    let large: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    echo_round_trip(&mut ws, Message::binary(large));
    assert_eq!(
        ws.get_ref().conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(ws.get_ref().conn.alpn_protocol(), Some(&b"http/1.1"[..]));

    let tls12 = client_config(&tls.pki.ca, Some(&rustls::version::TLS12));
    let stream = tls.connect_with(tls12).unwrap();
    assert_eq!(
        stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert!(tls.failures("protocol") == 0.0);
    wait_until(Duration::from_secs(5), "handshakes counted", || {
        metric(tls.metrics, "roomcast_tls_handshakes_total") >= 2.0
    });
}

#[test]
fn rooms_publish_and_health_are_served_over_tls() {
    let tls = TlsServer::start(&[]);
    let mut member = tls.wss("/ws", &token("alice"));
    let welcome = member.read().unwrap();
    assert!(
        welcome
            .to_text()
            .unwrap()
            .contains("connection:established")
    );
    member
        .send(Message::text(
            r#"{"event":"room:join","id":"j1","data":{"room":"prices"}}"#,
        ))
        .unwrap();
    let joined = member.read().unwrap();
    assert!(
        joined.to_text().unwrap().contains(r#""id":"j1""#),
        "{joined}"
    );

    let feed = Claims::new("feed").publish(&["prices"]).token();
    let body = r#"{"room":"prices","event":"price:tick","data":{"p":101.5}}"#;
    let request = format!(
        "POST /publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {feed}\r\n\
         Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let response = https(&mut tls.connect(), &request);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let event = member.read().unwrap();
    let event = event.to_text().unwrap();
    assert!(
        event.contains(r#""event":"price:tick""#) && event.contains("101.5"),
        "{event}"
    );

    let health = https(
        &mut tls.connect(),
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
}

#[test]
fn plain_http_on_the_tls_port_gets_a_400_that_says_so() {
    let tls = TlsServer::start(&[]);
    let mut tcp = TcpStream::connect(tls.server.addr()).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(response.contains("this port speaks TLS"), "{response}");
    wait_until(Duration::from_secs(5), "counted", || {
        tls.failures("plaintext") == 1.0
    });
}

/// Reads until the server closes; returns how long that took.
fn time_until_closed(tcp: &mut TcpStream) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return start.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn garbage_truncated_and_abandoned_handshakes_are_dropped_and_counted() {
    let tls = TlsServer::start(&["--handshake-timeout", "700ms"]);
    let fds_before = open_fds(&tls.server);

    // A handshake record whose body is not a ClientHello.
    let mut garbage = TcpStream::connect(tls.server.addr()).unwrap();
    garbage.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    garbage
        .write_all(&[
            0x16, 0x03, 0x01, 0x00, 0x08, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4,
        ])
        .unwrap();
    assert!(time_until_closed(&mut garbage) < READ_TIMEOUT);
    wait_until(Duration::from_secs(5), "protocol failure counted", || {
        tls.failures("protocol") == 1.0
    });

    // The first bytes of a real ClientHello, and then nothing.
    let mut truncated = TcpStream::connect(tls.server.addr()).unwrap();
    truncated.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let hello = client_hello(&tls.pki);
    truncated.write_all(&hello[..hello.len() / 2]).unwrap();
    let waited = time_until_closed(&mut truncated);
    assert!(
        waited >= Duration::from_millis(500) && waited < READ_TIMEOUT,
        "cut after {waited:?}"
    );
    wait_until(Duration::from_secs(5), "timeout counted", || {
        tls.failures("timeout") == 1.0
    });

    // A client that goes away in the middle.
    let mut gone = TcpStream::connect(tls.server.addr()).unwrap();
    gone.write_all(&hello[..10]).unwrap();
    drop(gone);
    wait_until(Duration::from_secs(5), "closed counted", || {
        tls.failures("closed") == 1.0
    });

    // Through all of it, a real client is served.
    let mut ws = tls.wss("/echo", &token("bob"));
    echo_round_trip(&mut ws, Message::text("still here"));
    assert_eq!(tls.failures("protocol"), 1.0);
    drop(ws);
    drop((garbage, truncated));
    wait_until(Duration::from_secs(5), "every socket given back", || {
        open_fds(&tls.server) <= fds_before
    });
}

/// File descriptors the server process holds.
fn open_fds(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count()
}

/// The bytes of a real ClientHello for the server's name.
fn client_hello(pki: &Pki) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut session = ClientConnection::new(pki.client(), name).unwrap();
    let mut hello = Vec::new();
    session.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 20);
    hello
}

#[test]
fn sighup_reloads_the_certificate_and_keeps_established_connections() {
    let tls = TlsServer::start(&[]);
    let mut before = tls.wss("/echo", &token("alice"));
    echo_round_trip(&mut before, Message::text("before"));

    let fresh = Pki::new(&tls.dir, "fresh");
    std::fs::copy(&fresh.cert, &tls.pki.cert).unwrap();
    std::fs::copy(&fresh.key, &tls.pki.key).unwrap();
    tls.server.signal(libc::SIGHUP);
    tls.server.wait_for_log(&["certificate reloaded"]);

    assert!(
        tls.connect_with(tls.pki.client()).is_err(),
        "the old authority no longer vouches for the server"
    );
    assert!(tls.connect_with(fresh.client()).is_ok());
    echo_round_trip(&mut before, Message::text("after"));

    // A reload that fails keeps the certificate in use.
    std::fs::write(&tls.pki.key, "not a key").unwrap();
    tls.server.signal(libc::SIGHUP);
    tls.server.wait_for_log(&["certificate not reloaded"]);
    assert!(tls.connect_with(fresh.client()).is_ok());
    echo_round_trip(&mut before, Message::text("still"));
}

#[test]
fn unusable_certificates_are_refused_at_start_with_a_clear_message() {
    let dir = temp_dir();
    let pki = Pki::new(&dir, "a");
    let other = Pki::new(&dir, "b");
    let missing = dir.join("missing.pem");
    for (cert, key, expect) in [
        (&missing, &pki.key, "missing.pem"),
        (&pki.cert, &other.key, "cannot be used"),
        (&pki.key, &pki.key, "no PEM certificate"),
    ] {
        let output = Server::command()
            .args([
                "serve",
                "--check-config",
                "--jwt-secret",
                "a-long-enough-secret-1",
            ])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expect), "{stderr}");
    }
    let alone = Server::command()
        .args(["serve", "--check-config", "--tls-cert"])
        .arg(&pki.cert)
        .output()
        .unwrap();
    assert!(!alone.status.success());
    assert!(String::from_utf8_lossy(&alone.stderr).contains("--tls-key"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_tls_client_that_stops_reading_is_closed_4008_while_a_reader_keeps_going() {
    let tls = TlsServer::start(&["--shards", "1", "--max-write-buffer", "64KiB"]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reader = tls.wss("/echo", &token("reader"));
    let reader_stop = stop.clone();
    // The reader's round trips before the slow client's close was read,
    // and in all: it keeps going after too, to 20, as a loaded machine may
    // give it few turns while the slow client is being judged.
    let reader_thread = std::thread::spawn(move || {
        let (mut round_trips, mut before_close) = (0, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while before_close.is_none() || (round_trips < 20 && Instant::now() < deadline) {
            echo_round_trip(&mut reader, Message::binary(vec![7u8; 1024]));
            round_trips += 1;
            if before_close.is_none() && reader_stop.load(std::sync::atomic::Ordering::SeqCst) {
                before_close = Some(round_trips);
            }
        }
        (before_close.unwrap_or(0), round_trips)
    });

    let tcp = common::connect_with_small_rcvbuf(tls.server.addr(), 4096);
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let session = ClientConnection::new(tls.pki.client(), name).unwrap();
    let url = format!("wss://localhost:{}/echo", tls.server.addr().port());
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    let auth = format!("Bearer {}", token("slow")).parse().unwrap();
    request.headers_mut().insert("Authorization", auth);
    let (mut slow, _) = tungstenite::client(request, StreamOwned::new(session, tcp)).unwrap();
    let message = vec![1u8; 16 * 1024];
    for _ in 0..512 {
        // An error means the server closed us: stop sending.
        if slow.send(Message::binary(message.clone())).is_err() {
            break;
        }
    }
    let code = loop {
        match slow.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(code, Some(4008));
    let (before_close, round_trips) = reader_thread.join().unwrap();
    assert!(
        before_close >= 1 && round_trips >= 20,
        "{before_close}, {round_trips}"
    );
    drop(slow);
    wait_until(Duration::from_secs(5), "the 4008 counted", || {
        metric(tls.metrics, "roomcast_slow_consumer_closes_total") == 1.0
    });
}

/// `roomcast bench <args> --tls --json` against the TLS server.
fn bench_over_tls(tls: &TlsServer, args: &[&str]) -> simd_json::OwnedValue {
    let output = Server::command()
        .arg("bench")
        .args(args)
        .args([
            "--tls",
            "--threads",
            "1",
            "--json",
            "--jwt-secret",
            common::SECRET,
        ])
        .arg("--addr")
        .arg(tls.server.addr().to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    common::parse_json(stdout.trim())
}

fn count(result: &simd_json::OwnedValue, key: &str) -> u64 {
    use simd_json::prelude::*;
    common::json_at(result, &[key])
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no {key} in {result:?}"))
}

#[test]
fn the_load_generator_speaks_wss() {
    let tls = TlsServer::start(&["--shards", "2"]);
    let echo = bench_over_tls(&tls, &["echo", "-c", "4", "-w", "4", "-d", "500ms"]);
    assert_eq!(count(&echo, "connected"), 4);
    assert!(count(&echo, "sent") > 0);
    assert_eq!(count(&echo, "delivered"), count(&echo, "sent"));
    assert_eq!(count(&echo, "errors"), 0);

    let fanout = bench_over_tls(
        &tls,
        &["fanout", "-c", "20", "--publishers", "1", "-d", "500ms"],
    );
    assert!(count(&fanout, "expected") > 0);
    assert_eq!(count(&fanout, "delivered"), count(&fanout, "expected"));
    assert_eq!(count(&fanout, "lost"), 0);
    assert_eq!(count(&fanout, "errors"), 0);

    let connect = bench_over_tls(&tls, &["connect", "-c", "4", "-d", "500ms"]);
    let handshakes = count(&connect, "handshakes");
    assert!(handshakes > 0);
    assert_eq!(count(&connect, "errors"), 0);
    // Every WebSocket above came through a TLS handshake on the server.
    let echo_and_fanout = 4 + 20 + 2;
    let counted = metric(tls.metrics, "roomcast_tls_handshakes_total");
    assert!(
        counted >= (handshakes + echo_and_fanout) as f64,
        "{counted} < {handshakes}"
    );
    assert_eq!(tls.failures("protocol"), 0.0);
}

#[test]
fn msgpack_fanout_over_wss_with_compression() {
    let tls = TlsServer::start(&["--shards", "2", "--compression", "on"]);
    let fanout = bench_over_tls(
        &tls,
        &[
            "fanout",
            "-c",
            "10",
            "--protocol",
            "msgpack",
            "--compression",
            "--payload",
            "prices",
            "-s",
            "512",
            "-d",
            "500ms",
        ],
    );
    assert!(count(&fanout, "expected") > 0);
    assert_eq!(count(&fanout, "delivered"), count(&fanout, "expected"));
    assert_eq!(count(&fanout, "errors"), 0);
    assert!(count(&fanout, "compressed") >= count(&fanout, "delivered"));
}

#[test]
fn the_terminal_client_speaks_wss_and_checks_the_certificate() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let tls = TlsServer::start(&[]);
    let url = format!(
        "wss://localhost:{}/echo?token={}",
        tls.server.addr().port(),
        token("term")
    );
    let mut child = Server::command()
        .args(["connect", &url, "--ca"])
        .arg(&tls.pki.ca_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(stdin, "over TLS").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "< over TLS");
    writeln!(stdin, "and again").unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "< and again");
    drop(stdin);
    assert!(child.wait().unwrap().success());

    // Another authority does not vouch for this server.
    let other = Pki::new(&tls.dir, "other");
    let refused = Server::command()
        .args(["connect", &url, "--ca"])
        .arg(&other.ca_file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("TLS:") && stderr.contains("certificate"),
        "{stderr}"
    );
}

#[test]
fn the_api_client_speaks_tls_and_checks_the_certificate() {
    // No --metrics-bind: the API is served on the TLS port.
    let dir = temp_dir();
    let pki = Pki::new(&dir, "api");
    let server = Server::start(&[
        "--api-key",
        "tls-api-key",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ]);
    let call = |ca: &Path| {
        Server::command()
            .args(["api", "info", "--api-key", "tls-api-key", "--tls", "--ca"])
            .arg(ca)
            .args(["--addr", &format!("localhost:{}", server.addr().port())])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = call(&pki.ca_file);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reply = common::parse_json(&String::from_utf8_lossy(&out.stdout));
    assert!(
        common::json_at(&reply, &["result", "nodes"]).is_some(),
        "{reply:?}"
    );

    // Another authority does not vouch for this server.
    let other = Pki::new(&dir, "other");
    let refused = call(&other.ca_file);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("TLS:") && stderr.contains("certificate"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
