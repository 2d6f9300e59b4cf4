//! What each shard, and then each node, answers for a `NodeCommand`, and
//! how the answers add up: counts are summed, a user's connections listed
//! together, rooms merged by name (sorted, at most `MAX_API_ROOMS`), nodes
//! listed.
//!
//! A part is written as the result of its command (`write_result`) and
//! read back from that same JSON (`read_result`): that is how a node's
//! answer travels to the node that was called.

use std::sync::Arc;

use simd_json::prelude::*;
use simd_json::tape::Value;

use super::NodeCommand;
use crate::codes::limits::{MAX_API_ROOMS, MAX_ROOM_LEN};
use crate::json::ObjectWriter;
use crate::proto::envelope::Parser;

/// A connection of a user, as `user` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub conn_id: String,
    pub node: String,
    pub rooms: Vec<Arc<str>>,
}

/// A room with members, as `rooms` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCount {
    pub room: Arc<str>,
    pub connections: u64,
    /// Distinct users; summed when parts of several nodes merged
    /// (`shared`), until Redis counts them.
    pub users: u64,
    /// Two parts had the room (two nodes have members in it): a user may
    /// be counted in both. Never written: only the merging node knows.
    pub shared: bool,
}

/// A node, as `info` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub node: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub connections: u64,
    pub users: u64,
    pub rooms: u64,
}

/// One shard's or one node's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Connections disconnected, subscribed or unsubscribed; rooms with
    /// members (a shard's share of `info`).
    Count(u64),
    Conns(Vec<ConnInfo>),
    Rooms {
        rooms: Vec<RoomCount>,
        truncated: bool,
    },
    Nodes(Vec<NodeInfo>),
}

impl Part {
    /// The answer of nobody yet: what merging starts from.
    pub fn empty_for(command: &NodeCommand) -> Self {
        match command {
            NodeCommand::User { .. } => Part::Conns(Vec::new()),
            NodeCommand::Rooms { .. } => Part::Rooms {
                rooms: Vec::new(),
                truncated: false,
            },
            NodeCommand::Info => Part::Nodes(Vec::new()),
            _ => Part::Count(0),
        }
    }

    /// Adds `other` in; parts of different kinds (a confused peer) are
    /// ignored.
    pub fn merge(&mut self, other: Part) {
        match (self, other) {
            (Part::Count(a), Part::Count(b)) => *a = a.saturating_add(b),
            (Part::Conns(a), Part::Conns(b)) => a.extend(b),
            (Part::Nodes(a), Part::Nodes(b)) => a.extend(b),
            (
                Part::Rooms { rooms, truncated },
                Part::Rooms {
                    rooms: more,
                    truncated: more_truncated,
                },
            ) => {
                let (merged, cut) = merge_sorted(std::mem::take(rooms), more);
                *rooms = merged;
                *truncated |= more_truncated || cut;
            }
            _ => {}
        }
    }

    /// A shard's rooms `(name, connections, users)`, any order and any
    /// number: the first `MAX_API_ROOMS` by name are chosen by reference
    /// (a linear selection), and only those are sorted and copied, so a
    /// shard with many rooms spends little of its turn on them.
    pub fn rooms<'a>(list: impl Iterator<Item = (&'a str, u64, u64)>) -> Self {
        let mut list: Vec<(&str, u64, u64)> = list.collect();
        let truncated = list.len() > MAX_API_ROOMS;
        if truncated {
            list.select_nth_unstable_by(MAX_API_ROOMS, |a, b| a.0.cmp(b.0));
            list.truncate(MAX_API_ROOMS);
        }
        list.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let rooms = list
            .into_iter()
            .map(|(room, connections, users)| RoomCount {
                room: Arc::from(room),
                connections,
                users,
                shared: false,
            })
            .collect();
        Part::Rooms { rooms, truncated }
    }

    /// The command's result: `{"connections": n}`, `{"user",
    /// "connections": [...]}`, `{"rooms": [...], "truncated"?}` or
    /// `{"nodes": [...]}`, with `missingNodes` when some did not answer.
    pub fn write_result(&self, command: &NodeCommand, missing: &[Box<str>], out: &mut Vec<u8>) {
        let mut w = ObjectWriter::new(out);
        match self {
            Part::Count(n) => w.u64("connections", *n),
            Part::Conns(conns) => {
                if let NodeCommand::User { user } = command {
                    w.str("user", user);
                }
                w.objects("connections", conns, |w, c| {
                    w.str("connId", &c.conn_id);
                    w.str("node", &c.node);
                    w.raw("rooms", &names_json(&c.rooms));
                });
            }
            Part::Rooms { rooms, truncated } => {
                w.objects("rooms", rooms, |w, r| {
                    w.str("room", &r.room);
                    w.u64("connections", r.connections);
                    w.u64("users", r.users);
                });
                if *truncated {
                    w.bool("truncated", true);
                }
            }
            Part::Nodes(nodes) => w.objects("nodes", nodes, |w, n| {
                w.str("node", &n.node);
                w.str("version", &n.version);
                w.u64("uptimeSeconds", n.uptime_seconds);
                w.u64("connections", n.connections);
                w.u64("users", n.users);
                w.u64("rooms", n.rooms);
            }),
        }
        if !missing.is_empty() {
            w.raw("missingNodes", &names_json(missing));
        }
        w.close();
    }

    /// Reads back what `write_result` wrote for `command` (a node's
    /// answer); `None` for anything else.
    pub fn read_result(
        command: &NodeCommand,
        text: &mut [u8],
        parser: &mut Parser,
    ) -> Option<Self> {
        parser.with_json(text, |value| {
            let object = value?.as_object()?;
            Some(match Part::empty_for(command) {
                Part::Count(_) => Part::Count(object.get("connections")?.as_u64()?),
                Part::Conns(_) => Part::Conns(read_list(object.get("connections")?, read_conn)?),
                Part::Rooms { .. } => Part::Rooms {
                    rooms: read_list(object.get("rooms")?, read_room)?,
                    truncated: object.get("truncated").and_then(|v| v.as_bool()) == Some(true),
                },
                Part::Nodes(_) => Part::Nodes(read_list(object.get("nodes")?, read_node)?),
            })
        })
    }
}

/// Two lists sorted by name as one, a room in both summed, cut to
/// `MAX_API_ROOMS`; and whether anything was cut.
fn merge_sorted(a: Vec<RoomCount>, b: Vec<RoomCount>) -> (Vec<RoomCount>, bool) {
    let mut merged = Vec::with_capacity((a.len() + b.len()).min(MAX_API_ROOMS));
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.room.cmp(&y.room) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    let (x, y) = (a.next(), b.next());
                    x.zip(y).map(|(x, y)| RoomCount {
                        room: x.room,
                        connections: x.connections.saturating_add(y.connections),
                        users: x.users.saturating_add(y.users),
                        shared: true,
                    })
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => return (merged, false),
        };
        let Some(next) = next else {
            return (merged, false);
        };
        if merged.len() == MAX_API_ROOMS {
            return (merged, true);
        }
        merged.push(next);
    }
}

/// A JSON array of strings.
fn names_json<S: AsRef<str>>(names: &[S]) -> Vec<u8> {
    let mut list = Vec::with_capacity(16 * names.len() + 2);
    list.push(b'[');
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            list.push(b',');
        }
        crate::json::write_str(&mut list, name.as_ref());
    }
    list.push(b']');
    list
}

/// Longest name read from a peer's answer (node ids, versions, connection
/// ids and user ids are all shorter).
const MAX_NAME: usize = 256;

fn read_list<T>(value: Value<'_, '_>, each: impl Fn(Value<'_, '_>) -> Option<T>) -> Option<Vec<T>> {
    let list = value.as_array()?;
    if list.len() > MAX_API_ROOMS + 1 {
        return None;
    }
    list.iter().map(each).collect()
}

fn name(value: Option<Value<'_, '_>>, max: usize) -> Option<String> {
    value?
        .into_string()
        .filter(|s| s.len() <= max)
        .map(str::to_owned)
}

fn read_conn(value: Value<'_, '_>) -> Option<ConnInfo> {
    let object = value.as_object()?;
    let rooms = read_list(object.get("rooms")?, |v| {
        name(Some(v), MAX_ROOM_LEN).map(Arc::from)
    })?;
    Some(ConnInfo {
        conn_id: name(object.get("connId"), MAX_NAME)?,
        node: name(object.get("node"), MAX_NAME)?,
        rooms,
    })
}

fn read_room(value: Value<'_, '_>) -> Option<RoomCount> {
    let object = value.as_object()?;
    Some(RoomCount {
        room: Arc::from(name(object.get("room"), MAX_ROOM_LEN)?),
        connections: object.get("connections")?.as_u64()?,
        users: object.get("users")?.as_u64()?,
        shared: false,
    })
}

fn read_node(value: Value<'_, '_>) -> Option<NodeInfo> {
    let object = value.as_object()?;
    let number = |key: &str| object.get(key)?.as_u64();
    Some(NodeInfo {
        node: name(object.get("node"), MAX_NAME)?,
        version: name(object.get("version"), MAX_NAME)?,
        uptime_seconds: number("uptimeSeconds")?,
        connections: number("connections")?,
        users: number("users")?,
        rooms: number("rooms")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str, connections: u64, users: u64) -> RoomCount {
        RoomCount {
            room: Arc::from(name),
            connections,
            users,
            shared: false,
        }
    }

    fn round_trip(command: &NodeCommand, part: &Part) -> Part {
        let mut text = Vec::new();
        part.write_result(command, &[], &mut text);
        Part::read_result(command, &mut text, &mut Parser::default()).expect("reads back")
    }

    #[test]
    fn rooms_merge_by_name_sorted_and_summed() {
        let mut part = Part::rooms([("b", 2, 1), ("a", 1, 1)].into_iter());
        part.merge(Part::rooms([("b", 3, 2), ("c", 1, 1)].into_iter()));
        assert_eq!(
            part,
            Part::Rooms {
                rooms: vec![
                    room("a", 1, 1),
                    RoomCount {
                        shared: true,
                        ..room("b", 5, 3)
                    },
                    room("c", 1, 1)
                ],
                truncated: false
            }
        );
    }

    #[test]
    fn rooms_are_bounded_and_say_so() {
        let names = |from: usize| (from..from + MAX_API_ROOMS).map(|i| format!("r{i:06}"));
        let (first, second): (Vec<_>, Vec<_>) = (names(0).collect(), names(5).collect());
        let mut part = Part::rooms(first.iter().map(|n| (n.as_str(), 1, 1)));
        assert!(matches!(
            &part,
            Part::Rooms {
                truncated: false,
                ..
            }
        ));
        part.merge(Part::rooms(second.iter().map(|n| (n.as_str(), 1, 1))));
        let Part::Rooms { rooms, truncated } = &part else {
            unreachable!()
        };
        assert!(truncated);
        assert_eq!(rooms.len(), MAX_API_ROOMS);
        assert_eq!(&*rooms[0].room, "r000000");
        assert_eq!(rooms[5].connections, 2);
    }

    #[test]
    fn a_shard_keeps_the_first_rooms_by_name_of_many() {
        let names: Vec<String> = (0..3 * MAX_API_ROOMS)
            .rev()
            .map(|i| format!("r{i:06}"))
            .collect();
        let Part::Rooms { rooms, truncated } =
            Part::rooms(names.iter().map(|n| (n.as_str(), 2, 1)))
        else {
            unreachable!()
        };
        assert!(truncated);
        assert_eq!(rooms.len(), MAX_API_ROOMS);
        assert!(rooms.windows(2).all(|w| w[0].room < w[1].room), "sorted");
        assert_eq!(&*rooms[0].room, "r000000");
        assert_eq!(
            rooms[MAX_API_ROOMS - 1].room.as_ref(),
            format!("r{:06}", MAX_API_ROOMS - 1)
        );
    }

    #[test]
    fn every_kind_reads_back_what_it_wrote() {
        let user = NodeCommand::User { user: "u".into() };
        let conns = Part::Conns(vec![ConnInfo {
            conn_id: "n1:ab-0-1".to_owned(),
            node: "n1".to_owned(),
            rooms: vec![Arc::from("lobby"), Arc::from("x\"y")],
        }]);
        assert_eq!(round_trip(&user, &conns), conns);
        let rooms_command = NodeCommand::Rooms { pattern: None };
        let rooms = Part::Rooms {
            rooms: vec![room("a", 1, 1)],
            truncated: true,
        };
        assert_eq!(round_trip(&rooms_command, &rooms), rooms);
        let nodes = Part::Nodes(vec![NodeInfo {
            node: "n".to_owned(),
            version: "1.2.0".to_owned(),
            uptime_seconds: 3,
            connections: 4,
            users: 2,
            rooms: 1,
        }]);
        assert_eq!(round_trip(&NodeCommand::Info, &nodes), nodes);
        let info = NodeCommand::Info;
        let count = Part::Count(7);
        let disconnect = NodeCommand::Disconnect {
            user: "u".into(),
            conn_id: None,
            code: 4500,
            reason: "r".into(),
        };
        assert_eq!(round_trip(&disconnect, &count), count);
        let mut wrong = b"{\"connections\":\"x\"}".to_vec();
        assert_eq!(
            Part::read_result(&info, &mut wrong, &mut Parser::default()),
            None
        );
    }

    #[test]
    fn missing_nodes_are_named_only_when_there_are_some() {
        let command = NodeCommand::User { user: "u".into() };
        let mut out = Vec::new();
        Part::Conns(Vec::new()).write_result(&command, &[], &mut out);
        assert_eq!(out, br#"{"user":"u","connections":[]}"#);
        out.clear();
        Part::Count(2).write_result(&command, &["b".into()], &mut out);
        assert_eq!(out, br#"{"connections":2,"missingNodes":["b"]}"#);
    }
}
