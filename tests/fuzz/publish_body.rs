//! `publish_body`: `POST /publish` bodies through `proto::publish::parse`.
//!
//! Oracles: a parser reused across bodies answers exactly as a fresh one; a
//! body that is valid JSON is never refused as not JSON; every accepted
//! message has a valid room the token may publish to, a valid unreserved
//! event, and `data` that is valid JSON equal to what the body holds.

use std::cell::RefCell;

use roomcast::auth::Claims;
use roomcast::codes::limits::MAX_PUBLISH_MESSAGES;
use roomcast::proto::envelope::Parser;
use roomcast::proto::names::{is_reserved, is_valid_event, is_valid_room, matches_any};
use roomcast::proto::publish::{Message, PublishError, parse};
use simd_json::prelude::*;

use crate::engine::{Rng, Target};
use crate::json::{self, JsonGen};

pub const TARGET: Target = Target {
    name: "publish_body",
    check,
    generate,
    dictionary: json::DICTIONARY,
    max_len: 128 * 1024,
};

const PATTERNS: &[&str] = &["news:*", "lobby"];

thread_local! {
    static REUSED: RefCell<Parser> = RefCell::new(Parser::default());
}

fn run(input: &[u8], parser: &mut Parser) -> Result<Vec<Message>, PublishError> {
    let mut claims = Claims::new("publisher", 4e9);
    claims.publish = Some(PATTERNS.iter().map(|&p| p.into()).collect());
    let result = parse(&mut input.to_vec(), parser, &claims);
    if let Err(error) = &result {
        let _ = (error.code(), error.message());
    }
    result
}

fn check(input: &[u8]) {
    let reused = REUSED.with(|parser| run(input, &mut parser.borrow_mut()));
    let fresh = run(input, &mut Parser::default());
    assert_eq!(reused, fresh, "a reused parser differs from a fresh one");
    let body = json::acceptable(input);
    if body.is_some() {
        assert_ne!(fresh, Err(PublishError::NotJson), "valid JSON refused");
    }
    let Ok(messages) = fresh else {
        return;
    };
    assert!((1..=MAX_PUBLISH_MESSAGES).contains(&messages.len()));
    let sent: Vec<_> = match body.as_ref().and_then(|b| b.get("messages")) {
        Some(list) => list.as_array().expect("messages is an array").clone(),
        None => body.into_iter().collect(),
    };
    for (i, message) in messages.iter().enumerate() {
        assert!(is_valid_room(&message.room) && matches_any(PATTERNS, &message.room));
        assert!(is_valid_event(&message.event) && !is_reserved(&message.event));
        assert!(json::parses(&message.data), "data is not JSON");
        let (Some(data), Some(sent)) = (json::value(&message.data), sent.get(i)) else {
            continue;
        };
        let null = simd_json::OwnedValue::Static(simd_json::StaticNode::Null);
        let sent = json::canonical(sent.get("data").unwrap_or(&null));
        assert_eq!(json::canonical(&data), sent, "data of message {i}");
    }
}

const ROOMS: &[&str] = &[
    "lobby",
    "news:today",
    "news:",
    "secret",
    "bad room",
    "",
    "news:a/b@c",
];
const EVENTS: &[&str] = &[
    "news:flash",
    "chat:message",
    "room:join",
    "ping",
    "a:b:c:d:e",
    "",
];

/// A single message or a batch, sometimes broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut json_gen = JsonGen::new(rng);
    let text = if json_gen.rng.one_in(3) {
        message(&mut json_gen)
    } else {
        let count =
            *json_gen
                .rng
                .pick(&[0, 1, 2, 5, MAX_PUBLISH_MESSAGES, MAX_PUBLISH_MESSAGES + 1]);
        let count = if count > 5 && !json_gen.rng.one_in(8) {
            3
        } else {
            count
        };
        let items: Vec<String> = (0..count).map(|_| message(&mut json_gen)).collect();
        format!("{{\"messages\":[{}]}}", items.join(",\n"))
    };
    json_gen.maybe_break(text.into_bytes())
}

fn message(json_gen: &mut JsonGen<'_>) -> String {
    let mut fields = Vec::new();
    if !json_gen.rng.one_in(10) {
        fields.push(format!(
            "\"room\":{}",
            json::quote(json_gen.rng.choose(ROOMS))
        ));
    }
    if !json_gen.rng.one_in(10) {
        fields.push(format!(
            "\"event\":{}",
            json::quote(json_gen.rng.choose(EVENTS))
        ));
    }
    if !json_gen.rng.one_in(4) {
        let data = json_gen.value(3);
        fields.push(format!("\"data\" : {data}"));
    }
    json_gen.shuffle(&mut fields);
    format!("{{{}}}", fields.join(", "))
}
