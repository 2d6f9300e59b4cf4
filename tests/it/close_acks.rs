//! Whatever the server executed for a client before closing it gets its
//! ack ahead of the close frame (PROTOCOL.md section 4: every valid `id` is
//! acknowledged exactly once): a rate-limit close (4003), an expired token
//! (4002) and a shutdown (1001). Only a slow consumer's 4008 may cut
//! pending frames (section 8).

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::thread;
use std::time::Duration;

use common::raw::{MASK, encode_frame};
use common::rooms::{Claims, Client, ack_error, event, now_ms, seq_of};
use common::{RawWs, Server, opcode, parse_json};
use simd_json::prelude::*;
use tungstenite::Message;

const ROOMS: [&str; 4] = ["r0", "r1", "r2", "r3"];

#[test]
fn joins_executed_before_a_4003_are_all_acknowledged() {
    // The defaults: --rate-limit 50 --rate-burst 100, 100 rooms per connection.
    let server = Server::start(&["--shards", "2"]);
    let mut ws = RawWs::connect(server.addr(), "/ws", &Claims::new("joiner").token());
    ws.read_message();
    let mut batch = Vec::new();
    for i in 0..250 {
        let text = format!(r#"{{"event":"room:join","room":"room-{i}","id":{i}}}"#);
        batch.extend(encode_frame(
            true,
            0,
            opcode::TEXT,
            text.as_bytes(),
            Some(MASK),
        ));
    }
    ws.stream.write_all(&batch).unwrap();
    let (code, before) = ws.read_until_close();
    assert_eq!(code, Some(4003));
    let mut answers: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for frame in &before {
        let v = parse_json(frame.text());
        assert_eq!(event(&v), "ack", "{}", frame.text());
        let id = v.get("id").and_then(|i| i.as_u64()).expect("an id");
        let outcome = match v.get("success").and_then(|b| b.as_bool()) {
            Some(true) => "ok".to_owned(),
            _ => ack_error(&v),
        };
        answers.entry(id).or_default().push(outcome);
    }
    for id in 0..200 {
        let expected = if id < 100 { "ok" } else { "RATE_LIMITED" };
        assert_eq!(
            answers.get(&id).map(Vec::as_slice),
            Some(&[expected.to_owned()][..]),
            "join {id}"
        );
    }
    assert_eq!(answers.len(), 200, "nothing after the flood is answered");
}

/// A member of every room in `ROOMS`, for the seqs that were published.
fn witness(server: &Server) -> Client {
    let mut c = Client::user(server.addr(), "witness");
    for room in ROOMS {
        c.join(room);
    }
    c
}

/// Connects a publisher on `token`, joins it to `ROOMS` and publishes with
/// ids as fast as the socket takes them, round the rooms, until the server
/// closes it (`close` is called once publishing runs). Returns the close
/// code and the `seq` of every ack, per room.
fn publish_until_closed(
    server: &Server,
    token: &str,
    close: impl FnOnce(),
) -> (Option<u16>, BTreeMap<String, BTreeSet<u64>>) {
    let mut ws = RawWs::connect(server.addr(), "/ws", token);
    ws.set_read_timeout(Duration::from_secs(30));
    ws.read_message();
    for (i, room) in ROOMS.iter().enumerate() {
        let join = format!(r#"{{"event":"room:join","room":"{room}","id":"j{i}"}}"#);
        ws.send_frame(true, opcode::TEXT, join.as_bytes());
        ws.read_message();
    }
    let mut writer = ws.stream.try_clone().unwrap();
    let publisher = thread::spawn(move || {
        let mut id = 0u64;
        loop {
            let mut batch = Vec::new();
            for _ in 0..16 {
                let room = ROOMS[id as usize % ROOMS.len()];
                let text =
                    format!(r#"{{"event":"feed:tick","room":"{room}","id":{id},"data":{id}}}"#);
                batch.extend(encode_frame(
                    true,
                    0,
                    opcode::TEXT,
                    text.as_bytes(),
                    Some(MASK),
                ));
                id += 1;
            }
            if writer.write_all(&batch).is_err() {
                return id;
            }
            thread::sleep(Duration::from_millis(1));
        }
    });
    close();
    let (code, before) = ws.read_until_close();
    drop(ws);
    publisher.join().unwrap();
    let mut acked: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for frame in &before {
        let v = parse_json(frame.text());
        if event(&v) != "ack" {
            continue;
        }
        let Some(id) = v.get("id").and_then(|i| i.as_u64()) else {
            continue;
        };
        let seq = v
            .get("data")
            .and_then(|d| d.get("seq"))
            .and_then(|s| s.as_u64())
            .unwrap_or_else(|| panic!("a publish ack without a seq: {}", frame.text()));
        let room = ROOMS[id as usize % ROOMS.len()].to_owned();
        assert!(
            acked.entry(room).or_default().insert(seq),
            "seq {seq} acked twice"
        );
    }
    (code, acked)
}

/// Reads, in a thread of its own, the seqs of every room event `c`
/// receives until it is quiet or closed.
fn watch(mut c: Client) -> thread::JoinHandle<BTreeMap<String, BTreeSet<u64>>> {
    thread::spawn(move || seen_by(&mut c))
}

fn seen_by(c: &mut Client) -> BTreeMap<String, BTreeSet<u64>> {
    let quiet = Duration::from_millis(1500);
    c.ws.get_mut().set_read_timeout(Some(quiet)).unwrap();
    let mut seen: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    loop {
        let text = match c.ws.read() {
            Ok(Message::Text(text)) => text,
            // Quiet for a while, closed by the server, or gone.
            Ok(Message::Close(_)) | Err(_) => return seen,
            Ok(_) => continue,
        };
        let v = parse_json(text.as_str());
        if event(&v) != "feed:tick" {
            continue;
        }
        let room = v.get("room").and_then(|r| r.as_str()).unwrap().to_owned();
        seen.entry(room).or_default().insert(seq_of(text.as_str()));
    }
}

/// Every seq the witness saw was acked to the publisher.
fn assert_all_acked(
    seen: &BTreeMap<String, BTreeSet<u64>>,
    acked: &BTreeMap<String, BTreeSet<u64>>,
) {
    let total: usize = seen.values().map(BTreeSet::len).sum();
    assert!(total > 0, "nothing was published");
    for (room, seqs) in seen {
        let empty = BTreeSet::new();
        let acks = acked.get(room).unwrap_or(&empty);
        let missing: Vec<&u64> = seqs.difference(acks).collect();
        assert!(
            missing.is_empty(),
            "{room}: {} of {} published events were never acked, e.g. {:?}",
            missing.len(),
            seqs.len(),
            &missing[..missing.len().min(5)]
        );
    }
}

const FAST: [&str; 6] = [
    "--shards",
    "2",
    "--rate-limit",
    "1000000",
    "--rate-burst",
    "1000000",
];

#[test]
fn publishes_executed_before_a_token_expiry_close_are_all_acknowledged() {
    let server = Server::start(&FAST);
    let witness = watch(witness(&server));
    let exp_ms = (now_ms() / 1000 + 2) * 1000;
    let token = Claims::new("publisher").exp(exp_ms / 1000).token();
    let (code, acked) = publish_until_closed(&server, &token, || {});
    assert_eq!(code, Some(4002));
    assert!(now_ms() + 50 >= exp_ms, "closed before the token expired");
    assert_all_acked(&witness.join().unwrap(), &acked);
}

#[test]
fn publishes_executed_before_a_shutdown_are_all_acknowledged() {
    let server = Server::start(&FAST);
    let witness = watch(witness(&server));
    let token = Claims::new("publisher").token();
    let (code, acked) = publish_until_closed(&server, &token, || {
        thread::sleep(Duration::from_millis(700));
        server.terminate();
    });
    assert_eq!(code, Some(1001));
    assert_all_acked(&witness.join().unwrap(), &acked);
}
