//! `roomcast connect URL`: a small interactive WebSocket client for the
//! terminal, so that the example `serve` prints works with nothing else
//! installed. Each line typed is sent as one text message (a JSON envelope
//! or the bare `ping`); each message received is printed on a line of its
//! own, prefixed `< `.
//!
//! Blocking std sockets and two threads (stdin, the socket) sharing the
//! connection behind a lock: this is a tool for a person, not part of the
//! server. `wss://` runs over rustls, checking the server's certificate
//! against the system's authorities (or `--ca`). Frames come from
//! `ws::frame`; the opening handshake is checked against
//! `ws::handshake::accept_key`.

use std::io::{self, BufRead, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use roomcast::ws::frame::{OpCode, encode_masked_frame, parse_header};

/// Flags of `roomcast connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The server's WebSocket URL, e.g. ws://127.0.0.1:8080/ws?token=JWT or wss://chat.example.com/ws.
    pub url: String,
    /// A token to send as `Authorization: Bearer` instead of in the URL.
    #[arg(long, env = "ROOMCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// wss://: trust the authorities in this PEM file instead of the system's (/etc/ssl/certs/ca-certificates.crt).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

/// `roomcast connect`: 0 when the server closed normally (1000, 1001).
pub fn run_command(args: &ConnectArgs) -> ExitCode {
    match run(&args.url, args.token.as_deref(), args.ca.as_deref()) {
        Ok(None | Some(1000 | 1001)) => ExitCode::SUCCESS,
        Ok(Some(_)) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("roomcast connect: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Where Debian (and most Linux systems) keep the trusted authorities.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// How long a read waits before letting the sending thread have the
/// connection (both share one lock).
const READ_SLICE: Duration = Duration::from_millis(50);

/// A connection that reads and writes: a socket, or TLS over one.
trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}

type Shared = Arc<Mutex<Box<dyn Link>>>;

/// Most bytes of a message printed; longer ones are cut with a note.
const MAX_SHOWN: usize = 64 * 1024;

/// Why `roomcast connect` stopped.
#[derive(Debug)]
pub enum ConnectError {
    /// Not `ws://host[:port]/path`.
    Url(&'static str),
    Io(io::Error),
    /// `wss://`: no usable authorities, or a TLS failure.
    Tls(String),
    /// The server answered the upgrade with something else than 101.
    Refused(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Url(why) => write!(f, "not a ws:// or wss:// URL: {why}"),
            ConnectError::Io(e) => write!(f, "{e}"),
            ConnectError::Tls(why) => write!(f, "TLS: {why}"),
            ConnectError::Refused(head) => write!(f, "the server refused the upgrade: {head}"),
        }
    }
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        ConnectError::Io(e)
    }
}

/// A `ws://` or `wss://` URL split into what the connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `host:port`, for connecting and the `Host` header.
    pub authority: String,
    /// Path and query, at least `/`.
    pub target: String,
    /// `wss://`.
    pub tls: bool,
}

impl WsUrl {
    /// The host without its port or IPv6 brackets, for the certificate.
    fn host(&self) -> &str {
        host_of(&self.authority)
    }
}

/// The host of `host:port` without its port or IPv6 brackets.
pub fn host_of(authority: &str) -> &str {
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Reads `ws://` or `wss://host[:port][/path][?query]` (ports 80 and 443
/// by default).
pub fn parse_url(url: &str) -> Result<WsUrl, ConnectError> {
    let (rest, tls) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(ConnectError::Url("it must start with ws:// or wss://")),
    };
    let (authority, target) = match rest.find(['/', '?']) {
        Some(at) if rest.as_bytes()[at] == b'?' => (&rest[..at], format!("/{}", &rest[at..])),
        Some(at) => (&rest[..at], rest[at..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() {
        return Err(ConnectError::Url("no host"));
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(host, p)| {
        p.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
    });
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Ok(WsUrl {
        authority,
        target,
        tls,
    })
}

/// Connects, then relays stdin lines out and messages in until either side
/// closes. Returns the close code the server sent, if any. `ca` replaces
/// the system's authorities for `wss://`.
pub fn run(url: &str, token: Option<&str>, ca: Option<&Path>) -> Result<Option<u16>, ConnectError> {
    let url = parse_url(url)?;
    let addr = url
        .authority
        .to_socket_addrs()?
        .next()
        .ok_or(ConnectError::Url("the host has no address"))?;
    let socket = TcpStream::connect(addr)?;
    socket.set_nodelay(true)?;
    let mut link: Box<dyn Link> = if url.tls {
        Box::new(tls_link(socket.try_clone()?, url.host(), ca)?)
    } else {
        Box::new(socket.try_clone()?)
    };
    let mut input = handshake(&mut link, &url, token)?;
    let scheme = if url.tls { "wss" } else { "ws" };
    eprintln!(
        "connected to {scheme}://{}{}",
        url.authority,
        redact(&url.target)
    );
    // Reads give the lock up now and then, for the sending thread.
    socket.set_read_timeout(Some(READ_SLICE))?;
    let shared: Shared = Arc::new(Mutex::new(link));
    let sender = shared.clone();
    std::thread::spawn(move || send_lines(&sender));
    receive(&shared, &mut input)
}

/// A TLS session over `socket` for `host`, its certificate checked against
/// `ca` or the system's authorities; the handshake is done here so that a
/// refused certificate is reported as such. `roomcast api --tls` uses it too.
pub fn tls_link(
    socket: TcpStream,
    host: &str,
    ca: Option<&Path>,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, ConnectError> {
    let bundle = ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(bundle).map_err(|e| {
        ConnectError::Tls(format!("cannot read {}: {e} (pass --ca)", bundle.display()))
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(ConnectError::Tls(format!(
            "no certificate in {}",
            bundle.display()
        )));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(roomcast::tls::provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| ConnectError::Url("the host is not a valid server name"))?;
    let session = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    let mut stream = rustls::StreamOwned::new(session, socket);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
    }
    Ok(stream)
}

/// The path with its `token=` value hidden, for printing.
fn redact(target: &str) -> String {
    match target.find("token=") {
        Some(at) => {
            let end = target[at..].find('&').map_or(target.len(), |e| at + e);
            format!("{}token=...{}", &target[..at], &target[end..])
        }
        None => target.to_owned(),
    }
}

/// Sends the upgrade and reads the response head; returns what followed it.
fn handshake(
    stream: &mut Box<dyn Link>,
    url: &WsUrl,
    token: Option<&str>,
) -> Result<Vec<u8>, ConnectError> {
    let key = base64_key();
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
        url.target, url.authority
    );
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let (mut input, end) = roomcast::http::client::read_head(stream)
        .map_err(|e| ConnectError::Refused(e.to_string()))?;
    let head = String::from_utf8_lossy(&input[..end]).into_owned();
    let expected = roomcast::ws::handshake::accept_key(&key);
    let accepted = head.starts_with("HTTP/1.1 101")
        && head.lines().any(|l| {
            l.to_ascii_lowercase().starts_with("sec-websocket-accept:") && l.ends_with(&expected)
        });
    if !accepted {
        let mut body = input[end..].to_vec();
        let _ = stream.read_to_end(&mut body);
        let status = head.lines().next().unwrap_or_default();
        return Err(ConnectError::Refused(format!(
            "{status} {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    Ok(input.split_off(end))
}

fn base64_key() -> String {
    use base64::Engine;
    let bytes = roomcast::auth::random_u64().to_le_bytes();
    let more = roomcast::auth::random_u64().to_le_bytes();
    let key: Vec<u8> = bytes.iter().chain(&more).copied().collect();
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// Writes one client frame (masked with a fresh key, as RFC 6455 asks).
fn write_frame(link: &Shared, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
    let mask = (roomcast::auth::random_u64() as u32).to_be_bytes();
    let mut out = Vec::with_capacity(payload.len() + 14);
    encode_masked_frame(true, opcode, payload, mask, &mut out);
    let mut link = link
        .lock()
        .map_err(|_| io::Error::other("connection poisoned"))?;
    link.write_all(&out)?;
    link.flush()
}

/// Every stdin line becomes a text message; at EOF the connection is closed.
fn send_lines(writer: &Shared) {
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.is_empty() {
            continue;
        }
        if write_frame(writer, OpCode::Text, line.as_bytes()).is_err() {
            return;
        }
    }
    let _ = write_frame(writer, OpCode::Close, &1000u16.to_be_bytes());
}

/// Prints every message until the server closes; answers pings.
fn receive(link: &Shared, input: &mut Vec<u8>) -> Result<Option<u16>, ConnectError> {
    let writer = link;
    let mut chunk = [0u8; 16 * 1024];
    let mut stdout = io::stdout();
    loop {
        while let Ok(Some(header)) = parse_header(input) {
            let len = usize::try_from(header.payload_len).unwrap_or(usize::MAX);
            let Some(end) = header
                .header_len
                .checked_add(len)
                .filter(|&e| e <= input.len())
            else {
                break;
            };
            let payload = input[header.header_len..end].to_vec();
            input.drain(..end);
            match header.opcode {
                OpCode::Text | OpCode::Binary => {
                    let shown = &payload[..payload.len().min(MAX_SHOWN)];
                    let cut = if payload.len() > MAX_SHOWN {
                        " [cut]"
                    } else {
                        ""
                    };
                    writeln!(stdout, "< {}{cut}", String::from_utf8_lossy(shown))?;
                    stdout.flush()?;
                }
                OpCode::Ping => write_frame(writer, OpCode::Pong, &payload)?,
                OpCode::Close => {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                    eprintln!(
                        "closed {} {reason}",
                        code.map_or("(no code)".into(), |c| c.to_string())
                    );
                    let _ = write_frame(writer, OpCode::Close, &payload[..payload.len().min(2)]);
                    return Ok(code);
                }
                _ => {}
            }
        }
        let n = match read_slice(link, &mut chunk) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            eprintln!("the connection closed without a close frame");
            return Ok(None);
        }
        input.extend_from_slice(&chunk[..n]);
    }
}

/// One read of at most `READ_SLICE`, holding the lock only meanwhile.
fn read_slice(link: &Shared, chunk: &mut [u8]) -> io::Result<usize> {
    let mut link = link
        .lock()
        .map_err(|_| io::Error::other("connection poisoned"))?;
    link.read(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ws_url_gives_its_address_and_target() {
        let url = parse_url("ws://127.0.0.1:8080/ws?token=abc").unwrap();
        assert_eq!(url.authority, "127.0.0.1:8080");
        assert_eq!(url.target, "/ws?token=abc");
        assert_eq!(
            parse_url("ws://example.com").unwrap().authority,
            "example.com:80"
        );
        assert_eq!(parse_url("ws://h:1?x").unwrap().target, "/?x");
        assert_eq!(parse_url("ws://[::1]:9/a").unwrap().authority, "[::1]:9");
        assert!(parse_url("http://h/").is_err());
        assert!(parse_url("ws:///ws").is_err());
        let secure = parse_url("wss://example.com/ws").unwrap();
        assert_eq!(secure.authority, "example.com:443");
        assert!(secure.tls);
        assert_eq!(secure.host(), "example.com");
        assert_eq!(parse_url("wss://[::1]/").unwrap().authority, "[::1]:443");
        assert_eq!(parse_url("wss://[::1]:8443/").unwrap().host(), "::1");
    }

    #[test]
    fn the_token_is_not_printed() {
        assert_eq!(redact("/ws?token=secret"), "/ws?token=...");
        assert_eq!(redact("/ws?a=1&token=s&b=2"), "/ws?a=1&token=...&b=2");
        assert_eq!(redact("/ws"), "/ws");
    }
}
