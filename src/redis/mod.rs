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
/// room has none.
pub fn publish(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    head: &[u8],
    tail: &[u8],
    fresh_epoch: &str,
    retention: Retention,
) {
    let history = retention.messages.to_string();
    let ttl = retention.ttl_ms.to_string();
    resp::write_command(
        out,
        &[
            b"FCALL".as_slice(),
            b"roomcast_publish",
            b"3",
            keys.seq.as_bytes(),
            keys.epoch.as_bytes(),
            keys.log.as_bytes(),
            head,
            tail,
            fresh_epoch.as_bytes(),
            history.as_bytes(),
            ttl.as_bytes(),
            keys.channel.as_bytes(),
        ],
    );
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

/// One message from a room's channel: `<epoch> <seq> <message text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelMessage<'a> {
    pub epoch: &'a str,
    pub seq: u64,
    pub text: &'a [u8],
}

/// Splits a channel payload; `None` if it is not one roomcast published.
pub fn channel_message(payload: &[u8]) -> Option<ChannelMessage<'_>> {
    let mut parts = payload.splitn(3, |&b| b == b' ');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let seq = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let text = parts.next()?;
    Some(ChannelMessage { epoch, seq, text })
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
        publish(&mut out, &keys, b"{\"seq\":", b"}", "e1", retention);
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
        let message = channel_message(b"e1 7 {\"a\": 1}").unwrap();
        assert_eq!((message.epoch, message.seq), ("e1", 7));
        assert_eq!(message.text, b"{\"a\": 1}");
        assert_eq!(channel_message(b"e1 x {}"), None);
        assert_eq!(channel_message(b"e1"), None);
    }
}
