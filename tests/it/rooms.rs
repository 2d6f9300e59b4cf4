//! Rooms (PROTOCOL.md sections 6 and 7): join/leave, fan-out of room events
//! to every member on every shard, exactly once and in `seq` order, the exact
//! bytes of a delivered event, `echo`, and the publish ack.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use simd_json::prelude::*;

use common::rooms::{
    Claims, Client, ack_seq, alice_and_bob_in_lobby, array_at, assert_room_event, keys, now_ms,
    ok_data, q, str_at, u64_at,
};
use common::{Server, json_at};

const QUIET: Duration = Duration::from_millis(300);

/// One published message as its publisher saw it acked.
#[derive(Debug, Clone)]
struct Published {
    event: &'static str,
    data: String,
    from: &'static str,
    echo: bool,
}

fn a_data(i: usize) -> String {
    // Unusual spacing, a trailing zero, an escaped non-ASCII letter, an escaped tab.
    format!(r#"{{"i" : {i},  "a" : [1, 2.50, "\u00e9"], "s":"tab\there"}}"#)
}

fn b_data(i: usize) -> String {
    format!(r#"[ {i} , {{"b":"\"quoted\" \\ \/"}} ,null,1e3 ]"#)
}

const MEMBER_THREADS: usize = 4;
const MEMBERS: usize = 1000;
const PER_PUBLISHER: usize = 100;

/// Checks one member's received texts against what was published.
fn check_member(
    who: &str,
    texts: &[String],
    table: &BTreeMap<u64, Published>,
    expect: &dyn Fn(&Published) -> bool,
) {
    let wanted: Vec<(&u64, &Published)> = table.iter().filter(|(_, p)| expect(p)).collect();
    assert_eq!(
        texts.len(),
        wanted.len(),
        "{who}: received {} messages, expected {}",
        texts.len(),
        wanted.len()
    );
    let now = now_ms();
    for (text, (seq, p)) in texts.iter().zip(wanted) {
        let ts = assert_room_event(text, p.event, "fan", &p.data, p.from, *seq);
        assert!(ts.abs_diff(now) < 120_000, "{who}: ts {ts} far from {now}");
    }
}

#[test]
fn fan_out_to_a_thousand_members_on_two_shards_exactly_once_in_seq_order() {
    // Hand-off mode deals connections round-robin, so consecutive connections
    // alternate between the two shards. Presence is off for this room (its
    // cost is quadratic); presence has its own tests.
    let server = Server::start(&[
        "--shards",
        "2",
        "--accept",
        "handoff",
        "--presence-rooms",
        "presence-only",
    ]);
    let addr = server.addr();
    // Two publishers on different shards: A is a member, B only has `pub`.
    let mut a = Client::connect(addr, &Claims::new("pub-a").rate(0).token());
    let b = Client::connect(
        addr,
        &Claims::new("pub-b")
            .rooms(&[])
            .publish(&["fan"])
            .rate(0)
            .token(),
    );
    let joined = ok_data(&a.join_with(r#"{"room":"fan"}"#)).clone();
    assert_eq!(u64_at(&joined, &["members"]), 1);

    let barrier = Arc::new(Barrier::new(MEMBER_THREADS + 1));
    let per_thread = (MEMBERS - 1).div_ceil(MEMBER_THREADS);
    let members: Vec<_> = (0..MEMBER_THREADS)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            let n = per_thread.min(MEMBERS - 1 - t * per_thread);
            thread::spawn(move || {
                let mut clients: Vec<Client> = (0..n)
                    .map(|i| Client::user(addr, &format!("m{t}-{i}")))
                    .collect();
                let mut max_members = 0;
                for c in &mut clients {
                    let data = c.join("fan");
                    assert!(array_at(&data, &["messages"]).is_empty());
                    max_members = max_members.max(u64_at(&data, &["members"]));
                }
                barrier.wait();
                // Every message up to B's end marker, socket by socket.
                let received: Vec<Vec<String>> = clients
                    .iter_mut()
                    .map(|c| {
                        let mut texts = Vec::new();
                        loop {
                            let text = c.recv();
                            if text.starts_with(r#"{"event":"feed:end""#) {
                                break texts;
                            }
                            texts.push(text);
                        }
                    })
                    .collect();
                (max_members, received)
            })
        })
        .collect();
    barrier.wait();

    let publish = |mut c: Client, me: &'static str, event: &'static str| {
        thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0..PER_PUBLISHER {
                let data = if me == "pub-a" { a_data(i) } else { b_data(i) };
                let echo = me == "pub-a" && i % 10 == 3;
                let extra = if echo {
                    r#""room":"fan","echo":true"#
                } else {
                    r#""room":"fan""#
                };
                let ack = c.request(event, &data, extra);
                let seq = ack_seq(&ack);
                acked.push((
                    seq,
                    Published {
                        event,
                        data,
                        from: me,
                        echo,
                    },
                ));
            }
            (c, acked)
        })
    };
    let pa = publish(a, "pub-a", "chat:message");
    let pb = publish(b, "pub-b", "feed:update");
    let (mut a, acked_a) = pa.join().expect("publisher A failed");
    let (mut b, acked_b) = pb.join().expect("publisher B failed");

    let mut table = BTreeMap::new();
    for (seq, p) in acked_a.into_iter().chain(acked_b) {
        assert!(table.insert(seq, p).is_none(), "seq {seq} acked twice");
    }
    let seqs: Vec<u64> = table.keys().copied().collect();
    let all: Vec<u64> = (1..=2 * PER_PUBLISHER as u64).collect();
    assert_eq!(seqs, all, "acked seqs are not 1..=200");
    let end = b.publish_ok("fan", "feed:end", r#""end""#);
    assert_eq!(end, 201);

    let mut max_members = 0;
    for (t, m) in members.into_iter().enumerate() {
        let (max, received) = m.join().expect("member thread failed");
        max_members = max_members.max(max);
        for (i, texts) in received.iter().enumerate() {
            check_member(&format!("member m{t}-{i}"), texts, &table, &|_| true);
        }
    }
    assert_eq!(
        max_members, MEMBERS as u64,
        "members count of the last join"
    );

    // A gets B's messages and its own echo: true ones, never its others.
    let mut texts = Vec::new();
    loop {
        let text = a.recv();
        if text.starts_with(r#"{"event":"feed:end""#) {
            break;
        }
        texts.push(text);
    }
    check_member("publisher A", &texts, &table, &|p| {
        p.from == "pub-b" || p.echo
    });
    // B is not a member: it gets nothing.
    b.assert_quiet(QUIET);
}

#[test]
fn join_ack_names_room_epoch_seq_messages_and_members() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut c1 = Client::user(addr, "u1");
    let data = c1.join("lobby");
    for key in ["room", "epoch", "seq", "messages", "members"] {
        assert!(json_at(&data, &[key]).is_some(), "no {key} in {data:?}");
    }
    assert_eq!(str_at(&data, &["room"]), "lobby");
    assert!(!str_at(&data, &["epoch"]).is_empty());
    assert_eq!(u64_at(&data, &["seq"]), 0, "a new room has seq 0");
    assert!(array_at(&data, &["messages"]).is_empty());
    assert_eq!(u64_at(&data, &["members"]), 1);

    // `members` counts connections: a second connection of the same user counts.
    let mut c2 = Client::user(addr, "u1");
    let data2 = c2.join("lobby");
    assert_eq!(u64_at(&data2, &["members"]), 2);
    assert_eq!(str_at(&data2, &["epoch"]), str_at(&data, &["epoch"]));

    let seq = c1.publish_ok("lobby", "chat:message", "1");
    assert_eq!(seq, 1);
    let mut c3 = Client::user(addr, "u3");
    let data3 = c3.join("lobby");
    assert_eq!(u64_at(&data3, &["seq"]), 1, "seq is the room's latest");
    assert!(
        array_at(&data3, &["messages"]).is_empty(),
        "no messages unless asked"
    );
    assert_eq!(u64_at(&data3, &["members"]), 3);
}

#[test]
fn joining_twice_and_leaving_a_room_one_is_not_in_are_successes() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    c.join("lobby");
    let again = c.join("lobby");
    assert_eq!(u64_at(&again, &["members"]), 1, "still one connection");
    c.leave("elsewhere");
    c.leave("lobby");
    c.leave("lobby");
}

#[test]
fn leave_ack_is_the_room_and_a_left_member_gets_nothing_more() {
    let server = Server::start(&["--presence-rooms", "presence-only"]);
    let addr = server.addr();
    let mut stay = Client::user(addr, "stay");
    let mut go = Client::user(addr, "go");
    let mut publisher = Client::user(addr, "publisher");
    stay.join("lobby");
    go.join("lobby");
    publisher.join("lobby");
    let ack = go.request("room:leave", r#"{"room":"lobby"}"#, "");
    let data = ok_data(&ack);
    assert_eq!(keys(data), ["room"]);
    assert_eq!(str_at(data, &["room"]), "lobby");
    let seq = publisher.publish_ok("lobby", "chat:message", r#"{"n":1}"#);
    assert_room_event(
        &stay.recv_skip_presence(),
        "chat:message",
        "lobby",
        r#"{"n":1}"#,
        "publisher",
        seq,
    );
    go.assert_quiet(QUIET);
}

#[test]
fn sender_is_excluded_unless_echo_true_and_echo_is_the_same_bytes() {
    let (_server, mut a, mut b) = alice_and_bob_in_lobby(&[]);

    let seq1 = a.publish_ok("lobby", "chat:message", r#"{"t":"no echo"}"#);
    let to_b = b.recv();
    assert_room_event(
        &to_b,
        "chat:message",
        "lobby",
        r#"{"t":"no echo"}"#,
        "alice",
        seq1,
    );
    a.assert_quiet(QUIET);

    let id = a.new_id();
    a.send(&format!(
        r#"{{"event":"chat:message","room":"lobby","data":{{"t" : "echo"}},"echo":true,"id":{}}}"#,
        q(&id)
    ));
    let ack = a.wait_ack(&id);
    let seq2 = ack_seq(&common::parse_json(&ack));
    assert_eq!(seq2, seq1 + 1);
    let echoed = a.recv();
    let to_b = b.recv();
    assert_eq!(echoed, to_b, "every member gets the same bytes");
    assert_room_event(
        &echoed,
        "chat:message",
        "lobby",
        r#"{"t" : "echo"}"#,
        "alice",
        seq2,
    );

    // echo: false is the default made explicit.
    a.publish_ok("lobby", "chat:message", "3");
    b.recv();
    a.assert_quiet(QUIET);
}

#[test]
fn data_absent_is_delivered_as_null() {
    let (_server, mut a, mut b) = alice_and_bob_in_lobby(&[]);
    a.send(r#"{"event":"chat:typing","room":"lobby","id":1}"#);
    let ack = common::parse_json(&a.recv());
    let seq = ack_seq(&ack);
    assert_room_event(&b.recv(), "chat:typing", "lobby", "null", "alice", seq);
}

#[test]
fn a_room_event_without_id_gets_no_ack() {
    let (_server, mut a, mut b) = alice_and_bob_in_lobby(&[]);
    a.send(r#"{"event":"chat:message","room":"lobby","data":"x"}"#);
    assert_room_event(&b.recv(), "chat:message", "lobby", r#""x""#, "alice", 1);
    a.assert_quiet(QUIET);
}

#[test]
fn rooms_count_seq_independently_and_members_see_only_their_rooms() {
    let server = Server::start(&["--presence-rooms", "presence-only"]);
    let addr = server.addr();
    let mut p = Client::user(addr, "publisher");
    let mut in_a = Client::user(addr, "in-a");
    let mut in_both = Client::user(addr, "in-both");
    in_a.join("room-a");
    in_both.join("room-a");
    in_both.join("room-b");
    p.join("room-a");
    p.join("room-b");
    for i in 1..=3u64 {
        assert_eq!(p.publish_ok("room-a", "x:y", &i.to_string()), i);
        assert_eq!(p.publish_ok("room-b", "x:y", &(10 * i).to_string()), i);
    }
    for i in 1..=3u64 {
        assert_room_event(
            &in_a.recv(),
            "x:y",
            "room-a",
            &i.to_string(),
            "publisher",
            i,
        );
    }
    in_a.assert_quiet(QUIET);
    let got: Vec<(String, u64)> = (0..6)
        .map(|_| {
            let v = common::parse_json(&in_both.recv());
            (str_at(&v, &["room"]).to_owned(), u64_at(&v, &["seq"]))
        })
        .collect();
    // Per room, in seq order.
    let a: Vec<u64> = got
        .iter()
        .filter(|(r, _)| r == "room-a")
        .map(|(_, s)| *s)
        .collect();
    let b: Vec<u64> = got
        .iter()
        .filter(|(r, _)| r == "room-b")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(a, [1, 2, 3]);
    assert_eq!(b, [1, 2, 3]);
}

#[test]
fn unknown_fields_are_ignored_in_room_events() {
    let (_server, mut a, mut b) = alice_and_bob_in_lobby(&[]);
    a.send(r#"{"x":1,"event":"chat:message","extra":{"y":[]},"room":"lobby","data":{"k":"v"},"id":"e1"}"#);
    let ack = common::parse_json(&a.recv());
    assert_eq!(json_at(&ack, &["id"]).and_then(|v| v.as_str()), Some("e1"));
    let seq = ack_seq(&ack);
    assert_room_event(
        &b.recv(),
        "chat:message",
        "lobby",
        r#"{"k":"v"}"#,
        "alice",
        seq,
    );
}

#[test]
fn a_disconnected_member_is_no_longer_counted() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut a = Client::user(addr, "a");
    a.join("lobby");
    {
        let mut b = Client::user(addr, "b");
        assert_eq!(u64_at(&b.join("lobby"), &["members"]), 2);
        common::reset(b.ws.into_inner());
    }
    common::wait_until(Duration::from_secs(5), "the member count to drop", || {
        let mut c = Client::user(addr, "c");
        let n = u64_at(&c.join("lobby"), &["members"]);
        n == 2
    });
}

#[test]
fn join_and_publish_pipelined_without_waiting_for_the_join_ack() {
    // docs/protocol.md: a publish after a room:join on the same connection is
    // handled after the join.
    let server = Server::start(&["--presence-rooms", "presence-only"]);
    let addr = server.addr();
    let mut member = Client::user(addr, "member");
    member.join("lobby");
    let mut c = Client::user(addr, "eager");
    c.send(r#"{"event":"room:join","data":{"room":"lobby"},"id":"j"}"#);
    c.send(r#"{"event":"chat:message","room":"lobby","data":"now","id":"p"}"#);
    ok_data(&common::parse_json(&c.wait_ack("j")));
    let seq = ack_seq(&common::parse_json(&c.wait_ack("p")));
    assert_room_event(
        &member.recv(),
        "chat:message",
        "lobby",
        r#""now""#,
        "eager",
        seq,
    );
}

#[test]
fn echo_that_is_not_a_boolean_is_a_validation_error() {
    // docs/protocol.md decision.
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    c.join("lobby");
    let ack = c.request("chat:message", "1", r#""room":"lobby","echo":"yes""#);
    assert_eq!(common::rooms::ack_error(&ack), "VALIDATION_ERROR");
}

#[test]
fn numbers_beyond_64_bits_in_data_reach_members_verbatim() {
    let (_server, mut alice, mut bob) = alice_and_bob_in_lobby(&[]);
    for data in [
        "1e30",
        "18446744073709551616",
        "-9223372036854775809",
        "1.8e308",
        "[-1e400, 0.31415926535897932384626433832795028841971693993751]",
        r#"{"n":123456789012345678901234567890,"s":"\"1e999\""}"#,
    ] {
        alice.publish_ok("lobby", "feed:big", data);
        let text = bob.recv();
        assert!(
            text.contains(&format!(r#","data":{data},"#)),
            "{data} not verbatim in {text}"
        );
    }
}

#[test]
fn an_id_beyond_64_bits_is_a_validation_error() {
    let (_server, mut alice, _bob) = alice_and_bob_in_lobby(&[]);
    alice.send(r#"{"event":"feed:big","room":"lobby","data":1,"id":18446744073709551616}"#);
    let text = alice.recv();
    assert!(text.contains(r#""code":"VALIDATION_ERROR""#), "{text}");
}
