//! Scale-out on Redis (`docs/protocol.md` section 10), sans-IO parts.
//!
//! Owns what a roomcast node says to Redis: the RESP codec (`resp`), the
//! `--redis` URLs (`url`), where a room's keys and channel live (`layout`)
//! and the Redis Functions that sequence a room event atomically
//! (`roomcast.lua`, with the commands that call it here). The bridge that
//! runs them is one thread with its own event loop; nothing here is ever
//! called on a shard thread, and nothing here touches a socket.

pub mod backoff;
pub mod layout;
pub mod pipeline;
pub mod resp;
pub mod subscriptions;
pub mod url;

use layout::RoomKeys;
use resp::Reply;

/// The function library, loaded by every node (`FUNCTION LOAD REPLACE`).
pub const LIBRARY: &str = include_str!("roomcast.lua");

/// Appends `FUNCTION LOAD REPLACE <library>`.
pub fn load_library(out: &mut Vec<u8>) {
    resp::write_command(
        out,
        &[
            b"FUNCTION".as_slice(),
            b"LOAD",
            b"REPLACE",
            LIBRARY.as_bytes(),
        ],
    );
}

/// What the history of a room keeps (`--history`, `--history-ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept.
    pub messages: u64,
    /// How long a room's keys outlive its last message, in milliseconds
    /// (0: forever).
    pub ttl_ms: u64,
}

/// Appends the `FCALL roomcast_publish` that sequences a room event whose
/// text is `head`, its `seq`, then `tail`; `fresh_epoch` is used if the
/// room has none, and `origin` goes with the event on the channel.
pub fn publish(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    text: (&[u8], &[u8]),
    fresh_epoch: &str,
    retention: Retention,
    origin: &str,
) {
    let history = retention.messages.to_string();
    let ttl = retention.ttl_ms.to_string();
    let args = [
        text.0,
        text.1,
        fresh_epoch.as_bytes(),
        history.as_bytes(),
        ttl.as_bytes(),
        origin.as_bytes(),
    ];
    fcall(out, b"roomcast_publish", keys, &args, Some(&keys.channel));
}

/// Appends `FCALL <function>` on a room's three keys with `args`, then the
/// room's channel when the function publishes.
fn fcall(
    out: &mut Vec<u8>,
    function: &[u8],
    keys: &RoomKeys,
    args: &[&[u8]],
    channel: Option<&str>,
) {
    let mut all: Vec<&[u8]> = vec![
        b"FCALL",
        function,
        b"3",
        keys.seq.as_bytes(),
        keys.epoch.as_bytes(),
        keys.log.as_bytes(),
    ];
    all.extend_from_slice(args);
    all.extend(channel.map(str::as_bytes));
    resp::write_command(out, &all);
}

/// What a `room:join` asks of the history (section 7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery<'a> {
    pub history: Option<u64>,
    pub since: Option<u64>,
    pub epoch: Option<&'a str>,
}

/// Appends the `FCALL roomcast_history` answering a join's `query`.
pub fn history(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    query: HistoryQuery<'_>,
    fresh_epoch: &str,
    retention: Retention,
) {
    let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
    let (k, since) = (number(query.history), number(query.since));
    let ttl = retention.ttl_ms.to_string();
    let epoch = query.epoch.unwrap_or("").as_bytes();
    let args = [
        k.as_bytes(),
        since.as_bytes(),
        epoch,
        fresh_epoch.as_bytes(),
        ttl.as_bytes(),
    ];
    fcall(out, b"roomcast_history", keys, &args, None);
}

/// A room's history as a join sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub epoch: String,
    pub seq: u64,
    /// `None` when the join did not ask to recover (`since` absent).
    pub recovered: Option<bool>,
    /// Message texts, oldest first, exactly as delivered live.
    pub messages: Vec<Vec<u8>>,
}

/// Reads the reply of `roomcast_history`.
pub fn history_reply(reply: &Reply) -> Option<History> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let [epoch, seq, recovered, Reply::Array(messages)] = items.as_slice() else {
        return None;
    };
    Some(History {
        epoch: String::from_utf8(epoch.as_bytes()?.to_vec()).ok()?,
        seq: u64::try_from(seq.as_i64()?).ok()?,
        recovered: match recovered.as_i64()? {
            -1 => None,
            n => Some(n == 1),
        },
        messages: messages
            .iter()
            .map(|m| m.as_bytes().map(<[u8]>::to_vec))
            .collect::<Option<_>>()?,
    })
}

/// A room event as Redis sequenced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    pub epoch: String,
}

/// Reads the `{seq, epoch}` reply of `roomcast_publish` or `roomcast_emit`.
pub fn sequenced(reply: &Reply) -> Option<Sequenced> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let [seq, epoch] = items.as_slice() else {
        return None;
    };
    Some(Sequenced {
        seq: u64::try_from(seq.as_i64()?).ok()?,
        epoch: String::from_utf8(epoch.as_bytes()?.to_vec()).ok()?,
    })
}

/// One message from a room's channel: `<epoch> <seq> <origin> <message text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage<'a> {
    pub epoch: &'a str,
    pub seq: u64,
    /// What the publishing node passed (`Origin`), `-` from the emitter.
    pub origin: &'a str,
    pub text: &'a [u8],
}

/// Splits a channel payload; `None` if it is not one roomcast published.
pub fn channel_message(payload: &[u8]) -> Option<ChannelMessage<'_>> {
    let mut parts = payload.splitn(4, |&b| b == b' ');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let origin = std::str::from_utf8(parts.next()?).ok()?;
    let text = parts.next()?;
    Some(ChannelMessage {
        epoch,
        seq,
        origin,
        text,
    })
}

/// A connection of the publishing node, by shard, slab key and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publisher {
    pub shard: usize,
    pub key: usize,
    pub id: u64,
}

/// Where a room event was published, as the channel carries it:
/// `<node>/<micros>/<shard>.<key>.<id>` or `<node>/<micros>/-`. The node it
/// came from leaves out the publisher (a publish without `echo`) and times
/// the fan-out from the moment it read the message; other nodes ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub node: &'a str,
    /// When the publisher's shard read the message, in microseconds since
    /// the node started.
    pub read_micros: u64,
    /// The publisher, to leave out of the fan-out.
    pub exclude: Option<Publisher>,
}

impl Origin<'_> {
    /// The text `parse` reads back.
    pub fn write(&self) -> String {
        match self.exclude {
            Some(p) => format!(
                "{}/{}/{}.{}.{}",
                self.node, self.read_micros, p.shard, p.key, p.id
            ),
            None => format!("{}/{}/-", self.node, self.read_micros),
        }
    }
}

impl<'a> Origin<'a> {
    /// Reads an origin; `None` for the emitter's `-` or anything else.
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(3, '/');
        let node = parts.next()?;
        let read_micros = parts.next()?.parse().ok()?;
        let exclude = match parts.next()? {
            "-" => None,
            conn => {
                let mut ids = conn.splitn(3, '.');
                Some(Publisher {
                    shard: ids.next()?.parse().ok()?,
                    key: ids.next()?.parse().ok()?,
                    id: ids.next()?.parse().ok()?,
                })
            }
        };
        Some(Origin {
            node,
            read_micros,
            exclude,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_names_its_three_keys_and_channel() {
        let mut out = Vec::new();
        let keys = RoomKeys::new("rc", "lobby");
        let retention = Retention {
            messages: 100,
            ttl_ms: 300_000,
        };
        publish(
            &mut out,
            &keys,
            (b"{\"seq\":", b"}"),
            "e1",
            retention,
            "n/1/-",
        );
        let (reply, _) = resp::parse(&out).unwrap().unwrap();
        let Reply::Array(args) = reply else { panic!() };
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes().unwrap()).collect();
        assert_eq!(
            args,
            [
                b"FCALL".as_slice(),
                b"roomcast_publish",
                b"3",
                b"rc:{lobby}:seq",
                b"rc:{lobby}:epoch",
                b"rc:{lobby}:log",
                b"{\"seq\":",
                b"}",
                b"e1",
                b"100",
                b"300000",
                b"n/1/-",
                b"rc:{lobby}",
            ]
        );
    }

    #[test]
    fn replies_and_channel_messages_are_read_back() {
        let reply = Reply::Array(vec![Reply::Integer(7), Reply::Bulk(b"e1".to_vec())]);
        assert_eq!(
            sequenced(&reply),
            Some(Sequenced {
                seq: 7,
                epoch: "e1".into()
            })
        );
        assert_eq!(sequenced(&Reply::Integer(7)), None);
        let message = channel_message(b"e1 7 - {\"a\": 1}").unwrap();
        assert_eq!((message.epoch, message.seq, message.origin), ("e1", 7, "-"));
        assert_eq!(message.text, b"{\"a\": 1}");
        assert_eq!(channel_message(b"e1 x - {}"), None);
        assert_eq!(channel_message(b"e1 7 {}"), None);
        assert_eq!(channel_message(b"e1"), None);
    }

    #[test]
    fn an_origin_reads_back_what_it_wrote() {
        let with = Origin {
            node: "n-1",
            read_micros: 42,
            exclude: Some(Publisher {
                shard: 1,
                key: 7,
                id: 99,
            }),
        };
        assert_eq!(with.write(), "n-1/42/1.7.99");
        assert_eq!(Origin::parse(&with.write()), Some(with));
        let without = Origin {
            exclude: None,
            ..with
        };
        assert_eq!(Origin::parse(&without.write()), Some(without));
        assert_eq!(Origin::parse("-"), None);
        assert_eq!(Origin::parse("n/x/-"), None);
        assert_eq!(Origin::parse("n/1/1.2"), None);
    }
}
