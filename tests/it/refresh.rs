//! Token expiry on open connections and `connection:refresh`
//! (PROTOCOL.md sections 2 and 6).

use crate::common;

use std::thread;
use std::time::{Duration, Instant};

use common::rooms::{Claims, Client, ack_error, keys, ok_data, q, u64_at};
use common::token::{alg_none_token, expired_token, now, wrongly_signed_token};
use common::{Server, json_at};

fn refresh(c: &mut Client, token: &str) -> simd_json::OwnedValue {
    c.request(
        "connection:refresh",
        &format!(r#"{{"token":{}}}"#, q(token)),
        "",
    )
}

#[test]
fn a_short_lived_token_closes_a_room_member_4002() {
    let server = Server::start(&[]);
    let exp = now() + 2;
    let mut c = Client::connect(server.addr(), &Claims::new("u1").exp(exp).token());
    c.join("lobby");
    assert_eq!(c.expect_close(Duration::from_secs(10)), 4002);
}

#[test]
fn refresh_with_a_fresh_token_keeps_the_connection_past_the_old_expiry() {
    let server = Server::start(&[]);
    let addr = server.addr();
    let old_exp = now() + 2;
    let mut c = Client::connect(addr, &Claims::new("u1").exp(old_exp).token());
    c.join("lobby");
    let new_exp = now() + 3600;
    let ack = refresh(&mut c, &Claims::new("u1").exp(new_exp).token());
    let data = ok_data(&ack);
    assert_eq!(keys(data), ["exp"], "{ack:?}");
    assert_eq!(u64_at(data, &["exp"]), new_exp);
    // Past the old deadline, with a margin.
    let until = Instant::now() + Duration::from_secs(old_exp + 2 - now());
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(200));
    }
    c.assert_open();
    // Still a member.
    let mut other = Client::user(addr, "u2");
    other.join("lobby");
    let seq = other.publish_ok("lobby", "chat:message", "1");
    common::rooms::assert_room_event(
        &c.recv_skip_presence(),
        "chat:message",
        "lobby",
        "1",
        "u2",
        seq,
    );
}

#[test]
fn refresh_for_another_sub_is_forbidden_and_the_old_deadline_stands() {
    let server = Server::start(&[]);
    let exp = now() + 3;
    let mut c = Client::connect(server.addr(), &Claims::new("u1").exp(exp).token());
    let ack = refresh(&mut c, &Claims::new("u2").token());
    assert_eq!(ack_error(&ack), "FORBIDDEN");
    c.assert_open();
    assert_eq!(c.expect_close(Duration::from_secs(10)), 4002);
}

#[test]
fn refresh_with_an_expired_token_is_token_expired() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    let ack = refresh(&mut c, &expired_token("u1"));
    assert_eq!(ack_error(&ack), "TOKEN_EXPIRED");
    let not_yet = common::mint(&format!(
        r#"{{"sub":"u1","exp":{},"nbf":{}}}"#,
        now() + 7200,
        now() + 3600
    ));
    let ack = refresh(&mut c, &not_yet);
    assert_eq!(ack_error(&ack), "TOKEN_EXPIRED", "nbf in the future");
    c.assert_open();
}

#[test]
fn refresh_with_garbage_is_unauthenticated() {
    let server = Server::start(&[]);
    let mut c = Client::user(server.addr(), "u1");
    for bad in [
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        wrongly_signed_token("u1"),
        alg_none_token("u1"),
        common::mint(r#"{"sub":"u1"}"#),
    ] {
        let ack = refresh(&mut c, &bad);
        assert_eq!(ack_error(&ack), "UNAUTHENTICATED", "token {bad}");
        assert!(
            !common::rooms::str_at(&ack, &["error", "message"]).contains(&bad),
            "the error echoes the token"
        );
    }
    c.assert_open();
}

#[test]
fn failed_refresh_keeps_the_old_deadline() {
    let server = Server::start(&[]);
    let exp = now() + 3;
    let mut c = Client::connect(server.addr(), &Claims::new("u1").exp(exp).token());
    let ack = refresh(&mut c, "garbage");
    assert_eq!(ack_error(&ack), "UNAUTHENTICATED");
    let ack = refresh(&mut c, &expired_token("u1"));
    assert_eq!(ack_error(&ack), "TOKEN_EXPIRED");
    assert_eq!(c.expect_close(Duration::from_secs(10)), 4002);
}

#[test]
fn refresh_with_jwt_leeway_moves_the_deadline_to_exp_plus_leeway() {
    let server = Server::start(&["--jwt-leeway", "5"]);
    let mut c = Client::user(server.addr(), "u1");
    // Expired a second ago but within the leeway: accepted, and the
    // connection closes at exp + 5.
    let exp = now() - 1;
    let ack = refresh(&mut c, &Claims::new("u1").exp(exp).token());
    assert!(
        json_at(&ack, &["success"]).is_some(),
        "no success field: {ack:?}"
    );
    assert_eq!(u64_at(ok_data(&ack), &["exp"]), exp);
    assert_eq!(c.expect_close(Duration::from_secs(10)), 4002);
}

#[test]
fn refreshed_claims_apply_to_later_messages() {
    // docs/protocol.md: after a refresh the new token's rooms, pub and admin
    // apply; rooms already joined are kept.
    let server = Server::start(&[]);
    let addr = server.addr();
    let mut watcher = Client::user(addr, "watcher");
    let mut c = Client::connect(addr, &Claims::new("u1").rooms(&["a"]).token());
    c.join("a");
    let ack = c.join_with(r#"{"room":"b"}"#);
    assert_eq!(ack_error(&ack), "FORBIDDEN");
    let ack = c.request("system:broadcast", r#"{"event":"system:x","data":1}"#, "");
    assert_eq!(ack_error(&ack), "FORBIDDEN");
    let fresh = Claims::new("u1").rooms(&["b"]).admin(true).token();
    ok_data(&refresh(&mut c, &fresh));
    c.join("b");
    let ack = c.request("system:broadcast", r#"{"event":"system:x","data":1}"#, "");
    assert_eq!(u64_at(ok_data(&ack), &["delivered"]), 1);
    assert_eq!(
        common::rooms::str_at(&watcher.recv_json(), &["event"]),
        "system:x"
    );
    // Still in `a`, where members may publish.
    c.publish_ok("a", "chat:message", "1");
}
