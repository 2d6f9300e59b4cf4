//! `envelope`: a `/ws` text message through the scanner (`proto::scan`),
//! the in-place envelope parser and the event handlers (`proto::on_text`).
//!
//! Oracles: a parser reused across messages answers exactly as a fresh one;
//! every reply is valid JSON; a message that is valid JSON is never refused
//! as invalid JSON; forwarded `data` is valid JSON equal to the message's
//! `data` field; the scanner's ranges stay inside the message.

use std::cell::RefCell;
use std::sync::Arc;

use roomcast::auth::{Claims, Keys};
use roomcast::config::RoomsConfig;
use roomcast::proto::envelope::Parser;
use roomcast::proto::{Request, Session, Sink, on_text, scan};

use crate::engine::{Rng, Target};
use crate::json::{self, JsonGen};

pub const TARGET: Target = Target {
    name: "envelope",
    check,
    generate,
    dictionary: json::DICTIONARY,
    max_len: 64 * 1024,
};

#[derive(Default, Debug, PartialEq)]
struct Collect {
    texts: Vec<Vec<u8>>,
    requests: Vec<Request>,
}

impl Sink for Collect {
    fn send_text(&mut self, text: &[u8]) {
        self.texts.push(text.to_vec());
    }

    fn request(&mut self, request: Request) {
        self.requests.push(request);
    }
}

thread_local! {
    /// One parser for every message, as a shard keeps one.
    static REUSED: RefCell<Parser> = RefCell::new(Parser::default());
}

fn handle(input: &[u8], parser: &mut Parser) -> Collect {
    let mut claims = Claims::new("alice", 4e9);
    claims.admin = true;
    claims.publish = Some(vec!["news:*".into()].into_boxed_slice());
    let rooms: Vec<Arc<str>> = vec!["lobby".into(), "chat:1".into()];
    let config = RoomsConfig::default();
    let keys = Keys::new(&["envelope-secret"]);
    let session = Session {
        claims: &claims,
        rooms: &rooms,
        config: &config,
        keys: &keys,
        leeway_secs: 0.0,
        rpc_proxy: true,
    };
    let mut payload = input.to_vec();
    let mut collect = Collect::default();
    let mut scratch = Vec::new();
    on_text(
        &mut payload,
        parser,
        session,
        1_700_000_000_000,
        &mut scratch,
        &mut collect,
    );
    collect
}

fn check(input: &[u8]) {
    check_scan(input);
    let reused = REUSED.with(|parser| handle(input, &mut parser.borrow_mut()));
    let fresh = handle(input, &mut Parser::default());
    assert_eq!(reused, fresh, "a reused parser differs from a fresh one");
    for text in &fresh.texts {
        assert!(
            text == b"pong" || json::parses(text),
            "reply is not JSON: {text:?}"
        );
    }
    let parsed = json::acceptable(input);
    if parsed.is_some() {
        for text in &fresh.texts {
            assert!(
                !json::contains(text, b"not valid JSON"),
                "valid JSON refused"
            );
        }
    }
    for request in &fresh.requests {
        check_request(request, parsed.as_ref());
    }
}

fn check_scan(input: &[u8]) {
    for key in ["data", "event", "messages"] {
        if let Some(range) = scan::field_range(input, key) {
            assert!(range.start <= range.end && range.end <= input.len());
            for element in scan::elements(input, range.clone()) {
                assert!(range.start <= element.start && element.start <= element.end);
                assert!(element.end <= range.end);
            }
        }
    }
}

fn check_request(request: &Request, message: Option<&simd_json::OwnedValue>) {
    use simd_json::prelude::*;
    match request {
        Request::Publish { data, .. } => {
            assert!(json::parses(data), "forwarded data is not JSON");
            let Some(forwarded) = json::value(data) else {
                return; // A number simd-json does not hold: nothing to compare.
            };
            let null = simd_json::OwnedValue::Static(simd_json::StaticNode::Null);
            let sent = message.map(|m| m.get("data").unwrap_or(&null));
            if let Some(sent) = sent {
                let (forwarded, sent) = (json::canonical(&forwarded), json::canonical(sent));
                assert_eq!(forwarded, sent, "forwarded data differs from the message's");
            }
        }
        Request::UserSend { text, .. } | Request::Broadcast { text, .. } => {
            assert!(json::parses(text), "forwarded text is not JSON");
        }
        _ => {}
    }
}

const EVENTS: &[&str] = &[
    "ping",
    "room:join",
    "room:leave",
    "user:send",
    "presence:get",
    "connection:refresh",
    "system:broadcast",
    "chat:message",
    "news:flash",
    "a:b:c:d",
    "a:b:c:d:e",
    "Chat:x",
    "ack",
    "room:nope",
    "x",
    "",
];
const ROOMS: &[&str] = &[
    "lobby",
    "chat:1",
    "news:today",
    "secret",
    "bad room",
    "",
    "a/b@c.d-e_f",
];

/// An envelope with realistic fields, sometimes with one broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut json_gen = JsonGen::new(rng);
    let mut fields = vec![format!(
        "\"event\":{}",
        json::quote(json_gen.rng.choose(EVENTS))
    )];
    if json_gen.rng.one_in(2) {
        fields.push(format!(
            "\"room\":{}",
            json::quote(json_gen.rng.choose(ROOMS))
        ));
    }
    if json_gen.rng.one_in(2) {
        let data = json_gen.value(3);
        fields.push(format!("\"data\":{data}"));
    }
    if json_gen.rng.one_in(2) {
        let id = json_gen.id();
        fields.push(format!("\"id\":{id}"));
    }
    for (key, value) in [
        ("to", "\"bob\""),
        ("echo", "true"),
        ("history", "5"),
        ("since", "3"),
    ] {
        if json_gen.rng.one_in(5) {
            fields.push(format!("\"{key}\":{value}"));
        }
    }
    if json_gen.rng.one_in(6) {
        fields.push(format!(
            "\"token\":{}",
            json::quote("eyJhbGciOiJIUzI1NiJ9.e30.x")
        ));
    }
    json_gen.shuffle(&mut fields);
    let text = format!("{{{}}}", fields.join(","));
    json_gen.maybe_break(text.into_bytes())
}
