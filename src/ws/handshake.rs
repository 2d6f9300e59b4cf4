//! The WebSocket opening handshake (RFC 6455 section 4.2) for `GET /ws` and
//! `GET /echo`, sans-IO.
//!
//! Owns: the upgrade decision, in the order of `docs/protocol.md` section 2
//! (request shape, version, origin, connection slot, token), the
//! `Sec-WebSocket-Accept` key, subprotocol selection and, with
//! `--compression on`, the permessage-deflate agreement (`extensions`).
//!
//! Must not touch: sockets, routing (the caller has matched the path), the
//! connection counters (reached only through the caller's `admit`), or the
//! token format (`auth`).

use crate::auth::{self, Claims, Keys};
use crate::codes::{ErrorCode, SUBPROTOCOL, SUBPROTOCOL_MSGPACK};
use crate::http::request::{Request, Version};
use crate::http::response;
use crate::ws::extensions::{self, Deflate};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// RFC 6455 section 1.3: appended to the client's key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What the server requires of an upgrade, as of `now_unix`.
pub struct UpgradePolicy<'a> {
    pub keys: &'a Keys,
    pub leeway_secs: f64,
    /// `--allowed-origins`; empty: any origin.
    pub allowed_origins: &'a [String],
    pub now_unix: f64,
    /// `--compression on`: permessage-deflate is negotiated when offered;
    /// otherwise `Sec-WebSocket-Extensions` is ignored.
    pub compression: bool,
    /// `/ws`: `roomcast.msgpack` is selected when offered (section 14);
    /// `/echo` echoes bytes and has no use for it.
    pub msgpack: bool,
}

/// An upgrade that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub claims: Claims,
    /// The `Sec-WebSocket-Accept` value.
    pub accept_key: String,
    /// `Some(SUBPROTOCOL_MSGPACK)` or `Some(SUBPROTOCOL)` when the client
    /// offered it.
    pub subprotocol: Option<&'static str>,
    /// The permessage-deflate agreement, when compression is on and the
    /// client offered something acceptable.
    pub deflate: Option<Deflate>,
}

impl Accepted {
    /// Whether every message is MessagePack in a binary frame (section 14).
    pub fn msgpack(&self) -> bool {
        self.subprotocol == Some(SUBPROTOCOL_MSGPACK)
    }

    /// Appends the `101 Switching Protocols` response; it carries
    /// `Sec-WebSocket-Extensions` exactly when an agreement was made.
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let extensions = self.deflate.map(Deflate::response);
        response::write_switching_protocols(
            out,
            &self.accept_key,
            self.subprotocol,
            extensions.as_deref(),
        );
    }
}

/// Why an upgrade is refused: the code and a fixed message, never the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub code: ErrorCode,
    pub message: &'static str,
}

impl Rejection {
    const fn new(code: ErrorCode, message: &'static str) -> Self {
        Rejection { code, message }
    }

    /// Appends the HTTP error response (`Connection: close`), with
    /// `Sec-WebSocket-Version: 13` for `UNSUPPORTED_VERSION` (RFC 6455 4.4).
    pub fn write_response(&self, out: &mut Vec<u8>) {
        let extra: &[(&str, &str)] = match self.code {
            ErrorCode::UnsupportedVersion => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        };
        response::write_error(out, self.code, self.message, extra);
    }
}

/// A refused upgrade, and whether `admit()` had reserved a slot for it.
#[must_use = "when `admitted` is true the caller must release the connection slot"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub rejection: Rejection,
    /// `admit()` returned `Ok` before the token failed: the caller holds a
    /// connection slot for this request and must release it.
    pub admitted: bool,
}

impl Refusal {
    fn before_admission(rejection: Rejection) -> Self {
        Refusal {
            rejection,
            admitted: false,
        }
    }

    fn after_admission(rejection: Rejection) -> Self {
        Refusal {
            rejection,
            admitted: true,
        }
    }
}

const NOT_GET: Rejection = Rejection::new(ErrorCode::BadRequest, "WebSocket upgrade requires GET");
const NOT_HTTP_1_1: Rejection =
    Rejection::new(ErrorCode::BadRequest, "WebSocket upgrade requires HTTP/1.1");
/// Also the answer to a `HEAD` on an upgrade path: a `HEAD` cannot
/// upgrade, so it gets what a `GET` without the upgrade headers gets.
pub const NO_UPGRADE_TOKEN: Rejection =
    Rejection::new(ErrorCode::BadRequest, "missing Upgrade: websocket");
const NO_CONNECTION_TOKEN: Rejection =
    Rejection::new(ErrorCode::BadRequest, "missing Connection: Upgrade");
const BAD_KEY: Rejection = Rejection::new(
    ErrorCode::BadRequest,
    "missing or invalid Sec-WebSocket-Key",
);
const BAD_VERSION: Rejection = Rejection::new(
    ErrorCode::UnsupportedVersion,
    "Sec-WebSocket-Version must be 13",
);
const BAD_ORIGIN: Rejection = Rejection::new(ErrorCode::OriginForbidden, "origin not allowed");

/// Runs the checks of protocol section 2 in order; the first failure answers:
///
/// 1. 400 `BAD_REQUEST`: not GET, not HTTP/1.1, `Upgrade` lacks `websocket`,
///    `Connection` lacks `upgrade`, `Sec-WebSocket-Key` missing, repeated, or
///    not the base64 of exactly 16 bytes;
/// 2. 426 `UNSUPPORTED_VERSION`: `Sec-WebSocket-Version` not exactly one `13`;
/// 3. 403 `ORIGIN_FORBIDDEN`: an `Origin` not in a non-empty
///    `allowed_origins` (exact, ASCII case-insensitive);
/// 4. `admit()`, the caller's connection-count check, which reserves a slot
///    on `Ok` and answers `SERVER_BUSY` or `TOO_MANY_CONNECTIONS` otherwise;
///    it is not called when an earlier check failed;
/// 5. the token (`Authorization: Bearer`, else `?token=`) via `auth::verify`.
///
/// A failure at step 5 returns `Refusal { admitted: true, .. }`: the slot
/// reserved by `admit()` must then be released by the caller.
pub fn check_upgrade(
    req: &Request<'_>,
    policy: &UpgradePolicy<'_>,
    admit: &mut dyn FnMut() -> Result<(), ErrorCode>,
) -> Result<Accepted, Refusal> {
    let upgrade = check_before_token(req, policy, admit)?;
    let claims = authenticate(req, policy).map_err(Refusal::after_admission)?;
    Ok(upgrade.with(claims))
}

/// Steps 1-4 of `check_upgrade`: an upgrade whose claims come from
/// elsewhere (the connect proxy, section 13.2). On `Ok` the caller holds
/// a connection slot.
pub fn check_before_token(
    req: &Request<'_>,
    policy: &UpgradePolicy<'_>,
    admit: &mut dyn FnMut() -> Result<(), ErrorCode>,
) -> Result<Upgrade, Refusal> {
    let key = check_request_shape(req).map_err(Refusal::before_admission)?;
    check_version(req).map_err(Refusal::before_admission)?;
    check_origin(req, policy.allowed_origins).map_err(Refusal::before_admission)?;
    admit().map_err(|code| Refusal::before_admission(admission_rejection(code)))?;
    Ok(Upgrade {
        accept_key: accept_key(key),
        subprotocol: offered_subprotocol(req, policy.msgpack),
        deflate: policy
            .compression
            .then(|| extensions::negotiate(req.headers("sec-websocket-extensions")))
            .flatten(),
    })
}

/// An upgrade that passed every check but the claims.
#[derive(Debug, Clone, PartialEq)]
pub struct Upgrade {
    accept_key: String,
    subprotocol: Option<&'static str>,
    deflate: Option<Deflate>,
}

impl Upgrade {
    /// The upgrade accepted with `claims`.
    pub fn with(self, claims: Claims) -> Accepted {
        Accepted {
            claims,
            accept_key: self.accept_key,
            subprotocol: self.subprotocol,
            deflate: self.deflate,
        }
    }
}

/// `base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))`.
pub fn accept_key(key: &str) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    context.update(key.as_bytes());
    context.update(WEBSOCKET_GUID.as_bytes());
    STANDARD.encode(context.finish())
}

/// Step 1; returns the `Sec-WebSocket-Key`.
fn check_request_shape<'a>(req: &Request<'a>) -> Result<&'a str, Rejection> {
    if req.method != "GET" {
        return Err(NOT_GET);
    }
    if req.version != Version::Http11 {
        return Err(NOT_HTTP_1_1);
    }
    if !req.header_has_token("upgrade", "websocket") {
        return Err(NO_UPGRADE_TOKEN);
    }
    if !req.header_has_token("connection", "upgrade") {
        return Err(NO_CONNECTION_TOKEN);
    }
    single_header(req, "sec-websocket-key")
        .filter(|key| is_valid_key(key))
        .ok_or(BAD_KEY)
}

/// The value of a header that must appear exactly once.
fn single_header<'a>(req: &Request<'a>, name: &str) -> Option<&'a str> {
    let mut values = req.headers(name);
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// RFC 6455 4.2.1: the base64 encoding of 16 bytes (24 characters).
fn is_valid_key(key: &str) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24 && STANDARD.decode_slice(key, &mut decoded) == Ok(16)
}

/// Step 2.
fn check_version(req: &Request<'_>) -> Result<(), Rejection> {
    match single_header(req, "sec-websocket-version") {
        Some("13") => Ok(()),
        _ => Err(BAD_VERSION),
    }
}

/// Step 3. Every `Origin` line must be allowed, so that a second header
/// cannot smuggle a forbidden origin past the check.
fn check_origin(req: &Request<'_>, allowed_origins: &[String]) -> Result<(), Rejection> {
    if allowed_origins.is_empty() {
        return Ok(());
    }
    let allowed = |origin: &str| {
        allowed_origins
            .iter()
            .any(|a| a.eq_ignore_ascii_case(origin))
    };
    if req.headers("origin").all(allowed) {
        Ok(())
    } else {
        Err(BAD_ORIGIN)
    }
}

/// Step 4's answer when the caller refuses a slot.
fn admission_rejection(code: ErrorCode) -> Rejection {
    let message = match code {
        ErrorCode::ServerBusy => "server is busy",
        ErrorCode::TooManyConnections => "too many connections",
        _ => "connection refused",
    };
    Rejection::new(code, message)
}

/// Step 5.
fn authenticate(req: &Request<'_>, policy: &UpgradePolicy<'_>) -> Result<Claims, Rejection> {
    let token = req.token().unwrap_or("");
    auth::verify(token, policy.keys, policy.now_unix, policy.leeway_secs)
        .map_err(|error| Rejection::new(error.code(), error.message()))
}

/// `Some(SUBPROTOCOL_MSGPACK)` when any `Sec-WebSocket-Protocol` line lists
/// it and `msgpack` allows it, else `Some(SUBPROTOCOL)` when one lists that.
/// Subprotocol names are compared exactly: the client checks that the server
/// echoes one of the names it sent, byte for byte.
fn offered_subprotocol(req: &Request<'_>, msgpack: bool) -> Option<&'static str> {
    let offered = |name: &str| {
        req.headers("sec-websocket-protocol")
            .flat_map(|value| value.split(','))
            .any(|offered| offered.trim_matches([' ', '\t']) == name)
    };
    if msgpack && offered(SUBPROTOCOL_MSGPACK) {
        return Some(SUBPROTOCOL_MSGPACK);
    }
    offered(SUBPROTOCOL).then_some(SUBPROTOCOL)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::HeadReader;

    const NOW: f64 = 1_700_000_000.0;
    const SECRET: &str = "handshake-secret";

    fn token() -> String {
        let claims = Claims {
            sub: "alice".into(),
            exp: NOW + 60.0,
            name: Some("Alice".into()),
            rooms: None,
            publish: None,
            admin: false,
            rate: None,
        };
        auth::mint(&claims, SECRET.as_bytes())
    }

    /// A valid browser-like upgrade with the token in the query, with header
    /// lines replaced or added by `edit`.
    fn request_text(edit: &[(&str, Option<&str>)]) -> String {
        let mut headers: Vec<(String, String)> = [
            ("Host", "localhost:8080"),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Origin", "https://app.example"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        for (name, value) in edit {
            headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if let Some(value) = value {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        let mut text = format!("GET /ws?token={} HTTP/1.1\r\n", token());
        for (name, value) in headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        text.push_str("\r\n");
        text
    }

    struct Outcome {
        result: Result<Accepted, Refusal>,
        admit_calls: usize,
    }

    fn run(text: &str, origins: &[&str], admit_answer: Result<(), ErrorCode>) -> Outcome {
        run_with(text, origins, admit_answer, false)
    }

    fn run_with(
        text: &str,
        origins: &[&str],
        admit_answer: Result<(), ErrorCode>,
        compression: bool,
    ) -> Outcome {
        let (req, _) = HeadReader::default()
            .parse(text.as_bytes(), 8192)
            .unwrap()
            .unwrap();
        let keys = Keys::new(&[SECRET]);
        let allowed_origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        let policy = UpgradePolicy {
            keys: &keys,
            leeway_secs: 0.0,
            allowed_origins: &allowed_origins,
            now_unix: NOW,
            compression,
            msgpack: true,
        };
        let mut admit_calls = 0;
        let result = check_upgrade(&req, &policy, &mut || {
            admit_calls += 1;
            admit_answer
        });
        Outcome {
            result,
            admit_calls,
        }
    }

    fn refusal(outcome: &Outcome) -> Refusal {
        match &outcome.result {
            Err(refusal) => *refusal,
            Ok(_) => panic!("expected a refusal"),
        }
    }

    #[test]
    fn accept_key_matches_rfc_6455() {
        // RFC 6455 section 1.3's example (the brief quoted another value,
        // which is not the SHA-1 of this key).
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn valid_upgrade_with_token_in_query() {
        let outcome = run(&request_text(&[]), &["https://app.example"], Ok(()));
        let accepted = outcome.result.unwrap();
        assert_eq!(&*accepted.claims.sub, "alice");
        assert_eq!(accepted.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(accepted.subprotocol, None);
        assert_eq!(outcome.admit_calls, 1);
        let mut out = Vec::new();
        accepted.write_response(&mut out);
        assert!(out.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
    }

    #[test]
    fn token_in_authorization_header_wins_over_query() {
        let bearer = format!("Bearer {}", token());
        let text =
            request_text(&[("Authorization", Some(&bearer))]).replacen(&token(), "garbage", 1);
        assert!(run(&text, &[], Ok(())).result.is_ok());
        let lower = format!("bearer  {}", token());
        let text =
            request_text(&[("Authorization", Some(&lower))]).replacen(&token(), "garbage", 1);
        assert!(run(&text, &[], Ok(())).result.is_ok());
        // Another scheme falls back to the query.
        let text = request_text(&[("Authorization", Some("Basic dXNlcjpwYXNz"))]);
        assert!(run(&text, &[], Ok(())).result.is_ok());
        let text = request_text(&[("Authorization", Some("Bearer nope"))]);
        assert_eq!(
            refusal(&run(&text, &[], Ok(()))).rejection.code,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn subprotocol_selected_only_when_offered() {
        let offers = [
            (Some("roomcast.v1"), Some(SUBPROTOCOL)),
            (Some("chat, roomcast.v1"), Some(SUBPROTOCOL)),
            (Some("chat,roomcast.v1 ,x"), Some(SUBPROTOCOL)),
            (Some("chat"), None),
            (Some("ROOMCAST.V1"), None),
            (Some("roomcast.v2"), None),
            (Some("roomcast.msgpack"), Some(SUBPROTOCOL_MSGPACK)),
            (
                Some("roomcast.v1, roomcast.msgpack"),
                Some(SUBPROTOCOL_MSGPACK),
            ),
            (
                Some("roomcast.msgpack,roomcast.v1"),
                Some(SUBPROTOCOL_MSGPACK),
            ),
            (Some("roomcast.MsgPack"), None),
            (None, None),
        ];
        for (offer, selected) in offers {
            let text = request_text(&[("Sec-WebSocket-Protocol", offer)]);
            assert_eq!(
                run(&text, &[], Ok(())).result.unwrap().subprotocol,
                selected,
                "{offer:?}"
            );
        }
        let two_lines = request_text(&[("Sec-WebSocket-Protocol", Some("chat"))]).replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Protocol: roomcast.v1\r\n\r\n",
        );
        assert_eq!(
            run(&two_lines, &[], Ok(())).result.unwrap().subprotocol,
            Some(SUBPROTOCOL)
        );
    }

    #[test]
    fn deflate_is_agreed_only_when_on_and_offered_on_any_line() {
        let offer = |value: Option<&str>| request_text(&[("Sec-WebSocket-Extensions", value)]);
        let deflate =
            |text: &str, on: bool| run_with(text, &[], Ok(()), on).result.unwrap().deflate;
        let offered = offer(Some("permessage-deflate; client_max_window_bits"));
        assert_eq!(deflate(&offered, false), None, "compression off");
        assert!(deflate(&offered, true).is_some());
        assert_eq!(deflate(&offer(None), true), None, "not offered");
        assert_eq!(deflate(&offer(Some("x-webkit-deflate-frame")), true), None);
        let second_line = offer(Some("foo")).replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        );
        assert!(deflate(&second_line, true).is_some());

        let mut response = Vec::new();
        let accepted = run_with(&offered, &[], Ok(()), true).result.unwrap();
        accepted.write_response(&mut response);
        let response = String::from_utf8(response).unwrap();
        assert!(response.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        ));
        let mut plain = Vec::new();
        let accepted = run_with(&offered, &[], Ok(()), false).result.unwrap();
        accepted.write_response(&mut plain);
        assert!(!String::from_utf8(plain).unwrap().contains("Extensions"));
    }

    fn expect_before_admission(text: &str, origins: &[&str], code: ErrorCode) {
        let outcome = run(text, origins, Err(ErrorCode::ServerBusy));
        let refusal = refusal(&outcome);
        assert_eq!(refusal.rejection.code, code, "{text}");
        assert!(!refusal.admitted);
        assert_eq!(outcome.admit_calls, 0, "admit() called for {text}");
    }

    #[test]
    fn bad_requests() {
        let base = request_text(&[]);
        let cases = [
            base.replacen("GET", "POST", 1),
            base.replacen("HTTP/1.1", "HTTP/1.0", 1),
            request_text(&[("Upgrade", None)]),
            request_text(&[("Upgrade", Some("h2c"))]),
            request_text(&[("Connection", None)]),
            request_text(&[("Connection", Some("keep-alive"))]),
            request_text(&[("Sec-WebSocket-Key", None)]),
            request_text(&[("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZSBub25jZQ"))]),
            request_text(&[("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZSBub25jZSE="))]),
            request_text(&[("Sec-WebSocket-Key", Some("dGhlIHNhbXBsZSBub25j"))]),
            request_text(&[("Sec-WebSocket-Key", Some("!GhlIHNhbXBsZSBub25jZQ=="))]),
            base.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            ),
            // Bad version and origin too: the request shape answers first.
            request_text(&[("Upgrade", None), ("Sec-WebSocket-Version", Some("8"))]),
        ];
        for text in &cases {
            expect_before_admission(text, &["https://other.example"], ErrorCode::BadRequest);
        }
        // Token lists are fine.
        let text = request_text(&[
            ("Connection", Some("keep-alive, Upgrade")),
            ("Upgrade", Some("WebSocket")),
        ]);
        assert!(run(&text, &[], Ok(())).result.is_ok());
    }

    #[test]
    fn unsupported_version_comes_before_origin() {
        for version in [None, Some("8"), Some("14"), Some("13, 8"), Some("")] {
            let text = request_text(&[("Sec-WebSocket-Version", version)]);
            expect_before_admission(
                &text,
                &["https://other.example"],
                ErrorCode::UnsupportedVersion,
            );
        }
        let twice = request_text(&[]).replace("\r\n\r\n", "\r\nSec-WebSocket-Version: 13\r\n\r\n");
        expect_before_admission(&twice, &[], ErrorCode::UnsupportedVersion);
    }

    #[test]
    fn origin_checks() {
        let text = request_text(&[]);
        expect_before_admission(
            &text,
            &["https://other.example"],
            ErrorCode::OriginForbidden,
        );
        assert!(
            run(
                &text,
                &["https://other.example", "HTTPS://APP.EXAMPLE"],
                Ok(())
            )
            .result
            .is_ok()
        );
        assert!(run(&text, &[], Ok(())).result.is_ok());
        let no_origin = request_text(&[("Origin", None)]);
        assert!(
            run(&no_origin, &["https://other.example"], Ok(()))
                .result
                .is_ok()
        );
        let second = text.replace("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n");
        expect_before_admission(
            &second,
            &["https://app.example"],
            ErrorCode::OriginForbidden,
        );
        let prefix = request_text(&[("Origin", Some("https://app.example.evil"))]);
        expect_before_admission(
            &prefix,
            &["https://app.example"],
            ErrorCode::OriginForbidden,
        );
    }

    #[test]
    fn admission_answers_before_the_token() {
        let bad_token = request_text(&[]).replacen(&token(), "bad.token.here", 1);
        for code in [ErrorCode::ServerBusy, ErrorCode::TooManyConnections] {
            let outcome = run(&bad_token, &[], Err(code));
            let refusal = refusal(&outcome);
            assert_eq!(
                (
                    refusal.rejection.code,
                    refusal.admitted,
                    outcome.admit_calls
                ),
                (code, false, 1)
            );
        }
    }

    #[test]
    fn token_failures_after_admission_report_the_slot() {
        let cases = [
            (
                request_text(&[]).replacen(&format!("token={}", token()), "x=1", 1),
                ErrorCode::Unauthenticated,
                "missing token",
            ),
            (
                request_text(&[]).replacen(&token(), "", 1),
                ErrorCode::Unauthenticated,
                "missing token",
            ),
            (
                request_text(&[]).replacen(&token(), "a.b.c", 1),
                ErrorCode::Unauthenticated,
                "token is malformed",
            ),
        ];
        for (text, code, message) in cases {
            let outcome = run(&text, &[], Ok(()));
            let refusal = refusal(&outcome);
            assert_eq!(refusal.rejection, Rejection { code, message });
            assert!(refusal.admitted);
            assert_eq!(outcome.admit_calls, 1);
        }
        let expired = Claims {
            exp: NOW - 1.0,
            ..auth::verify(&token(), &Keys::new(&[SECRET]), NOW, 0.0).unwrap()
        };
        let text =
            request_text(&[]).replacen(&token(), &auth::mint(&expired, SECRET.as_bytes()), 1);
        let refusal = refusal(&run(&text, &[], Ok(())));
        assert_eq!(
            (refusal.rejection.code, refusal.admitted),
            (ErrorCode::TokenExpired, true)
        );
    }

    /// Parses a whole response: status, headers, and a body of exactly
    /// Content-Length bytes.
    fn parse_response(bytes: &[u8]) -> (u16, Vec<(String, String)>, String) {
        let text = std::str::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| l.split_once(": ").unwrap())
            .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        (status, headers, body.to_string())
    }

    #[test]
    fn rejection_responses_are_http_with_a_json_error_body() {
        let cases = [
            (NOT_GET, 400),
            (BAD_VERSION, 426),
            (BAD_ORIGIN, 403),
            (admission_rejection(ErrorCode::ServerBusy), 503),
            (admission_rejection(ErrorCode::TooManyConnections), 429),
            (
                Rejection::new(ErrorCode::Unauthenticated, "missing token"),
                401,
            ),
            (
                Rejection::new(ErrorCode::TokenExpired, "token has expired"),
                401,
            ),
        ];
        for (rejection, status) in cases {
            let mut out = Vec::new();
            rejection.write_response(&mut out);
            let (parsed_status, headers, body) = parse_response(&out);
            assert_eq!(parsed_status, status);
            let has = |n: &str, v: &str| headers.iter().any(|(hn, hv)| hn == n && hv == v);
            assert!(has("connection", "close"));
            assert!(has("content-type", "application/json"));
            assert_eq!(has("sec-websocket-version", "13"), status == 426);
            let expected = format!(
                r#"{{"error":{{"code":"{}","message":"{}"}}}}"#,
                rejection.code.as_str(),
                rejection.message
            );
            assert_eq!(body, expected);
            let mut json = body.into_bytes();
            assert!(simd_json::to_borrowed_value(&mut json).is_ok());
        }
    }
}
