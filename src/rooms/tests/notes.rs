//! What the rooms notice for webhooks, one process: firsts and lasts
//! counted across shards at the owner, whatever the presence event limit.

use super::*;

fn room(name: &str) -> What {
    What::RoomOccupied(name.into())
}

fn presence(joined: bool, room: &str, user: &str) -> What {
    let (room, user) = (room.into(), user.into());
    if joined {
        What::PresenceJoin { room, user }
    } else {
        What::PresenceLeave { room, user }
    }
}

#[test]
fn a_room_is_occupied_once_and_vacated_by_its_last_member_on_any_shard() {
    let mut s = Setup::local(3).webhooks().presence_event_limit(1).build();
    let a0 = s.connect(0, "alice");
    let a1 = s.connect(1, "alice");
    let b2 = s.connect(2, "bob");
    s.notes();
    s.request(a0, join("chat:1", id(1)));
    s.request(a1, join("chat:1", id(2)));
    s.request(b2, join("chat:1", id(3)));
    // Past the event limit (1) members hear no presence; webhooks do.
    assert_eq!(
        s.notes(),
        [
            room("chat:1"),
            presence(true, "chat:1", "alice"),
            presence(true, "chat:1", "bob"),
        ]
    );
    s.request(a0, leave("chat:1"));
    assert_eq!(s.notes(), []);
    s.request(a1, leave("chat:1"));
    assert_eq!(s.notes(), [presence(false, "chat:1", "alice")]);
    s.request(b2, leave("chat:1"));
    assert_eq!(
        s.notes(),
        [
            presence(false, "chat:1", "bob"),
            What::RoomVacated("chat:1".into())
        ]
    );
}

#[test]
fn rooms_outside_presence_rooms_notice_no_presence() {
    let mut s = Setup::local(2).webhooks().build();
    let a = s.connect(1, "alice");
    s.notes();
    s.request(a, join("lobby", id(1)));
    s.close(a);
    let notes = s.notes();
    // The room's owner and the online set's may be two shards: their
    // notes come in either order.
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert_eq!(notes[0], room("lobby"));
    assert!(notes.contains(&What::RoomVacated("lobby".into())));
    assert!(notes.contains(&What::UserOffline("alice".into())));
}

#[test]
fn a_user_is_online_from_the_first_connection_to_the_last_on_any_shard() {
    let mut s = Setup::local(3).webhooks().build();
    let a0 = s.connect(0, "alice");
    let a2 = s.connect(2, "alice");
    assert_eq!(s.notes(), [What::UserOnline("alice".into())]);
    s.close(a0);
    assert_eq!(s.notes(), []);
    s.close(a2);
    assert_eq!(s.notes(), [What::UserOffline("alice".into())]);
}

#[test]
fn messages_of_matching_rooms_are_noticed_once_sequenced() {
    let mut s = Setup::local(2).webhooks().build();
    let a = s.connect(0, "alice");
    s.request(a, join("chat:1", id(1)));
    s.request(a, join("lobby", id(2)));
    s.notes();
    s.request(a, publish("chat:1", r#"{"n":1}"#, false, id(3)));
    s.request(a, publish("lobby", "2", false, id(4)));
    s.request(a, publish("chat:1", "3", false, id(5)));
    let seqs: Vec<_> = s
        .notes()
        .into_iter()
        .map(|what| match what {
            What::RoomMessage(m) => {
                assert_eq!((&*m.room, &*m.event, &*m.from), ("chat:1", "chat", "alice"));
                (m.seq, String::from_utf8(m.data.into()).unwrap())
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, [(1, r#"{"n":1}"#.to_owned()), (2, "3".to_owned())]);
}

#[test]
fn without_webhooks_nothing_is_noticed() {
    let mut s = Setup::local(2).build();
    let a = s.connect(0, "alice");
    s.request(a, join("chat:1", id(1)));
    s.request(a, publish("chat:1", "1", false, id(2)));
    s.close(a);
    assert_eq!(s.notes(), []);
}
