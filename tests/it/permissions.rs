//! Who may join and publish (PROTOCOL.md sections 2, 6 and 7): `rooms`
//! patterns (exact, prefix, `*`, absent = `--default-rooms`), `pub` without
//! membership, `--members-publish`, the NOT_IN_ROOM / FORBIDDEN rule, and the
//! admin-only `system:broadcast`.

use crate::common;

use std::time::Duration;

use common::Server;
use common::rooms::{
    Claims, Client, ack_error, assert_room_event, keys, now_ms, ok_data, q, sorted, str_at, u64_at,
};

const QUIET: Duration = Duration::from_millis(300);

/// The code of a failed join, or "OK".
fn join_result(c: &mut Client, room: &str) -> String {
    let ack = c.join_with(&format!(r#"{{"room":{}}}"#, q(room)));
    if common::json_at(&ack, &["success"]).and_then(simd_json::prelude::ValueAsScalar::as_bool)
        == Some(true)
    {
        "OK".into()
    } else {
        ack_error(&ack)
    }
}

/// The code of a failed publish, or "OK".
fn publish_result(c: &mut Client, room: &str) -> String {
    let ack = c.publish(room, "chat:message", "1");
    if common::json_at(&ack, &["success"]).and_then(simd_json::prelude::ValueAsScalar::as_bool)
        == Some(true)
    {
        "OK".into()
    } else {
        ack_error(&ack)
    }
}

fn check_joins(server: &Server, claims: Claims, cases: &[(&str, &str)]) {
    let mut c = Client::connect(server.addr(), &claims.token());
    for (room, want) in cases {
        assert_eq!(
            join_result(&mut c, room),
            *want,
            "join {room} with {claims:?}"
        );
    }
}

#[test]
fn rooms_claim_with_an_exact_name() {
    let server = Server::start(&[]);
    check_joins(
        &server,
        Claims::new("u1").rooms(&["lobby"]),
        &[
            ("lobby", "OK"),
            ("lobby2", "FORBIDDEN"),
            ("lobb", "FORBIDDEN"),
            ("Lobby", "FORBIDDEN"),
            ("other", "FORBIDDEN"),
        ],
    );
}

#[test]
fn rooms_claim_with_a_prefix_pattern() {
    let server = Server::start(&[]);
    check_joins(
        &server,
        Claims::new("u1").rooms(&["prices:*", "chat/eu"]),
        &[
            ("prices:btc", "OK"),
            ("prices:eth:usd", "OK"),
            ("prices", "FORBIDDEN"),
            ("pricesx", "FORBIDDEN"),
            ("xprices:btc", "FORBIDDEN"),
            ("chat/eu", "OK"),
            ("chat/us", "FORBIDDEN"),
        ],
    );
}

#[test]
fn rooms_claim_star_allows_every_room() {
    let server = Server::start(&["--default-rooms", "lobby"]);
    check_joins(
        &server,
        Claims::new("u1").rooms(&["*"]),
        &[("lobby", "OK"), ("anything", "OK"), ("a.b@c/d-e:f", "OK")],
    );
}

#[test]
fn empty_rooms_claim_allows_no_room() {
    let server = Server::start(&[]);
    check_joins(
        &server,
        Claims::new("u1").rooms(&[]),
        &[("lobby", "FORBIDDEN"), ("x", "FORBIDDEN")],
    );
}

#[test]
fn absent_rooms_claim_falls_back_to_default_rooms() {
    let server = Server::start(&["--default-rooms", "lobby,public:*"]);
    check_joins(
        &server,
        Claims::new("u1"),
        &[
            ("lobby", "OK"),
            ("public:news", "OK"),
            ("private", "FORBIDDEN"),
            ("lobby2", "FORBIDDEN"),
        ],
    );
    // A rooms claim replaces the default, it does not add to it.
    check_joins(
        &server,
        Claims::new("u2").rooms(&["secret"]),
        &[
            ("secret", "OK"),
            ("lobby", "FORBIDDEN"),
            ("public:news", "FORBIDDEN"),
        ],
    );
}

#[test]
fn default_rooms_default_is_star() {
    let server = Server::start(&[]);
    check_joins(
        &server,
        Claims::new("u1"),
        &[("lobby", "OK"), ("anything:at/all", "OK")],
    );
}

#[test]
fn default_rooms_from_the_environment() {
    let mut cmd = Server::single_command();
    cmd.env("ROOMCAST_DEFAULT_ROOMS", "env-room");
    let server = Server::spawn(cmd);
    check_joins(
        &server,
        Claims::new("u1"),
        &[("env-room", "OK"), ("lobby", "FORBIDDEN")],
    );
}

#[test]
fn pub_claim_publishes_without_membership_and_members_receive() {
    let server = Server::start(&["--presence-rooms", "presence-only"]);
    let addr = server.addr();
    let mut feed = Client::connect(
        addr,
        &Claims::new("feed")
            .rooms(&[])
            .publish(&["prices:*"])
            .token(),
    );
    let mut member = Client::user(addr, "member");
    member.join("prices:btc");
    let seq = feed.publish_ok("prices:btc", "price:tick", r#"{"p":1.5}"#);
    assert_eq!(seq, 1);
    assert_room_event(
        &member.recv(),
        "price:tick",
        "prices:btc",
        r#"{"p":1.5}"#,
        "feed",
        seq,
    );
    // A room nobody joined is fine too.
    feed.publish_ok("prices:eth", "price:tick", "2");
    // Outside `pub` and `rooms`: FORBIDDEN.
    assert_eq!(publish_result(&mut feed, "lobby"), "FORBIDDEN");
    // `pub` does not let one join.
    assert_eq!(join_result(&mut feed, "prices:btc"), "FORBIDDEN");
    // The publisher is not a member: it gets nothing back.
    feed.assert_quiet(QUIET);
}

#[test]
fn not_in_room_when_joinable_forbidden_when_not() {
    let server = Server::start(&[]);
    let mut c = Client::connect(server.addr(), &Claims::new("u1").rooms(&["lobby"]).token());
    assert_eq!(publish_result(&mut c, "lobby"), "NOT_IN_ROOM");
    assert_eq!(publish_result(&mut c, "elsewhere"), "FORBIDDEN");
    c.join("lobby");
    assert_eq!(publish_result(&mut c, "lobby"), "OK");
}

#[test]
fn members_publish_false_requires_pub() {
    let server = Server::start(&["--members-publish=false"]);
    let addr = server.addr();
    let mut member = Client::user(addr, "member");
    member.join("lobby");
    // A member without `pub`: FORBIDDEN (not NOT_IN_ROOM).
    assert_eq!(publish_result(&mut member, "lobby"), "FORBIDDEN");
    // A joinable room one has not joined: FORBIDDEN too, since members may not publish.
    assert_eq!(publish_result(&mut member, "other"), "FORBIDDEN");
    // `pub` still works, member or not.
    let mut both = Client::connect(addr, &Claims::new("both").publish(&["lobby"]).token());
    both.join("lobby");
    assert_eq!(publish_result(&mut both, "lobby"), "OK");
    let mut outside = Client::connect(
        addr,
        &Claims::new("outside")
            .rooms(&[])
            .publish(&["lobby"])
            .token(),
    );
    assert_eq!(publish_result(&mut outside, "lobby"), "OK");
}

#[test]
fn members_publish_true_is_the_default_and_explicit() {
    let server = Server::start(&["--members-publish=true"]);
    let mut member = Client::user(server.addr(), "member");
    member.join("lobby");
    assert_eq!(publish_result(&mut member, "lobby"), "OK");
}

#[test]
fn members_publish_from_the_environment() {
    let mut cmd = Server::single_command();
    cmd.env("ROOMCAST_MEMBERS_PUBLISH", "false");
    let server = Server::spawn(cmd);
    let mut member = Client::user(server.addr(), "member");
    member.join("lobby");
    assert_eq!(publish_result(&mut member, "lobby"), "FORBIDDEN");
}

#[test]
fn broadcast_is_admin_only() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut plain = Client::user(addr, "plain");
    let mut not_admin = Client::connect(addr, &Claims::new("na").admin(false).token());
    let mut watcher = Client::user(addr, "watcher");
    for c in [&mut plain, &mut not_admin] {
        let ack = c.request(
            "system:broadcast",
            r#"{"event":"system:notice","data":1}"#,
            "",
        );
        assert_eq!(ack_error(&ack), "FORBIDDEN");
    }
    watcher.assert_quiet(QUIET);
}

#[test]
fn admin_broadcast_reaches_every_other_ws_connection_on_both_shards() {
    let server = Server::start(&["--shards", "2", "--accept", "handoff"]);
    let addr = server.addr();
    let mut admin = Client::connect(addr, &Claims::new("root").admin(true).token());
    // Consecutive connections alternate shards; some in rooms, some not, one
    // the admin's own second connection.
    let mut others: Vec<Client> = (0..6)
        .map(|i| {
            let sub = if i == 5 {
                "root".to_owned()
            } else {
                format!("u{i}")
            };
            Client::user(addr, &sub)
        })
        .collect();
    others[0].join("lobby");
    others[3].join("elsewhere");
    let data = r#"{"text" : "maintenance at 10:00", "n": [1.0, "\u00e9"]}"#;
    let ack = admin.request(
        "system:broadcast",
        &format!(r#"{{"event":"system:notice","data":{data}}}"#),
        "",
    );
    let ack_data = ok_data(&ack);
    assert_eq!(u64_at(ack_data, &["delivered"]), 6, "{ack:?}");
    let now = now_ms();
    for (i, c) in others.iter_mut().enumerate() {
        let text = c.recv();
        let v = common::parse_json(&text);
        assert_eq!(keys(&v), sorted(&["event", "data", "from", "ts"]), "{text}");
        assert_eq!(str_at(&v, &["event"]), "system:notice");
        assert_eq!(str_at(&v, &["from"]), "root");
        assert!(u64_at(&v, &["ts"]).abs_diff(now) < 120_000);
        assert!(
            text.contains(&format!(r#""data":{data}"#)),
            "connection {i}: data not verbatim in {text}"
        );
    }
    admin.assert_quiet(QUIET);

    // An event outside the reserved namespaces is allowed too.
    let ack = admin.request(
        "system:broadcast",
        r#"{"event":"alerts:maintenance","data":null}"#,
        "",
    );
    assert_eq!(u64_at(ok_data(&ack), &["delivered"]), 6);
    for c in &mut others {
        let v = c.recv_json();
        assert_eq!(str_at(&v, &["event"]), "alerts:maintenance");
    }
}

#[test]
fn broadcast_event_must_be_outside_reserved_namespaces_or_in_system() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut admin = Client::connect(addr, &Claims::new("root").admin(true).token());
    let mut watcher = Client::user(addr, "watcher");
    for event in [
        "room:join",
        "user:message",
        "presence:join",
        "connection:refresh",
        "ack",
        "error",
        "Bad:Name",
        "nocolon",
    ] {
        let ack = admin.request(
            "system:broadcast",
            &format!(r#"{{"event":{},"data":1}}"#, q(event)),
            "",
        );
        assert_eq!(
            ack_error(&ack),
            "VALIDATION_ERROR",
            "broadcast event {event}"
        );
    }
    let ack = admin.request("system:broadcast", r#"{"data":1}"#, "");
    assert_eq!(ack_error(&ack), "VALIDATION_ERROR", "no event");
    watcher.assert_quiet(QUIET);
}

#[test]
fn room_claims_of_the_wrong_type_are_refused_at_the_upgrade() {
    let server = Server::start(&[]);
    let exp = common::token::now() + 3600;
    for claims in [
        format!(r#"{{"sub":"u1","exp":{exp},"pub":"lobby"}}"#),
        format!(r#"{{"sub":"u1","exp":{exp},"pub":[1]}}"#),
        format!(r#"{{"sub":"u1","exp":{exp},"rooms":[true]}}"#),
        format!(r#"{{"sub":"u1","exp":{exp},"admin":1}}"#),
        format!(r#"{{"sub":"u1","exp":{exp},"rate":"10"}}"#),
        format!(r#"{{"sub":"u1","exp":{exp},"name":5}}"#),
    ] {
        let req = common::UpgradeRequest::new("/ws").bearer(&common::mint(&claims));
        let resp = req.send(server.addr());
        assert_eq!(resp.status, 401, "claims {claims}: {resp:?}");
        assert_eq!(resp.error_code(), "UNAUTHENTICATED", "claims {claims}");
    }
}
