//! One process: each room sequenced by its owner shard.

use super::*;
use crate::proto::JoinRecovery;

fn joined(shards: &mut Shards, shard: usize, user: &str, room: &str) -> ConnRef {
    let conn = shards.connect(shard, user);
    shards.request(conn, join(room, id(1)));
    let got = shards.got(conn);
    assert!(
        matches!(&got[..], [Got::Answer(Some(ack))] if ack.contains("\"success\":true")),
        "{got:?}"
    );
    conn
}

#[test]
fn a_join_is_acked_with_the_room_state() {
    let mut s = Setup::local(1).build();
    let conn = s.connect(0, "alice");
    s.request(conn, join("lobby", id(7)));
    let got = s.got(conn);
    let [Got::Answer(Some(ack))] = &got[..] else {
        panic!("{got:?}")
    };
    assert!(
        ack.starts_with(r#"{"event":"ack","id":7,"success":true,"data":{"room":"lobby","epoch":""#)
    );
    assert!(
        ack.ends_with(r#","seq":0,"messages":[],"members":1}}"#),
        "{ack}"
    );
    assert!(s.is_member(conn, "lobby"));
}

#[test]
fn a_join_without_an_id_is_still_answered() {
    let mut s = Setup::local(1).build();
    let conn = s.connect(0, "alice");
    s.request(conn, join("lobby", None));
    assert_eq!(s.got(conn), [Got::Answer(None)]);
    assert!(s.is_member(conn, "lobby"));
}

#[test]
fn a_publish_reaches_members_and_acks_its_seq() {
    let mut s = Setup::local(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let bob = joined(&mut s, 0, "bob", "lobby");
    s.request(alice, publish("lobby", r#"{"x":1}"#, true, id(2)));
    let got = s.got(bob);
    assert_eq!(
        events(&got),
        [
            r#"{"event":"chat","room":"lobby","data":{"x":1},"from":"alice","seq":1,"ts":1700000000000}"#
        ]
    );
    let got = s.got(alice);
    assert_eq!(events(&got).len(), 1, "echo on: the publisher gets it too");
    assert_eq!(
        answers(&got),
        [r#"{"event":"ack","id":2,"success":true,"data":{"seq":1}}"#]
    );
}

#[test]
fn a_publish_without_echo_leaves_out_its_sender() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let bob = joined(&mut s, 1, "bob", "lobby");
    s.request(alice, publish("lobby", "1", false, None));
    assert!(s.got(alice).is_empty());
    assert_eq!(events(&s.got(bob)).len(), 1);
}

#[test]
fn a_publish_without_an_id_gets_no_ack() {
    let mut s = Setup::local(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    s.request(alice, publish("lobby", "1", true, None));
    assert!(answers(&s.got(alice)).is_empty());
}

#[test]
fn seq_counts_up_per_room() {
    let mut s = Setup::local(3).build();
    let alice = joined(&mut s, 0, "alice", "a");
    s.request(alice, join("b", None));
    s.got(alice);
    for n in 0..3 {
        s.request(alice, publish("a", &n.to_string(), true, None));
    }
    s.request(alice, publish("b", "0", true, None));
    let seqs: Vec<u64> = events(&s.got(alice)).iter().map(|t| seq_of(t)).collect();
    assert_eq!(seqs, [1, 2, 3, 1]);
}

#[test]
fn members_on_every_shard_get_each_event_once_in_order() {
    let mut s = Setup::local(3).build();
    let members: Vec<ConnRef> = (0..6)
        .map(|i| joined(&mut s, i % 3, &format!("u{i}"), "prices"))
        .collect();
    for n in 0..20 {
        s.request(
            members[n % 6],
            publish("prices", &n.to_string(), true, None),
        );
    }
    for member in members {
        let seqs: Vec<u64> = events(&s.got(member)).iter().map(|t| seq_of(t)).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    }
}

#[test]
fn publishers_on_other_shards_than_the_owner_are_ordered_by_the_owner() {
    let mut s = Setup::local(3).build();
    let room = room_owned_by(2, 3, "r");
    let a = joined(&mut s, 0, "a", &room);
    let b = joined(&mut s, 1, "b", &room);
    s.request(a, publish(&room, "1", true, id(1)));
    s.request(b, publish(&room, "2", true, id(1)));
    s.request(a, publish(&room, "3", true, id(2)));
    let got_a = s.got(a);
    assert_eq!(
        answers(&got_a),
        [
            r#"{"event":"ack","id":1,"success":true,"data":{"seq":1}}"#,
            r#"{"event":"ack","id":2,"success":true,"data":{"seq":3}}"#
        ]
    );
    assert_eq!(events(&got_a), events(&s.got(b)));
}

#[test]
fn a_join_ack_comes_before_any_event_after_it() {
    let mut s = Setup::local(2).build();
    let room = room_owned_by(1, 2, "r");
    let alice = joined(&mut s, 1, "alice", &room);
    let bob = s.connect(0, "bob");
    s.request(bob, join(&room, id(1)));
    s.request(alice, publish(&room, "1", true, None));
    let got = s.got(bob);
    assert!(matches!(got[0], Got::Answer(Some(_))), "{got:?}");
    assert_eq!(events(&got).len(), 1);
}

#[test]
fn a_member_that_left_gets_nothing_more() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let bob = joined(&mut s, 1, "bob", "lobby");
    s.request(bob, leave("lobby"));
    assert!(!s.is_member(bob, "lobby"));
    s.request(alice, publish("lobby", "1", true, None));
    assert!(events(&s.got(bob)).is_empty());
}

#[test]
fn a_closed_connection_leaves_every_room() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "a");
    s.request(alice, join("b", None));
    s.close(alice);
    let bob = s.connect(1, "bob");
    s.request(bob, join("a", id(1)));
    s.request(bob, join("b", id(2)));
    for ack in answers(&s.got(bob)) {
        assert!(ack.ends_with(r#""members":1}}"#), "{ack}");
    }
}

#[test]
fn leaving_a_room_never_joined_changes_nothing() {
    let mut s = Setup::local(1).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    let bob = s.connect(0, "bob");
    s.request(bob, leave("lobby"));
    s.request(alice, publish("lobby", "1", true, None));
    assert_eq!(events(&s.got(alice)).len(), 1);
}

#[test]
fn presence_join_is_announced_to_the_others_not_the_joiner() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "chat:1");
    let bob = s.connect(1, "bob");
    s.request(bob, join("chat:1", id(1)));
    assert_eq!(
        s.got(alice),
        [Got::Other(
            r#"{"event":"presence:join","room":"chat:1","data":{"userId":"bob","name":null}}"#
                .into()
        )]
    );
    assert!(!s.got(bob).iter().any(|g| matches!(g, Got::Other(_))));
}

#[test]
fn presence_is_not_a_delivery() {
    let mut s = Setup::local(2).build();
    joined(&mut s, 0, "alice", "chat:1");
    joined(&mut s, 1, "bob", "chat:1");
    assert_eq!(s.deliveries(), 0);
}

#[test]
fn rooms_outside_the_presence_patterns_announce_nothing() {
    let mut s = Setup::local(1).build();
    let alice = joined(&mut s, 0, "alice", "quiet");
    joined(&mut s, 0, "bob", "quiet");
    assert!(s.got(alice).is_empty());
}

#[test]
fn presence_join_once_per_user_and_leave_with_the_last_connection() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "chat:1");
    let bob1 = joined(&mut s, 0, "bob", "chat:1");
    let bob2 = joined(&mut s, 1, "bob", "chat:1");
    let got = s.got(alice);
    assert_eq!(got.len(), 1, "one presence:join for bob: {got:?}");
    s.got(bob1);
    s.close(bob1);
    assert!(s.got(alice).is_empty(), "bob is still there");
    s.close(bob2);
    assert_eq!(
        s.got(alice),
        [Got::Other(
            r#"{"event":"presence:leave","room":"chat:1","data":{"userId":"bob"}}"#.into()
        )]
    );
}

#[test]
fn presence_get_lists_the_users() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "chat:1");
    joined(&mut s, 1, "bob", "chat:1");
    s.got(alice);
    s.request(alice, presence_get("chat:1", id(3)));
    let got = s.got(alice);
    let [ack] = &answers(&got)[..] else {
        panic!("{got:?}")
    };
    assert!(ack.contains(r#""count":2"#), "{ack}");
    assert!(
        ack.contains(r#"{"userId":"bob","name":null,"connections":1}"#),
        "{ack}"
    );
}

#[test]
fn presence_get_without_an_id_is_not_answered() {
    let mut s = Setup::local(1).build();
    let alice = joined(&mut s, 0, "alice", "chat:1");
    s.request(alice, presence_get("chat:1", None));
    assert!(s.got(alice).is_empty());
}

#[test]
fn a_full_room_refuses_a_join_and_the_connection_forgets_it() {
    let mut s = Setup::local(2).max_room_members(1).build();
    let alice = joined(&mut s, 0, "alice", "small");
    let bob = s.connect(1, "bob");
    s.request(bob, join("small", id(4)));
    assert_eq!(
        answers(&s.got(bob)),
        [
            r#"{"event":"ack","id":4,"success":false,"error":{"code":"ROOM_FULL","message":"room is full"}}"#
        ]
    );
    assert!(!s.is_member(bob, "small"));
    s.request(alice, publish("small", "1", true, None));
    assert!(events(&s.got(bob)).is_empty());
}

#[test]
fn a_rejoin_is_answered_without_counting_twice() {
    let mut s = Setup::local(1).max_room_members(1).build();
    let alice = joined(&mut s, 0, "alice", "small");
    s.request(
        alice,
        Request::Join {
            room: "small".into(),
            id: id(2),
            recovery: JoinRecovery::default(),
            rejoin: true,
            meta: None,
            min_interval: None,
        },
    );
    let got = s.got(alice);
    assert!(answers(&got)[0].ends_with(r#""members":1}}"#), "{got:?}");
}

#[test]
fn a_join_gets_the_history_it_asks_for() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "h");
    for n in 0..5 {
        s.request(alice, publish("h", &n.to_string(), true, None));
    }
    let bob = s.connect(1, "bob");
    let recovery = JoinRecovery {
        history: Some(2),
        ..JoinRecovery::default()
    };
    s.request(bob, join_with("h", recovery));
    let got = s.got(bob);
    let ack = answers(&got)[0];
    assert!(ack.contains(r#""seq":5,"messages":[{"#), "{ack}");
    assert!(
        ack.contains(r#""data":3,"#) && ack.contains(r#""data":4,"#),
        "{ack}"
    );
    assert!(!ack.contains(r#""data":2,"#), "{ack}");
}

#[test]
fn a_rejoin_since_a_seq_recovers_exactly_what_was_missed() {
    let mut s = Setup::local(1).build();
    let alice = joined(&mut s, 0, "alice", "h");
    s.request(alice, publish("h", "1", true, None));
    let epoch = {
        let bob = s.connect(0, "bob");
        s.request(bob, join("h", id(1)));
        let ack = answers(&s.got(bob))[0].to_owned();
        let at = ack.find("\"epoch\":\"").unwrap() + 9;
        ack[at..at + ack[at..].find('"').unwrap()].to_owned()
    };
    s.request(alice, publish("h", "2", true, None));
    s.request(alice, publish("h", "3", true, None));
    let carol = s.connect(0, "carol");
    let recovery = JoinRecovery {
        since: Some(1),
        epoch: Some(epoch.into()),
        ..JoinRecovery::default()
    };
    s.request(carol, join_with("h", recovery));
    let ack = answers(&s.got(carol))[0].to_owned();
    assert!(ack.contains(r#""recovered":true"#), "{ack}");
    assert!(
        ack.contains(r#""data":2,"#) && ack.contains(r#""data":3,"#),
        "{ack}"
    );
    assert!(!ack.contains(r#""data":1,"#), "{ack}");
}

#[test]
fn a_rejoin_from_another_epoch_is_not_recovered() {
    let mut s = Setup::local(1).build();
    let alice = joined(&mut s, 0, "alice", "h");
    s.request(alice, publish("h", "1", true, None));
    let bob = s.connect(0, "bob");
    let recovery = JoinRecovery {
        since: Some(0),
        epoch: Some("other".into()),
        ..JoinRecovery::default()
    };
    s.request(bob, join_with("h", recovery));
    assert!(answers(&s.got(bob))[0].contains(r#""recovered":false"#));
}

#[test]
fn user_send_reaches_every_connection_of_the_user_and_counts_them() {
    let mut s = Setup::local(3).build();
    let alice = s.connect(0, "alice");
    let bobs: Vec<ConnRef> = (0..3).map(|shard| s.connect(shard, "bob")).collect();
    let carol = s.connect(1, "carol");
    s.request(alice, user_send("bob", r#"{"event":"dm"}"#, id(5)));
    for bob in bobs {
        assert_eq!(s.got(bob), [Got::Other(r#"{"event":"dm"}"#.into())]);
    }
    assert!(s.got(carol).is_empty());
    assert_eq!(
        s.got(alice),
        [Got::Answer(Some(
            r#"{"event":"ack","id":5,"success":true,"data":{"delivered":3}}"#.into()
        ))]
    );
}

#[test]
fn user_send_to_oneself_leaves_out_the_sending_connection() {
    let mut s = Setup::local(2).build();
    let a1 = s.connect(0, "alice");
    let a2 = s.connect(1, "alice");
    s.request(a1, user_send("alice", "{}", id(1)));
    assert_eq!(s.got(a2), [Got::Other("{}".into())]);
    assert_eq!(
        answers(&s.got(a1)),
        [r#"{"event":"ack","id":1,"success":true,"data":{"delivered":1}}"#]
    );
}

#[test]
fn user_send_to_nobody_counts_zero() {
    let mut s = Setup::local(2).build();
    let alice = s.connect(0, "alice");
    s.request(alice, user_send("ghost", "{}", id(1)));
    assert!(answers(&s.got(alice))[0].contains(r#"{"delivered":0}"#));
}

#[test]
fn user_send_without_an_id_is_not_acked() {
    let mut s = Setup::local(2).build();
    let alice = s.connect(0, "alice");
    let bob = s.connect(1, "bob");
    s.request(alice, user_send("bob", "{}", None));
    assert_eq!(s.got(bob).len(), 1);
    assert!(s.got(alice).is_empty());
    assert!(s.router(0).gathers.is_empty(), "the gather is done");
}

#[test]
fn a_broadcast_reaches_everyone_but_its_sender() {
    let mut s = Setup::local(2).build();
    let alice = s.connect(0, "alice");
    let others: Vec<ConnRef> = (0..4).map(|i| s.connect(i % 2, &format!("u{i}"))).collect();
    s.request(alice, broadcast(r#"{"event":"news"}"#, id(9)));
    for other in others {
        assert_eq!(s.got(other), [Got::Other(r#"{"event":"news"}"#.into())]);
    }
    assert_eq!(
        answers(&s.got(alice)),
        [r#"{"event":"ack","id":9,"success":true,"data":{"delivered":4}}"#]
    );
}

#[test]
fn direct_messages_are_not_deliveries() {
    let mut s = Setup::local(2).build();
    let alice = s.connect(0, "alice");
    s.connect(1, "bob");
    s.request(alice, broadcast("{}", None));
    assert_eq!(s.deliveries(), 0);
}

#[test]
fn an_http_publish_is_answered_with_its_seq_and_reaches_every_member() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "feed");
    let bob = joined(&mut s, 1, "bob", "feed");
    let http = s.http_publish(1, 3, "feed", r#"{"p":1}"#);
    assert_eq!(s.got(http), [Got::Published(3, Some(1))]);
    for member in [alice, bob] {
        let got = s.got(member);
        assert_eq!(events(&got).len(), 1);
        assert!(events(&got)[0].contains(r#""from":"backend""#));
    }
}

#[test]
fn room_events_count_as_deliveries_and_publishes() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    joined(&mut s, 1, "bob", "lobby");
    s.request(alice, publish("lobby", "1", true, None));
    s.request(alice, publish("lobby", "2", false, None));
    assert_eq!(s.deliveries(), 3);
    assert_eq!(s.publishes(), 2);
}

#[test]
fn a_publish_to_an_empty_room_is_still_sequenced() {
    let mut s = Setup::local(1).build();
    let alice = s.connect(0, "alice");
    s.request(alice, publish("void", "1", true, id(1)));
    s.request(alice, publish("void", "2", true, id(2)));
    let got = s.got(alice);
    assert!(answers(&got)[1].contains(r#"{"seq":2}"#), "{got:?}");
}

#[test]
fn a_connection_gone_before_its_join_answer_is_not_a_member() {
    let mut s = Setup::local(2).build();
    let room = room_owned_by(1, 2, "r");
    let bob = s.connect(0, "bob");
    // The request reaches the owner, but the connection closes before the
    // answer comes back: the test bus delivers at once, so close first by
    // sending the join from a connection whose session already dropped it.
    s.request(bob, join(&room, id(1)));
    s.request(bob, leave(&room));
    assert!(!s.is_member(bob, &room));
    let alice = joined(&mut s, 1, "alice", &room);
    s.request(alice, publish(&room, "1", true, None));
    assert!(events(&s.got(bob)).is_empty());
}

#[test]
fn a_joined_answer_for_a_room_left_meanwhile_adds_no_member() {
    let mut s = Setup::local(1).build();
    let bob = s.connect(0, "bob");
    let room: Arc<str> = Arc::from("lobby");
    // The owner's answer arrives after the session dropped the room.
    let time = s.time;
    let (router, outlet) = (&mut s.routers[0], &mut s.outlets[0]);
    router.on_bus(
        crate::rooms::bus::BusMsg::Joined {
            room,
            conn: bob,
            accepted: true,
            reply: None,
        },
        time,
        outlet,
    );
    assert!(!s.is_member(bob, "lobby"));
    assert_eq!(s.got(bob), [Got::Answer(None)]);
}

#[test]
fn an_answer_for_a_newer_connection_on_the_same_key_is_dropped() {
    let mut s = Setup::local(1).build();
    let old = s.connect(0, "old");
    s.close(old);
    let new = s.connect(0, "new");
    assert_eq!(old.key, new.key);
    let time = s.time;
    let reply = crate::rooms::bus::BusMsg::Reply {
        conn: old,
        text: b"{}".to_vec(),
    };
    s.routers[0].on_bus(reply, time, &mut s.outlets[0]);
    assert!(s.got(new).is_empty());
}

#[test]
fn an_empty_room_is_forgotten_by_the_sweep_once_its_history_expires() {
    let mut s = Setup::local(1).build();
    let alice = joined(&mut s, 0, "alice", "tmp");
    s.request(alice, publish("tmp", "1", true, None));
    s.close(alice);
    assert_eq!(s.router(0).rooms_owned(), 1, "history keeps it");
    let later = s.time.now + Duration::from_secs(61);
    s.router(0).sweep(later);
    assert_eq!(s.router(0).rooms_owned(), 0);
}

#[test]
fn the_busiest_rooms_count_their_messages() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "hot");
    for _ in 0..3 {
        s.request(alice, publish("hot", "1", true, None));
    }
    let owner = owner_of("hot", 2);
    let busiest = s.router(owner).busiest(5);
    assert_eq!(busiest[0].0.as_ref(), "hot");
    assert_eq!(busiest[0].2, 3);
}

#[test]
fn bridge_messages_are_ignored_in_one_process() {
    let mut s = Setup::local(1).build();
    let alice = s.connect(0, "alice");
    s.bridge_sends(0, FromBridge::Resync);
    assert!(s.take_bridge().is_empty());
    assert!(s.got(alice).is_empty());
}

#[test]
fn one_process_asks_nothing_of_a_bridge() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "lobby");
    s.request(alice, publish("lobby", "1", true, id(1)));
    s.request(alice, user_send("bob", "{}", id(2)));
    s.close(alice);
    assert!(s.take_bridge().is_empty());
}

#[test]
fn a_gap_wider_than_the_history_is_not_recovered() {
    let mut s = Setup::local(1).history(2).build();
    let alice = joined(&mut s, 0, "alice", "h");
    for n in 0..5 {
        s.request(alice, publish("h", &n.to_string(), true, None));
    }
    let bob = s.connect(0, "bob");
    s.request(bob, join("h", id(1)));
    let ack = answers(&s.got(bob))[0].to_owned();
    let at = ack.find("\"epoch\":\"").unwrap() + 9;
    let epoch = ack[at..at + ack[at..].find('"').unwrap()].to_owned();
    let recovery = JoinRecovery {
        since: Some(1),
        epoch: Some(epoch.into()),
        ..JoinRecovery::default()
    };
    s.request(bob, join_with("h", recovery));
    let ack = answers(&s.got(bob))[0].to_owned();
    assert!(ack.contains(r#""recovered":false"#), "{ack}");
}

#[test]
fn a_leave_behind_a_refused_join_does_not_count_out_another_member() {
    let mut s = Setup::local(2).max_room_members(1).build();
    let room = room_owned_by(1, 2, "full");
    let alice = joined(&mut s, 0, "alice", &room);
    let bob = s.connect(0, "bob");
    // Both reach the owner before its answer to the join comes back.
    s.requests_at_once(bob, vec![join(&room, id(1)), leave(&room)]);
    assert!(answers(&s.got(bob))[0].contains("ROOM_FULL"));
    s.request(alice, publish(&room, "1", true, None));
    assert_eq!(events(&s.got(alice)).len(), 1, "alice is still counted");
    assert!(events(&s.got(bob)).is_empty());
}

#[test]
fn a_volatile_event_reaches_members_without_seq_and_is_acked_with_empty_data() {
    let mut s = Setup::local(3).build();
    let alice = joined(&mut s, 1, "alice", "lobby");
    let bob = joined(&mut s, 2, "bob", "lobby");
    s.request(alice, volatile("lobby", r#"{"typing":true}"#, false, id(3)));
    assert_eq!(
        s.got(bob),
        [Got::Volatile(
            r#"{"event":"chat","room":"lobby","data":{"typing":true},"from":"alice","ts":1700000000000}"#
                .to_owned()
        )]
    );
    assert_eq!(
        s.got(alice),
        [Got::Answer(Some(
            r#"{"event":"ack","id":3,"success":true,"data":{}}"#.to_owned()
        ))]
    );
    assert_eq!(s.publishes(), 0, "not sequenced");
}

#[test]
fn a_volatile_event_takes_no_seq_and_stays_out_of_history() {
    let mut s = Setup::local(2).build();
    let alice = joined(&mut s, 0, "alice", "h");
    s.request(alice, publish("h", "1", true, None));
    s.request(alice, volatile("h", "2", true, None));
    s.request(alice, publish("h", "3", true, id(4)));
    let got = s.got(alice);
    assert_eq!(
        events(&got).iter().map(|e| seq_of(e)).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        answers(&got),
        [r#"{"event":"ack","id":4,"success":true,"data":{"seq":2}}"#]
    );
    let bob = s.connect(1, "bob");
    let recovery = JoinRecovery {
        history: Some(10),
        ..JoinRecovery::default()
    };
    s.request(bob, join_with("h", recovery));
    let ack = answers(&s.got(bob))[0].to_owned();
    assert!(ack.contains(r#""seq":2,"messages":[{"#), "{ack}");
    assert!(!ack.contains(r#""data":2,"#), "{ack}");
}

#[test]
fn a_connections_volatile_events_reach_each_member_in_order() {
    let mut s = Setup::local(3).build();
    let room = "cursor";
    let owner = owner_of(room, 3);
    let publisher = (owner + 1) % 3;
    let alice = joined(&mut s, publisher, "alice", room);
    let bob = joined(&mut s, (owner + 2) % 3, "bob", room);
    for n in 0..5 {
        s.request(alice, volatile(room, &n.to_string(), false, None));
    }
    let got = s.got(bob);
    let data: Vec<_> = got
        .iter()
        .map(|g| match g {
            Got::Volatile(text) => text[text.find("\"data\":").unwrap() + 7..].chars().next(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(data, ['0', '1', '2', '3', '4'].map(Some));
    assert!(s.got(alice).is_empty(), "no echo, no id: nothing back");
}

#[test]
fn an_http_volatile_publish_answers_no_seq() {
    let mut s = Setup::local(2).build();
    let bob = joined(&mut s, 1, "bob", "feed");
    let http = s.http_volatile(0, 0, "feed", "7");
    assert_eq!(s.got(http), [Got::Published(0, Some(NO_SEQ))]);
    assert!(matches!(&s.got(bob)[..], [Got::Volatile(text)] if !text.contains("\"seq\"")));
}
