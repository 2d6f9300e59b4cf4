//! Fuzz targets for every parser that reads bytes from the network: the
//! HTTP request head, chunked bodies, WebSocket frames, `/ws` envelopes,
//! Fossil deltas, JWTs, `POST /publish` bodies, Server API bodies and the API's messages
//! between nodes, `Sec-WebSocket-Extensions` offers, `roomcast.msgpack` messages, Redis replies, and
//! what the bridge decodes from them (Redis Cluster's slot map and
//! redirections too) and from Redis' channels, and the
//! responses of hook backends and the proxies' answers in them.
//!
//! Each target replays its corpus (`tests/fuzz/corpus/<target>/`), then
//! mutates corpus entries and generates structure-aware inputs for
//! `ROOMCAST_FUZZ_SECS` seconds (default 2), checking oracles, not only
//! the absence of panics. `ROOMCAST_FUZZ_SEED` reproduces a run;
//! `tests/fuzz/README.md` tells how to run longer and keep a finding.

mod engine;
mod json;

mod api_body;
mod chunked_body;
mod envelope;
mod extensions;
mod fossil;
mod hook_response;
mod http_head;
mod jwt;
mod msgpack;
mod proxy_answer;
mod publish_body;
mod redis_replies;
mod redis_slots;
mod resp;
mod ws_frames;

#[test]
fn redis_slots() {
    engine::run(&redis_slots::TARGET);
}

#[test]
fn http_head() {
    engine::run(&http_head::TARGET);
}

#[test]
fn chunked_body() {
    engine::run(&chunked_body::TARGET);
}

#[test]
fn ws_frames() {
    engine::run(&ws_frames::TARGET);
}

#[test]
fn envelope() {
    engine::run(&envelope::TARGET);
}

#[test]
fn msgpack() {
    engine::run(&msgpack::TARGET);
}

#[test]
fn jwt() {
    engine::run(&jwt::TARGET);
}

#[test]
fn publish_body() {
    engine::run(&publish_body::TARGET);
}

#[test]
fn api_body() {
    engine::run(&api_body::TARGET);
}

#[test]
fn extensions() {
    engine::run(&extensions::TARGET);
}

#[test]
fn resp() {
    engine::run(&resp::TARGET);
}

#[test]
fn fossil() {
    engine::run(&fossil::TARGET);
}

#[test]
fn hook_response() {
    engine::run(&hook_response::TARGET);
}

#[test]
fn proxy_answer() {
    engine::run(&proxy_answer::TARGET);
}

#[test]
fn redis_replies() {
    engine::run(&redis_replies::TARGET);
}
