//! What a connection tells its shard about each request, for the lifecycle
//! log: the connection never logs, the shard writes the lines.
//!
//! Owns the content of a report, which is chosen so that no line can leak a
//! credential: the method, the path without its query (cut short), the
//! status and the error code. Never a header value, a query or a token.
//! Also owns each report's log level, so that a report whose line would not
//! be written is not built: no allocation per request while its level is
//! off.

use crate::codes::ErrorCode;
use crate::codes::limits::MAX_LOGGED_PATH;
use crate::conn::Endpoint;
use crate::http::request::Request;
use crate::log::{self, Level};

/// One thing that happened to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// An upgrade succeeded.
    Opened(Endpoint),
    /// An error response: a refused upgrade or an HTTP error. `path` is
    /// `None` when the request head could not be parsed.
    Rejected {
        path: Option<Box<str>>,
        code: ErrorCode,
    },
    /// A plain HTTP request was answered with `status`.
    Answered {
        method: Box<str>,
        path: Box<str>,
        status: u16,
    },
    /// A `POST /publish` was answered with `status` after its body was read.
    Published { status: u16 },
    /// A Server API call to `method` was answered with `status`.
    Called { method: &'static str, status: u16 },
    /// An upgrade refused for what the request carried or by the connect
    /// proxy: always reported (it costs no allocation), for the shard's
    /// rate-limited WARN line (`reactor::refusals`). A refusal by the
    /// admission limits is logged where it is decided instead.
    UpgradeRefused(ErrorCode),
}

impl Report {
    /// The level of the line each report becomes.
    pub fn level(&self) -> Level {
        match self {
            Self::Opened(_) | Self::Rejected { .. } | Self::Called { .. } => Level::Info,
            Self::Answered { .. } | Self::Published { .. } => Level::Debug,
            Self::UpgradeRefused(_) => Level::Warn,
        }
    }

    /// An error response to `request`; `None` while info lines are off.
    pub(super) fn rejected(request: &Request<'_>, code: ErrorCode) -> Option<Self> {
        log::enabled(Level::Info).then(|| Self::Rejected {
            path: Some(clip(request.path)),
            code,
        })
    }

    /// An upgrade refused with `code`; `None` for the admission codes,
    /// which the admission registry logs itself with the limit that
    /// refused.
    pub(super) fn upgrade_refused(code: ErrorCode) -> Option<Self> {
        match code {
            ErrorCode::ServerBusy | ErrorCode::TooManyConnections => None,
            code => Some(Self::UpgradeRefused(code)),
        }
    }

    /// A `POST /publish` answered with `status` after its body was read.
    pub(crate) fn publish_answered(status: u16) -> Self {
        Self::Published { status }
    }

    /// A Server API call to `method` answered with `status`.
    pub(crate) fn api_answered(method: &'static str, status: u16) -> Self {
        Self::Called { method, status }
    }

    /// `request` answered with `response`, a complete HTTP response; `None`
    /// while debug lines are off.
    pub(super) fn answered(request: &Request<'_>, response: &[u8]) -> Option<Self> {
        log::enabled(Level::Debug).then(|| Self::Answered {
            method: clip(request.method),
            path: clip(request.path),
            status: status_of(response),
        })
    }
}

/// At most `MAX_LOGGED_PATH` bytes, cut at a character boundary.
fn clip(text: &str) -> Box<str> {
    let mut end = text.len().min(MAX_LOGGED_PATH);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].into()
}

/// The status of a response the server wrote (`HTTP/1.1 200 OK...`); 0 if
/// it does not start with a status line.
fn status_of(response: &[u8]) -> u16 {
    response
        .get(9..12)
        .and_then(|digits| std::str::from_utf8(digits).ok())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_the_status_line() {
        assert_eq!(status_of(b"HTTP/1.1 503 Service Unavailable\r\n"), 503);
        assert_eq!(status_of(b"HTTP/1.1"), 0);
    }

    #[test]
    fn a_report_is_built_only_when_its_line_would_be_written() {
        let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let (request, _) = crate::http::request::HeadReader::default()
            .parse(head, 1024)
            .unwrap()
            .unwrap();
        let answered = Report::answered(&request, b"HTTP/1.1 200 OK\r\n");
        assert_eq!(answered.is_some(), log::enabled(Level::Debug));
        let rejected = Report::rejected(&request, ErrorCode::BadRequest);
        assert_eq!(rejected.is_some(), log::enabled(Level::Info));
        for report in answered.iter().chain(&rejected) {
            assert!(log::enabled(report.level()));
        }
    }

    #[test]
    fn paths_are_cut_at_a_character_boundary() {
        let long = format!("/{}", "é".repeat(100));
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_LOGGED_PATH);
        assert!(long.starts_with(&*clipped));
        assert_eq!(&*clip("/healthz"), "/healthz");
    }
}
