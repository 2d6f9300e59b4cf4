//! `serve --check-config`'s warnings: what a valid configuration will still
//! run into on this machine in production.
//!
//! Owns the probes (`/proc` and cgroup files, the kernel's limits on open
//! files and socket memory in `/proc/sys`, the open-file limits, one
//! blocking `PING` to each `--redis` server) and the decisions made from
//! their readings. The decisions are pure: `warnings` takes the
//! configuration and the readings and returns what to say, so they are
//! tested with made-up numbers. A probe that cannot read its fact leaves it
//! out rather than guess. Nothing here refuses a configuration (that is
//! `Config::validate`'s job, exit status 2) or touches a running server.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::config::{ClusterConfig, Config, max_connections_for};
use crate::redis::resp::{self, Reply};
use crate::redis::url::RedisUrl;
use crate::sys::OpenFileLimits;

/// What `net.ipv4.tcp_mem` is reckoned against, per connection: the kernel
/// charges a socket's queued data in whole pages, so every connection with
/// anything queued (a fan-out to all of them, say) holds at least one page.
/// Idle connections hold none; this is the floor of a busy moment.
const TCP_MEM_PER_CONNECTION_PAGES: u64 = 1;

/// How long `--check-config` waits for each Redis server: a start-up check
/// must not hang on a firewall that drops packets.
pub const REDIS_PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// What the probes read on this machine; `None` or empty: unknown.
#[derive(Debug, Default)]
pub struct Facts {
    pub open_files: Option<OpenFileLimits>,
    /// `/proc/sys/net/core/somaxconn`: the kernel's cap on a listen backlog.
    pub somaxconn: Option<u64>,
    /// The memory this process may use: `MemTotal`, or the cgroup's
    /// `memory.max` when lower (a container's limit).
    pub memory_bytes: Option<u64>,
    /// Each `--redis` server and the outcome of one `PING`.
    pub redis: Vec<(String, Result<(), ProbeError>)>,
    /// `/proc/sys/fs/file-max`: open files on the whole machine.
    pub file_max: Option<u64>,
    /// `/proc/sys/net/ipv4/tcp_mem`, in pages, and the page size.
    pub tcp_mem: Option<TcpMem>,
}

/// `net.ipv4.tcp_mem`: the pages all TCP sockets may hold before the
/// kernel shrinks buffers (`pressure`) and before it drops data and logs
/// "TCP: out of memory" (`max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpMem {
    pub pressure: u64,
    pub max: u64,
    pub page_size: u64,
}

impl TcpMem {
    /// `min pressure max` as the file has them.
    pub fn parse(text: &str, page_size: u64) -> Option<Self> {
        let pages: Vec<u64> = text
            .split_whitespace()
            .map(|n| n.parse().ok())
            .collect::<Option<_>>()?;
        match pages[..] {
            [_, pressure, max] => Some(Self {
                pressure,
                max,
                page_size,
            }),
            _ => None,
        }
    }
}

impl Facts {
    /// Reads every fact the warnings need; pings each `--redis` server of
    /// `cluster`, over TLS with `tls` for `rediss://`.
    pub fn probe(cluster: Option<&ClusterConfig>, tls: Option<&Arc<ClientConfig>>) -> Self {
        let redis = cluster.map_or_else(Vec::new, |cluster| {
            let ping = |url: &RedisUrl| (url.to_string(), ping(url, REDIS_PROBE_TIMEOUT, tls));
            cluster.servers.iter().map(ping).collect()
        });
        Self {
            open_files: crate::sys::open_file_limits(),
            somaxconn: read_number("/proc/sys/net/core/somaxconn"),
            memory_bytes: memory_limit(),
            redis,
            file_max: read_number("/proc/sys/fs/file-max"),
            tcp_mem: std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem")
                .ok()
                .and_then(|text| TcpMem::parse(&text, crate::sys::page_size())),
        }
    }
}

/// One thing that will bite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// `--max-connections` took its default from a soft open-file limit
    /// that the process could raise up to `hard`.
    OpenFiles {
        max_connections: usize,
        soft: usize,
        hard: usize,
    },
    /// The kernel caps every listen backlog below what roomcast asks for.
    Somaxconn { somaxconn: u64, backlog: u64 },
    /// The write buffers the configuration allows exceed the memory.
    Memory {
        per_connection: u64,
        connections: u64,
        memory: u64,
    },
    /// A `--redis` server did not answer `PING`.
    Redis { url: String, error: String },
    /// The machine's open-file limit is below what every process's
    /// `--max-connections` adds up to.
    FileMax { file_max: u64, connections: u64 },
    /// The socket memory the kernel allows is below one page per
    /// connection (`TCP_MEM_PER_CONNECTION_PAGES`).
    TcpMem { tcp_mem: TcpMem, connections: u64 },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpenFiles {
                max_connections,
                soft,
                hard,
            } => write!(
                f,
                "open files: --max-connections is {max_connections}, set by the soft \
                 open-file limit {soft}; the hard limit {hard} would allow {}: raise the \
                 soft limit (ulimit -n, or LimitNOFILE= in the systemd unit)",
                max_connections_for(*hard)
            ),
            Self::Somaxconn { somaxconn, backlog } => write!(
                f,
                "somaxconn: net.core.somaxconn is {somaxconn}, below the listen backlog \
                 of {backlog}: in a reconnect burst the kernel drops connection attempts \
                 past {somaxconn} and clients wait for SYN retries (1 s, 3 s, ...); \
                 sysctl -w net.core.somaxconn={backlog}"
            ),
            Self::Memory {
                per_connection,
                connections,
                memory,
            } => write!(
                f,
                "memory: {connections} connections x {per_connection} bytes of write \
                 buffer = {} MiB, more than the {} MiB this process may use: clients that \
                 all fall behind at once can exhaust memory before they are closed; \
                 lower --max-write-buffer or --max-connections",
                (per_connection * connections) >> 20,
                memory >> 20
            ),
            Self::FileMax {
                file_max,
                connections,
            } => write!(
                f,
                "file-max: fs.file-max is {file_max}, below the {connections} connections \
                 --max-connections allows over every process: accepts fail with ENFILE \
                 before the limit is reached; sysctl -w fs.file-max={}",
                connections.saturating_mul(2)
            ),
            Self::TcpMem {
                tcp_mem,
                connections,
            } => write!(
                f,
                "tcp_mem: {connections} connections with a page of queued data each \
                 need {} MiB of socket memory; net.ipv4.tcp_mem allows {} MiB before it \
                 shrinks buffers and {} MiB before it drops data (\"TCP: out of memory\"): \
                 a fan-out to every connection stalls; raise net.ipv4.tcp_mem \
                 (in pages of {} bytes)",
                (connections * TCP_MEM_PER_CONNECTION_PAGES * tcp_mem.page_size) >> 20,
                (tcp_mem.pressure * tcp_mem.page_size) >> 20,
                (tcp_mem.max * tcp_mem.page_size) >> 20,
                tcp_mem.page_size
            ),
            Self::Redis { url, error } => write!(
                f,
                "redis: {url} did not answer PING ({error}); the server still starts, \
                 but answers /healthz with 503 and publishes with UNAVAILABLE until \
                 it can reach Redis"
            ),
        }
    }
}

/// The warnings for `config` on a machine with `facts`, in a fixed order.
pub fn warnings(config: &Config, facts: &Facts) -> Vec<Warning> {
    let mut found = Vec::new();
    found.extend(open_files(config.limits.max_connections, facts.open_files));
    found.extend(somaxconn(facts.somaxconn));
    found.extend(memory(config, facts.memory_bytes));
    let connections = (config.limits.max_connections * config.listen.processes) as u64;
    found.extend(file_max(connections, facts.file_max));
    found.extend(tcp_mem(connections, facts.tcp_mem));
    for (url, outcome) in &facts.redis {
        if let Err(error) = outcome {
            found.push(Warning::Redis {
                url: url.clone(),
                error: error.to_string(),
            });
        }
    }
    found
}

/// Over the soft limit is refused by `Config::validate_open_files`; what is
/// left to warn about is a ceiling set by a soft limit that could be higher.
fn open_files(max_connections: usize, limits: Option<OpenFileLimits>) -> Option<Warning> {
    let OpenFileLimits { soft, hard } = limits?;
    let capped_by_soft = max_connections == max_connections_for(soft);
    (capped_by_soft && soft < hard).then_some(Warning::OpenFiles {
        max_connections,
        soft,
        hard,
    })
}

fn somaxconn(somaxconn: Option<u64>) -> Option<Warning> {
    let somaxconn = somaxconn?;
    let backlog = crate::sys::LISTEN_BACKLOG as u64;
    (somaxconn < backlog).then_some(Warning::Somaxconn { somaxconn, backlog })
}

/// Every connection is a file, in whichever process; `fs.nr_open` needs no
/// check of its own, since `--max-connections` is held under the soft
/// open-file limit, which cannot exceed it.
fn file_max(connections: u64, file_max: Option<u64>) -> Option<Warning> {
    let file_max = file_max?;
    (file_max < connections).then_some(Warning::FileMax {
        file_max,
        connections,
    })
}

fn tcp_mem(connections: u64, tcp_mem: Option<TcpMem>) -> Option<Warning> {
    let tcp_mem = tcp_mem?;
    let pages = connections.saturating_mul(TCP_MEM_PER_CONNECTION_PAGES);
    (pages > tcp_mem.pressure).then_some(Warning::TcpMem {
        tcp_mem,
        connections,
    })
}

/// Each connection may hold `--max-write-buffer` unsent, and with TLS also
/// the records rustls has not written yet.
fn memory(config: &Config, memory: Option<u64>) -> Option<Warning> {
    let memory = memory?;
    let tls = if config.listen.tls.is_some() {
        crate::tls::SEND_BUFFER_LIMIT
    } else {
        0
    };
    let per_connection = (config.backpressure.max_write_buffer + tls) as u64;
    let connections = config.limits.max_connections as u64;
    let total = per_connection.saturating_mul(connections);
    (total > memory).then_some(Warning::Memory {
        per_connection,
        connections,
        memory,
    })
}

/// Why a Redis server did not answer `PING`.
#[derive(Debug)]
pub enum ProbeError {
    /// The host name has no address.
    Resolve(io::Error),
    /// No TCP connection within the timeout.
    Connect(io::Error),
    /// The connection broke or timed out during the exchange.
    Io(io::Error),
    /// Redis answered with an error (`WRONGPASS`, `NOAUTH`, ...).
    Refused(String),
    /// The reply was not RESP, or not `PONG`.
    Unexpected,
    /// `rediss://`: the TLS handshake failed (a certificate that does not
    /// check, a name it does not cover, no TLS on that port).
    Tls(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resolve(e) => write!(f, "cannot resolve: {e}"),
            Self::Connect(e) => write!(f, "cannot connect: {e}"),
            Self::Io(e) => write!(f, "{e}"),
            Self::Refused(message) => write!(f, "Redis answered: {message}"),
            Self::Unexpected => f.write_str("not a Redis PONG"),
            Self::Tls(message) => write!(f, "TLS: {message}"),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Connects (over TLS for `rediss://`), authenticates when the URL has a
/// password, and sends `PING`, all within `timeout` (blocking: this runs
/// before any event loop).
pub fn ping(
    url: &RedisUrl,
    timeout: Duration,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(), ProbeError> {
    let deadline = Instant::now() + timeout;
    let addr = resolve(url).map_err(ProbeError::Resolve)?;
    let socket = TcpStream::connect_timeout(&addr, timeout).map_err(ProbeError::Connect)?;
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.set_write_timeout(Some(timeout)))
        .map_err(ProbeError::Io)?;
    let mut commands = Vec::new();
    let mut expected = 1;
    // A Sentinel URL's credentials are the master's: its first Sentinel,
    // which is what is pinged, is asked without them.
    if let Some(password) = url.password.as_ref().filter(|_| url.sentinels().is_none()) {
        let user = url.user.as_deref().unwrap_or("default");
        resp::write_command(&mut commands, &["AUTH", user, password]);
        expected = 2;
    }
    resp::write_command(&mut commands, &["PING"]);
    let replies = match tls.filter(|_| url.tls) {
        None => exchange(socket, &commands, expected, deadline)?,
        Some(config) => {
            let tls_error = |e: &dyn fmt::Display| ProbeError::Tls(e.to_string());
            let name = ServerName::try_from(url.host.clone()).map_err(|e| tls_error(&e))?;
            let session = ClientConnection::new(config.clone(), name).map_err(|e| tls_error(&e))?;
            // rustls says why a handshake failed as an `InvalidData` error.
            exchange(
                StreamOwned::new(session, socket),
                &commands,
                expected,
                deadline,
            )
            .map_err(|e| match e {
                ProbeError::Io(e) if e.kind() == io::ErrorKind::InvalidData => tls_error(&e),
                e => e,
            })?
        }
    };
    match replies.last() {
        Some(Reply::Status(pong)) if pong == "PONG" => Ok(()),
        _ => Err(ProbeError::Unexpected),
    }
}

/// Writes `commands` and reads `count` replies.
fn exchange(
    mut stream: impl Read + Write,
    commands: &[u8],
    count: usize,
    deadline: Instant,
) -> Result<Vec<Reply>, ProbeError> {
    stream.write_all(commands).map_err(ProbeError::Io)?;
    read_replies(&mut stream, count, deadline)
}

fn resolve(url: &RedisUrl) -> io::Result<SocketAddr> {
    (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
}

/// Reads until `count` replies have arrived; the first error reply is the
/// answer (a failed `AUTH` makes the `PING` after it fail too). Each read
/// is bounded by the socket's timeout, the whole by `deadline`.
fn read_replies(
    stream: &mut impl Read,
    count: usize,
    deadline: Instant,
) -> Result<Vec<Reply>, ProbeError> {
    let mut input = Vec::new();
    let mut replies = Vec::new();
    let mut chunk = [0u8; 512];
    while replies.len() < count {
        if Instant::now() >= deadline {
            return Err(ProbeError::Io(io::ErrorKind::TimedOut.into()));
        }
        let n = stream.read(&mut chunk).map_err(ProbeError::Io)?;
        if n == 0 {
            return Err(ProbeError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        input.extend_from_slice(&chunk[..n]);
        while let Some((reply, used)) = resp::parse(&input).map_err(|_| ProbeError::Unexpected)? {
            input.drain(..used);
            if let Reply::Error(message) = reply {
                return Err(ProbeError::Refused(message));
            }
            replies.push(reply);
        }
    }
    Ok(replies)
}

/// The lower of `MemTotal` and the cgroup v2 `memory.max` (a number, or
/// `max` for none).
fn memory_limit() -> Option<u64> {
    let total = mem_total(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
    let cgroup = read_number("/sys/fs/cgroup/memory.max");
    Some(cgroup.map_or(total, |limit| limit.min(total)))
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    crate::sys::kib_field(meminfo, "MemTotal:")?.checked_mul(1024)
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: usize, max_write_buffer: usize) -> Config {
        let args = crate::cli::ServeArgs::try_parse_from(["--jwt-secret", "s"]).unwrap();
        let mut config = args
            .into_config(crate::cli::EnvLists::default(), 2, 1 << 20)
            .unwrap();
        config.limits.max_connections = max_connections;
        config.backpressure.max_write_buffer = max_write_buffer;
        config
    }

    fn limits(soft: usize, hard: usize) -> Option<OpenFileLimits> {
        Some(OpenFileLimits { soft, hard })
    }

    #[test]
    fn a_default_ceiling_from_a_raisable_soft_limit_is_reported() {
        let warning = open_files(896, limits(1024, 524_288)).unwrap();
        let text = warning.to_string();
        assert!(text.contains("soft open-file limit 1024"), "{text}");
        assert!(text.contains("would allow 524160"), "{text}");
    }

    #[test]
    fn an_explicit_ceiling_or_a_soft_limit_at_the_hard_one_is_fine() {
        assert_eq!(open_files(500, limits(1024, 524_288)), None);
        assert_eq!(open_files(896, limits(1024, 1024)), None);
        assert_eq!(open_files(896, None), None);
    }

    #[test]
    fn somaxconn_below_the_backlog_is_reported() {
        let Some(Warning::Somaxconn { somaxconn, backlog }) = somaxconn(Some(128)) else {
            panic!("no warning for 128");
        };
        assert_eq!((somaxconn, backlog), (128, 4096));
        assert_eq!(super::somaxconn(Some(4096)), None);
        assert_eq!(super::somaxconn(None), None);
    }

    #[test]
    fn write_buffers_above_the_memory_are_reported() {
        let config = config(100_000, 512 * 1024);
        let warning = memory(&config, Some(16 << 30)).unwrap();
        assert!(warning.to_string().contains("= 50000 MiB"), "{warning}");
        assert_eq!(memory(&config, Some(64 << 30)), None);
        assert_eq!(memory(&config, None), None);
    }

    #[test]
    fn tls_adds_its_record_buffer_to_each_connection() {
        let mut config = config(10, 1024);
        config.listen.tls = Some(crate::tls::TlsFiles {
            cert: "c.pem".into(),
            key: "k.pem".into(),
        });
        let Some(Warning::Memory { per_connection, .. }) = memory(&config, Some(1)) else {
            panic!("no warning");
        };
        assert_eq!(per_connection, 1024 + 64 * 1024);
    }

    #[test]
    fn warnings_come_in_order_and_only_failed_pings_count() {
        let facts = Facts {
            open_files: limits(1024, 4096),
            somaxconn: Some(128),
            memory_bytes: Some(1 << 20),
            redis: vec![
                ("redis://a:6379/0".into(), Ok(())),
                ("redis://b:6379/0".into(), Err(ProbeError::Unexpected)),
            ],
            file_max: Some(100),
            tcp_mem: TcpMem::parse("10 20 30", 4096),
        };
        let found = warnings(&config(896, 64 * 1024), &facts);
        let topics: Vec<_> = found
            .iter()
            .map(|w| w.to_string().split(':').next().unwrap().to_owned())
            .collect();
        assert_eq!(
            topics,
            [
                "open files",
                "somaxconn",
                "memory",
                "file-max",
                "tcp_mem",
                "redis"
            ]
        );
        assert!(found[5].to_string().contains("redis://b:6379/0"));
    }

    #[test]
    fn file_max_counts_the_connections_of_every_process() {
        let mut config = config(20_000, 64 * 1024);
        config.listen.processes = 50;
        let facts = |file_max| Facts {
            file_max: Some(file_max),
            ..Facts::default()
        };
        let found = warnings(&config, &facts(999_999));
        let [Warning::FileMax { connections, .. }] = found[..] else {
            panic!("{found:?}");
        };
        assert_eq!(connections, 1_000_000);
        assert!(found[0].to_string().contains("fs.file-max=2000000"));
        assert_eq!(warnings(&config, &facts(1_000_000)), []);
    }

    #[test]
    fn tcp_mem_below_a_page_per_connection_is_reported() {
        // The kernel's default for 24 GiB of memory.
        let tcp_mem = TcpMem::parse("287913\t383885\t575826\n", 4096);
        let warning = super::tcp_mem(1_000_000, tcp_mem).unwrap().to_string();
        assert!(warning.contains("need 3906 MiB"), "{warning}");
        assert!(warning.contains("allows 1499 MiB"), "{warning}");
        assert!(warning.contains("2249 MiB before it drops"), "{warning}");
        assert_eq!(super::tcp_mem(200_000, tcp_mem), None);
        assert_eq!(super::tcp_mem(1_000_000, None), None);
        assert_eq!(TcpMem::parse("1 2", 4096), None);
        assert_eq!(TcpMem::parse("a b c", 4096), None);
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24684544 kB\nMemFree:  100 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_684_544 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn a_closed_port_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url: RedisUrl = format!("redis://127.0.0.1:{port}").parse().unwrap();
        let error = ping(&url, Duration::from_millis(500), None).unwrap_err();
        assert!(matches!(error, ProbeError::Connect(_)), "{error}");
    }

    #[test]
    fn a_pong_passes_and_an_auth_error_is_reported() {
        for (answer, ok) in [(&b"+PONG\r\n"[..], true), (b"-WRONGPASS bad\r\n", false)] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                let (mut socket, _) = listener.accept().unwrap();
                let mut request = [0u8; 256];
                let _ = socket.read(&mut request).unwrap();
                socket.write_all(answer).unwrap();
                if !ok {
                    socket.write_all(b"-NOAUTH\r\n").unwrap();
                }
            });
            let password = if ok { "" } else { ":pw@" };
            let url: RedisUrl = format!("redis://{password}127.0.0.1:{port}")
                .parse()
                .unwrap();
            let outcome = ping(&url, Duration::from_secs(2), None);
            server.join().unwrap();
            match outcome {
                Ok(()) => assert!(ok),
                Err(ProbeError::Refused(message)) => assert_eq!(message, "WRONGPASS bad"),
                Err(e) => panic!("{e}"),
            }
        }
    }
}
