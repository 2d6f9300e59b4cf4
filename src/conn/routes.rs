//! What a complete HTTP request head asks for: an upgrade on `/ws` or
//! `/echo` (checked by `ws::handshake`), a `POST /publish` body to read,
//! `/healthz`, `/metrics`, `/stats`, a file of `web` (`/roomcast.js`), or
//! an error response.
//!
//! Also owns which methods each path takes (RFC 9110): a resource served
//! to `GET` is served to `HEAD` too (the connection cuts the body), every
//! known path answers `OPTIONS` with `204` and `Allow`, and every `405`
//! carries `Allow`.
//!
//! Sans-IO: reads the parsed request and the context, returns the outcome;
//! the connection state machine acts on it.

use std::net::IpAddr;
use std::time::Duration;

use crate::api::Method;
use crate::api::auth::{Presented, Verifier};
use crate::auth;
use crate::codes::ErrorCode;
use crate::conn::publish::{BodyHead, Framing, Purpose};
use crate::conn::{Context, Endpoint, Port};
use crate::http::request::{BodyFraming, Request as HttpRequest, Version};
use crate::http::response;
use crate::metrics::{prometheus, stats};
use crate::ws::handshake::{self, Accepted, Rejection, Upgrade, UpgradePolicy};

/// What a complete request head asks for.
pub(super) enum RequestOutcome {
    Upgraded(Endpoint, Accepted),
    /// An upgrade to `/ws` without a token, with a connection slot held:
    /// the `--connect-proxy` gives its claims; `body` is the request for it.
    AwaitClaims(Upgrade, Vec<u8>),
    /// A `/publish` or `/api/<method>` whose body is to be read.
    Body(Box<BodyHead>),
    Respond(Vec<u8>),
    /// A refused upgrade, answered with its status and code.
    Refused(Rejection),
    /// An error, with the headers it needs (`Allow` for a 405).
    Reject(ErrorCode, &'static str, &'static [Header]),
}

/// A response header, name and value.
type Header = (&'static str, &'static str);

/// The methods of a resource served to `GET`.
const GET_METHODS: &str = "GET, HEAD, OPTIONS";
/// Where the Server API's methods are.
const API_PREFIX: &str = "/api/";
/// The methods of `/publish` and the Server API.
const POST_METHODS: &str = "POST, OPTIONS";
/// Every method the public port takes on some path, for `OPTIONS *`.
const SERVER_METHODS: &str = "GET, HEAD, POST, OPTIONS";
/// The CORS headers of an `OPTIONS` on a file of `web`: the
/// `Access-Control-Allow-Origin: *` its `GET` carries
/// (`response::write_asset`), and the methods a page may use on it.
const ASSET_CORS: &[Header] = &[
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", GET_METHODS),
];
const NOT_FOUND: RequestOutcome =
    RequestOutcome::Reject(ErrorCode::NotFound, "no such endpoint", &[]);

pub(super) fn route(
    request: &HttpRequest<'_>,
    port: Port,
    peer_ip: IpAddr,
    cx: &mut Context<'_>,
) -> RequestOutcome {
    let pages = Pages {
        config: cx.config,
        observe: cx.observe,
        draining: cx.draining,
        unix_ms: cx.unix_ms,
    };
    match (port, request.path) {
        (Port::Public, "/ws") => without_upgrade(request.method)
            .unwrap_or_else(|| upgrade(Endpoint::Events, request, peer_ip, cx)),
        (Port::Public, "/echo") if cx.config.web.echo => without_upgrade(request.method)
            .unwrap_or_else(|| upgrade(Endpoint::Echo, request, peer_ip, cx)),
        (Port::Public, "/publish") if request.method == "OPTIONS" => options(POST_METHODS, &[]),
        (Port::Public, "/publish") => publish(request, cx),
        (_, path) if pages.operator_on(port) && path.starts_with(API_PREFIX) => {
            api(request, &path[API_PREFIX.len()..], cx)
        }
        _ => page(request, port, &pages),
    }
}

/// What the read-only pages read: shared by every shard and the operator
/// thread (`reactor::operator`), none of it a shard's own.
pub struct Pages<'a> {
    pub config: &'a crate::config::Config,
    pub observe: &'a dyn crate::conn::Observe,
    pub draining: bool,
    pub unix_ms: u64,
}

impl Pages<'_> {
    /// Whether `port` serves the operator endpoints: the metrics port, or
    /// the public port when there is none.
    fn operator_on(&self, port: Port) -> bool {
        match port {
            Port::Public => self.config.listen.metrics_bind.is_none(),
            Port::Metrics => true,
        }
    }
}

/// The answer to a request for a page: anything but an upgrade,
/// `/publish` or the Server API, none of which it is asked for.
fn page(request: &HttpRequest<'_>, port: Port, pages: &Pages<'_>) -> RequestOutcome {
    let operator_here = pages.operator_on(port);
    let config = pages.config;
    match (port, request.path) {
        (_, "*") => server_options(request, port),
        (_, "/healthz") => get(request, &[], || {
            healthz(pages.draining, pages.observe.redis_up())
        }),
        (_, "/metrics") if operator_here => get(request, &[], || metrics(pages.observe)),
        (_, "/stats") if operator_here => get(request, &[], || stats(config, pages.observe)),
        (_, "/") if operator_here && config.web.dashboard => {
            get(request, ASSET_CORS, || serve_asset(crate::web::DASHBOARD))
        }
        (Port::Public, "/demo") if config.web.demo => {
            get(request, &[], || demo_page(config, pages.unix_ms))
        }
        (Port::Public, path) => match crate::web::asset(path) {
            Some(asset) => get(request, ASSET_CORS, || serve_asset(asset)),
            None => NOT_FOUND,
        },
        _ => NOT_FOUND,
    }
}

/// The metrics port's answer to `request` without a shard: the bytes of
/// a page (without the body for a `HEAD`), exactly as a shard writes them
/// before it closes the connection; `None` for the Server API, which only
/// a shard can serve.
pub fn operator_answer(request: &HttpRequest<'_>, pages: &Pages<'_>) -> Option<Vec<u8>> {
    if request.path.starts_with(API_PREFIX) {
        return None;
    }
    let mut bytes = match page(request, Port::Metrics, pages) {
        RequestOutcome::Respond(bytes) => bytes,
        RequestOutcome::Reject(code, message, headers) => error_response(code, message, headers),
        _ => return None,
    };
    if request.method == "HEAD" {
        response::cut_body(&mut bytes);
    }
    Some(bytes)
}

/// The bytes of `RequestOutcome::Reject`.
pub(super) fn error_response(code: ErrorCode, message: &str, headers: &[Header]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    response::write_error(&mut bytes, code, message, headers);
    bytes
}

/// A resource served to `GET` and `HEAD` alike (the connection cuts the
/// body of the answer to a `HEAD`, so both run the same checks and get the
/// same head), described to `OPTIONS` with `cors`, its CORS headers.
fn get(
    request: &HttpRequest<'_>,
    cors: &[Header],
    serve: impl FnOnce() -> RequestOutcome,
) -> RequestOutcome {
    match request.method {
        "GET" | "HEAD" => serve(),
        "OPTIONS" => options(GET_METHODS, cors),
        _ => RequestOutcome::Reject(
            ErrorCode::MethodNotAllowed,
            "use GET or HEAD",
            &[("Allow", GET_METHODS)],
        ),
    }
}

/// `204` with `Allow: allow` and `extra` headers.
fn options(allow: &str, extra: &[Header]) -> RequestOutcome {
    let mut headers = Vec::with_capacity(1 + extra.len());
    headers.push(("Allow", allow));
    headers.extend_from_slice(extra);
    let mut bytes = Vec::with_capacity(128);
    response::write_no_content(&mut bytes, &headers);
    RequestOutcome::Respond(bytes)
}

/// `OPTIONS *` asks what the server takes at all; `*` names no resource
/// for any other method.
fn server_options(request: &HttpRequest<'_>, port: Port) -> RequestOutcome {
    match (request.method, port) {
        ("OPTIONS", Port::Public) => options(SERVER_METHODS, &[]),
        ("OPTIONS", Port::Metrics) => options(GET_METHODS, &[]),
        _ => NOT_FOUND,
    }
}

/// `/ws` and `/echo` are resources for `GET`: the answer to a method that
/// does not try to upgrade, `None` for the others. A `HEAD` cannot upgrade,
/// so it is answered as a `GET` without the upgrade headers is, before any
/// admission or token check. Every other method goes to the upgrade checks,
/// which refuse it with a `400` (protocol section 2), not a `405`.
fn without_upgrade(method: &str) -> Option<RequestOutcome> {
    match method {
        "HEAD" => Some(RequestOutcome::Refused(handshake::NO_UPGRADE_TOKEN)),
        "OPTIONS" => Some(options(GET_METHODS, &[])),
        _ => None,
    }
}

fn upgrade(
    endpoint: Endpoint,
    request: &HttpRequest<'_>,
    peer_ip: IpAddr,
    cx: &mut Context<'_>,
) -> RequestOutcome {
    let policy = UpgradePolicy {
        keys: cx.keys,
        leeway_secs: cx.config.auth.leeway.as_secs_f64(),
        allowed_origins: &cx.config.auth.allowed_origins,
        now_unix: cx.unix_ms as f64 / 1000.0,
        compression: cx.config.listen.compression == crate::config::Compression::On,
        msgpack: endpoint == Endpoint::Events,
    };
    let (admission, now) = (cx.admission, cx.now);
    let mut admit = || admission.admit(peer_ip, now);
    let proxied = endpoint == Endpoint::Events
        && cx.config.hooks.connect_proxy.is_some()
        && request.token().is_none();
    let checked = match proxied {
        true => handshake::check_before_token(request, &policy, &mut admit)
            .map(|upgrade| RequestOutcome::AwaitClaims(upgrade, connect_body(request, peer_ip))),
        false => handshake::check_upgrade(request, &policy, &mut admit)
            .map(|accepted| RequestOutcome::Upgraded(endpoint, accepted)),
    };
    match checked {
        Ok(outcome) => outcome,
        Err(refusal) => {
            cx.metrics.count_rejection(refusal.rejection.code);
            if refusal.admitted {
                admission.release(peer_ip);
            }
            RequestOutcome::Refused(refusal.rejection)
        }
    }
}

/// The connect proxy's request (section 13.2): `{"ip", "headers":
/// {"cookie", "origin", "user-agent"} (those present), "query"}`.
fn connect_body(request: &HttpRequest<'_>, peer_ip: IpAddr) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    body.extend_from_slice(b"{\"ip\":");
    crate::json::write_str(&mut body, &peer_ip.to_string());
    body.extend_from_slice(b",\"headers\":{");
    let mut first = true;
    for name in ["cookie", "origin", "user-agent"] {
        if let Some(value) = request.header(name) {
            if !first {
                body.push(b',');
            }
            first = false;
            crate::json::write_str(&mut body, name);
            body.push(b':');
            crate::json::write_str(&mut body, value);
        }
    }
    body.extend_from_slice(b"},\"query\":");
    crate::json::write_str(&mut body, request.query.unwrap_or(""));
    body.push(b'}');
    body
}

/// The checks a `/publish` head can pass before its body is read, in this
/// order: the method (405), the token (401), the framing (400, 411) and
/// the announced length (413). Every refusal closes the connection, since
/// the body, if any, is left unread.
fn publish(request: &HttpRequest<'_>, cx: &Context<'_>) -> RequestOutcome {
    let refuse = |code: ErrorCode, message: &str, headers: &[(&str, &str)]| {
        let mut bytes = Vec::with_capacity(256);
        response::write_failure(&mut bytes, code, message, headers, false);
        RequestOutcome::Respond(bytes)
    };
    if request.method != "POST" {
        return refuse(
            ErrorCode::MethodNotAllowed,
            "use POST",
            &[("Allow", POST_METHODS)],
        );
    }
    let token = request.token().unwrap_or("");
    let now_unix = cx.unix_ms as f64 / 1000.0;
    let leeway = cx.config.auth.leeway.as_secs_f64();
    let claims = match auth::verify(token, cx.keys, now_unix, leeway) {
        Ok(claims) => claims,
        Err(error) => {
            return refuse(
                error.code(),
                error.message(),
                &[("WWW-Authenticate", "Bearer")],
            );
        }
    };
    body_head(request, Purpose::Publish(claims), cx)
}

/// `POST /api/<method>` (section 12). Checked in this order: the caller
/// (401, 403: before anything else, as section 12 says), the HTTP method
/// (405), the API method (404), then the body's framing and announced
/// length (400, 411, 413). Every refusal closes the connection, since the
/// body, if any, is left unread. `OPTIONS` alone needs no credential: it
/// tells only which methods the path takes, and a browser's preflight
/// carries none.
fn api(request: &HttpRequest<'_>, name: &str, cx: &Context<'_>) -> RequestOutcome {
    if request.method == "OPTIONS" {
        return options(POST_METHODS, &[]);
    }
    let verifier = Verifier {
        api_keys: &cx.config.api.keys,
        jwt_keys: cx.keys,
        now_unix: cx.unix_ms as f64 / 1000.0,
        leeway_secs: cx.config.auth.leeway.as_secs_f64(),
    };
    let presented = Presented {
        key: request.header("x-api-key"),
        token: request.bearer_token(),
    };
    let caller = match verifier.authenticate(presented) {
        Ok(caller) => caller,
        Err(error) => {
            let challenge: &[Header] = match error.code {
                ErrorCode::Forbidden => &[],
                _ => &[("WWW-Authenticate", "Bearer")],
            };
            let mut bytes = Vec::with_capacity(256);
            response::write_error(&mut bytes, error.code, &error.message, challenge);
            count_refused_call(name, error.code, cx);
            return RequestOutcome::Respond(bytes);
        }
    };
    if request.method != "POST" {
        return RequestOutcome::Reject(
            ErrorCode::MethodNotAllowed,
            "use POST",
            &[("Allow", POST_METHODS)],
        );
    }
    match Method::named(name) {
        Some(method) => body_head(request, Purpose::Api { method, caller }, cx),
        None => {
            count_refused_call(name, ErrorCode::NotFound, cx);
            RequestOutcome::Reject(ErrorCode::NotFound, "no such API method", &[])
        }
    }
}

/// Counts a call refused before its body was read.
fn count_refused_call(name: &str, code: ErrorCode, cx: &Context<'_>) {
    let method = Method::named(name).map_or(usize::MAX, Method::index);
    cx.metrics
        .count_api(method, code.http_status(), Duration::ZERO);
}

/// The head of a request whose body is to be read for `purpose`, or the
/// refusal of its framing or announced length.
fn body_head(request: &HttpRequest<'_>, purpose: Purpose, cx: &Context<'_>) -> RequestOutcome {
    let limit = purpose.limit(cx.config.limits.max_message_size);
    let framing = match body_framing(request, limit) {
        Ok(framing) => framing,
        // A request without either header has no body (RFC 9112 6.3): an
        // API call takes that as `{}` (section 12); `/publish` needs one.
        Err((ErrorCode::LengthRequired, _)) if matches!(purpose, Purpose::Api { .. }) => {
            Framing::Length(0)
        }
        Err((code, message)) => {
            let mut bytes = Vec::with_capacity(256);
            match purpose {
                Purpose::Publish(_) => {
                    response::write_failure(&mut bytes, code, message, &[], false);
                }
                Purpose::Api { .. } => response::write_error(&mut bytes, code, message, &[]),
            }
            return RequestOutcome::Respond(bytes);
        }
    };
    RequestOutcome::Body(Box::new(BodyHead {
        purpose,
        framing,
        keep_alive: request.wants_keep_alive() && !cx.draining,
        expects_continue: request.version == Version::Http11
            && request
                .header("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case("100-continue")),
    }))
}

fn body_framing(
    request: &HttpRequest<'_>,
    limit: usize,
) -> Result<Framing, (ErrorCode, &'static str)> {
    let framing = request
        .body_framing()
        .map_err(|error| (ErrorCode::BadRequest, error.message()))?;
    match framing {
        BodyFraming::Length(length) if length > limit => Err((
            ErrorCode::PayloadTooLarge,
            "request body is over the size limit",
        )),
        BodyFraming::Length(length) => Ok(Framing::Length(length)),
        BodyFraming::Chunked => Ok(Framing::Chunked),
        BodyFraming::UnsupportedCoding => Err((
            ErrorCode::BadRequest,
            "use Content-Length or Transfer-Encoding: chunked",
        )),
        BodyFraming::Unframed => Err((
            ErrorCode::LengthRequired,
            "Content-Length or Transfer-Encoding: chunked is required",
        )),
    }
}

/// `200 {"status":"ok"}`; `503` while draining, or in cluster mode while
/// Redis is unreachable (publishes are refused then, so a load balancer
/// should send new clients elsewhere). In cluster mode the body also says
/// `"redis":"up"` or `"down"`.
fn healthz(draining: bool, redis_up: Option<bool>) -> RequestOutcome {
    let (status, body): (u16, &[u8]) = match (draining, redis_up) {
        (true, None) => (503, br#"{"status":"draining"}"#),
        (true, Some(true)) => (503, br#"{"status":"draining","redis":"up"}"#),
        (true, Some(false)) => (503, br#"{"status":"draining","redis":"down"}"#),
        (false, None) => (200, br#"{"status":"ok"}"#),
        (false, Some(true)) => (200, br#"{"status":"ok","redis":"up"}"#),
        (false, Some(false)) => (503, br#"{"status":"degraded","redis":"down"}"#),
    };
    let mut bytes = Vec::with_capacity(160);
    response::write_json(&mut bytes, status, body, false);
    RequestOutcome::Respond(bytes)
}

/// A file of `web`.
fn serve_asset(asset: crate::web::Asset) -> RequestOutcome {
    let mut bytes = Vec::with_capacity(asset.body.len() + 256);
    response::write_asset(&mut bytes, asset.content_type, asset.body);
    RequestOutcome::Respond(bytes)
}

/// `--demo`'s page, with a viewer token minted for this visit at the
/// connection's time.
fn demo_page(config: &crate::config::Config, unix_ms: u64) -> RequestOutcome {
    let Some(secret) = config.auth.secrets.first() else {
        return NOT_FOUND;
    };
    let body = crate::web::demo::page(secret.as_bytes(), unix_ms);
    let mut bytes = Vec::with_capacity(body.len() + 256);
    response::write_page(&mut bytes, &body);
    RequestOutcome::Respond(bytes)
}

fn metrics(observe: &dyn crate::conn::Observe) -> RequestOutcome {
    let body = prometheus::render(
        &observe.snapshot(),
        observe.uptime().as_secs_f64(),
        env!("CARGO_PKG_VERSION"),
    );
    let mut bytes = Vec::with_capacity(body.len() + 160);
    response::write_text(
        &mut bytes,
        200,
        prometheus::CONTENT_TYPE,
        body.as_bytes(),
        false,
    );
    RequestOutcome::Respond(bytes)
}

fn stats(config: &crate::config::Config, observe: &dyn crate::conn::Observe) -> RequestOutcome {
    let mut config_json = Vec::with_capacity(1024);
    config.write_json(&mut config_json);
    let about = stats::About {
        uptime_seconds: observe.uptime().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
        config_json: &config_json,
    };
    let mut body = Vec::with_capacity(4096);
    stats::render(&mut body, &observe.snapshot(), &about);
    let mut bytes = Vec::with_capacity(body.len() + 160);
    response::write_json(&mut bytes, 200, &body, false);
    RequestOutcome::Respond(bytes)
}
