//! Slow consumers of room events (PROTOCOL.md section 8), one test per
//! `--slow-consumer` policy: a member that stops reading (small SO_RCVBUF)
//! while ~50 MB are published to its room. A fast member on the same shard
//! keeps receiving every message, the server's RSS stays bounded, and the
//! slow member gets 4008 (close), `system:dropped` (drop) or the newest
//! event per room (conflate).

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::rooms::{Claims, Client, event, keys, rss_bytes, seq_tail, u64_at};
use common::{RawWs, Server, connect_with_small_rcvbuf, opcode, parse_json};
use simd_json::prelude::*;

const PAD: usize = 16 * 1024;
/// About 50 MB of room events.
const MESSAGES: u64 = 3200;
/// RSS growth allowed while publishing 50 MB at a client that does not read.
const RSS_GROWTH_LIMIT: u64 = 30 * 1024 * 1024;

/// `room` of a room event, read from its head (`{"event":E,"room":R,`).
fn room_head(text: &str) -> &str {
    let at = text.find(r#","room":""#).expect("room in a room event") + 9;
    let end = at + text[at..].find('"').unwrap();
    &text[at..end]
}

struct Setup {
    server: Server,
    fast: Client,
    /// Taken by a test that reads it from another thread.
    slow: Option<RawWs>,
    publisher: Client,
    rooms: Vec<&'static str>,
}

fn setup(policy: &str, rooms: Vec<&'static str>) -> Setup {
    let server = Server::start(&[
        "--shards",
        "1",
        "--max-write-buffer",
        "64KiB",
        "--slow-consumer",
        policy,
        "--presence-rooms",
        "presence-only",
    ]);
    let addr = server.addr();
    let mut fast = Client::user(addr, "fast");
    let stream = connect_with_small_rcvbuf(addr, 4096);
    let mut slow = RawWs::upgrade(stream, "/ws", &Claims::new("slow").token());
    slow.read_message();
    for (i, room) in rooms.iter().enumerate() {
        fast.join(room);
        let join = format!(r#"{{"event":"room:join","data":{{"room":"{room}"}},"id":{i}}}"#);
        slow.send_frame(true, opcode::TEXT, join.as_bytes());
        let (_, ack) = slow.read_message();
        let ack = parse_json(std::str::from_utf8(&ack).unwrap());
        assert_eq!(event(&ack), "ack");
        common::rooms::ok_data(&ack);
    }
    let publisher = Client::connect(
        addr,
        &Claims::new("feed")
            .rooms(&[])
            .publish(&["*"])
            .rate(0)
            .token(),
    );
    Setup {
        server,
        fast,
        slow: Some(slow),
        publisher,
        rooms,
    }
}

/// Publishes `MESSAGES` events round-robin over the rooms, in lockstep with
/// the fast member, which must receive each one, in order. Returns the last
/// seq per room and the RSS growth.
fn flood(s: &mut Setup) -> (BTreeMap<&'static str, u64>, u64) {
    let pid = s.server.pid();
    let before = rss_bytes(pid);
    let pad = "x".repeat(PAD);
    let mut last: BTreeMap<&'static str, u64> = BTreeMap::new();
    for i in 0..MESSAGES {
        let room = s.rooms[(i as usize) % s.rooms.len()];
        s.publisher.send(&format!(
            r#"{{"event":"feed:tick","room":"{room}","data":{{"i":{i},"pad":"{pad}"}}}}"#
        ));
        let text = s.fast.recv();
        assert!(
            text.starts_with(r#"{"event":"feed:tick","room":""#),
            "fast member got {}",
            &text[..text.len().min(200)]
        );
        assert_eq!(room_head(&text), room, "message {i}");
        let seq = seq_tail(&text);
        let prev = last.insert(room, seq).unwrap_or(0);
        assert_eq!(seq, prev + 1, "fast member: seq in {room} after {prev}");
    }
    let after = rss_bytes(pid);
    (last, after.saturating_sub(before))
}

#[test]
fn close_policy_closes_the_slow_member_4008_and_the_fast_one_gets_everything() {
    let mut s = setup("close", vec!["feed"]);
    // The slow member stops reading while the flood starts, long enough to
    // be far over the bound, then reads again: it must find whole frames and
    // the 4008 close. (docs/protocol.md: a server that closes waits 2 s for
    // the client's side before dropping, so it may not wait much longer.)
    let mut slow = s.slow.take().unwrap();
    let slow_reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        slow.set_read_timeout(Duration::from_secs(10));
        slow.read_until_close()
    });
    let (last, growth) = flood(&mut s);
    assert_eq!(last["feed"], MESSAGES);
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "RSS grew by {growth} bytes while publishing at a slow client"
    );
    let (code, before) = slow_reader.join().expect("slow member");
    assert_eq!(code, Some(4008), "after {} frames", before.len());
    let mut prev = 0;
    for f in before.iter().filter(|f| f.opcode == opcode::TEXT) {
        assert!(f.fin);
        let seq = seq_tail(f.text());
        assert!(seq > prev, "seq {seq} after {prev}");
        prev = seq;
    }
    assert!(
        prev < MESSAGES,
        "the slow member got every message before 4008"
    );
    // The fast member and the publisher are still served.
    s.publisher
        .send(r#"{"event":"feed:tick","room":"feed","data":"after"}"#);
    assert_eq!(seq_tail(&s.fast.recv()), MESSAGES + 1);
}

#[test]
fn drop_policy_tells_the_slow_member_how_many_were_dropped() {
    let mut s = setup("drop", vec!["feed"]);
    let (last, growth) = flood(&mut s);
    assert_eq!(last["feed"], MESSAGES);
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "RSS grew by {growth} bytes while publishing at a slow client"
    );
    let texts = s.slow.as_mut().unwrap().drain_texts(Duration::from_secs(1));
    let mut received = 0u64;
    let mut dropped = 0u64;
    let mut notices = 0;
    let mut prev = 0;
    for text in &texts {
        if text.starts_with(r#"{"event":"system:dropped""#) {
            let v = parse_json(text);
            assert_eq!(keys(&v), ["data", "event"], "{text}");
            assert_eq!(keys(v.get("data").unwrap()), ["count"], "{text}");
            let n = u64_at(&v, &["data", "count"]);
            assert!(n > 0, "{text}");
            assert_eq!(
                text,
                &format!(r#"{{"event":"system:dropped","data":{{"count":{n}}}}}"#)
            );
            dropped += n;
            notices += 1;
        } else {
            let seq = seq_tail(text);
            assert!(seq > prev, "seq {seq} after {prev}");
            prev = seq;
            received += 1;
        }
    }
    assert!(notices > 0, "no system:dropped in {} messages", texts.len());
    assert!(received < MESSAGES, "nothing was dropped");
    assert_eq!(
        received + dropped,
        MESSAGES,
        "received {received} + dropped {dropped} != published {MESSAGES}"
    );
    let addr = s.server.addr();
    let counted = common::metric(addr, "roomcast_deliveries_dropped_total");
    assert_eq!(counted, dropped as f64, "dropped events counted");
    // Still a member: the next event arrives as usual.
    s.publisher
        .send(r#"{"event":"feed:tick","room":"feed","data":"after"}"#);
    assert_eq!(seq_tail(&s.fast.recv()), MESSAGES + 1);
    let next = s.slow.as_mut().unwrap().drain_texts(Duration::from_secs(1));
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(seq_tail(&next[0]), MESSAGES + 1);
}

#[test]
fn conflate_policy_delivers_the_newest_event_per_room_with_a_seq_gap() {
    let mut s = setup("conflate", vec!["feed:a", "feed:b"]);
    let (last, growth) = flood(&mut s);
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "RSS grew by {growth} bytes while publishing at a slow client"
    );
    let texts = s.slow.as_mut().unwrap().drain_texts(Duration::from_secs(1));
    let mut seen: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for text in &texts {
        assert!(
            text.starts_with(r#"{"event":"feed:tick""#),
            "{}",
            &text[..text.len().min(200)]
        );
        seen.entry(room_head(text))
            .or_default()
            .push(seq_tail(text));
    }
    for (room, newest) in &last {
        let seqs = seen
            .get(room)
            .unwrap_or_else(|| panic!("nothing from {room}"));
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{room}: seqs not increasing: {seqs:?}"
        );
        assert_eq!(
            seqs.last(),
            Some(newest),
            "{room}: the newest event is delivered last"
        );
        assert!(
            (seqs.len() as u64) < *newest,
            "{room}: no seq gap, all {newest} delivered"
        );
    }
    // Each event the slow member did not get was replaced by a newer one.
    let replaced: u64 = last
        .iter()
        .map(|(room, newest)| newest - seen[room].len() as u64)
        .sum();
    let counted = common::metric(s.server.addr(), "roomcast_deliveries_conflated_total");
    assert_eq!(counted, replaced as f64, "conflated events counted");
}

#[test]
fn direct_messages_to_a_non_reading_client_end_in_4008_under_drop() {
    // Non-room messages are not dropped: queued up to twice the bound, then 4008.
    let s = setup("drop", vec!["feed"]);
    let Setup { server, slow, .. } = s;
    let mut slow = slow.unwrap();
    let mut sender = Client::connect(server.addr(), &Claims::new("sender").rate(0).token());
    let pad = "y".repeat(PAD);
    for _ in 0..100 {
        sender.send(&format!(
            r#"{{"event":"user:send","data":{{"to":"slow","data":"{pad}"}}}}"#
        ));
    }
    // Acked once every message before it was queued, all before the slow
    // member reads anything: one that reads as they come is not slow.
    sender.request("user:send", r#"{"to":"slow","data":0}"#, "");
    slow.set_read_timeout(Duration::from_secs(10));
    let (code, _) = slow.read_until_close();
    assert_eq!(code, Some(4008));
}
