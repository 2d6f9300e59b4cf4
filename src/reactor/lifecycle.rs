//! The lifecycle log lines a shard writes: one per connection event
//! (`accepted`, `rejected`, `opened`, `http`, `closed`).
//!
//! Owns which fields each line carries and at which level; reads what the
//! connection reported (`conn::report`) and the shard's byte counts. Must
//! not log a token, a secret, a query or a header value: the connection's
//! reports carry none, and nothing else from the request reaches here.

use std::net::SocketAddr;
use std::time::Instant;

use crate::codes::close;
use crate::conn::id::{ConnId, Issuer};
use crate::conn::report::Report;
use crate::conn::{AbortReason, Connection, Endpoint};
use crate::log::{self, Field, Level};
use crate::reactor::refusals::{self, Refusal};

/// How a socket came to be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The connection ran its course (both sides done, or the peer left).
    Finished,
    /// A deadline passed (`Connection::on_tick`).
    Aborted(AbortReason),
    /// A read or write failed: the peer reset the connection.
    Reset,
    /// Closed before its first request to make room (`reactor::pre_request`).
    Evicted,
}

impl Ending {
    fn reason(self) -> Option<&'static str> {
        match self {
            Self::Finished => None,
            Self::Aborted(AbortReason::PingTimeout) => Some("ping_timeout"),
            Self::Aborted(AbortReason::RequestTimeout) => Some("request_timeout"),
            Self::Aborted(AbortReason::LingerTimeout) => Some("linger_timeout"),
            Self::Reset => Some("reset"),
            Self::Evicted => Some("evicted"),
        }
    }
}

/// Bytes read from and written to one socket.
#[derive(Debug, Default, Clone, Copy)]
pub struct ByteCounts {
    pub read: u64,
    pub written: u64,
}

/// A socket was accepted (debug).
pub fn accepted(conn: ConnId<'_>, peer: SocketAddr, shard: usize) {
    log::event(
        Level::Debug,
        "accepted",
        &[
            ("conn", Field::Conn(conn)),
            ("peer", Field::Addr(peer)),
            ("shard", Field::U64(shard as u64)),
        ],
    );
}

/// What a connection reported about a request.
pub fn reported(conn: &Connection, issuer: Issuer<'_>, report: &Report) {
    let id = ("conn", Field::Conn(conn.conn_id(issuer)));
    let ip = ("ip", Field::Ip(conn.peer_ip()));
    match report {
        Report::Opened(endpoint) => {
            let endpoint = match endpoint {
                Endpoint::Events => "ws",
                Endpoint::Echo => "echo",
            };
            let user = conn.subject().unwrap_or("");
            log::event(
                Level::Info,
                "opened",
                &[
                    id,
                    ip,
                    ("endpoint", Field::Str(endpoint)),
                    ("user", Field::Str(user)),
                ],
            );
        }
        Report::Rejected { path, code } => {
            let status = ("status", Field::U64(u64::from(code.http_status())));
            let code = ("code", Field::Str(code.as_str()));
            match path {
                Some(path) => log::event(
                    Level::Info,
                    "rejected",
                    &[id, ip, ("path", Field::Str(path)), status, code],
                ),
                None => log::event(Level::Info, "rejected", &[id, ip, status, code]),
            }
        }
        Report::Answered {
            method,
            path,
            status,
        } => http_line(id, ip, method, path, *status),
        Report::UpgradeRefused(code) => refusals::refused(Refusal::Upgrade(*code)),
        Report::Published { status } => http_line(id, ip, "POST", "/publish", *status),
        Report::Called { method, status } => api_line(id, ip, method, *status),
    }
}

fn http_line(id: (&str, Field<'_>), ip: (&str, Field<'_>), method: &str, path: &str, status: u16) {
    log::event(
        Level::Debug,
        "http",
        &[
            id,
            ip,
            ("method", Field::Str(method)),
            ("path", Field::Str(path)),
            ("status", Field::U64(u64::from(status))),
        ],
    );
}

/// A Server API call: an operator's act, so logged at info (never its
/// body or credential).
fn api_line(id: (&str, Field<'_>), ip: (&str, Field<'_>), method: &str, status: u16) {
    log::event(
        Level::Info,
        "api",
        &[
            id,
            ip,
            ("method", Field::Str(method)),
            ("status", Field::U64(u64::from(status))),
        ],
    );
}

/// A socket was dropped. A WebSocket's end is logged at info with its
/// close code (1006 when no close frame was sent or received) and, for an
/// abort, the reason; a plain HTTP connection's at debug, without a code.
pub fn closed(
    conn: &Connection,
    issuer: Issuer<'_>,
    ending: Ending,
    bytes: ByteCounts,
    now: Instant,
) {
    let websocket = conn.is_admitted();
    let level = if websocket { Level::Info } else { Level::Debug };
    if !log::enabled(level) {
        return;
    }
    let duration = now.saturating_duration_since(conn.accepted_at());
    // The code sent or received; 1006 when no close frame went either way.
    let code = conn.close_code().unwrap_or(close::ABNORMAL);
    let mut fields = [("", Field::U64(0)); 7];
    let mut n = 0;
    let mut push = |field| {
        fields[n] = field;
        n += 1;
    };
    push(("conn", Field::Conn(conn.conn_id(issuer))));
    push(("ip", Field::Ip(conn.peer_ip())));
    if websocket {
        push(("code", Field::U64(u64::from(code))));
    }
    if let Some(reason) = ending.reason() {
        push(("reason", Field::Str(reason)));
    }
    push(("duration_ms", Field::U64(duration.as_millis() as u64)));
    push(("bytes_in", Field::U64(bytes.read)));
    push(("bytes_out", Field::U64(bytes.written)));
    log::event(level, "closed", &fields[..n]);
}
