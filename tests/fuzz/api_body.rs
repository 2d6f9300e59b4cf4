//! `api_body`: Server API bodies through `api::command::parse` for every
//! method, the same bytes as a message between nodes (`api::cluster::read`)
//! and as a node's answer to each kind of `NodeCommand`
//! (`api::part::Part::read_result`).
//!
//! Oracles: a parser reused across bodies answers exactly as a fresh one; a
//! body that is valid JSON is never refused as not JSON, in a batch
//! neither; an empty body reads as `{}`; a call holds one command, or a
//! batch's at most `MAX_API_BATCH`; every accepted command holds names and
//! numbers within their bounds, and a broadcast's `data` is the JSON the
//! body holds; what the server writes of an accepted command or part (to
//! another node) reads back to the same.

use std::cell::RefCell;

use roomcast::api::cluster::{self, NodeMessage};
use roomcast::api::command::{self, Command, HistoryQuery, Method, NodeCommand};
use roomcast::api::part::Part;
use roomcast::api::{ApiError, Call};
use roomcast::codes::close;
use roomcast::codes::limits::{
    MAX_API_BATCH, MAX_API_BROADCAST_ROOMS, MAX_API_REASON, MAX_EPOCH_LEN, MAX_ROOM_LEN,
    MAX_SAFE_INTEGER, MAX_SUB_LEN,
};
use roomcast::proto::envelope::Parser;
use roomcast::proto::names::{is_reserved, is_valid_event, is_valid_pattern, is_valid_room};

use crate::engine::{Rng, Target};
use crate::json::{self, JsonGen};

pub const TARGET: Target = Target {
    name: "api_body",
    check,
    generate,
    dictionary: DICTIONARY,
    max_len: 64 * 1024,
};

const DICTIONARY: &[&[u8]] = &[
    b"\"commands\":",
    b"\"method\":",
    b"\"params\":",
    b"\"rooms\":",
    b"\"user\":",
    b"\"connId\":",
    b"\"code\":",
    b"\"reason\":",
    b"\"pattern\":",
    b"\"limit\":",
    b"\"since\":",
    b"\"epoch\":",
    b"\"kind\":",
    b"\"op\":",
    b"\"from\":",
    b"\"result\":",
    b"\"connections\":",
    b"\"nodes\":",
    b"\"truncated\":true",
    b"\"batch\"",
    b"\"publish\"",
    b"\"command\"",
    b"\"answer\"",
    b"4999",
    b"5000",
    b"{\"method\":\"info\"}",
    b"{}",
    b"[]",
];

/// One command of each kind whose answer is a different `Part`.
fn node_commands() -> [NodeCommand; 4] {
    [
        NodeCommand::Disconnect {
            user: "u".into(),
            conn_id: None,
            code: close::API_DISCONNECT,
            reason: "".into(),
        },
        NodeCommand::User { user: "u".into() },
        NodeCommand::Rooms { pattern: None },
        NodeCommand::Info,
    ]
}

thread_local! {
    static REUSED: RefCell<Parser> = RefCell::new(Parser::default());
}

fn check(input: &[u8]) {
    for method in Method::ALL {
        check_call(method, input);
    }
    check_cluster(input);
    for command in node_commands() {
        check_part(&command, input);
    }
}

fn parse(method: Method, input: &[u8], parser: &mut Parser) -> Result<Call, ApiError> {
    command::parse(method, &mut input.to_vec(), parser)
}

fn check_call(method: Method, input: &[u8]) {
    let reused = REUSED.with(|parser| parse(method, input, &mut parser.borrow_mut()));
    let mut parser = Parser::default();
    let fresh = parse(method, input, &mut parser);
    assert_eq!(reused, fresh, "{method:?}: a reused parser differs");
    if json::acceptable(input).is_some() {
        assert!(!not_json(&fresh), "{method:?}: valid JSON refused");
        if let Ok(call) = &fresh {
            let refused = call
                .commands
                .iter()
                .any(|c| matches!(c, Err(e) if is_not_json(e)));
            assert!(!refused, "{method:?}: valid JSON params refused");
        }
    }
    if input.iter().all(u8::is_ascii_whitespace) && method != Method::Batch {
        assert_eq!(
            fresh,
            parse(method, b"{}", &mut parser),
            "{method:?}: empty body"
        );
    }
    let Ok(call) = fresh else {
        return;
    };
    assert_eq!(call.batch, method == Method::Batch);
    if !call.batch {
        assert_eq!(call.commands.len(), 1, "{method:?}: one command");
        assert!(
            call.commands[0].is_ok(),
            "a lone command's error is the call's"
        );
    }
    assert!(call.commands.len() <= MAX_API_BATCH);
    for command in call.commands.iter().flatten() {
        check_command(command, &mut parser);
    }
    if method == Method::Broadcast {
        check_broadcast_data(input, &call);
    }
}

fn not_json(result: &Result<Call, ApiError>) -> bool {
    matches!(result, Err(e) if is_not_json(e))
}

fn is_not_json(error: &ApiError) -> bool {
    error.message == "body is not valid JSON"
}

/// Bounds of an accepted command; a node command written for other nodes
/// reads back the same.
fn check_command(command: &Command, parser: &mut Parser) {
    match command {
        Command::Publish(messages) => {
            assert!(!messages.is_empty());
            for m in messages {
                assert!(is_valid_room(&m.room), "room {:?}", m.room);
                assert!(is_valid_event(&m.event) && !is_reserved(&m.event));
                assert!(json::parses(&m.data), "data is not JSON");
            }
        }
        Command::Broadcast {
            rooms, event, data, ..
        } => {
            assert!((1..=MAX_API_BROADCAST_ROOMS).contains(&rooms.len()));
            for room in rooms {
                match room {
                    Ok(room) => assert!(is_valid_room(room), "room {room:?}"),
                    Err((name, _)) => assert!(name.len() <= MAX_ROOM_LEN),
                }
            }
            assert!(is_valid_event(event) && !is_reserved(event));
            assert!(json::parses(data), "data is not JSON");
        }
        Command::Presence { room } | Command::HistoryRemove { room } => {
            assert!(is_valid_room(room), "room {room:?}");
        }
        Command::History { room, query } => {
            assert!(is_valid_room(room), "room {room:?}");
            check_query(query);
        }
        Command::Node(node) => {
            check_node_command(node);
            let mut params = Vec::new();
            node.write_params(&mut params);
            let read = command::parse_command(node.method(), &mut params, parser);
            assert_eq!(read.as_ref(), Ok(command), "params written read back");
        }
    }
}

fn check_query(query: &HistoryQuery) {
    let safe = MAX_SAFE_INTEGER as u64;
    assert!(query.limit.is_none_or(|n| n <= safe));
    assert!(query.since.is_none_or(|n| n <= safe));
    assert!(
        query
            .epoch
            .as_ref()
            .is_none_or(|e| (1..=MAX_EPOCH_LEN).contains(&e.len()))
    );
}

fn check_node_command(node: &NodeCommand) {
    let user_ok = |user: &str| (1..=MAX_SUB_LEN).contains(&user.len());
    match node {
        NodeCommand::Disconnect {
            user, code, reason, ..
        } => {
            assert!(user_ok(user));
            assert!(close::API_CODES.contains(code), "code {code}");
            assert!(reason.len() <= MAX_API_REASON);
        }
        NodeCommand::Subscribe { user, room, .. } | NodeCommand::Unsubscribe { user, room, .. } => {
            assert!(user_ok(user) && is_valid_room(room));
        }
        NodeCommand::Rooms { pattern } => {
            assert!(pattern.as_deref().is_none_or(is_valid_pattern));
        }
        NodeCommand::User { user } => assert!(user_ok(user)),
        NodeCommand::Info => {}
    }
}

/// A broadcast's `data` is the value the body holds under `data`.
fn check_broadcast_data(input: &[u8], call: &Call) {
    use simd_json::prelude::*;
    let Some(Ok(Command::Broadcast { data, .. })) = call.commands.first() else {
        return;
    };
    let Some(body) = json::acceptable(input) else {
        return;
    };
    let (Some(sent), Some(data)) = (body.get("data"), json::value(data)) else {
        return;
    };
    assert_eq!(
        json::canonical(&data),
        json::canonical(sent),
        "broadcast data"
    );
}

fn read_message(input: &[u8], parser: &mut Parser) -> Option<NodeMessage> {
    cluster::read(&mut input.to_vec(), parser)
}

/// A message read is one the server would write the same way.
fn check_cluster(input: &[u8]) {
    let reused = REUSED.with(|parser| read_message(input, &mut parser.borrow_mut()));
    let mut parser = Parser::default();
    let fresh = read_message(input, &mut parser);
    assert_eq!(reused, fresh, "cluster: a reused parser differs");
    match fresh {
        Some(NodeMessage::Command { op, from, command }) => {
            check_node_command(&command);
            let written = cluster::write_command(op, &from, &command);
            let again = read_message(&written, &mut parser);
            assert_eq!(
                again,
                Some(NodeMessage::Command { op, from, command }),
                "command written reads back"
            );
        }
        Some(NodeMessage::Answer { result, .. }) => {
            for command in node_commands() {
                check_part(&command, &result);
            }
        }
        None => {}
    }
}

/// A part read, written as a result and as a node's answer, reads back.
fn check_part(command: &NodeCommand, input: &[u8]) {
    let mut parser = Parser::default();
    let read =
        |text: &[u8], parser: &mut Parser| Part::read_result(command, &mut text.to_vec(), parser);
    let reused = REUSED.with(|p| read(input, &mut p.borrow_mut()));
    let fresh = read(input, &mut parser);
    assert_eq!(reused, fresh, "part: a reused parser differs");
    let Some(part) = fresh else {
        return;
    };
    assert_eq!(
        std::mem::discriminant(&part),
        std::mem::discriminant(&Part::empty_for(command)),
        "a part of the command's kind"
    );
    let mut result = Vec::new();
    part.write_result(command, &[], &mut result);
    assert_eq!(read(&result, &mut parser).as_ref(), Some(&part), "result");
    let answer = cluster::write_answer(7, "node-b", command, &part);
    let Some(NodeMessage::Answer { result, .. }) = read_message(&answer, &mut parser) else {
        panic!("an answer written does not read back");
    };
    assert_eq!(read(&result, &mut parser), Some(part), "answer's result");
}

const NODE_METHODS: [&str; 6] = [
    "disconnect",
    "subscribe",
    "unsubscribe",
    "rooms",
    "user",
    "info",
];
const ROOMS: &[&str] = &["lobby", "news:today", "bad room", "", "news:*", "*"];
const USERS: &[&str] = &["alice", "u\"1", "", "Zoë"];

/// A body of some method, a batch, a message between nodes or a part,
/// sometimes broken.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut g = JsonGen::new(rng);
    let text = match g.rng.below(8) {
        0..=2 => params(&mut g),
        3 | 4 => batch(&mut g),
        5 => node_message(&mut g),
        6 => part(&mut g),
        _ => deep(&mut g),
    };
    g.maybe_break(text.into_bytes())
}

/// The parameters of some method, with one sometimes left out or wrong.
fn params(g: &mut JsonGen<'_>) -> String {
    let good: Vec<(&str, String)> = match g.rng.below(6) {
        0 => {
            let rooms: Vec<String> = (0..g.rng.below(4)).map(|_| room(g)).collect();
            let event = json::quote(g.rng.choose(&["news:flash", "room:x", ""]));
            let data = g.value(3);
            vec![
                ("rooms", format!("[{}]", rooms.join(","))),
                ("event", event),
                ("data", data),
            ]
        }
        1 => {
            let event = json::quote(g.rng.choose(&["news:flash", "chat:message"]));
            let data = g.value(3);
            vec![("room", room(g)), ("event", event), ("data", data)]
        }
        2 => {
            let conn_id = json::quote(g.rng.choose(&["n:1-0-2", ""]));
            let code = g.rng.choose(&["4000", "4999", "3999", "5000", "4500.5"]);
            let reason = "r".repeat(g.rng.choose(&[0, 1, MAX_API_REASON, MAX_API_REASON + 1]));
            vec![
                ("user", user(g)),
                ("connId", conn_id),
                ("code", code.to_owned()),
                ("reason", json::quote(&reason)),
            ]
        }
        3 => vec![("user", user(g)), ("room", room(g))],
        4 => {
            let epoch = json::quote(g.rng.choose(&["e1", ""]));
            vec![
                ("room", room(g)),
                ("limit", g.number()),
                ("since", g.number()),
                ("epoch", epoch),
            ]
        }
        _ => vec![("pattern", room(g))],
    };
    let mut fields = Vec::new();
    for (key, value) in good {
        if g.rng.one_in(8) {
            continue;
        }
        let value = if g.rng.one_in(6) { g.value(2) } else { value };
        fields.push(format!("\"{key}\":{value}"));
    }
    g.shuffle(&mut fields);
    format!("{{{}}}", fields.join(","))
}

fn room(g: &mut JsonGen<'_>) -> String {
    json::quote(g.rng.choose(ROOMS))
}

fn user(g: &mut JsonGen<'_>) -> String {
    json::quote(g.rng.choose(USERS))
}

fn batch(g: &mut JsonGen<'_>) -> String {
    let count = g
        .rng
        .choose(&[0, 1, 2, 3, 5, MAX_API_BATCH, MAX_API_BATCH + 1]);
    let count = if count > 5 && !g.rng.one_in(8) {
        2
    } else {
        count
    };
    let commands: Vec<String> = (0..count)
        .map(|_| {
            let method = g.rng.choose(&Method::ALL).name();
            let method = if g.rng.one_in(10) { "nope" } else { method };
            if g.rng.one_in(4) {
                return format!("{{\"method\":\"{method}\"}}");
            }
            let params = params(g);
            format!("{{\"params\":{params},\"method\":\"{method}\"}}")
        })
        .collect();
    format!("{{\"commands\":[{}]}}", commands.join(","))
}

fn node_message(g: &mut JsonGen<'_>) -> String {
    let op = g.rng.choose(&["1", "281474976710661", "-1", "1.5"]);
    let from = json::quote(g.rng.choose(&["node-a", "", "n"]));
    if g.rng.one_in(2) {
        // Mostly methods other nodes carry out; the rest must be ignored.
        let method = match g.rng.below(4) {
            0 => g.rng.choose(&Method::ALL).name(),
            _ => g.rng.choose(&NODE_METHODS),
        };
        let params = params(g);
        format!(
            "{{\"kind\":\"command\",\"op\":{op},\"from\":{from},\"method\":\"{method}\",\"params\":{params}}}"
        )
    } else {
        let result = part(g);
        format!("{{\"kind\":\"answer\",\"op\":{op},\"from\":{from},\"result\":{result}}}")
    }
}

/// A node's answer of some kind.
fn part(g: &mut JsonGen<'_>) -> String {
    let n = g.number();
    match g.rng.below(4) {
        0 => format!("{{\"connections\":{n}}}"),
        1 => {
            let (user, room) = (user(g), room(g));
            format!(
                "{{\"user\":{user},\"connections\":[{{\"connId\":\"n:1\",\"node\":\"a\",\"rooms\":[{room}]}}]}}"
            )
        }
        2 => {
            let room = room(g);
            let truncated = g.rng.choose(&["true", "false", "1"]);
            format!(
                "{{\"rooms\":[{{\"room\":{room},\"connections\":{n},\"users\":1}}],\"truncated\":{truncated}}}"
            )
        }
        _ => format!(
            "{{\"nodes\":[{{\"node\":\"a\",\"version\":\"0.1.0\",\"uptimeSeconds\":{n},\"connections\":1,\"users\":1,\"rooms\":0}}]}}"
        ),
    }
}

/// Parameters nested around the bound every parser applies.
fn deep(g: &mut JsonGen<'_>) -> String {
    let depth = g.rng.choose(&[62, 63, 64, 65, 200]);
    let open = "[".repeat(depth);
    let close = "]".repeat(depth);
    format!("{{\"room\":\"lobby\",\"event\":\"news:x\",\"rooms\":[\"a\"],\"data\":{open}{close}}}")
}
