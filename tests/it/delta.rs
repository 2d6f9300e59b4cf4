//! `room:join` `data.delta: true` (PROTOCOL.md section 14): a room event
//! that directly follows the last one a member received comes as a Fossil
//! delta of its `data`, which the member rebuilds (here with the server's
//! own applier) into exactly what a plain member receives; the first event
//! after a join, after a gap and after a rejoin is whole. Runs in cluster
//! mode too (scripts/test.sh).

use crate::common;

use std::time::Duration;

use common::rooms::{Client, ack_error, array_at, ok_data, publisher, q, seq_of, u64_at};
use common::{Server, json_str, parse_json};
use roomcast::proto::{fossil, scan};

/// Hand-off deals connections to the two shards in turn.
const ARGS: &[&str] = &["--shards", "2", "--accept", "handoff"];

/// A member of `room`, joined with `extra` fields in `data` (`,"delta":true`).
fn member(addr: std::net::SocketAddr, sub: &str, room: &str, extra: &str) -> Client {
    let mut client = Client::user(addr, sub);
    ok_data(&client.join_with(&format!(r#"{{"room":{}{extra}}}"#, q(room))));
    client
}

/// A price tick of about 300 bytes where a few fields change, non-ASCII too.
fn tick(n: u64) -> String {
    format!(
        r#"{{"symbol":"ACME","bid":{}.{:02},"ask":{}.{:02},"volume":{},"venue":"XNAS","currency":"€","desk":"Zürich – 東京","note":"prix à payer, ünïcödé ✓ {}","levels":[1,2,3,4,5,6,7,8,9,10],"n":{n}}}"#,
        100 + n % 3,
        n % 100,
        101 + n % 3,
        (n * 7) % 100,
        1000 + n * 13,
        "é".repeat((n % 4) as usize)
    )
}

/// What a delta member makes of its room events: each event's `data` text,
/// rebuilt, and whether it came as a delta.
#[derive(Default)]
struct Rebuilt {
    data: Vec<u8>,
    came: Vec<(u64, bool)>,
    datas: Vec<String>,
}

impl Rebuilt {
    fn take(&mut self, text: &str) {
        let seq = seq_of(text);
        match scan::field_range(text.as_bytes(), "data") {
            Some(range) => {
                self.data = text.as_bytes()[range].to_vec();
                self.came.push((seq, false));
            }
            None => {
                assert!(
                    text.starts_with(r#"{"event":"feed:tick","room":"#),
                    "{text}"
                );
                let order: Vec<usize> = ["\"delta\":", "\"from\":", "\"seq\":", "\"ts\":"]
                    .iter()
                    .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} in {text}")))
                    .collect();
                assert!(order.windows(2).all(|w| w[0] < w[1]), "field order: {text}");
                let v = parse_json(text);
                let delta = json_str(&v, &["delta"]).expect("a delta string");
                self.data = fossil::apply(&self.data, delta.as_bytes(), 1 << 20).expect("applies");
                self.came.push((seq, true));
            }
        }
        self.datas
            .push(String::from_utf8(self.data.clone()).expect("UTF-8"));
    }
}

/// The next `feed:tick` event `client` receives.
fn next_tick(client: &mut Client) -> String {
    loop {
        let text = client.recv();
        if text.starts_with(r#"{"event":"feed:tick""#) {
            return text;
        }
    }
}

fn data_of(text: &str) -> String {
    let range = scan::field_range(text.as_bytes(), "data").expect("data");
    text[range].to_string()
}

#[test]
fn delta_members_on_both_shards_rebuild_exactly_what_a_plain_member_gets() {
    let server = Server::start(ARGS);
    let addr = server.addr();
    let room = "prices:acme";
    let mut plain = member(addr, "plain", room, "");
    let mut deltas = [
        member(addr, "d1", room, r#","delta":true"#),
        member(addr, "d2", room, r#","delta":true"#),
    ];
    let mut publisher = publisher(addr, "feed");
    const N: u64 = 30;
    for n in 1..=N {
        publisher.publish_ok(room, "feed:tick", &tick(n));
    }
    let want: Vec<String> = (0..N).map(|_| data_of(&next_tick(&mut plain))).collect();
    assert_eq!(want[4], tick(5), "plain members get the data as published");
    for client in &mut deltas {
        let mut rebuilt = Rebuilt::default();
        for _ in 0..N {
            rebuilt.take(&next_tick(client));
        }
        assert_eq!(rebuilt.datas, want);
        assert_eq!(
            rebuilt.came[0],
            (1, false),
            "the first after a join is whole"
        );
        assert!(
            rebuilt.came[1..].iter().all(|&(_, delta)| delta),
            "every later one a delta: {:?}",
            rebuilt.came
        );
    }

    // A rejoin restarts from a whole event; the history stays whole.
    let [d1, _] = &mut deltas;
    let ack = d1.join_with(&format!(
        r#"{{"room":{},"delta":true,"history":3}}"#,
        q(room)
    ));
    let messages = array_at(ok_data(&ack), &["messages"]);
    assert!(!messages.is_empty(), "{ack:?}");
    let first = N + 1 - messages.len() as u64;
    for (message, n) in messages.iter().zip(first..) {
        assert_eq!(
            json_str(message, &["data", "symbol"]),
            Some("ACME"),
            "{ack:?}"
        );
        assert_eq!(u64_at(message, &["data", "n"]), n, "{ack:?}");
    }
    publisher.publish_ok(room, "feed:tick", &tick(N + 1));
    publisher.publish_ok(room, "feed:tick", &tick(N + 2));
    let mut rebuilt = Rebuilt::default();
    rebuilt.take(&next_tick(d1));
    rebuilt.take(&next_tick(d1));
    assert_eq!(rebuilt.came, [(N + 1, false), (N + 2, true)]);
    assert_eq!(rebuilt.datas, [tick(N + 1), tick(N + 2)]);
}

#[test]
fn after_a_max_rate_skip_the_event_is_whole_then_deltas_resume() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let room = "prices:paced";
    let mut paced = member(addr, "paced", room, r#","delta":true,"maxRate":2"#);
    let mut publisher = publisher(addr, "feed");
    // 1 goes at once; 2 and 3 come within its interval: 3 replaces 2.
    for n in 1..=3 {
        publisher.publish_ok(room, "feed:tick", &tick(n));
    }
    let mut rebuilt = Rebuilt::default();
    rebuilt.take(&next_tick(&mut paced));
    rebuilt.take(&next_tick(&mut paced));
    // Well after its slot: 4 directly follows 3.
    std::thread::sleep(Duration::from_millis(700));
    publisher.publish_ok(room, "feed:tick", &tick(4));
    rebuilt.take(&next_tick(&mut paced));
    assert_eq!(rebuilt.came, [(1, false), (3, false), (4, true)]);
    assert_eq!(rebuilt.datas, [tick(1), tick(3), tick(4)]);
}

#[test]
fn a_delta_that_is_not_a_boolean_is_a_validation_error() {
    let server = Server::start(&[]);
    let mut client = Client::user(server.addr(), "u");
    for delta in ["1", "\"true\"", "null", "[true]", "{}"] {
        let ack = client.join_with(&format!(r#"{{"room":"lobby","delta":{delta}}}"#));
        assert_eq!(ack_error(&ack), "VALIDATION_ERROR", "{delta}: {ack:?}");
    }
    ok_data(&client.join_with(r#"{"room":"lobby","delta":false}"#));
}

/// A tick of about 20 KiB of which 4 KiB change every time: deltas are
/// about a fifth of the data, and a member that does not read fills its
/// queue within a few thousand events.
fn big_tick(n: u64) -> String {
    let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let fresh: String = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b"0123456789abcdef"[(state % 16) as usize])
        })
        .collect();
    format!(
        r#"{{"n":{n},"fresh":"{fresh}","same":"{}"}}"#,
        "ü".repeat(8 * 1024)
    )
}

/// Under `--slow-consumer conflate` and `drop`, a delta member that stops
/// reading gets, once it reads again, only events it can rebuild: the one
/// after what was held back, dropped or replaced is whole.
#[test]
fn a_slow_delta_member_rebuilds_every_event_it_gets_after_held_back_ones() {
    for policy in ["drop", "conflate"] {
        let bound = ["--max-write-buffer", "64KiB"];
        let server = Server::start(&[&bound[..], &["--slow-consumer", policy]].concat());
        let addr = server.addr();
        let room = "feed:big";
        let mut fast = member(addr, "fast", room, "");
        let stream = common::connect_with_small_rcvbuf(addr, 4096);
        let mut slow =
            common::RawWs::upgrade(stream, "/ws", &common::rooms::Claims::new("slow").token());
        slow.read_message();
        let join = format!(
            r#"{{"event":"room:join","data":{{"room":{},"delta":true}},"id":1}}"#,
            q(room)
        );
        slow.send_frame(true, common::opcode::TEXT, join.as_bytes());
        slow.read_message();
        let mut publisher = publisher(addr, "feed");
        let mut sent = std::collections::HashMap::new();
        const EVENTS: u64 = 2500;
        let mut publish = |n: u64| {
            publisher.send(&format!(
                r#"{{"event":"feed:tick","room":{},"data":{}}}"#,
                q(room),
                big_tick(n)
            ));
            let text = next_tick(&mut fast);
            sent.insert(seq_of(&text), data_of(&text));
        };
        for n in 1..=EVENTS {
            publish(n);
        }
        let mut texts = slow.drain_texts(Duration::from_secs(2));
        // Dropped events show as a gap only before the next one.
        for n in EVENTS + 1..=EVENTS + 3 {
            publish(n);
        }
        texts.extend(slow.drain_texts(Duration::from_secs(1)));
        let mut rebuilt = Rebuilt::default();
        for text in texts
            .iter()
            .filter(|t| t.starts_with(r#"{"event":"feed:tick""#))
        {
            rebuilt.take(text);
        }
        for ((seq, _), data) in rebuilt.came.iter().zip(&rebuilt.datas) {
            assert_eq!(Some(data), sent.get(seq), "{policy}: seq {seq}");
        }
        let came = &rebuilt.came;
        assert!(
            came.iter().any(|&(_, delta)| delta),
            "{policy}: no delta at all"
        );
        let gaps = came.windows(2).filter(|w| w[1].0 != w[0].0 + 1).count();
        assert!(
            gaps > 0,
            "{policy}: the member was never held back: {} events, {} texts, last {:?}",
            came.len(),
            texts.len(),
            came.last()
        );
        for w in came.windows(2) {
            if w[1].0 != w[0].0 + 1 {
                assert!(!w[1].1, "{policy}: after a gap the event is whole: {w:?}");
            }
        }
        if policy == "conflate" {
            assert!(
                came.iter().any(|c| c.0 == EVENTS),
                "{policy}: the newest of the flood arrives"
            );
        }
        assert_eq!(
            &came[came.len() - 2..],
            [(EVENTS + 2, true), (EVENTS + 3, true)],
            "{policy}"
        );
    }
}
