//! Shared harness for the integration tests: the real `roomcast` binary on an
//! ephemeral loopback port, tokens, and three kinds of client (tungstenite,
//! a raw frame-level client, and a raw HTTP client).
//!
//! Every read has a timeout and every server is killed by its own PID when
//! its [`Server`] guard drops, so no test can hang or leak a process.
#![allow(dead_code, unused_imports)]

pub mod api;
pub mod http;
pub mod pki;
pub mod raw;
pub mod redis;
pub mod rooms;
pub mod sentinel;
pub mod token;
pub mod ws;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub use self::http::{
    HttpConn, HttpResponse, UpgradeRequest, http_get, http_head_and_rest, http_raw,
};
pub use self::raw::{Frame, RawWs, opcode};
pub use self::token::{SECRET, mint, token};
pub use self::ws::{Ws, expect_close, recv, recv_json, recv_text, ws_connect, ws_request, ws_try};

/// How long the server may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Default timeout of every read in the clients.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `Server::start` starts clusters (`ROOMCAST_TEST_REDIS`): figures
/// of one process (`/metrics`) then cover only the node that answered.
pub fn in_cluster() -> bool {
    std::env::var_os("ROOMCAST_TEST_REDIS").is_some()
}

/// Prefixes for the clusters one test process starts on a shared Redis.
static NEXT_PREFIX: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `extra` without what cannot run as `--processes`: `--accept handoff`
/// (one plain listener) is dropped, SO_REUSEPORT spreads clients anyway.
fn cluster_compatible<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut args = extra.iter();
    while let Some(&arg) = args.next() {
        if arg == "--accept" {
            args.next();
            continue;
        }
        out.push(arg);
    }
    out
}

/// A running `roomcast serve`, killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Child,
    addr: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stdout_reader: Option<thread::JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    exited: Option<ExitStatus>,
}

impl Server {
    /// Starts `roomcast serve --bind 127.0.0.1:0 --jwt-secret SECRET` plus `extra`.
    ///
    /// With `ROOMCAST_TEST_REDIS` set to a Redis URL, it starts a cluster
    /// instead: `--processes 2` on one free port, joined through that Redis
    /// under a prefix of its own, so the kernel spreads a test's clients
    /// over two nodes and the test checks cluster mode (scripts/test.sh runs
    /// the room, history, presence and direct-message suites so).
    pub fn start(extra: &[&str]) -> Server {
        let mut cmd = Server::command();
        match std::env::var("ROOMCAST_TEST_REDIS") {
            Ok(redis) => {
                let bind = format!("127.0.0.1:{}", self::redis::free_port());
                let prefix = format!(
                    "t{}",
                    NEXT_PREFIX.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                );
                let prefix = format!("{prefix}-{}", std::process::id());
                cmd.args(["serve", "--bind", &bind, "--jwt-secret", SECRET]);
                cmd.args([
                    "--redis",
                    &redis,
                    "--redis-prefix",
                    &prefix,
                    "--processes",
                    "2",
                ]);
                cmd.args(["--drain-timeout", "1s"]);
                cmd.args(cluster_compatible(extra));
                let server = Server::spawn(cmd);
                server.wait_for_stdout_count("roomcast listening on", 2);
                // Each request lands on either node: 20 answers in a row
                // that Redis is reachable leave about one chance in a
                // million that a node is not there yet.
                let mut in_a_row = 0;
                wait_until(STARTUP_TIMEOUT, "both nodes reach Redis", || {
                    if http_get(server.addr(), "/healthz").status == 200 {
                        in_a_row += 1;
                    } else {
                        in_a_row = 0;
                    }
                    in_a_row >= 20
                });
                server
            }
            Err(_) => {
                cmd.args(["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET]);
                cmd.args(extra);
                Server::spawn(cmd)
            }
        }
    }

    /// Waits until `count` stdout lines start with `prefix`.
    fn wait_for_stdout_count(&self, prefix: &str, count: usize) {
        wait_until(STARTUP_TIMEOUT, "every process listening", || {
            self.stdout()
                .iter()
                .filter(|l| l.starts_with(prefix))
                .count()
                >= count
        });
    }

    /// The binary under test, with no arguments yet and none of the
    /// caller's `ROOMCAST_*` variables (a test sets the ones it means).
    pub fn command() -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_roomcast"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ROOMCAST_") {
                cmd.env_remove(name);
            }
        }
        cmd
    }

    /// `serve --bind 127.0.0.1:0 --jwt-secret SECRET` of one process,
    /// whatever `ROOMCAST_TEST_REDIS` says: for a test that sets the
    /// environment, or reads one process's counters.
    pub fn single_command() -> Command {
        let mut cmd = Server::command();
        cmd.args(["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET]);
        cmd
    }

    /// Spawns `cmd` and waits for `roomcast listening on ADDR` on its stdout.
    pub fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn roomcast");
        let stderr = Arc::new(Mutex::new(String::new()));
        collect_stderr(child.stderr.take().unwrap(), Arc::clone(&stderr));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (lines, stdout_reader) =
            stdout_lines(child.stdout.take().unwrap(), Arc::clone(&stdout));
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix("roomcast listening on ") {
                        break rest.trim().parse().expect("listening address");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "roomcast printed no listening line within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                        stderr.lock().unwrap()
                    );
                }
            }
        };
        Server {
            child,
            addr,
            stdout,
            stdout_reader: Some(stdout_reader),
            stderr,
            exited: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM to this server (and nothing else).
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `sig` to this server's PID, unless it was already reaped.
    pub fn signal(&self, sig: libc::c_int) {
        assert!(self.exited.is_none(), "server already exited");
        let pid = self.pid();
        if let Err(e) = roomcast::sys::signal(pid, sig) {
            panic!("kill({pid}, {sig}): {e}");
        }
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(status);
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "roomcast did not exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited.is_none()
    }

    /// Every line the server wrote to stdout; call after [`Server::wait_exit`].
    pub fn all_stdout(&mut self) -> Vec<String> {
        assert!(self.exited.is_some(), "the server is still running");
        if let Some(reader) = self.stdout_reader.take() {
            reader.join().expect("stdout reader");
        }
        self.stdout()
    }

    /// The lines the server wrote to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The log lines (stderr) written so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.stderr().lines().map(str::to_owned).collect()
    }

    /// Waits until a log line holds every one of `words`, and returns it.
    pub fn wait_for_log(&self, words: &[&str]) -> String {
        let mut found = None;
        wait_until(READ_TIMEOUT, &format!("a log line with {words:?}"), || {
            found = self
                .log_lines()
                .into_iter()
                .find(|line| words.iter().all(|w| line.contains(w)));
            found.is_some()
        });
        found.unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // A supervisor (`--processes`) passes SIGTERM on to its nodes;
            // a single process just exits.
            if in_cluster() {
                self.signal(libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let log = self.stderr();
            let tail = &log[log.len().saturating_sub(4000)..];
            eprintln!("--- roomcast stderr (tail) ---\n{tail}");
        }
    }
}

/// Records stdout lines and forwards them to a channel; keeps draining so
/// the child never blocks on a full pipe.
fn stdout_lines(
    out: impl Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
) -> (mpsc::Receiver<String>, thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (rx, reader)
}

fn collect_stderr(err: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
}

/// The value of one series of `GET /metrics`, e.g.
/// `roomcast_connections_closed_total{code="4003"}`; panics if it is absent.
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let resp = http_get(addr, "/metrics");
    assert_eq!(resp.status, 200, "{resp:?}");
    resp.body
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{}", resp.body))
        .parse()
        .expect("a number")
}

/// Polls `/metrics` until `series` has `value`; panics with the last value.
pub fn wait_for_metric(addr: SocketAddr, series: &str, value: f64) {
    let mut last = f64::NAN;
    wait_until(READ_TIMEOUT, series, || {
        last = metric(addr, series);
        last == value
    });
    assert_eq!(last, value, "{series}");
}

/// Waits for a stdout line starting with `prefix` and returns the rest.
pub fn wait_for_stdout(server: &Server, prefix: &str) -> String {
    let mut found = None;
    wait_until(READ_TIMEOUT, prefix, || {
        found = server
            .stdout()
            .iter()
            .find_map(|line| line.strip_prefix(prefix).map(|rest| rest.trim().to_owned()));
        found.is_some()
    });
    found.unwrap_or_default()
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Parses a JSON text into a simd-json value (panics with the text if invalid).
pub fn parse_json(text: &str) -> simd_json::OwnedValue {
    let mut bytes = text.as_bytes().to_vec();
    simd_json::to_owned_value(&mut bytes).unwrap_or_else(|e| panic!("invalid JSON {text:?}: {e}"))
}

/// The string at `path` in a JSON value, if there is one.
pub fn json_str<'a>(v: &'a simd_json::OwnedValue, path: &[&str]) -> Option<&'a str> {
    use simd_json::prelude::*;
    json_at(v, path)?.as_str()
}

/// The value at `path` (object keys) in a JSON value.
pub fn json_at<'a>(
    v: &'a simd_json::OwnedValue,
    path: &[&str],
) -> Option<&'a simd_json::OwnedValue> {
    use simd_json::prelude::*;
    path.iter().try_fold(v, |v, key| v.get(*key))
}

/// A TCP connection to `addr` whose receive buffer was set to `rcvbuf` bytes
/// before connecting (so the TCP window stays small from the SYN on).
pub fn connect_with_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> std::net::TcpStream {
    connect_socket(addr, None, Some(rcvbuf))
}

/// A TCP connection to `addr` from the loopback address `local` (any of
/// 127.0.0.0/8), so one test can act as several client IPs.
pub fn connect_from(local: std::net::Ipv4Addr, addr: SocketAddr) -> std::net::TcpStream {
    connect_socket(addr, Some(local), None)
}

fn sockaddr(ip: std::net::Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// socket(2), options and bind(2) before connect(2), which std cannot do.
fn connect_socket(
    addr: SocketAddr,
    local: Option<std::net::Ipv4Addr>,
    rcvbuf: Option<usize>,
) -> std::net::TcpStream {
    use std::os::fd::{FromRawFd, OwnedFd};
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 loopback expected, got {addr}")
    };
    let check = |rc: libc::c_int, what: &str| {
        assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
    };
    let len = |size: usize| libc::socklen_t::try_from(size).unwrap();
    // SAFETY: each pointer passed points to a live local (`size`, a c_int;
    // `sin`, a sockaddr_in) with exactly that local's length, and the kernel
    // only reads through it. `raw` is checked to be a fresh descriptor,
    // owned by nothing else, before OwnedFd takes it (and closes it when a
    // check panics; TcpStream after success).
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        check(raw, "socket");
        let fd = OwnedFd::from_raw_fd(raw);
        if let Some(size) = rcvbuf {
            let size = libc::c_int::try_from(size).unwrap();
            let rc = libc::setsockopt(
                raw,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&raw const size).cast(),
                len(std::mem::size_of::<libc::c_int>()),
            );
            check(rc, "SO_RCVBUF");
        }
        if let Some(ip) = local {
            let sin = sockaddr(ip, 0);
            let rc = libc::bind(
                raw,
                (&raw const sin).cast(),
                len(std::mem::size_of_val(&sin)),
            );
            check(rc, "bind");
        }
        let sin = sockaddr(*v4.ip(), v4.port());
        let rc = libc::connect(
            raw,
            (&raw const sin).cast(),
            len(std::mem::size_of_val(&sin)),
        );
        check(rc, "connect");
        std::net::TcpStream::from(fd)
    }
}

/// Closes `stream` with a TCP reset (SO_LINGER 0) instead of a FIN.
pub fn reset(stream: std::net::TcpStream) {
    roomcast::sys::reset_on_close(&stream).expect("SO_LINGER");
    drop(stream);
}
