//! The webhook streams of a cluster (section 13.1, `docs/redis.md`): what
//! the node that sends webhooks asks of each server's stream and reads
//! back. The functions in `roomcast.lua` add the entries; here is how
//! they are read (`XREAD` from a cursor, never blocking: the connection
//! is shared and pipelined) and what an entry means.
//!
//! An entry is input like any reply: one out of shape (an unknown type, a
//! missing field, a name past its bound) is skipped, never acted on.

use std::sync::Arc;

use super::resp::{self, Reply};
use crate::codes::limits::MAX_SUB_LEN;
use crate::hooks::webhook::{Event, What};

/// Most entries read in one `XREAD`.
pub const READ_COUNT: usize = 256;

/// The longest room name or user id an entry may carry.
const MAX_NAME: usize = MAX_SUB_LEN;

/// Appends `XREAD COUNT <READ_COUNT> STREAMS <stream> <after>`.
pub fn read(out: &mut Vec<u8>, stream: &str, after: &str) {
    let count = READ_COUNT.to_string();
    resp::write_command(
        out,
        &["XREAD", "COUNT", count.as_str(), "STREAMS", stream, after],
    );
}

/// One entry read: its id, and its event unless it was out of shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub event: Option<Event>,
}

/// The entries of an `XREAD` of one stream, in order (none when nothing
/// is new: Redis answers nil); `None` for a reply out of shape.
pub fn entries(reply: &Reply) -> Option<Vec<Entry>> {
    let items = match reply {
        Reply::Nil => return Some(Vec::new()),
        Reply::Array(items) => items,
        _ => return None,
    };
    // RESP3 answers a map (the stream's name, then its entries), RESP2 an
    // array of [name, entries] pairs.
    let listed = match items.as_slice() {
        [Reply::Bulk(_), listed] => listed,
        [Reply::Array(pair)] => pair.get(1)?,
        _ => return None,
    };
    let Reply::Array(listed) = listed else {
        return None;
    };
    listed.iter().map(entry).collect()
}

fn entry(reply: &Reply) -> Option<Entry> {
    let Reply::Array(parts) = reply else {
        return None;
    };
    let [Reply::Bulk(id), Reply::Array(fields)] = parts.as_slice() else {
        return None;
    };
    let id = String::from_utf8(id.clone()).ok()?;
    let time = id.split_once('-')?.0.parse().ok()?;
    let event = what(fields).map(|what| Event { what, time });
    Some(Entry { id, event })
}

fn what(fields: &[Reply]) -> Option<What> {
    let field = |name: &str| {
        fields
            .chunks_exact(2)
            .find(|kv| kv[0].as_bytes() == Some(name.as_bytes()))
            .and_then(|kv| kv[1].as_bytes())
    };
    let name = |name: &str| -> Option<Arc<str>> {
        let bytes = field(name)?;
        let text = std::str::from_utf8(bytes).ok()?;
        (text.len() <= MAX_NAME).then(|| text.into())
    };
    let kind = field("type")?;
    Some(match kind {
        b"room.occupied" => What::RoomOccupied(name("room")?),
        b"room.vacated" => What::RoomVacated(name("room")?),
        b"user.online" => What::UserOnline(name("user")?),
        b"user.offline" => What::UserOffline(name("user")?),
        b"presence.join" => What::PresenceJoin {
            room: name("room")?,
            user: name("user")?,
        },
        b"presence.leave" => What::PresenceLeave {
            room: name("room")?,
            user: name("user")?,
        },
        b"room.message" => {
            let text = field("m")?;
            // The sequenced text is a JSON object written by a node.
            if !(text.starts_with(b"{\"") && text.ends_with(b"}")) {
                return None;
            }
            What::RoomMessageText {
                room: name("room")?,
                text: text.into(),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    fn raw(id: &str, fields: &[&str]) -> Reply {
        Reply::Array(vec![
            bulk(id),
            Reply::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn entries_are_read_in_order_with_their_redis_time() {
        let listed = Reply::Array(vec![
            raw(
                "1700000000123-0",
                &["type", "room.occupied", "room", "lobby"],
            ),
            raw(
                "1700000000123-1",
                &["type", "presence.join", "room", "lobby", "user", "u1"],
            ),
            raw("1700000000124-0", &["type", "user.offline", "user", "u1"]),
            raw(
                "1700000000125-0",
                &["type", "room.exploded", "room", "lobby"],
            ),
            raw("1700000000126-0", &["type", "room.vacated"]),
            raw(
                "1700000000127-0",
                &["type", "room.message", "room", "lobby", "m", "nope"],
            ),
        ]);
        let resp3 = Reply::Array(vec![bulk("rc:webhooks"), listed.clone()]);
        let resp2 = Reply::Array(vec![Reply::Array(vec![bulk("rc:webhooks"), listed])]);
        for reply in [resp3, resp2] {
            let read = entries(&reply).unwrap();
            let ids: Vec<&str> = read.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(
                ids,
                [
                    "1700000000123-0",
                    "1700000000123-1",
                    "1700000000124-0",
                    "1700000000125-0",
                    "1700000000126-0",
                    "1700000000127-0"
                ]
            );
            assert_eq!(
                read[0].event,
                Some(Event {
                    what: What::RoomOccupied("lobby".into()),
                    time: 1_700_000_000_123
                })
            );
            assert_eq!(
                read[1].event.as_ref().unwrap().what,
                What::PresenceJoin {
                    room: "lobby".into(),
                    user: "u1".into()
                }
            );
            assert_eq!(
                read[2].event.as_ref().unwrap().what,
                What::UserOffline("u1".into())
            );
            assert!(read[3..].iter().all(|e| e.event.is_none()), "{read:?}");
        }
        assert_eq!(entries(&Reply::Nil), Some(Vec::new()));
        assert_eq!(entries(&Reply::Integer(3)), None);
    }
}
