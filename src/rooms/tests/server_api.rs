//! The Server API through the routers, in memory: commands reach the
//! connections on every shard, replies come back in order, and in a
//! cluster the other nodes' parts (or their silence) shape the reply.

use super::*;
use crate::api::cluster::{self, NodeMessage};
use crate::api::part::Part;

/// The one `Got::Api` reply `conn` got.
fn api_reply(shards: &mut Shards, conn: ConnRef) -> String {
    let got = shards.got(conn);
    let replies: Vec<_> = got
        .iter()
        .filter_map(|g| match g {
            Got::Api(text) => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(replies.len(), 1, "one reply: {got:?}");
    replies[0].clone()
}

/// The `event` of each room event `conn` got.
fn event_names(got: &[Got]) -> Vec<String> {
    events(got)
        .iter()
        .map(|text| {
            let start = text.find(r#""event":""#).expect("an event") + 9;
            let end = start + text[start..].find('"').expect("its end");
            text[start..end].to_owned()
        })
        .collect()
}

fn others(got: &[Got]) -> Vec<&str> {
    got.iter()
        .filter_map(|g| match g {
            Got::Other(text) => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn subscribe_reaches_every_shard_and_later_messages_follow() {
    let mut shards = Setup::local(3).build();
    let a = shards.connect(0, "ann");
    let b = shards.connect(2, "ann");
    let other = shards.connect(1, "bob");
    let call = shards.api_call(1, "subscribe", r#"{"user":"ann","room":"lobby"}"#);
    assert_eq!(
        api_reply(&mut shards, call),
        r#"{"result":{"connections":2}}"#
    );
    for conn in [a, b] {
        let got = shards.got(conn);
        let answers = answers(&got);
        assert_eq!(answers.len(), 1, "{got:?}");
        assert!(
            answers[0].starts_with(r#"{"event":"room:subscribed","room":"lobby","data":{"epoch":"#),
            "{got:?}"
        );
        assert!(shards.is_member(conn, "lobby"));
    }
    assert!(shards.got(other).is_empty());
    let publish = shards.api_call(
        1,
        "publish",
        r#"{"room":"lobby","event":"chat:msg","data":1}"#,
    );
    assert_eq!(
        api_reply(&mut shards, publish),
        r#"{"result":{"results":[{"room":"lobby","seq":1}]}}"#
    );
    for conn in [a, b] {
        assert_eq!(event_names(&shards.got(conn)), ["chat:msg"]);
    }
    // Already in the room: counted, told nothing.
    let again = shards.api_call(0, "subscribe", r#"{"user":"ann","room":"lobby"}"#);
    assert_eq!(
        api_reply(&mut shards, again),
        r#"{"result":{"connections":2}}"#
    );
    assert!(shards.got(a).is_empty());
}

#[test]
fn unsubscribe_and_disconnect_stop_later_messages() {
    let mut shards = Setup::local(2).build();
    let a = shards.connect(0, "ann");
    let b = shards.connect(1, "ann");
    shards.request(a, join("lobby", id(1)));
    shards.request(b, join("lobby", id(1)));
    shards.got(a);
    shards.got(b);
    let call = shards.api_call(
        1,
        "unsubscribe",
        &format!(r#"{{"user":"ann","room":"lobby","connId":"c{}"}}"#, a.id),
    );
    assert_eq!(
        api_reply(&mut shards, call),
        r#"{"result":{"connections":1}}"#
    );
    assert_eq!(
        others(&shards.got(a)),
        [r#"{"event":"room:unsubscribed","room":"lobby","data":{}}"#]
    );
    assert!(!shards.is_member(a, "lobby"));
    shards.api_call(0, "publish", r#"{"room":"lobby","event":"chat:msg"}"#);
    assert!(event_names(&shards.got(a)).is_empty());
    assert_eq!(event_names(&shards.got(b)), ["chat:msg"]);
    let call = shards.api_call(
        0,
        "disconnect",
        r#"{"user":"ann","code":4100,"reason":"bye"}"#,
    );
    assert_eq!(
        api_reply(&mut shards, call),
        r#"{"result":{"connections":2}}"#
    );
    for conn in [a, b] {
        assert_eq!(shards.got(conn), [Got::Closed(4100, "bye".to_owned())]);
    }
}

#[test]
fn user_rooms_and_info_add_up_the_shards() {
    let mut shards = Setup::local(2).build();
    let a = shards.connect(0, "ann");
    let b = shards.connect(1, "ann");
    shards.request(a, join("x:1", id(1)));
    shards.request(b, join("x:2", id(1)));
    shards.request(b, join("y", id(2)));
    let call = shards.api_call(0, "user", r#"{"user":"ann"}"#);
    let reply = api_reply(&mut shards, call);
    assert!(
        reply.contains(&format!(
            r#"{{"connId":"c{}","node":"n1","rooms":["x:1"]}}"#,
            a.id
        )),
        "{reply}"
    );
    assert!(
        reply.contains(&format!(
            r#"{{"connId":"c{}","node":"n1","rooms":["x:2","y"]}}"#,
            b.id
        )),
        "{reply}"
    );
    let call = shards.api_call(1, "rooms", r#"{"pattern":"x:*"}"#);
    assert_eq!(
        api_reply(&mut shards, call),
        r#"{"result":{"rooms":[{"room":"x:1","connections":1,"users":1},{"room":"x:2","connections":1,"users":1}]}}"#
    );
    let call = shards.api_call(1, "info", "{}");
    let reply = api_reply(&mut shards, call);
    assert!(
        reply.contains(r#""node":"n1""#) && reply.contains(r#""rooms":3}"#),
        "{reply}"
    );
}

#[test]
fn a_batch_runs_in_order_with_each_outcome() {
    let mut shards = Setup::local(2).build();
    let a = shards.connect(1, "ann");
    let body = r#"{"commands":[
        {"method":"subscribe","params":{"user":"ann","room":"r"}},
        {"method":"publish","params":{"room":"r","event":"x:y","data":2}},
        {"method":"nope"},
        {"method":"history","params":{"room":"r"}},
        {"method":"history_remove","params":{"room":"r"}},
        {"method":"history","params":{"room":"r"}}
    ]}"#;
    let call = shards.api_call(0, "batch", body);
    let reply = api_reply(&mut shards, call);
    let expected_prefix = r#"{"replies":[{"result":{"connections":1}},{"result":{"results":[{"room":"r","seq":1}]}},{"error":{"code":"NOT_FOUND","message":"no such method"}},{"result":{"room":"r","epoch":"#;
    assert!(reply.starts_with(expected_prefix), "{reply}");
    assert!(
        reply.contains(
            r#""seq":1,"messages":[{"event":"x:y","room":"r","data":2,"from":"api","seq":1"#
        ),
        "{reply}"
    );
    assert!(
        reply.ends_with(r#""seq":1,"messages":[]}}]}"#),
        "the seq stays after history_remove: {reply}"
    );
    assert_eq!(
        event_names(&shards.got(a)),
        ["x:y"],
        "the publish after the subscribe reached it"
    );
}

#[test]
fn broadcast_rooms_are_independent() {
    let mut shards = Setup::local(2).build();
    let call = shards.api_call(
        0,
        "broadcast",
        r#"{"rooms":["a","no room","b"],"event":"x:y"}"#,
    );
    assert_eq!(
        api_reply(&mut shards, call),
        r#"{"result":{"results":[{"room":"a","seq":1},{"room":"no room","error":{"code":"VALIDATION_ERROR","message":"invalid room name"}},{"room":"b","seq":1}]}}"#
    );
}

#[test]
fn in_a_cluster_other_nodes_are_asked_and_the_silent_ones_named() {
    let mut shards = Setup::cluster(2).build();
    for shard in 0..2 {
        shards.set_live_nodes(shard, &["n1", "n2", "n3"]);
    }
    shards.connect(0, "ann");
    shards.take_bridge();
    let call = shards.api_call(1, "disconnect", r#"{"user":"ann"}"#);
    let casts: Vec<_> = shards
        .take_bridge()
        .into_iter()
        .filter_map(|(_, r)| match r {
            BridgeRequest::ApiCast { to: None, payload } => Some(payload),
            _ => None,
        })
        .collect();
    assert_eq!(casts.len(), 1, "one command for every node");
    let Some(NodeMessage::Command { op, from, .. }) =
        cluster::read(&mut casts[0].clone(), &mut Default::default())
    else {
        panic!("a command")
    };
    assert_eq!(from, "n1");
    assert!(
        shards.got(call).iter().all(|g| !matches!(g, Got::Api(_))),
        "waits for n2 and n3"
    );
    let command = crate::api::NodeCommand::Disconnect {
        user: "ann".into(),
        conn_id: None,
        code: 4500,
        reason: "disconnected".into(),
    };
    let answer = cluster::write_answer(op, "n2", &command, &Part::Count(3));
    shards.node_sends(0, answer.clone());
    shards.node_sends(0, answer);
    shards.time.now += Duration::from_secs(3);
    shards.api_tick();
    assert_eq!(
        api_reply(&mut shards, call),
        r#"{"result":{"connections":4,"missingNodes":["n3"]}}"#,
        "n2's part counted once, n3 named"
    );
}

#[test]
fn in_a_cluster_a_command_from_another_node_is_answered_to_it() {
    let mut shards = Setup::cluster(2).build();
    let a = shards.connect(1, "ann");
    shards.take_bridge();
    let command = crate::api::NodeCommand::User { user: "ann".into() };
    shards.node_sends(0, cluster::write_command(cluster::op(0, 9), "n2", &command));
    let answers: Vec<_> = shards
        .take_bridge()
        .into_iter()
        .filter_map(|(_, r)| match r {
            BridgeRequest::ApiCast {
                to: Some(node),
                payload,
            } => Some((node, payload)),
            _ => None,
        })
        .collect();
    assert_eq!(answers.len(), 1);
    assert_eq!(&*answers[0].0, "n2");
    let Some(NodeMessage::Answer { op, from, result }) =
        cluster::read(&mut answers[0].1.clone(), &mut Default::default())
    else {
        panic!("an answer")
    };
    assert_eq!((op, from.as_str()), (cluster::op(0, 9), "n1"));
    assert_eq!(
        String::from_utf8(result).unwrap(),
        format!(
            r#"{{"user":"ann","connections":[{{"connId":"c{}","node":"n1","rooms":[]}}]}}"#,
            a.id
        )
    );
    // Its own command, heard back on the channel, is not run twice.
    shards.node_sends(
        0,
        cluster::write_command(cluster::op(0, 10), "n1", &command),
    );
    assert!(shards.take_bridge().is_empty());
}
