//! What a complete HTTP request head asks for: an upgrade on `/ws` or
//! `/echo` (checked by `ws::handshake`), `/healthz`, or an error response.
//!
//! Sans-IO: reads the parsed request and the context, returns the outcome;
//! the connection state machine acts on it.

use std::net::IpAddr;

use crate::codes::ErrorCode;
use crate::conn::{Context, Endpoint};
use crate::http::request::Request as HttpRequest;
use crate::http::response;
use crate::ws::handshake::{self, Accepted, UpgradePolicy};

/// What a complete request head asks for.
pub(super) enum RequestOutcome {
    Upgraded(Endpoint, Accepted),
    Respond(Vec<u8>),
    Reject(ErrorCode, &'static str),
}

pub(super) fn route(
    request: &HttpRequest<'_>,
    peer_ip: IpAddr,
    cx: &mut Context<'_>,
) -> RequestOutcome {
    match request.path {
        "/ws" => upgrade(Endpoint::Events, request, peer_ip, cx),
        "/echo" if cx.config.echo => upgrade(Endpoint::Echo, request, peer_ip, cx),
        "/healthz" => healthz(request, cx.draining),
        _ => RequestOutcome::Reject(ErrorCode::NotFound, "no such endpoint"),
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
        leeway_secs: cx.config.jwt_leeway.as_secs_f64(),
        allowed_origins: &cx.config.allowed_origins,
        now_unix: cx.unix_ms as f64 / 1000.0,
    };
    let admission = cx.admission;
    match handshake::check_upgrade(request, &policy, &mut || admission.admit(peer_ip)) {
        Ok(accepted) => RequestOutcome::Upgraded(endpoint, accepted),
        Err(refusal) => {
            if refusal.admitted {
                admission.release(peer_ip);
            }
            let mut bytes = Vec::with_capacity(256);
            refusal.rejection.write_response(&mut bytes);
            RequestOutcome::Respond(bytes)
        }
    }
}

fn healthz(request: &HttpRequest<'_>, draining: bool) -> RequestOutcome {
    if request.method != "GET" {
        return RequestOutcome::Reject(ErrorCode::MethodNotAllowed, "use GET");
    }
    let mut bytes = Vec::with_capacity(128);
    if draining {
        response::write_json(&mut bytes, 503, br#"{"status":"draining"}"#, false);
    } else {
        response::write_json(&mut bytes, 200, br#"{"status":"ok"}"#, false);
    }
    RequestOutcome::Respond(bytes)
}

pub(super) fn http_error_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::HeadersTooLarge => "request head is over the size limit",
        _ => "malformed HTTP request",
    }
}
