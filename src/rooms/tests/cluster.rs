//! Cluster mode: Redis sequences; the bridge is scripted here, answering
//! the requests the routers queued as the real one would.

use super::*;
use crate::proto::JoinRecovery;
use crate::redis::requests::{DirectMessage, FromHere, RoomEvent, Unavailable};
use crate::redis::{History, Presence, PresentUser, Sequenced};
use crate::rooms::bus::PublishAnswer;

/// The bridge's requests, by kind, for assertions.
fn kinds(requests: &[(usize, BridgeRequest<BridgeAnswer>)]) -> Vec<&'static str> {
    requests
        .iter()
        .map(|(_, r)| match r {
            BridgeRequest::Publish { .. } => "publish",
            BridgeRequest::Volatile { .. } => "volatile",
            BridgeRequest::Join { .. } => "join",
            BridgeRequest::Leave { .. } => "leave",
            BridgeRequest::PresenceGet { .. } => "presence",
            BridgeRequest::Online { .. } => "online",
            BridgeRequest::Send { .. } => "send",
            BridgeRequest::Sync { .. } => "sync",
            BridgeRequest::ApiCast { .. } => "api",
            BridgeRequest::History { .. } => "history",
            BridgeRequest::HistoryRemove { .. } => "history_remove",
            BridgeRequest::RoomUsers { .. } => "room_users",
            BridgeRequest::Serve { .. } => "serve",
            BridgeRequest::Unserve { .. } => "unserve",
            BridgeRequest::Stop => "stop",
        })
        .collect()
}

fn history(seq: u64, messages: &[&str]) -> History {
    History {
        epoch: "n1-1".into(),
        seq,
        recovered: None,
        messages: messages.iter().map(|m| m.as_bytes().to_vec()).collect(),
    }
}

/// Answers every `Join` queued with `history` and `members`, and returns
/// the other requests.
fn answer_joins(
    s: &mut Shards,
    outcome: impl Fn() -> Result<(History, u64), Unavailable>,
) -> Vec<(usize, BridgeRequest<BridgeAnswer>)> {
    let mut rest = Vec::new();
    for (shard, request) in s.take_bridge() {
        match request {
            BridgeRequest::Join { answer, .. } => {
                s.bridge_sends(shard, FromBridge::Joined(answer, outcome()));
            }
            other => rest.push((shard, other)),
        }
    }
    rest
}

/// A connection of `user` on `shard` joined `room`, its join answered by Redis.
fn joined(s: &mut Shards, shard: usize, user: &str, room: &str) -> ConnRef {
    let conn = s.connect(shard, user);
    s.request(conn, join(room, id(1)));
    answer_joins(s, || Ok((history(0, &[]), 1)));
    let got = s.got(conn);
    assert!(answers(&got)[0].contains("\"success\":true"), "{got:?}");
    conn
}

/// A room event as Redis publishes it on the room's channel.
fn event(room: &str, seq: u64, from_here: Option<FromHere>) -> RoomEvent {
    RoomEvent {
        room: room.into(),
        epoch: "n1-1".into(),
        seq,
        frame: wire::room_frame("chat", room, b"1", "alice", seq, 5),
        from_here,
        presence: false,
        volatile: false,
    }
}

fn presence_event(room: &str) -> RoomEvent {
    RoomEvent {
        room: room.into(),
        epoch: "".into(),
        seq: 0,
        frame: wire::text_frame(&wire::presence_join(room, "bob", None)),
        from_here: None,
        presence: true,
        volatile: false,
    }
}

#[test]
fn a_join_serves_the_room_then_asks_redis_for_its_history() {
    let mut s = Setup::cluster(2).build();
    let room = room_owned_by(1, 2, "r");
    let alice = s.connect(0, "alice");
    s.take_bridge();
    s.request(alice, join(&room, id(1)));
    let requests = s.take_bridge();
    assert_eq!(kinds(&requests), ["serve", "join"]);
    assert!(
        requests.iter().all(|(shard, _)| *shard == 1),
        "asked by the owner"
    );
}

#[test]
fn a_join_is_acked_with_the_history_redis_returned() {
    let mut s = Setup::cluster(2).build();
    let alice = s.connect(0, "alice");
    s.request(alice, join("lobby", id(3)));
    answer_joins(&mut s, || {
        Ok((history(7, &[r#"{"m":6}"#, r#"{"m":7}"#]), 4))
    });
    assert_eq!(
        answers(&s.got(alice)),
        [
            r#"{"event":"ack","id":3,"success":true,"data":{"room":"lobby","epoch":"n1-1","seq":7,"messages":[{"m":6},{"m":7}],"members":4}}"#
        ]
    );
    assert!(s.is_member(alice, "lobby"));
}

#[test]
fn a_join_redis_could_not_take_is_refused_unavailable() {
    let mut s = Setup::cluster(2).build();
    let alice = s.connect(1, "alice");
    s.request(alice, join("lobby", id(2)));
    answer_joins(&mut s, || Err(Unavailable));
    let rest = s.take_bridge();
    assert_eq!(
        answers(&s.got(alice)),
        [
            r#"{"event":"ack","id":2,"success":false,"error":{"code":"UNAVAILABLE","message":"the cluster's Redis is unreachable; try again"}}"#
        ]
    );
    assert!(!s.is_member(alice, "lobby"));
    assert!(kinds(&rest).contains(&"unserve"), "{:?}", kinds(&rest));
}

#[test]
fn a_rejoin_redis_could_not_take_keeps_the_membership() {
    let mut s = Setup::cluster(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    s.request(
        alice,
        Request::Join {
            room: "lobby".into(),
            id: id(9),
            recovery: JoinRecovery::default(),
            rejoin: true,
            meta: None,
            min_interval: None,
            delta: false,
        },
    );
    answer_joins(&mut s, || Err(Unavailable));
    assert!(answers(&s.got(alice))[0].contains("UNAVAILABLE"));
    assert!(s.is_member(alice, "lobby"), "only the request failed");
}

#[test]
fn a_publish_goes_to_redis_and_its_ack_comes_back_through_the_owner() {
    let mut s = Setup::cluster(2).build();
    let room = room_owned_by(1, 2, "r");
    let alice = joined(&mut s, 0, "alice", &room);
    s.take_bridge();
    s.request(alice, publish(&room, "1", false, id(4)));
    let mut requests = s.take_bridge();
    let Some((1, BridgeRequest::Publish { origin, answer, .. })) = requests.pop() else {
        panic!("a publish from the owner")
    };
    assert!(origin.starts_with("n1/"), "{origin}");
    assert!(
        origin.ends_with(&format!("/0.{}.{}", alice.key, alice.id)),
        "{origin}"
    );
    assert!(
        events(&s.got(alice)).is_empty(),
        "nothing before Redis sequenced it"
    );
    let sequenced = Sequenced {
        seq: 12,
        epoch: "n1-1".into(),
    };
    s.bridge_sends(1, FromBridge::Sequenced(answer, Ok(sequenced)));
    assert_eq!(
        answers(&s.got(alice)),
        [r#"{"event":"ack","id":4,"success":true,"data":{"seq":12}}"#]
    );
    assert_eq!(s.publishes(), 1);
}

#[test]
fn a_publish_redis_refused_is_answered_unavailable() {
    let mut s = Setup::cluster(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    s.take_bridge();
    s.request(alice, publish("lobby", "1", true, id(4)));
    let (_, BridgeRequest::Publish { answer, .. }) = s.take_bridge().remove(0) else {
        panic!()
    };
    s.bridge_sends(0, FromBridge::Sequenced(answer, Err(Unavailable)));
    assert!(answers(&s.got(alice))[0].contains(r#""code":"UNAVAILABLE""#));
    assert_eq!(s.publishes(), 0);
}

#[test]
fn a_publish_without_an_id_redis_refused_gets_an_error_event() {
    let mut s = Setup::cluster(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    s.take_bridge();
    s.request(alice, publish("lobby", "1", true, None));
    let (_, BridgeRequest::Publish { answer, .. }) = s.take_bridge().remove(0) else {
        panic!()
    };
    s.bridge_sends(0, FromBridge::Sequenced(answer, Err(Unavailable)));
    assert!(
        answers(&s.got(alice))[0].starts_with(r#"{"event":"error","data":{"code":"UNAVAILABLE""#)
    );
}

#[test]
fn an_http_publish_redis_refused_is_answered_refused() {
    let mut s = Setup::cluster(2).build();
    let http = s.http_publish(0, 2, "feed", "1");
    let (shard, BridgeRequest::Publish { answer, .. }) = s
        .take_bridge()
        .into_iter()
        .find(|(_, r)| matches!(r, BridgeRequest::Publish { .. }))
        .unwrap()
    else {
        panic!()
    };
    assert!(matches!(
        &answer,
        BridgeAnswer::Publish {
            answer: PublishAnswer::Http { index: 2 },
            ..
        }
    ));
    s.bridge_sends(shard, FromBridge::Sequenced(answer, Err(Unavailable)));
    assert_eq!(s.got(http), [Got::Published(2, None)]);
}

#[test]
fn room_events_from_redis_reach_members_on_every_shard() {
    let mut s = Setup::cluster(3).build();
    let room = room_owned_by(2, 3, "r");
    let members: Vec<ConnRef> = (0..3)
        .map(|i| joined(&mut s, i, &format!("u{i}"), &room))
        .collect();
    for seq in 1..=3 {
        s.bridge_sends(2, FromBridge::Event(event(&room, seq, None)));
    }
    for member in members {
        let seqs: Vec<u64> = events(&s.got(member)).iter().map(|t| seq_of(t)).collect();
        assert_eq!(seqs, [1, 2, 3]);
    }
    assert_eq!(s.deliveries(), 9);
}

#[test]
fn a_room_event_this_node_published_without_echo_leaves_out_the_publisher() {
    let mut s = Setup::cluster(2).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let bob = joined(&mut s, 1, "bob", "lobby");
    let owner = owner_of("lobby", 2);
    let from_here = FromHere {
        read_micros: 10,
        exclude: Some(alice),
    };
    s.bridge_sends(owner, FromBridge::Event(event("lobby", 1, Some(from_here))));
    assert!(events(&s.got(alice)).is_empty());
    assert_eq!(events(&s.got(bob)).len(), 1);
}

#[test]
fn an_event_with_a_read_time_past_any_instant_does_not_panic() {
    let mut s = Setup::cluster(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let from_here = FromHere {
        read_micros: u64::MAX,
        exclude: None,
    };
    s.bridge_sends(0, FromBridge::Event(event("lobby", 1, Some(from_here))));
    assert_eq!(events(&s.got(alice)).len(), 1);
}

#[test]
fn presence_from_redis_is_delivered_as_presence_not_as_a_room_event() {
    let mut s = Setup::cluster(2).build();
    let alice = joined(&mut s, 0, "alice", "chat:1");
    let owner = owner_of("chat:1", 2);
    s.bridge_sends(owner, FromBridge::Event(presence_event("chat:1")));
    assert_eq!(
        s.got(alice),
        [Got::Other(
            r#"{"event":"presence:join","room":"chat:1","data":{"userId":"bob","name":null}}"#
                .into()
        )]
    );
    assert_eq!(s.deliveries(), 0, "presence is not a delivery");
}

#[test]
fn room_events_from_redis_count_for_the_busiest_rooms_and_presence_does_not() {
    let mut s = Setup::cluster(2).build();
    joined(&mut s, 0, "alice", "chat:1");
    let owner = owner_of("chat:1", 2);
    s.bridge_sends(owner, FromBridge::Event(event("chat:1", 1, None)));
    s.bridge_sends(owner, FromBridge::Event(event("chat:1", 2, None)));
    s.bridge_sends(owner, FromBridge::Event(presence_event("chat:1")));
    let busiest = s.router(owner).busiest(5);
    assert_eq!(busiest.len(), 1);
    assert_eq!((busiest[0].0.as_ref(), busiest[0].2), ("chat:1", 2));
}

#[test]
fn the_last_leave_tells_redis_and_stops_serving_the_room() {
    let mut s = Setup::cluster(2).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let bob = joined(&mut s, 1, "bob", "lobby");
    s.take_bridge();
    s.request(alice, leave("lobby"));
    assert_eq!(kinds(&s.take_bridge()), ["leave"]);
    s.request(bob, leave("lobby"));
    assert_eq!(kinds(&s.take_bridge()), ["leave", "unserve"]);
}

#[test]
fn a_leave_while_a_join_is_in_flight_keeps_the_room_served() {
    let mut s = Setup::cluster(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let bob = s.connect(0, "bob");
    s.take_bridge();
    s.request(bob, join("lobby", id(1)));
    s.request(alice, leave("lobby"));
    let requests = s.take_bridge();
    assert_eq!(
        kinds(&requests),
        ["join", "leave"],
        "no unserve: a join is out"
    );
}

#[test]
fn the_room_limit_counts_joins_still_waiting_for_redis() {
    let mut s = Setup::cluster(1).max_room_members(1).build();
    let alice = s.connect(0, "alice");
    let bob = s.connect(0, "bob");
    s.request(alice, join("small", id(1)));
    s.request(bob, join("small", id(2)));
    assert!(answers(&s.got(bob))[0].contains("ROOM_FULL"));
    answer_joins(&mut s, || Ok((history(0, &[]), 1)));
    assert!(answers(&s.got(alice))[0].contains("\"success\":true"));
}

#[test]
fn presence_get_asks_redis_through_the_owner() {
    let mut s = Setup::cluster(2).build();
    let alice = joined(&mut s, 0, "alice", "chat:1");
    s.take_bridge();
    s.request(alice, presence_get("chat:1", id(6)));
    let (shard, BridgeRequest::PresenceGet { answer, .. }) = s.take_bridge().remove(0) else {
        panic!()
    };
    assert_eq!(shard, owner_of("chat:1", 2));
    let presence = Presence {
        users: 2,
        connections: 3,
        listed: vec![PresentUser {
            user: "alice".into(),
            name: Some("Alice".into()),
            connections: 2,
        }],
    };
    s.bridge_sends(shard, FromBridge::Presence(answer, Ok(presence)));
    assert_eq!(
        answers(&s.got(alice)),
        [
            r#"{"event":"ack","id":6,"success":true,"data":{"room":"chat:1","count":2,"users":[{"userId":"alice","name":"Alice","connections":2}],"truncated":true}}"#
        ]
    );
}

#[test]
fn presence_get_redis_could_not_take_is_answered_unavailable() {
    let mut s = Setup::cluster(1).build();
    let alice = joined(&mut s, 0, "alice", "chat:1");
    s.take_bridge();
    s.request(alice, presence_get("chat:1", id(6)));
    let (_, BridgeRequest::PresenceGet { answer, .. }) = s.take_bridge().remove(0) else {
        panic!()
    };
    s.bridge_sends(0, FromBridge::Presence(answer, Err(Unavailable)));
    assert!(answers(&s.got(alice))[0].contains("UNAVAILABLE"));
}

#[test]
fn user_send_goes_to_redis_once_and_acks_the_count_redis_gave() {
    let mut s = Setup::cluster(2).build();
    let alice = s.connect(0, "alice");
    s.take_bridge();
    s.request(alice, user_send("alice", "{}", id(1)));
    let mut requests = s.take_bridge();
    assert_eq!(kinds(&requests), ["send"]);
    let (shard, BridgeRequest::Send { to, answer, .. }) = requests.remove(0) else {
        panic!()
    };
    assert_eq!(to.as_deref(), Some("alice"));
    s.bridge_sends(shard, FromBridge::Sent(answer, Ok(3)));
    assert_eq!(
        answers(&s.got(alice)),
        [r#"{"event":"ack","id":1,"success":true,"data":{"delivered":2}}"#],
        "the sender's own connection is not counted"
    );
}

#[test]
fn a_broadcast_redis_could_not_take_is_answered_unavailable() {
    let mut s = Setup::cluster(1).build();
    let alice = s.connect(0, "alice");
    s.take_bridge();
    s.request(alice, broadcast("{}", id(1)));
    let (_, BridgeRequest::Send { answer, .. }) = s.take_bridge().remove(0) else {
        panic!()
    };
    s.bridge_sends(0, FromBridge::Sent(answer, Err(Unavailable)));
    assert!(answers(&s.got(alice))[0].contains("UNAVAILABLE"));
}

#[test]
fn a_direct_message_reaches_the_users_connections_here_but_its_sender() {
    let mut s = Setup::cluster(2).build();
    let a1 = s.connect(0, "alice");
    let a2 = s.connect(1, "alice");
    let bob = s.connect(1, "bob");
    let message = DirectMessage {
        to: Some("alice".into()),
        frame: wire::text_frame(b"{\"dm\":1}"),
        twin: Default::default(),
        exclude: Some(a1),
    };
    for shard in 0..2 {
        s.bridge_sends(shard, FromBridge::Direct(message.clone()));
    }
    assert!(s.got(a1).is_empty());
    assert_eq!(s.got(a2), [Got::Other("{\"dm\":1}".into())]);
    assert!(s.got(bob).is_empty());
}

#[test]
fn a_broadcast_from_another_node_reaches_everyone_here() {
    let mut s = Setup::cluster(2).build();
    let conns: Vec<ConnRef> = (0..4).map(|i| s.connect(i % 2, &format!("u{i}"))).collect();
    let message = DirectMessage {
        to: None,
        frame: wire::text_frame(b"{}"),
        twin: Default::default(),
        exclude: None,
    };
    for shard in 0..2 {
        s.bridge_sends(shard, FromBridge::Direct(message.clone()));
    }
    for conn in conns {
        assert_eq!(s.got(conn).len(), 1);
    }
    assert_eq!(s.deliveries(), 0);
}

#[test]
fn the_online_set_is_counted_by_one_owner_for_the_node() {
    let mut s = Setup::cluster(3).build();
    let a = s.connect(0, "alice");
    let b = s.connect(1, "alice");
    let requests = s.take_bridge();
    let onlines: Vec<(bool, bool, i64)> = requests
        .iter()
        .filter_map(|(_, r)| match r {
            BridgeRequest::Online {
                n,
                first_here,
                last_here,
                ..
            } => Some((*first_here, *last_here, *n)),
            _ => None,
        })
        .collect();
    assert_eq!(onlines, [(true, false, 1), (false, false, 1)]);
    let owner = owner_of(crate::redis::ONLINE, 3);
    assert!(requests.iter().all(|(shard, _)| *shard == owner));
    s.close(a);
    s.close(b);
    let last = s.take_bridge();
    let Some((_, BridgeRequest::Online { last_here, n, .. })) = last.last() else {
        panic!()
    };
    assert!(*last_here && *n == -1);
}

#[test]
fn a_resync_tells_redis_every_room_and_the_online_set() {
    let mut s = Setup::cluster(1).build();
    joined(&mut s, 0, "alice", "a");
    joined(&mut s, 0, "bob", "b");
    s.take_bridge();
    s.bridge_sends(0, FromBridge::Resync);
    let mut rooms: Vec<String> = s
        .take_bridge()
        .into_iter()
        .filter_map(|(_, r)| match r {
            BridgeRequest::Sync { room, .. } => Some(room.to_string()),
            _ => None,
        })
        .collect();
    rooms.sort();
    assert_eq!(rooms, ["", "a", "b"], "the online set is the room named ''");
}

#[test]
fn requests_a_stopped_bridge_cannot_take_are_answered_unavailable() {
    let mut s = Setup::cluster(2).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    s.bridge_stopped = true;
    s.request(alice, publish("lobby", "1", true, id(1)));
    s.request(alice, presence_get("lobby", id(2)));
    s.request(alice, user_send("bob", "{}", id(3)));
    let bob = s.connect(1, "bob");
    s.request(bob, join("lobby", id(4)));
    let got = s.got(alice);
    let got = answers(&got);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(got.iter().all(|a| a.contains("UNAVAILABLE")), "{got:?}");
    assert!(answers(&s.got(bob))[0].contains("UNAVAILABLE"));
    assert!(!s.is_member(bob, "lobby"));
}

#[test]
fn a_conflatable_room_event_and_presence_stay_apart() {
    // Presence must reach a slow consumer's queue as "other", never in the
    // place of a sequenced room event (conflation is per room event).
    let mut s = Setup::cluster(1).build();
    let alice = joined(&mut s, 0, "alice", "chat:1");
    s.bridge_sends(0, FromBridge::Event(event("chat:1", 1, None)));
    s.bridge_sends(0, FromBridge::Event(presence_event("chat:1")));
    let got = s.got(alice);
    assert!(
        matches!(&got[..], [Got::Event(_), Got::Other(_)]),
        "{got:?}"
    );
}

#[test]
fn a_connection_gone_while_its_join_waits_for_redis_leaves_no_ghost_member() {
    let mut s = Setup::cluster(2).build();
    let room = room_owned_by(1, 2, "r");
    let alice = s.connect(0, "alice");
    s.take_bridge();
    s.request(alice, join(&room, id(1)));
    s.close(alice);
    // Redis counted alice in when it ran the join.
    let mut requests = answer_joins(&mut s, || Ok((history(0, &[]), 1)));
    requests.extend(s.take_bridge());
    let kinds = kinds(&requests);
    assert_eq!(
        kinds.iter().filter(|k| **k == "leave").count(),
        1,
        "{kinds:?}"
    );
    assert!(kinds.contains(&"unserve"), "{kinds:?}");
    assert_eq!(s.router(1).table.connections(&room), 0);
}

#[test]
fn a_leave_right_after_a_join_is_answered_and_counted_out_once_redis_answers() {
    let mut s = Setup::cluster(1).build();
    let alice = s.connect(0, "alice");
    s.take_bridge();
    s.request(alice, join("lobby", id(1)));
    s.request(alice, leave("lobby"));
    assert!(
        !kinds(&s.bridge).contains(&"leave"),
        "not before Redis answered"
    );
    let mut requests = answer_joins(&mut s, || Ok((history(3, &[]), 1)));
    requests.extend(s.take_bridge());
    assert_eq!(kinds(&requests), ["serve", "leave", "unserve"]);
    let got = s.got(alice);
    assert!(answers(&got)[0].contains("\"success\":true"), "{got:?}");
    assert!(!s.is_member(alice, "lobby"));
    assert_eq!(s.router(0).table.connections("lobby"), 0);
}

#[test]
fn a_volatile_event_is_one_plain_publish_acked_empty_once_redis_took_it() {
    let mut s = Setup::cluster(2).build();
    let room = room_owned_by(1, 2, "v");
    let alice = joined(&mut s, 0, "alice", &room);
    s.take_bridge();
    s.request(alice, volatile(&room, "1", false, id(4)));
    let requests = s.take_bridge();
    assert_eq!(kinds(&requests), ["volatile"]);
    let Some((
        1,
        BridgeRequest::Volatile {
            text,
            origin,
            answer,
            ..
        },
    )) = requests.into_iter().next()
    else {
        panic!("a volatile publish from the owner")
    };
    assert_eq!(
        String::from_utf8(text).unwrap(),
        format!(r#"{{"event":"chat","room":"{room}","data":1,"from":"alice","ts":1700000000000}}"#)
    );
    assert!(
        origin.ends_with(&format!("/0.{}.{}", alice.key, alice.id)),
        "{origin}"
    );
    assert!(s.got(alice).is_empty(), "nothing before Redis took it");
    s.bridge_sends(1, FromBridge::Sent(answer, Ok(1)));
    assert_eq!(
        answers(&s.got(alice)),
        [r#"{"event":"ack","id":4,"success":true,"data":{}}"#]
    );
    assert_eq!(s.publishes(), 0);
}

#[test]
fn a_volatile_event_redis_refused_is_answered_unavailable() {
    let mut s = Setup::cluster(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    s.take_bridge();
    s.request(alice, volatile("lobby", "1", true, id(4)));
    let (_, request) = s.take_bridge().remove(0);
    let Some(refused) = FromBridge::refused(request) else {
        panic!("a volatile event waits for an answer")
    };
    s.bridge_sends(0, refused);
    assert!(answers(&s.got(alice))[0].contains(r#""code":"UNAVAILABLE""#));
}

#[test]
fn a_volatile_event_from_redis_reaches_members_as_volatile() {
    let mut s = Setup::cluster(2).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let bob = joined(&mut s, 1, "bob", "lobby");
    let text = wire::volatile_message("chat", "lobby", b"1", "alice", 5);
    let event = RoomEvent {
        room: "lobby".into(),
        epoch: "".into(),
        seq: 0,
        frame: wire::text_frame(&text),
        from_here: Some(FromHere {
            read_micros: 0,
            exclude: Some(alice),
        }),
        presence: false,
        volatile: true,
    };
    s.bridge_sends(owner_of("lobby", 2), FromBridge::Event(event));
    assert!(s.got(alice).is_empty(), "no echo asked");
    assert_eq!(
        s.got(bob),
        [Got::Volatile(
            r#"{"event":"chat","room":"lobby","data":1,"from":"alice","ts":5}"#.to_owned()
        )]
    );
}

#[test]
fn room_events_from_redis_are_paced_for_a_member_with_max_rate() {
    let mut s = Setup::cluster(2).build();
    let room = room_owned_by(0, 2, "r");
    let plain = joined(&mut s, 0, "alice", &room);
    let paced = s.connect(1, "bob");
    s.request(paced, join_paced(&room, 2.0, false));
    answer_joins(&mut s, || Ok((history(0, &[]), 2)));
    assert!(answers(&s.got(paced))[0].contains("\"success\":true"));
    for seq in 1..=5 {
        s.bridge_sends(0, FromBridge::Event(event(&room, seq, None)));
    }
    let seqs = |got: Vec<Got>| -> Vec<u64> { events(&got).iter().map(|t| seq_of(t)).collect() };
    assert_eq!(seqs(s.got(plain)), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(s.got(paced)), [1]);
    s.advance(s.time.now + Duration::from_millis(500));
    assert_eq!(seqs(s.got(paced)), [5], "the newest, at the next slot");
}
