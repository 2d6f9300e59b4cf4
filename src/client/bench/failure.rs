//! Why a load-generator connection failed, by kind, and the counts of
//! each kind a run reports.
//!
//! Owns the classification (an I/O error, a refused upgrade's status, a
//! server close code, a timeout by where the connection stood) and the
//! names the kinds have in the report (`refused`, `http_503`,
//! `close_4008`, `timeout_handshake`, ...). Never touches a socket: the
//! worker tells what happened, this names it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;

use roomcast::codes::ErrorCode;

/// One failed connection (or refused request on one), by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens (ECONNREFUSED), or the backlog was full and the
    /// kernel answered the SYN with a reset.
    Refused,
    /// The peer reset the connection (ECONNRESET, EPIPE, ECONNABORTED).
    Reset,
    /// No local address/port left to connect from (EADDRNOTAVAIL): the
    /// ephemeral ports of the source addresses are used up.
    NoSourcePort,
    /// This process is out of file descriptors (EMFILE, ENFILE).
    OutOfFiles,
    /// The TCP connection did not complete (or the upgrade request could
    /// not be written) in time.
    ConnectTimeout,
    /// The upgrade request was sent; no response head came in time.
    HandshakeTimeout,
    /// Upgraded; the join's ack did not come in time.
    AckTimeout,
    /// The upgrade was refused with this HTTP status.
    Http(u16),
    /// The server sent a close frame with this code (1005: none given).
    Closed(u16),
    /// The server closed the TCP connection without a close frame.
    Eof,
    /// A join was acknowledged with `success: false`, with this error
    /// code (`None`: one the bench does not know).
    JoinRefused(Option<ErrorCode>),
    /// A reconnecting client's join with `since` and `epoch` was answered
    /// `recovered: false`: it missed messages the room no longer has.
    NotRecovered,
    /// A publish was acknowledged with `success: false`.
    PublishRefused,
    /// Upgraded without the compression or subprotocol asked for.
    NotNegotiated,
    /// A server message that did not decode (inflate, MessagePack).
    BadMessage,
    /// Any other I/O error, by its kind.
    Io(io::ErrorKind),
}

impl Failure {
    /// The kind of a failed connect, read or write.
    pub fn of_io(error: &io::Error) -> Self {
        match error.raw_os_error() {
            Some(libc::ECONNREFUSED) => return Self::Refused,
            Some(libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED) => return Self::Reset,
            Some(libc::EADDRNOTAVAIL) => return Self::NoSourcePort,
            Some(libc::EMFILE | libc::ENFILE) => return Self::OutOfFiles,
            Some(libc::ETIMEDOUT) => return Self::ConnectTimeout,
            _ => {}
        }
        match error.kind() {
            io::ErrorKind::ConnectionRefused => Self::Refused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted => Self::Reset,
            io::ErrorKind::AddrNotAvailable => Self::NoSourcePort,
            io::ErrorKind::TimedOut => Self::ConnectTimeout,
            kind => Self::Io(kind),
        }
    }

    /// The close code in a close frame's payload; 1005 when it has none.
    pub fn of_close(payload: &[u8]) -> Self {
        match payload {
            [high, low, ..] => Self::Closed(u16::from_be_bytes([*high, *low])),
            _ => Self::Closed(1005),
        }
    }

    /// A refused join, by the `code` of its ack's `error`.
    pub fn of_refused_join(ack: &[u8]) -> Self {
        let code = ErrorCode::ALL.into_iter().find(|code| {
            let quoted = format!(r#""code":"{}""#, code.as_str());
            ack.windows(quoted.len()).any(|w| w == quoted.as_bytes())
        });
        Self::JoinRefused(code)
    }

    /// The kind's name in the report.
    pub fn key(self) -> String {
        match self {
            Self::Refused => "refused".into(),
            Self::Reset => "reset".into(),
            Self::NoSourcePort => "no_source_port".into(),
            Self::OutOfFiles => "out_of_files".into(),
            Self::ConnectTimeout => "timeout_connect".into(),
            Self::HandshakeTimeout => "timeout_handshake".into(),
            Self::AckTimeout => "timeout_ack".into(),
            Self::Http(status) => format!("http_{status}"),
            Self::Closed(code) => format!("close_{code}"),
            Self::Eof => "eof".into(),
            Self::JoinRefused(None) => "join_refused".into(),
            Self::JoinRefused(Some(code)) => {
                format!("join_refused_{}", code.as_str().to_ascii_lowercase())
            }
            Self::NotRecovered => "not_recovered".into(),
            Self::PublishRefused => "publish_refused".into(),
            Self::NotNegotiated => "not_negotiated".into(),
            Self::BadMessage => "bad_message".into(),
            Self::Io(kind) => format!("io_{}", snake_case(&format!("{kind:?}"))),
        }
    }
}

/// `TimedOut` → `timed_out`.
fn snake_case(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Failures counted by kind name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureCounts(BTreeMap<String, u64>);

impl FailureCounts {
    pub fn add(&mut self, failure: Failure) {
        self.add_n(failure.key(), 1);
    }

    fn add_n(&mut self, key: String, n: u64) {
        *self.0.entry(key).or_insert(0) += n;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &FailureCounts) {
        for (key, n) in &other.0 {
            self.add_n(key.clone(), *n);
        }
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// The counts, most frequent first (ties by name).
    pub fn by_frequency(&self) -> Vec<(&str, u64)> {
        let mut counts: Vec<(&str, u64)> = self.0.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts
    }

    /// A JSON object, `{"refused":3,"http_503":5}`; the names need no
    /// escaping (`key` makes only `[a-z0-9_]`).
    pub fn to_json(&self) -> String {
        let mut out = String::from("{");
        for (i, (key, n)) in self.0.iter().enumerate() {
            let comma = if i > 0 { "," } else { "" };
            let _ = write!(out, r#"{comma}"{key}":{n}"#);
        }
        out.push('}');
        out
    }

    /// The counts of a JSON object made by `to_json`.
    pub fn from_json(value: &simd_json::BorrowedValue<'_>) -> Self {
        use simd_json::prelude::*;
        let mut counts = Self::default();
        if let Some(object) = value.as_object() {
            for (key, n) in object.iter() {
                counts.add_n(key.to_string(), n.as_u64().unwrap_or(0));
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn io_errors_are_classified_by_errno() {
        assert_eq!(Failure::of_io(&os(libc::ECONNREFUSED)), Failure::Refused);
        assert_eq!(Failure::of_io(&os(libc::ECONNRESET)), Failure::Reset);
        assert_eq!(Failure::of_io(&os(libc::EPIPE)), Failure::Reset);
        assert_eq!(
            Failure::of_io(&os(libc::EADDRNOTAVAIL)),
            Failure::NoSourcePort
        );
        assert_eq!(Failure::of_io(&os(libc::EMFILE)), Failure::OutOfFiles);
        assert_eq!(Failure::of_io(&os(libc::ENFILE)), Failure::OutOfFiles);
        assert_eq!(
            Failure::of_io(&os(libc::ETIMEDOUT)),
            Failure::ConnectTimeout
        );
        let other = Failure::of_io(&os(libc::ENETUNREACH));
        assert!(matches!(other, Failure::Io(_)), "{other:?}");
        assert!(other.key().starts_with("io_"), "{}", other.key());
        let plain = io::Error::new(io::ErrorKind::InvalidData, "x");
        assert_eq!(Failure::of_io(&plain).key(), "io_invalid_data");
    }

    #[test]
    fn statuses_and_close_codes_each_have_their_own_name() {
        assert_eq!(Failure::Http(503).key(), "http_503");
        assert_eq!(Failure::Http(401).key(), "http_401");
        assert_eq!(Failure::of_close(&[0x0f, 0xa8, b'x']).key(), "close_4008");
        assert_eq!(Failure::of_close(&[]).key(), "close_1005");
        assert_eq!(Failure::HandshakeTimeout.key(), "timeout_handshake");
    }

    #[test]
    fn a_refused_join_is_named_by_its_error_code() {
        let ack = br#"{"event":"ack","id":"j","success":false,"error":{"code":"UNAVAILABLE","message":"x"}}"#;
        assert_eq!(
            Failure::of_refused_join(ack).key(),
            "join_refused_unavailable"
        );
        let full = br#"{"event":"ack","id":"j","success":false,"error":{"code":"ROOM_FULL"}}"#;
        assert_eq!(
            Failure::of_refused_join(full).key(),
            "join_refused_room_full"
        );
        let unknown = br#"{"event":"ack","id":"j","success":false,"error":{"code":"NEW"}}"#;
        assert_eq!(Failure::of_refused_join(unknown).key(), "join_refused");
    }

    #[test]
    fn counts_add_merge_and_round_trip_through_json() {
        let mut a = FailureCounts::default();
        a.add(Failure::Http(503));
        a.add(Failure::Http(503));
        a.add(Failure::Refused);
        let mut b = FailureCounts::default();
        b.add(Failure::Refused);
        b.add(Failure::Closed(4008));
        a.merge(&b);
        assert_eq!(a.total(), 5);
        assert_eq!(
            a.by_frequency(),
            vec![("http_503", 2), ("refused", 2), ("close_4008", 1)]
        );
        let json = a.to_json();
        assert_eq!(json, r#"{"close_4008":1,"http_503":2,"refused":2}"#);
        let mut bytes = json.into_bytes();
        let value = simd_json::to_borrowed_value(&mut bytes).unwrap();
        assert_eq!(FailureCounts::from_json(&value), a);
        assert_eq!(FailureCounts::default().to_json(), "{}");
    }
}
