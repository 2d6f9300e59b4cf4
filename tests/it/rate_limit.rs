//! The per-connection rate limit (PROTOCOL.md section 8): a token bucket of
//! `--rate-limit`/`--rate-burst`, RATE_LIMITED for dropped messages, close
//! 4003 when the second bucket overflows, and the `rate` claim.

use crate::common;

use std::thread;
use std::time::Duration;

use common::rooms::{Claims, Client, ack_error, error_event_code, event, ok_data};
use common::{RawWs, Server, opcode, parse_json};
use simd_json::prelude::*;

/// Counts of what came back for a flood of pings with ids.
#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    limited: usize,
    other: Vec<String>,
}

fn tally(texts: impl IntoIterator<Item = String>) -> Outcome {
    let mut out = Outcome::default();
    for text in texts {
        let v = parse_json(&text);
        match event(&v) {
            "pong" => {}
            "ack" => {
                if v.get("success").and_then(|b| b.as_bool()) == Some(true) {
                    out.ok += 1;
                } else if ack_error(&v) == "RATE_LIMITED" {
                    out.limited += 1;
                } else {
                    out.other.push(text);
                }
            }
            "error" if error_event_code(&v) == "RATE_LIMITED" => out.limited += 1,
            _ => out.other.push(text),
        }
    }
    out
}

/// Messages up to and including the `n`th ack.
fn acks(c: &mut Client, n: usize) -> Vec<String> {
    let mut texts = Vec::new();
    let mut seen = 0;
    while seen < n {
        let text = c.recv();
        if text.starts_with(r#"{"event":"ack""#) {
            seen += 1;
        }
        texts.push(text);
    }
    texts
}

#[test]
fn a_flood_gets_rate_limited_then_closed_4003() {
    let server = Server::start(&["--rate-limit", "10", "--rate-burst", "20"]);
    let token = Claims::new("flooder").token();
    let mut ws = RawWs::connect(server.addr(), "/ws", &token);
    ws.read_message();
    let mut sent = 0;
    for i in 0..500 {
        let text = format!(r#"{{"event":"ping","id":{i}}}"#);
        if ws
            .try_send_frame(true, opcode::TEXT, text.as_bytes())
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    ws.set_read_timeout(Duration::from_secs(10));
    let (code, before) = ws.read_until_close();
    let outcome = tally(before.iter().map(|f| f.text().to_owned()));
    assert_eq!(code, Some(4003), "after {sent} sent: {outcome:?}");
    assert!(
        outcome.limited > 0,
        "no RATE_LIMITED before 4003: {outcome:?}"
    );
    assert!(
        outcome.ok >= 20,
        "the burst of 20 went through: {outcome:?}"
    );
    assert!(outcome.other.is_empty(), "{outcome:?}");
    let addr = server.addr();
    common::wait_for_metric(
        addr,
        r#"roomcast_connections_closed_total{code="4003"}"#,
        1.0,
    );
    let counted = common::metric(addr, "roomcast_rate_limited_total");
    assert_eq!(counted, outcome.limited as f64, "{outcome:?}");
}

#[test]
fn rate_limited_without_an_id_is_an_error_event_and_the_connection_stays() {
    let server = Server::start(&["--rate-limit", "10", "--rate-burst", "20"]);
    let mut c = Client::user(server.addr(), "u1");
    // 30 at once: 20 pass, about 10 are dropped; under twice the burst, so no close.
    for _ in 0..30 {
        c.send(r#"{"event":"ping"}"#);
    }
    let texts: Vec<String> = (0..30).map(|_| c.recv()).collect();
    let pongs = texts.iter().filter(|t| t.contains(r#""pong""#)).count();
    let limited: Vec<&String> = texts.iter().filter(|t| !t.contains(r#""pong""#)).collect();
    assert!(pongs >= 20, "{texts:?}");
    assert!(!limited.is_empty(), "{texts:?}");
    for t in limited {
        assert_eq!(error_event_code(&parse_json(t)), "RATE_LIMITED", "{t}");
    }
    thread::sleep(Duration::from_millis(1500));
    c.assert_open();
}

#[test]
fn bare_text_pings_count_against_the_rate() {
    let server = Server::start(&["--rate-limit", "10", "--rate-burst", "5"]);
    let mut c = Client::user(server.addr(), "u1");
    for _ in 0..8 {
        c.send("ping");
    }
    let texts: Vec<String> = (0..8).map(|_| c.recv()).collect();
    let pongs = texts.iter().filter(|t| *t == "pong").count();
    assert!(pongs >= 5, "{texts:?}");
    assert!(pongs < 8, "bare pings are data messages: {texts:?}");
    for t in texts.iter().filter(|t| *t != "pong") {
        assert_eq!(error_event_code(&parse_json(t)), "RATE_LIMITED", "{t}");
    }
}

#[test]
fn traffic_under_the_rate_is_never_limited() {
    let server = Server::start(&["--rate-limit", "20", "--rate-burst", "5"]);
    let mut c = Client::user(server.addr(), "u1");
    c.join("lobby");
    // 40 messages at about 12 per second, well past the burst of 5.
    for i in 0..40 {
        let ack = if i % 2 == 0 {
            c.request("ping", "null", "")
        } else {
            c.publish("lobby", "chat:message", &i.to_string())
        };
        ok_data(&ack);
        thread::sleep(Duration::from_millis(80));
    }
}

#[test]
fn rate_claim_zero_means_unlimited() {
    let server = Server::start(&["--rate-limit", "1", "--rate-burst", "1"]);
    let mut c = Client::connect(server.addr(), &Claims::new("feed").rate(0).token());
    for i in 0..300 {
        c.send(&format!(r#"{{"event":"ping","id":{i}}}"#));
    }
    let outcome = tally(acks(&mut c, 300));
    assert_eq!(outcome.ok, 300, "{outcome:?}");
    assert_eq!(outcome.limited, 0, "{outcome:?}");
    c.assert_open();
}

#[test]
fn rate_claim_changes_the_rate_not_the_burst() {
    let server = Server::start(&["--rate-limit", "1000", "--rate-burst", "5"]);
    let mut c = Client::connect(server.addr(), &Claims::new("slow").rate(1).token());
    for i in 0..9 {
        c.send(&format!(r#"{{"event":"ping","id":{i}}}"#));
    }
    let outcome = tally(acks(&mut c, 9));
    assert!(outcome.ok >= 5, "the burst still holds: {outcome:?}");
    assert!(outcome.limited > 0, "rate 1/s limits: {outcome:?}");
    assert_eq!(outcome.ok + outcome.limited, 9, "{outcome:?}");
}
