//! The hooks client (section 13) against real local backends: std
//! `TcpListener`s, one thread per connection, speaking HTTP/1.1 by hand
//! (and TLS through rustls' server side). What the backend reads is checked
//! on its side: the request line and headers, and the signature, recomputed
//! from the secret. Timing checks use bounds a loaded machine keeps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ring::hmac;
use roomcast::hooks::client::{self, ClientConfig, Resolver};
use roomcast::hooks::http::ResponseError;
use roomcast::hooks::sign::Signer;
use roomcast::hooks::{HookError, HookHandle, HookRequest, HookResponse, HookSink};
use roomcast::metrics::HookMetrics;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::common;
use crate::tls::{Pki, temp_dir};

const SECRET: &[u8] = b"hook-test-secret";
/// Longest wait for any outcome: every test's deadlines are shorter.
const WAIT: Duration = Duration::from_secs(10);

type Outcome = Result<HookResponse, HookError>;

/// Sends every outcome, with its answer, to the test.
struct Outcomes(Sender<(u32, Outcome)>);

impl HookSink for Outcomes {
    type Answer = u32;
    fn answered(&self, answer: u32, outcome: Outcome) {
        let _ = self.0.send((answer, outcome));
    }
}

/// A request as the backend read it.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) request_line: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Checks the signature as a backend would: the HMAC-SHA256 of
    /// `<timestamp>.<body>`, and a timestamp close to now.
    pub(crate) fn assert_signed(&self) {
        let timestamp = self.header("X-Roomcast-Timestamp").expect("timestamp");
        let ms: u64 = timestamp.parse().expect("a number of ms");
        let now = roomcast::sys::unix_ms();
        assert!(ms.abs_diff(now) < 10_000, "timestamp {ms}, now {now}");
        let signature = self.header("X-Roomcast-Signature").expect("signature");
        let hex = signature.strip_prefix("sha256=").expect("sha256=");
        let tag: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect();
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(&self.body);
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET);
        hmac::verify(&key, &signed, &tag).expect("the signature matches");
    }
}

/// Reads one request; `None` at the end of the connection.
pub(crate) fn read_request(conn: &mut impl BufRead) -> Option<Received> {
    let mut line = String::new();
    if conn.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let request_line = line.trim_end().to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        conn.read_line(&mut line).ok()?;
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let (name, value) = field.split_once(':')?;
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut received = Received {
        request_line,
        headers,
        body: Vec::new(),
    };
    let len: usize = received.header("Content-Length")?.parse().ok()?;
    received.body = vec![0; len];
    conn.read_exact(&mut received.body).ok()?;
    Some(received)
}

/// What a backend shares with the test.
#[derive(Default)]
pub(crate) struct Seen {
    /// Connections accepted.
    accepted: AtomicUsize,
    /// Requests read, in order.
    requests: Mutex<Vec<Received>>,
    /// Requests being answered now, and the most at once.
    pub(crate) busy: AtomicUsize,
    pub(crate) most_busy: AtomicUsize,
}

impl Seen {
    pub(crate) fn record(&self, request: Received) {
        self.requests.lock().unwrap().push(request);
    }

    pub(crate) fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// A backend: each accepted connection is served by `serve` on a thread
/// of its own, with the number of the connection (from 0).
pub(crate) struct Backend {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Seen>,
}

impl Backend {
    pub(crate) fn start<F>(serve: F) -> Backend
    where
        F: Fn(TcpStream, usize, &Seen) + Send + Sync + 'static,
    {
        Self::start_on("127.0.0.1:0".parse().unwrap(), serve)
    }

    fn start_on<F>(addr: SocketAddr, serve: F) -> Backend
    where
        F: Fn(TcpStream, usize, &Seen) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let serve = Arc::new(serve);
        let shared = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let n = shared.accepted.fetch_add(1, Ordering::SeqCst);
                let (serve, seen) = (serve.clone(), shared.clone());
                thread::spawn(move || serve(stream, n, &seen));
            }
        });
        Backend { addr, seen }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Answers every request on the connection with `200` and a JSON body
/// that names the request's own body, after `delay`, counting how many
/// are being answered at once.
fn keep_alive(delay: Duration) -> impl Fn(TcpStream, usize, &Seen) + Send + Sync {
    move |stream, _, seen| serve_keep_alive(stream, delay, seen)
}

fn serve_keep_alive(stream: impl Read + Write, delay: Duration, seen: &Seen) {
    let mut conn = BufReader::new(stream);
    while let Some(request) = read_request(&mut conn) {
        let busy = seen.busy.fetch_add(1, Ordering::SeqCst) + 1;
        seen.most_busy.fetch_max(busy, Ordering::SeqCst);
        let body = format!(r#"{{"result":{}}}"#, String::from_utf8_lossy(&request.body));
        seen.record(request);
        thread::sleep(delay);
        seen.busy.fetch_sub(1, Ordering::SeqCst);
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if conn.get_mut().write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A running client, the outcomes it gave and its metrics.
struct Client {
    handle: HookHandle<u32>,
    outcomes: Receiver<(u32, Outcome)>,
    metrics: Arc<HookMetrics>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    fn start(url: &str, tune: impl FnOnce(&mut ClientConfig)) -> Client {
        let mut config = ClientConfig {
            urls: vec![url.parse().unwrap()],
            signer: Signer::new(SECRET),
            concurrency: 64,
            queue: 1024,
            max_response_body: 64 * 1024,
            tls: None,
            resolver: Resolver::system(),
        };
        tune(&mut config);
        let (tx, outcomes) = mpsc::channel();
        let metrics = Arc::new(HookMetrics::default());
        let (handle, thread) = client::start(config, Outcomes(tx), metrics.clone()).unwrap();
        Client {
            handle,
            outcomes,
            metrics,
            thread: Some(thread),
        }
    }

    /// Sends request `n` with a body naming it, due within `timeout`.
    fn send(&self, n: u32, timeout: Duration) {
        self.handle
            .send(request(n, timeout))
            .unwrap_or_else(|refused| panic!("request {n}: {refused:?}"));
    }

    fn next(&self) -> (u32, Outcome) {
        self.outcomes.recv_timeout(WAIT).expect("an outcome")
    }

    /// Sends request `n` and waits for its outcome.
    fn call(&self, n: u32, timeout: Duration) -> Outcome {
        self.send(n, timeout);
        let (answer, outcome) = self.next();
        assert_eq!(answer, n);
        outcome
    }

    /// The outcomes of `count` requests, by answer.
    fn collect(&self, count: usize) -> Vec<(u32, Outcome)> {
        let mut all: Vec<_> = (0..count).map(|_| self.next()).collect();
        all.sort_by_key(|(n, _)| *n);
        all
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn request(n: u32, timeout: Duration) -> HookRequest<u32> {
    HookRequest {
        url_index: 0,
        body: format!(r#"{{"n":{n}}}"#).into_bytes(),
        deadline: Instant::now() + timeout,
        answer: n,
    }
}

/// A body of about `len` bytes: large bodies cross many socket writes
/// (and, over TLS, rustls' 64 KiB plaintext buffer).
fn large_body(len: usize) -> Vec<u8> {
    format!(r#"{{"n":0,"pad":"{}"}}"#, "x".repeat(len)).into_bytes()
}

impl Client {
    /// Sends `body` whole and checks the backend saw it and echoed it.
    fn round_trip_large(&self, backend: &Backend, body: Vec<u8>) {
        let before = backend.seen.count();
        let request = HookRequest {
            url_index: 0,
            body: body.clone(),
            deadline: Instant::now() + Duration::from_secs(8),
            answer: 99,
        };
        self.handle.send(request).unwrap();
        let (answer, outcome) = self.next();
        assert_eq!(answer, 99);
        let response = outcome.unwrap();
        assert_eq!(response.body.len(), body.len() + r#"{"result":}"#.len());
        let seen = backend.seen.requests();
        assert_eq!(seen.len(), before + 1);
        assert!(seen[before].body == body, "the body arrived changed");
        seen[before].assert_signed();
    }
}

fn ok_body(n: u32) -> Vec<u8> {
    format!(r#"{{"result":{{"n":{n}}}}}"#).into_bytes()
}

fn assert_ok(outcome: &Outcome, n: u32) {
    match outcome {
        Ok(response) => {
            assert_eq!(response.status, 200);
            assert_eq!(response.body, ok_body(n), "request {n}");
        }
        Err(e) => panic!("request {n}: {e}"),
    }
}

#[test]
fn requests_arrive_signed_and_share_one_kept_alive_connection() {
    let backend = Backend::start(keep_alive(Duration::ZERO));
    let client = Client::start(&backend.url("/hooks/connect?v=1"), |_| {});
    for n in 0..10 {
        assert_ok(&client.call(n, Duration::from_secs(5)), n);
    }
    assert_eq!(backend.seen.accepted.load(Ordering::SeqCst), 1);
    let requests = backend.seen.requests();
    assert_eq!(requests.len(), 10);
    for (n, request) in requests.iter().enumerate() {
        assert_eq!(request.request_line, "POST /hooks/connect?v=1 HTTP/1.1");
        assert_eq!(
            request.header("Host"),
            Some(backend.addr.to_string().as_str())
        );
        assert_eq!(request.header("Content-Type"), Some("application/json"));
        assert_eq!(request.body, format!(r#"{{"n":{n}}}"#).into_bytes());
        request.assert_signed();
    }
    let snapshot = client.metrics.snapshot();
    assert_eq!((snapshot.requests, snapshot.responses), (10, 10));
    assert_eq!((snapshot.connects, snapshot.connections), (1, 1));
    assert_eq!(snapshot.failures.iter().sum::<u64>(), 0);
    assert_eq!(snapshot.latency.counts.iter().sum::<u64>(), 10);
}

#[test]
fn a_large_body_is_written_whole_across_many_writes() {
    let backend = Backend::start(keep_alive(Duration::ZERO));
    let client = Client::start(&backend.url("/"), |c| c.max_response_body = 4 << 20);
    client.round_trip_large(&backend, large_body(3 << 20));
    client.round_trip_large(&backend, large_body(10));
    assert_eq!(backend.seen.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn a_tampered_body_does_not_verify() {
    let backend = Backend::start(keep_alive(Duration::ZERO));
    let client = Client::start(&backend.url("/"), |_| {});
    assert_ok(&client.call(7, Duration::from_secs(5)), 7);
    let mut request = backend.seen.requests().remove(0);
    request.assert_signed();
    request.body = br#"{"n":8}"#.to_vec();
    let verified = std::panic::catch_unwind(|| request.assert_signed());
    assert!(verified.is_err(), "a changed body still verified");
}

#[test]
fn requests_in_flight_never_pass_the_concurrency_cap() {
    let backend = Backend::start(keep_alive(Duration::from_millis(150)));
    let client = Client::start(&backend.url("/"), |c| c.concurrency = 3);
    for n in 0..12 {
        client.send(n, Duration::from_secs(5));
    }
    for (n, outcome) in client.collect(12) {
        assert_ok(&outcome, n);
    }
    assert_eq!(backend.seen.most_busy.load(Ordering::SeqCst), 3);
    assert_eq!(backend.seen.accepted.load(Ordering::SeqCst), 3);
}

#[test]
fn past_the_queue_requests_are_refused_at_once() {
    let (release, released) = mpsc::channel::<()>();
    let released = Mutex::new(released);
    let (arrived, arrivals) = mpsc::channel::<()>();
    let arrived = Mutex::new(arrived);
    // Answers each request only when the test says so.
    let backend = Backend::start(move |stream, _, seen| {
        let mut conn = BufReader::new(stream);
        while let Some(request) = read_request(&mut conn) {
            seen.record(request);
            let _ = arrived.lock().unwrap().send(());
            if released.lock().unwrap().recv().is_err() {
                return;
            }
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
            let _ = conn.get_mut().write_all(ok);
        }
    });
    let client = Client::start(&backend.url("/"), |c| {
        c.concurrency = 1;
        c.queue = 2;
    });
    client.send(1, Duration::from_secs(8));
    arrivals
        .recv_timeout(WAIT)
        .expect("the first request arrives");
    client.send(2, Duration::from_secs(8));
    client.send(3, Duration::from_secs(8));
    let started = Instant::now();
    let refused = client.handle.send(request(4, Duration::from_secs(8)));
    let refused = refused.expect_err("a fourth request is past the queue");
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(refused.error, HookError::Overloaded);
    assert_eq!(refused.request.answer, 4, "the request comes back");
    for _ in 0..3 {
        release.send(()).unwrap();
    }
    for (n, outcome) in client.collect(3) {
        assert_eq!(outcome.map(|r| r.status), Ok(200), "request {n}");
    }
    assert_eq!(backend.seen.count(), 3);
    let snapshot = client.metrics.snapshot();
    assert_eq!(snapshot.failures[HookError::Overloaded.index()], 1);
    // Room again once the queue drained.
    client.send(5, Duration::from_secs(8));
    release.send(()).unwrap();
    assert_eq!(client.next().1.map(|r| r.status), Ok(200));
}

/// Reads requests and never answers; holds the connection for a while.
fn silent(stream: TcpStream, _: usize, seen: &Seen) {
    let mut conn = BufReader::new(stream);
    if let Some(request) = read_request(&mut conn) {
        seen.record(request);
    }
    thread::sleep(Duration::from_secs(5));
}

#[test]
fn a_backend_that_never_answers_times_out_and_late_requests_are_never_sent() {
    let backend = Backend::start(silent);
    let client = Client::start(&backend.url("/"), |c| c.concurrency = 1);
    let started = Instant::now();
    client.send(1, Duration::from_millis(400));
    client.send(2, Duration::from_millis(150));
    let (first, outcome) = client.next();
    assert_eq!((first, outcome), (2, Err(HookError::Timeout)));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    let (second, outcome) = client.next();
    assert_eq!((second, outcome), (1, Err(HookError::Timeout)));
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        backend.seen.count(),
        1,
        "the request that expired queued was sent"
    );
    let snapshot = client.metrics.snapshot();
    assert_eq!(snapshot.failures[HookError::Timeout.index()], 2);
    assert_eq!(
        snapshot.connections, 0,
        "the timed-out connection is closed"
    );
}

#[test]
fn a_backend_dripping_a_byte_every_100ms_is_cut_off_at_the_deadline() {
    let backend = Backend::start(|stream, _, seen| {
        let mut conn = BufReader::new(stream);
        let Some(request) = read_request(&mut conn) else {
            return;
        };
        seen.record(request);
        for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" {
            if conn.get_mut().write_all(&[*byte]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let client = Client::start(&backend.url("/"), |_| {});
    let started = Instant::now();
    assert_eq!(
        client.call(1, Duration::from_millis(600)),
        Err(HookError::Timeout)
    );
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(600), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
}

#[test]
fn a_connection_reset_or_closed_before_the_response_fails_closed() {
    let backend = Backend::start(|stream, n, _| {
        let mut conn = BufReader::new(stream);
        match n {
            // A reset: closed with the request unread.
            0 => {
                let mut some = [0u8; 10];
                let _ = conn.get_mut().read_exact(&mut some);
                common::reset(conn.into_inner());
            }
            // Closed without a word.
            1 => drop(read_request(&mut conn)),
            // Closed in the middle of the body.
            _ => {
                let _ = read_request(&mut conn);
                let cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{\"re";
                let _ = conn.get_mut().write_all(cut);
            }
        }
    });
    let client = Client::start(&backend.url("/"), |c| c.concurrency = 1);
    for n in 0..3 {
        let outcome = client.call(n, Duration::from_secs(5));
        assert_eq!(outcome, Err(HookError::Closed), "connection {n}");
    }
    assert_eq!(backend.seen.accepted.load(Ordering::SeqCst), 3);
    let snapshot = client.metrics.snapshot();
    assert_eq!(snapshot.failures[HookError::Closed.index()], 3);
}

/// A port that was just free: nothing listens there.
fn refusing_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn a_refused_port_fails_connect() {
    let client = Client::start(&format!("http://{}/", refusing_addr()), |_| {});
    assert_eq!(
        client.call(1, Duration::from_secs(5)),
        Err(HookError::Connect)
    );
}

#[test]
fn a_name_whose_first_address_refuses_is_reached_at_the_next() {
    let backend = Backend::start(keep_alive(Duration::ZERO));
    let addrs = vec![refusing_addr(), backend.addr];
    let lookups = Arc::new(AtomicUsize::new(0));
    let counted = lookups.clone();
    let client = Client::start("http://backend.test:8000/hook", move |c| {
        c.resolver = Resolver::new(move |host, port| {
            assert_eq!((host, port), ("backend.test", 8000));
            counted.fetch_add(1, Ordering::SeqCst);
            addrs.clone()
        });
    });
    for n in 0..3 {
        assert_ok(&client.call(n, Duration::from_secs(5)), n);
    }
    assert_eq!(lookups.load(Ordering::SeqCst), 1, "the lookup is kept");
    let snapshot = client.metrics.snapshot();
    assert_eq!(snapshot.connects, 2, "one refused, one kept alive");
    assert_eq!(snapshot.failures.iter().sum::<u64>(), 0);
    let requests = backend.seen.requests();
    assert_eq!(requests[0].header("Host"), Some("backend.test:8000"));

    let nowhere = Client::start("http://nowhere.test/", |c| {
        c.resolver = Resolver::new(|_, _| Vec::new());
    });
    assert_eq!(
        nowhere.call(1, Duration::from_secs(5)),
        Err(HookError::Connect)
    );
    let refused = vec![refusing_addr(), refusing_addr()];
    let dead = Client::start("http://dead.test/", move |c| {
        c.resolver = Resolver::new(move |_, _| refused.clone());
    });
    assert_eq!(
        dead.call(1, Duration::from_secs(5)),
        Err(HookError::Connect)
    );
    assert_eq!(dead.metrics.snapshot().connects, 2, "each address once");
}

#[test]
fn oversized_responses_are_refused() {
    let backend = Backend::start(|stream, n, _| {
        let mut conn = BufReader::new(stream);
        if read_request(&mut conn).is_none() {
            return;
        }
        let response: Vec<u8> = match n {
            0 => b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".to_vec(),
            _ => {
                let chunk = "a".repeat(600);
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
                )
                .into_bytes()
            }
        };
        let _ = conn.get_mut().write_all(&response);
        thread::sleep(Duration::from_millis(500));
    });
    let client = Client::start(&backend.url("/"), |c| {
        c.concurrency = 1;
        c.max_response_body = 1024;
    });
    let too_large = Err(HookError::Response(ResponseError::BodyTooLarge));
    assert_eq!(client.call(0, Duration::from_secs(5)), too_large);
    assert_eq!(client.call(1, Duration::from_secs(5)), too_large);
    let snapshot = client.metrics.snapshot();
    assert_eq!(
        snapshot.failures[HookError::Response(ResponseError::BodyTooLarge).index()],
        2
    );
}

#[test]
fn a_chunked_response_is_read_whole_and_the_connection_kept() {
    let backend = Backend::start(|stream, _, seen| {
        let mut conn = BufReader::new(stream);
        while let Some(request) = read_request(&mut conn) {
            seen.record(request);
            let pieces: [&[u8]; 4] = [
                b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"a\r\n{\"result\":\r\n",
                b"2\r\n{}\r\n1;ext=1\r\n}\r\n",
                b"0\r\nX-Trailer: 1\r\n\r\n",
            ];
            for piece in pieces {
                if conn.get_mut().write_all(piece).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    });
    let client = Client::start(&backend.url("/"), |_| {});
    for n in 0..2 {
        let response = client.call(n, Duration::from_secs(5)).unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.body, br#"{"result":{}}"#);
    }
    assert_eq!(backend.seen.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(client.metrics.snapshot().non_2xx, 0);
}

#[test]
fn a_non_2xx_answer_is_a_response_for_the_caller_to_judge() {
    let backend = Backend::start(|stream, _, _| {
        let mut conn = BufReader::new(stream);
        while read_request(&mut conn).is_some() {
            let busy = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
            let _ = conn.get_mut().write_all(busy);
        }
    });
    let client = Client::start(&backend.url("/"), |_| {});
    let response = client.call(1, Duration::from_secs(5)).unwrap();
    assert_eq!(
        (response.status, response.body.as_slice()),
        (503, &b"busy"[..])
    );
    assert_eq!(client.metrics.snapshot().non_2xx, 1);
}

#[test]
fn stopping_answers_what_waits_and_refuses_what_comes_after() {
    let backend = Backend::start(silent);
    let client = Client::start(&backend.url("/"), |c| c.concurrency = 1);
    client.send(1, Duration::from_secs(8));
    client.send(2, Duration::from_secs(8));
    common::wait_until(WAIT, "the first request", || backend.seen.count() == 1);
    client.handle.stop();
    let outcomes = client.collect(2);
    assert_eq!(
        outcomes,
        [(1, Err(HookError::Stopped)), (2, Err(HookError::Stopped))]
    );
    let refused = client.handle.send(request(3, Duration::from_secs(1)));
    assert_eq!(refused.map_err(|r| r.error), Err(HookError::Stopped));
}

/// Serves `serve_keep_alive` over TLS with `pki`'s `localhost` certificate.
fn tls_backend(pki: &Pki, bind: SocketAddr) -> Backend {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(&pki.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(roomcast::tls::provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = Arc::new(config);
    Backend::start_on(bind, move |stream, _, seen| {
        let Ok(session) = rustls::ServerConnection::new(config.clone()) else {
            return;
        };
        serve_keep_alive(
            rustls::StreamOwned::new(session, stream),
            Duration::ZERO,
            seen,
        );
    })
}

#[test]
fn https_against_a_local_authority_and_a_refused_certificate() {
    let dir = temp_dir();
    let pki = Pki::new(&dir, "hooks");
    let other = Pki::new(&dir, "other");
    // The address `localhost` resolves to first, which the client uses.
    let local = ("localhost", 0).to_socket_addrs().unwrap().next().unwrap();
    let backend = tls_backend(&pki, local);
    let url = format!("https://localhost:{}/hooks", backend.addr.port());
    let trusted = roomcast::tls::client_config(Some(&pki.ca_file)).unwrap();
    let client = Client::start(&url, |c| {
        c.tls = Some(trusted);
        c.max_response_body = 2 << 20;
    });
    for n in 0..3 {
        assert_ok(&client.call(n, Duration::from_secs(5)), n);
    }
    client.round_trip_large(&backend, large_body(1 << 20));
    assert_eq!(backend.seen.accepted.load(Ordering::SeqCst), 1);
    for request in backend.seen.requests() {
        assert_eq!(request.request_line, "POST /hooks HTTP/1.1");
        let host = format!("localhost:{}", backend.addr.port());
        assert_eq!(request.header("Host"), Some(host.as_str()));
        request.assert_signed();
    }

    let untrusted = roomcast::tls::client_config(Some(&other.ca_file)).unwrap();
    let stranger = Client::start(&url, |c| c.tls = Some(untrusted));
    assert_eq!(
        stranger.call(9, Duration::from_secs(5)),
        Err(HookError::Tls)
    );
    assert_eq!(
        backend.seen.count(),
        4,
        "nothing was sent to an untrusted server"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
