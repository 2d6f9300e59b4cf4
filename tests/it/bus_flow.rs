//! Flow control between shards: a publisher with no rate limit flooding a
//! room owned by another, slower shard. The publisher's shard must stop
//! reading its socket while the owner is behind (TCP pushes back on the
//! client) instead of queueing room traffic for the owner without bound;
//! the server's RSS stays bounded, the pause is counted, and afterwards
//! everything works: the publisher's connection is open and its later
//! messages are sequenced in order, a fresh member receives them.

use crate::common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::raw::{MASK, encode_frame};
use common::rooms::{Claims, Client, ack_seq, event, rss_bytes, seq_of};
use common::{RawWs, Server, connect_with_small_rcvbuf, opcode, parse_json};

/// Members on the owner's shard that never read: every message costs the
/// owner one counted drop per member.
const MEMBERS: usize = 1000;
/// Most room events the publisher sends in the flood (about 130 MB on the
/// wire), and the longest it floods.
const MAX_MESSAGES: usize = 1_000_000;
const FLOOD: Duration = Duration::from_secs(4);
/// RSS growth allowed during the flood. Queued without bound, the
/// publisher outruns the owner by hundreds of thousands of messages a
/// second, a few hundred bytes each: about 260 MB for this flood. Held to
/// the high-water mark, the queue is a few MB, and the process grew by
/// 14-54 MB in all (the allocator's own slack included), however long the
/// flood went on.
const RSS_GROWTH_LIMIT: u64 = 100 * 1024 * 1024;

/// The shard of `shards` that owns `room` (FNV-1a, as `rooms::owner_of`).
fn owner_of(room: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % shards as u64) as usize
}

/// The next text message, skipping anything that is not an ack for `id`.
fn ack_for(ws: &mut RawWs, id: u64) -> u64 {
    loop {
        let (op, payload) = ws.read_message();
        assert_eq!(op, opcode::TEXT);
        let v = parse_json(std::str::from_utf8(&payload).unwrap());
        if event(&v) == "ack" && common::rooms::u64_at(&v, &["id"]) == id {
            return ack_seq(&v);
        }
    }
}

#[test]
fn a_publisher_flooding_a_slower_shard_is_paused_not_queued() {
    flood_a_slower_shard(2);
}

/// The same with three shards: flow control is per pair of shards, so it
/// holds whatever their number.
#[test]
fn flow_control_holds_with_three_shards_too() {
    flood_a_slower_shard(3);
}

fn flood_a_slower_shard(shards: usize) {
    let room = (0..)
        .map(|i| format!("flood-{i}"))
        .find(|r| owner_of(r, shards) == 0)
        .unwrap();
    let shard_count = shards.to_string();
    let server = Server::start(&[
        "--shards",
        &shard_count,
        "--accept",
        "handoff",
        "--slow-consumer",
        "drop",
        "--max-message-size",
        "1KiB",
        "--max-write-buffer",
        "4KiB",
        "--presence-rooms",
        "presence-only",
    ]);
    let addr = server.addr();
    // Hand-off deals connections round-robin over the shards. Each member
    // (on shard 0, the owner) is followed by a connection to every other
    // shard that closes at once, so every member lands on shard 0.
    let join = format!(r#"{{"event":"room:join","data":{{"room":"{room}"}},"id":1}}"#);
    let mut members = Vec::with_capacity(MEMBERS);
    for i in 0..MEMBERS {
        let stream = connect_with_small_rcvbuf(addr, 4096);
        let mut member = RawWs::upgrade(stream, "/ws", &Claims::new(&format!("m{i}")).token());
        member.read_message();
        member.send_frame(true, opcode::TEXT, join.as_bytes());
        let (_, ack) = member.read_message();
        let ack = parse_json(std::str::from_utf8(&ack).unwrap());
        common::rooms::ok_data(&ack);
        members.push(member);
        for _ in 1..shards {
            drop(TcpStream::connect(addr).unwrap());
        }
    }
    // The next connection goes to shard 1.
    drop(TcpStream::connect(addr).unwrap());
    let token = Claims::new("feed")
        .rooms(&[])
        .publish(&["*"])
        .rate(0)
        .token();
    let mut publisher = RawWs::connect(addr, "/ws", &token);
    publisher.read_message();
    publisher.stream.set_write_timeout(None).unwrap();
    publisher.set_read_timeout(Duration::from_secs(15));

    // Whole frames, about 64 KiB, written again and again.
    let pad = "x".repeat(8);
    let frame = encode_frame(
        true,
        0,
        opcode::TEXT,
        format!(r#"{{"event":"feed:tick","room":"{room}","data":{{"pad":"{pad}"}}}}"#).as_bytes(),
        Some(MASK),
    );
    let per_chunk = 64 * 1024 / frame.len();
    let chunk = frame.repeat(per_chunk);

    // Warm up until every member's output is full, so the flood below only
    // measures what queues between the shards.
    publisher.send_raw(&chunk);
    let probe = |ws: &mut RawWs, id: u64| {
        let text = format!(r#"{{"event":"feed:tick","room":"{room}","data":"probe","id":{id}}}"#);
        ws.send_frame(true, opcode::TEXT, text.as_bytes());
        ack_for(ws, id)
    };
    let warm_seq = probe(&mut publisher, 1);
    assert_eq!(warm_seq, per_chunk as u64 + 1);

    let pid = server.pid();
    let before = rss_bytes(pid);
    let flooder = std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0;
        while sent + per_chunk <= MAX_MESSAGES && started.elapsed() < FLOOD {
            publisher.send_raw(&chunk);
            sent += per_chunk;
        }
        (publisher, sent, started.elapsed())
    });
    let mut peak = before;
    while !flooder.is_finished() {
        peak = peak.max(rss_bytes(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut publisher, sent, took) = flooder.join().expect("flooder");
    peak = peak.max(rss_bytes(pid));
    let growth = peak.saturating_sub(before);
    eprintln!("flood: {sent} messages in {took:?}; RSS {before} -> peak {peak} (+{growth})");
    assert!(
        growth < RSS_GROWTH_LIMIT,
        "RSS grew by {growth} bytes while {sent} messages were published at a slower shard"
    );
    // Everything still works: the publisher's next message is sequenced
    // right after the flood, and a fresh member receives later ones in order.
    // (Asked first: once it is answered the shards are through the flood,
    // so `/metrics` below is not kept waiting on a loaded machine.)
    let seq = probe(&mut publisher, 2);
    assert_eq!(
        seq,
        warm_seq + sent as u64 + 1,
        "every flood message sequenced"
    );
    let pauses = common::metric(addr, "roomcast_shard_read_pauses_total{shard=\"1\"}");
    assert!(pauses > 0.0, "the publisher's shard never paused reading");
    let mut fresh = Client::user(addr, "fresh");
    fresh.join(&room);
    for n in 0..3u64 {
        assert_eq!(probe(&mut publisher, 3 + n), seq + 1 + n);
        assert_eq!(seq_of(&fresh.recv_skip_presence()), seq + 1 + n);
    }
    drop(members);
}
