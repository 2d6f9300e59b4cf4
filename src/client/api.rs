//! `roomcast api METHOD [JSON]`: one call of the Server API
//! (`POST /api/METHOD`, docs/api.md) from the command line, as
//! `roomcast token` mints a token: for an operator's shell and scripts.
//!
//! Owns the command's flags, where its credential comes from (`--api-key`,
//! `--token`, or `ROOMCAST_API_KEY` / `ROOMCAST_API_TOKEN`), the one request
//! and the bounded reading of its reply, and the exit status: 0 for a 2xx,
//! 1 for an error the API answered (its body on stderr), 2 when there was
//! no answer to have (a bad command line, no connection, a reply that is
//! not HTTP). The key or token is sent, never printed.
//!
//! Blocking std sockets, one request per connection (`Connection: close`);
//! `--tls` speaks TLS through `term`'s client session. The reply is read
//! in `reply`.

mod reply;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use simd_json::prelude::*;

use roomcast::codes::limits::MAX_API_METHOD_LEN;

use super::pretty::pretty;
use reply::{ReadError, Reply, read_reply};

/// Flags of `roomcast api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The method: publish, broadcast, disconnect, subscribe, unsubscribe,
    /// presence, history, history_remove, rooms, user, info or batch.
    pub method: String,
    /// Its parameters, one JSON object; `-` reads them from stdin.
    #[arg(default_value = "{}")]
    pub params: String,
    /// The server's HOST:PORT: its public port, or --metrics-bind's when the server has one.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// One of the server's --api-key keys (sent as X-API-Key). Without it and
    /// --token: the first key of the comma-separated ROOMCAST_API_KEY.
    #[arg(long, conflicts_with = "token")]
    pub api_key: Option<String>,
    /// A token with admin: true (roomcast token --admin), sent as Authorization:
    /// Bearer. Without it and --api-key: ROOMCAST_API_TOKEN.
    #[arg(long)]
    pub token: Option<String>,
    /// Speak TLS to a server started with --tls-cert/--tls-key; HOST must match its certificate.
    #[arg(long)]
    pub tls: bool,
    /// With --tls: trust the authorities in this PEM file instead of the system's.
    #[arg(long, requires = "tls")]
    pub ca: Option<PathBuf>,
    /// Print the reply body as the server sent it, not indented.
    #[arg(long)]
    pub raw: bool,
    /// Give up on connecting, sending or the reply after this long (seconds, or ms/s/m).
    #[arg(long, default_value = "10s", value_parser = roomcast::config::parse_duration)]
    pub timeout: Duration,
}

/// Exit status when the API answered with an error.
const EXIT_API_ERROR: u8 = 1;
/// Exit status when there was no answer to have; clap's own usage errors
/// exit 2 as well.
const EXIT_NO_ANSWER: u8 = 2;

/// Largest reply read, and largest parameters read from stdin: far above
/// what the server sends (a `rooms` list is at most 10,000 entries) and
/// takes (1 MiB or `--max-message-size`), yet bounded.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The environment variable a key comes from without `--api-key`.
const KEY_ENV: &str = "ROOMCAST_API_KEY";
/// The environment variable a token comes from without `--token`.
const TOKEN_ENV: &str = "ROOMCAST_API_TOKEN";

/// Why `roomcast api` got no answer.
#[derive(Debug)]
enum ApiError {
    /// The command line asks for something that cannot be sent.
    Usage(String),
    /// Reading the parameters from stdin failed.
    Stdin(io::Error),
    /// No connection to `--addr`.
    Connect(String, io::Error),
    /// The connection broke, or the reply took over `--timeout`.
    Exchange(String, io::Error),
    /// `--tls`: no usable authorities, or a TLS failure.
    Tls(String),
    /// What came back is not an HTTP/1.1 response.
    BadReply(&'static str),
    /// The reply is over `MAX_BODY`.
    TooLarge,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Usage(why) => write!(f, "{why}"),
            ApiError::Stdin(e) => write!(f, "cannot read the parameters from stdin: {e}"),
            ApiError::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            ApiError::Exchange(addr, e) if is_timeout(e) => {
                write!(f, "{addr}: no reply within --timeout")
            }
            ApiError::Exchange(addr, e) => write!(f, "{addr}: the connection broke: {e}"),
            ApiError::Tls(why) => write!(f, "{why}"),
            ApiError::BadReply(why) => write!(f, "not an HTTP reply: {why}"),
            ApiError::TooLarge => write!(f, "the reply is over {} MiB", MAX_BODY >> 20),
        }
    }
}

/// A blocking socket's read or write timeout, as std reports it.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How the call proves it may use the API.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credential {
    Key(String),
    Token(String),
}

impl Credential {
    /// The request header that carries it.
    fn header(&self) -> String {
        match self {
            Credential::Key(key) => format!("X-API-Key: {key}\r\n"),
            Credential::Token(jwt) => format!("Authorization: Bearer {jwt}\r\n"),
        }
    }
}

/// `roomcast api`: runs the call and prints what it answered.
pub fn run_command(args: &ApiArgs) -> ExitCode {
    match call(args) {
        Ok(reply) => report(&reply, args.raw),
        Err(e) => {
            eprintln!("roomcast api: {e}");
            ExitCode::from(EXIT_NO_ANSWER)
        }
    }
}

/// Prints a 2xx body to stdout, anything else with its status to stderr.
fn report(reply: &Reply, raw: bool) -> ExitCode {
    let body = String::from_utf8_lossy(&reply.body);
    if !(200..300).contains(&reply.status) {
        eprintln!("roomcast api: {}", reply.status_line);
        eprintln!("{}", body.trim_end());
        return ExitCode::from(EXIT_API_ERROR);
    }
    let missing = missing_nodes(&reply.body);
    if !missing.is_empty() {
        eprintln!(
            "roomcast api: warning: these nodes did not answer within --api-timeout: {}",
            missing.join(", ")
        );
    }
    let shown = if raw {
        body.into_owned()
    } else {
        pretty(&body)
    };
    println!("{}", shown.trim_end());
    ExitCode::SUCCESS
}

/// `result.missingNodes` of a reply: the nodes a per-user command may not
/// have reached.
fn missing_nodes(body: &[u8]) -> Vec<String> {
    let mut bytes = body.to_vec();
    let Ok(value) = simd_json::to_owned_value(&mut bytes) else {
        return Vec::new();
    };
    value
        .get("result")
        .and_then(|r| r.get("missingNodes"))
        .and_then(|m| m.as_array())
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| n.as_str().map_or_else(|| n.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends the one request of `args` and reads its reply.
fn call(args: &ApiArgs) -> Result<Reply, ApiError> {
    check_method(&args.method)?;
    let credential = credential(
        args,
        std::env::var(KEY_ENV).ok(),
        std::env::var(TOKEN_ENV).ok(),
    )?;
    let params = match args.params.as_str() {
        "-" => read_stdin()?,
        text => text.as_bytes().to_vec(),
    };
    let params = checked_params(params)?;
    let request = request(&args.method, &args.addr, &credential, &params);
    let socket =
        connect(&args.addr, args.timeout).map_err(|e| ApiError::Connect(args.addr.clone(), e))?;
    let exchange_error = |e| ApiError::Exchange(args.addr.clone(), e);
    let mut link: Box<dyn ReadWrite> = if args.tls {
        let host = super::term::host_of(&args.addr);
        let session = super::term::tls_link(socket, host, args.ca.as_deref())
            .map_err(|e| ApiError::Tls(e.to_string()))?;
        Box::new(session)
    } else {
        Box::new(socket)
    };
    link.write_all(&request).map_err(exchange_error)?;
    link.flush().map_err(exchange_error)?;
    read_reply(&mut link).map_err(|e| match e {
        ReadError::Io(e) => exchange_error(e),
        ReadError::Api(e) => e,
    })
}

/// A connection that reads and writes: a socket, or TLS over one.
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A method goes into the request line as is: letters, digits and `_`
/// only, so that nothing can be smuggled into the request. Whether the
/// server knows it is the server's to say (`404 NOT_FOUND`).
fn check_method(method: &str) -> Result<(), ApiError> {
    let fits = !method.is_empty()
        && method.len() <= MAX_API_METHOD_LEN
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if fits {
        return Ok(());
    }
    Err(ApiError::Usage(format!(
        "{method:?} is not a method name (letters, digits and _, e.g. disconnect, history_remove)"
    )))
}

/// The credential: `--api-key`, else `--token`, else the first key of
/// `ROOMCAST_API_KEY`, else `ROOMCAST_API_TOKEN`. Never part of a message.
fn credential(
    args: &ApiArgs,
    env_keys: Option<String>,
    env_token: Option<String>,
) -> Result<Credential, ApiError> {
    // Split as the server splits it, so that the first key is one it holds.
    let first_env_key =
        env_keys.and_then(|keys| keys.split(',').find(|k| !k.is_empty()).map(str::to_owned));
    let env_token = env_token.filter(|t| !t.trim().is_empty());
    let credential = match (&args.api_key, &args.token, first_env_key, env_token) {
        (Some(key), _, _, _) => Credential::Key(key.clone()),
        (None, Some(jwt), _, _) => Credential::Token(jwt.clone()),
        (None, None, Some(key), _) => Credential::Key(key),
        (None, None, None, Some(jwt)) => Credential::Token(jwt.trim().to_owned()),
        (None, None, None, None) => {
            return Err(ApiError::Usage(format!(
                "no credential: pass --api-key or --token, or set {KEY_ENV} or {TOKEN_ENV}"
            )));
        }
    };
    let (Credential::Key(value) | Credential::Token(value)) = &credential;
    // A header value is visible ASCII; anything else would break the request.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        let what = match credential {
            Credential::Key(_) => "the API key",
            Credential::Token(_) => "the token",
        };
        return Err(ApiError::Usage(format!(
            "{what} is empty or holds a character other than visible ASCII"
        )));
    }
    Ok(credential)
}

/// Stdin, up to `MAX_BODY` bytes.
fn read_stdin() -> Result<Vec<u8>, ApiError> {
    let mut params = Vec::new();
    io::stdin()
        .lock()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut params)
        .map_err(ApiError::Stdin)?;
    if params.len() > MAX_BODY {
        return Err(ApiError::Usage(format!(
            "the parameters on stdin are over {} MiB",
            MAX_BODY >> 20
        )));
    }
    Ok(params)
}

/// The parameters as sent: a JSON object (nothing, or only white space,
/// stands for `{}`). Checked here so that a typo is a usage error with a
/// clear message rather than the server's `INVALID_MESSAGE`.
fn checked_params(params: Vec<u8>) -> Result<Vec<u8>, ApiError> {
    if params.iter().all(u8::is_ascii_whitespace) {
        return Ok(b"{}".to_vec());
    }
    let mut copy = params.clone();
    match simd_json::to_owned_value(&mut copy) {
        Ok(value) if value.is_object() => Ok(params),
        Ok(_) => Err(ApiError::Usage(
            "the parameters must be a JSON object, e.g. '{\"user\":\"alice\"}'".to_owned(),
        )),
        Err(e) => Err(ApiError::Usage(format!(
            "the parameters are not valid JSON: {e}"
        ))),
    }
}

/// The whole request: `POST /api/METHOD`, the credential, the body.
fn request(method: &str, host: &str, credential: &Credential, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /api/{method} HTTP/1.1\r\nHost: {host}\r\n{}\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        credential.header(),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// A connection to the first address of `addr` that takes one.
fn connect(addr: &str, timeout: Duration) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for candidate in addrs {
        match TcpStream::connect_timeout(&candidate, timeout) {
            Ok(socket) => {
                socket.set_read_timeout(Some(timeout))?;
                socket.set_write_timeout(Some(timeout))?;
                socket.set_nodelay(true)?;
                return Ok(socket);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Line {
        #[command(flatten)]
        args: ApiArgs,
    }

    fn args(line: &[&str]) -> ApiArgs {
        Line::try_parse_from(std::iter::once("api").chain(line.iter().copied()))
            .unwrap()
            .args
    }

    #[test]
    fn flags_win_over_the_environment_and_the_first_env_key_is_used() {
        let env = || Some(",k1,k2".to_owned());
        let token = || Some("jwt-env".to_owned());
        let flag_key = args(&["info", "--api-key", "flag"]);
        assert_eq!(
            credential(&flag_key, env(), token()).unwrap(),
            Credential::Key("flag".into())
        );
        let flag_token = args(&["info", "--token", "jwt"]);
        assert_eq!(
            credential(&flag_token, env(), token()).unwrap(),
            Credential::Token("jwt".into())
        );
        let bare = args(&["info"]);
        assert_eq!(
            credential(&bare, env(), token()).unwrap(),
            Credential::Key("k1".into())
        );
        assert_eq!(
            credential(&bare, Some(",".into()), token()).unwrap(),
            Credential::Token("jwt-env".into())
        );
        assert!(matches!(
            credential(&bare, None, None),
            Err(ApiError::Usage(_))
        ));
    }

    #[test]
    fn a_credential_that_would_break_the_header_is_refused_without_being_shown() {
        let bad = args(&["info", "--api-key", "secret\r\nX: y"]);
        let message = credential(&bad, None, None).unwrap_err().to_string();
        assert!(!message.contains("secret"), "{message}");
        assert!(Line::try_parse_from(["api", "info", "--api-key", "a", "--token", "b"]).is_err());
    }

    #[test]
    fn only_plain_method_names_reach_the_request_line() {
        assert!(check_method("history_remove").is_ok());
        for bad in ["", "info HTTP/1.1", "../stats", "a\r\nb", "rooms?x=1"] {
            assert!(check_method(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parameters_must_be_a_json_object_and_nothing_means_none() {
        assert_eq!(checked_params(b" \n".to_vec()).unwrap(), b"{}");
        let object = br#"{"user":"u1"}"#.to_vec();
        assert_eq!(checked_params(object.clone()).unwrap(), object);
        assert!(checked_params(b"[1]".to_vec()).is_err());
        assert!(checked_params(b"{user:1}".to_vec()).is_err());
    }

    #[test]
    fn the_request_carries_the_method_credential_and_body() {
        let key = Credential::Key("k".into());
        let request = request("info", "h:1", &key, b"{}");
        let text = String::from_utf8(request).unwrap();
        assert!(text.starts_with("POST /api/info HTTP/1.1\r\nHost: h:1\r\nX-API-Key: k\r\n"));
        assert!(text.ends_with("Content-Length: 2\r\nConnection: close\r\n\r\n{}"));
        let jwt = Credential::Token("t".into());
        assert_eq!(jwt.header(), "Authorization: Bearer t\r\n");
    }

    #[test]
    fn missing_nodes_are_found_in_the_result() {
        let body = br#"{"result":{"connections":1,"missingNodes":["n2","n3"]}}"#;
        assert_eq!(missing_nodes(body), ["n2", "n3"]);
        assert!(missing_nodes(br#"{"result":{"connections":1}}"#).is_empty());
    }
}
