//! Scale-out on Redis (`docs/protocol.md` section 10), sans-IO parts.
//!
//! Owns what a roomcast node says to Redis: the RESP codec (`resp`), the
//! `--redis` URLs (`url`), what Sentinels answer (`sentinel`), where a
//! room's keys and channel live (`layout`), the Redis Functions that
//! sequence a room event atomically (`roomcast.lua`, with the commands
//! that call it here), the Server API's transport between nodes (`api`),
//! and whether a server still answers (`liveness`). The bridge that runs
//! them is one thread with its own event loop; nothing here is ever called
//! on a shard thread, and nothing here touches a socket.
//!
//! What Redis answers and what its channels carry is input, checked here
//! as client input is: a reply or payload out of shape or out of bounds
//! (a count past `MAX_COUNT`, a history longer than its `seq` allows or
//! than `MAX_HISTORY`, an epoch that is not a name) is refused (`None`),
//! so nothing downstream does arithmetic on unchecked numbers.

pub mod api;
pub mod backoff;
pub mod layout;
pub mod liveness;
pub mod pipeline;
pub mod requests;
pub mod resp;
pub mod sentinel;
pub mod slots;
pub mod subscriptions;
pub mod url;
pub mod webhooks;

use crate::config::HistoryConfig;
use crate::conn::ConnRef;
use crate::hooks::webhook::Types;
use layout::RoomKeys;
use resp::Reply;
use std::borrow::Cow;

use crate::codes::limits::{
    MAX_EPOCH_LEN, MAX_HISTORY, MAX_PRESENCE_USERS, MAX_SAFE_INTEGER, MAX_SUB_LEN,
};

/// The largest number taken from Redis (a `seq`, a count, a time in
/// microseconds): 2^53 - 1, which reaches a client's JSON exactly and
/// leaves room to add to it.
pub const MAX_COUNT: u64 = MAX_SAFE_INTEGER.unsigned_abs();

/// A number Redis answered (a count, or `roomcast_send`'s reply): an
/// integer from 0 to `MAX_COUNT`.
pub fn count_reply(reply: &Reply) -> Option<u64> {
    u64::try_from(reply.as_i64()?)
        .ok()
        .filter(|&n| n <= MAX_COUNT)
}

/// A number in a channel payload, written as roomcast writes it: decimal
/// digits without a sign or a leading zero, at most `MAX_COUNT`.
fn decimal(text: &str) -> Option<u64> {
    let canonical =
        text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    canonical
        .then(|| text.parse().ok())
        .flatten()
        .filter(|&n| n <= MAX_COUNT)
}

/// An epoch Redis gave: a name (`layout::is_name`) of at most `MAX_EPOCH_LEN`.
fn epoch(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    layout::is_name(text, MAX_EPOCH_LEN).then(|| text.to_owned())
}

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

/// Whether `reply` says the server no longer has the library: an operator
/// ran `FUNCTION FLUSH`, or the server was made a replica and a full sync
/// replaced its functions with its master's. The link must be set up again,
/// which loads the library (or finds out the server is no master).
pub fn is_library_missing(reply: &resp::Reply) -> bool {
    matches!(reply, resp::Reply::Error(e) if e.starts_with("ERR Function not found"))
}

/// What a node with webhooks on asks the functions to add to the server's
/// stream of webhook events (section 13.1): the types wanted and the
/// stream's bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookFlags {
    /// Empty: webhooks off, nothing is added.
    pub types: Types,
    /// `--webhook-queue`: about the most entries the stream keeps.
    pub queue: usize,
}

impl WebhookFlags {
    /// These flags for a call about `room`.
    pub fn at(self, room: &str) -> RoomHooks<'_> {
        RoomHooks { flags: self, room }
    }
}

/// The webhook flags of one call, with the room its events are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomHooks<'a> {
    pub flags: WebhookFlags,
    pub room: &'a str,
}

impl RoomHooks<'_> {
    /// Webhooks off.
    pub const OFF: RoomHooks<'static> = RoomHooks {
        flags: WebhookFlags {
            types: Types::NONE,
            queue: 0,
        },
        room: "",
    };

    /// The four trailing arguments (stream, mask, bound, room). With
    /// webhooks off (every call of a node without `--webhook`, on the
    /// per-message path too) the library reads only the mask, `0`: nothing
    /// is allocated or copied for the others.
    fn args<'a>(self, keys: &'a RoomKeys) -> [Cow<'a, [u8]>; 4]
    where
        Self: 'a,
    {
        if self.flags.types == Types::NONE {
            return [b"".as_slice(), b"0", b"0", b""].map(Cow::Borrowed);
        }
        [
            Cow::Borrowed(keys.webhooks.as_bytes()),
            Cow::Owned(self.flags.types.bits().to_string().into_bytes()),
            Cow::Owned(self.flags.queue.to_string().into_bytes()),
            Cow::Borrowed(self.room.as_bytes()),
        ]
    }
}

/// A room event to sequence: its text is `head`, its `seq`, then `tail`;
/// `origin` goes with it on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsequenced {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub origin: String,
}

impl Unsequenced {
    /// The bytes this event adds to a `publish` call.
    pub fn size(&self) -> usize {
        self.head.len() + self.tail.len() + self.origin.len()
    }
}

/// Appends the `FCALL roomcast_publish` that sequences `messages` (at least
/// one) of the room of `keys` in this order, giving them consecutive seqs
/// (`sequenced_run` reads the reply); `fresh_epoch` is used if the room has
/// none. The history entries are stamped with this node's clock, read
/// here: the function then makes no `TIME` call of its own on the
/// per-message path.
pub fn publish(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    messages: &[Unsequenced],
    fresh_epoch: &str,
    retention: HistoryConfig,
    hooks: RoomHooks<'_>,
) {
    let history = retention.messages.to_string();
    let ttl = retention.ttl_ms().to_string();
    let now = crate::sys::unix_ms().to_string();
    let count = messages.len().to_string();
    let mut args = Vec::with_capacity(10 + 3 * messages.len());
    args.extend([
        fresh_epoch.as_bytes(),
        history.as_bytes(),
        ttl.as_bytes(),
        keys.channel.as_bytes(),
        now.as_bytes(),
        count.as_bytes(),
    ]);
    for message in messages {
        args.extend([
            message.head.as_slice(),
            &message.tail,
            message.origin.as_bytes(),
        ]);
    }
    // Every argument costs Redis a copy and a Lua string on each call:
    // the webhook ones, optional, go only when webhooks are on.
    let on = hooks.flags.types != Types::NONE;
    let hooks = hooks.args(keys);
    if on {
        args.extend(hooks.iter().map(AsRef::as_ref));
    }
    fcall(out, b"roomcast_publish", keys, true, &args);
}

/// Appends `FCALL <function>` on a room's `seq`, `epoch` and `log` (and
/// `members` when the function needs to know whether the room has any)
/// with `args`.
fn fcall(out: &mut Vec<u8>, function: &[u8], keys: &RoomKeys, with_members: bool, args: &[&[u8]]) {
    let mut names = function_keys(keys, false)[..3].to_vec();
    if with_members {
        names.push(keys.members.as_bytes());
    }
    fcall_with(out, function, &names, args);
}

/// What a `room:join` asks of the history (section 7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery<'a> {
    pub history: Option<u64>,
    pub since: Option<u64>,
    pub epoch: Option<&'a str>,
}

/// The numbers of the five leading arguments of `roomcast_history` (and of
/// `roomcast_join`, which starts with them), as text, and the history
/// length that bounds what both read (the log may keep more).
struct HistoryNumbers {
    k: String,
    since: String,
    ttl: String,
    kept: String,
}

impl HistoryNumbers {
    fn new(query: &HistoryQuery<'_>, retention: HistoryConfig) -> Self {
        let number = |n: Option<u64>| n.map(|n| n.to_string()).unwrap_or_default();
        Self {
            k: number(query.history),
            since: number(query.since),
            ttl: retention.ttl_ms().to_string(),
            kept: retention.messages.to_string(),
        }
    }

    /// `history`, `since`, `epoch` (each empty when absent), the fresh
    /// epoch and the TTL.
    fn args<'a>(&'a self, query: &HistoryQuery<'a>, fresh_epoch: &'a str) -> [&'a [u8]; 5] {
        [
            self.k.as_bytes(),
            self.since.as_bytes(),
            query.epoch.unwrap_or("").as_bytes(),
            fresh_epoch.as_bytes(),
            self.ttl.as_bytes(),
        ]
    }

    /// The arguments of `roomcast_history` and `roomcast_recover`: those of
    /// `args`, then the history length.
    fn read_args<'a>(&'a self, query: &HistoryQuery<'a>, fresh_epoch: &'a str) -> Vec<&'a [u8]> {
        let mut args = self.args(query, fresh_epoch).to_vec();
        args.push(self.kept.as_bytes());
        args
    }
}

/// Appends the `FCALL roomcast_history` answering a join's `query`.
pub fn history(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    query: HistoryQuery<'_>,
    fresh_epoch: &str,
    retention: HistoryConfig,
) {
    let numbers = HistoryNumbers::new(&query, retention);
    let args = numbers.read_args(&query, fresh_epoch);
    fcall(out, b"roomcast_history", keys, false, &args);
}

/// Appends the `FCALL roomcast_recover` of a node that delivered a room up
/// to `seq` of `epoch` and reconnected: what it missed, as `history` reads
/// it, after raising an engine's `seq` that is behind in that epoch
/// (section 15: no `seq` given out twice in an epoch).
pub fn recover(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    (epoch, seq): (&str, u64),
    fresh_epoch: &str,
    retention: HistoryConfig,
) {
    let query = HistoryQuery {
        history: Some(retention.messages as u64),
        since: Some(seq),
        epoch: Some(epoch),
    };
    let numbers = HistoryNumbers::new(&query, retention);
    let args = numbers.read_args(&query, fresh_epoch);
    fcall(out, b"roomcast_recover", keys, false, &args);
}

/// A connection joining or leaving a room, as presence counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    pub node: String,
    pub user: String,
    pub name: Option<String>,
    /// Already in the room (a join that only reads the history).
    pub rejoin: bool,
    /// The room announces presence (`--presence-rooms`).
    pub announce: bool,
    /// `--presence-event-limit`.
    pub event_limit: usize,
    /// The channel message's origin.
    pub origin: String,
    /// The `presence:join` or `presence:leave` text to publish if due.
    pub text: Vec<u8>,
}

/// The seven keys of a room, in the order `roomcast.lua` numbers them for
/// its functions; `presence_only` leaves out the first three (seq, epoch, log).
fn function_keys(keys: &RoomKeys, presence_only: bool) -> Vec<&[u8]> {
    let all = [
        &keys.seq,
        &keys.epoch,
        &keys.log,
        &keys.users,
        &keys.names,
        &keys.nodes,
        &keys.members,
    ];
    let from = if presence_only { 3 } else { 0 };
    all[from..].iter().map(|k| k.as_bytes()).collect()
}

/// Appends `FCALL <function> <keys> <args>`.
fn fcall_with(out: &mut Vec<u8>, function: &[u8], keys: &[&[u8]], args: &[&[u8]]) {
    let count = keys.len().to_string();
    let mut all: Vec<&[u8]> = vec![b"FCALL", function, count.as_bytes()];
    all.extend_from_slice(keys);
    all.extend_from_slice(args);
    resp::write_command(out, &all);
}

fn flag(on: bool) -> &'static [u8] {
    if on { b"1" } else { b"0" }
}

/// Appends the `FCALL roomcast_join` answering a join's `query` and
/// counting the joiner in (`change`).
pub fn join(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    query: HistoryQuery<'_>,
    fresh_epoch: &str,
    retention: HistoryConfig,
    change: &PresenceChange,
    hooks: RoomHooks<'_>,
) {
    let numbers = HistoryNumbers::new(&query, retention);
    let limit = change.event_limit.to_string();
    let history = numbers.args(&query, fresh_epoch);
    let presence = [
        change.node.as_bytes(),
        change.user.as_bytes(),
        change.name.as_deref().unwrap_or("").as_bytes(),
        flag(change.name.is_some()),
        flag(change.rejoin),
        flag(change.announce),
        limit.as_bytes(),
        keys.channel.as_bytes(),
        change.origin.as_bytes(),
        &change.text,
    ];
    let hooks = hooks.args(keys);
    let mut args = history.to_vec();
    args.extend_from_slice(&presence);
    args.extend(hooks.iter().map(AsRef::as_ref));
    args.push(numbers.kept.as_bytes());
    fcall_with(out, b"roomcast_join", &function_keys(keys, false), &args);
}

/// The pseudo-room whose presence is every `/ws` connection of the
/// cluster (room names are never empty): what `user:send` and
/// `system:broadcast` count.
pub const ONLINE: &str = "";

/// Appends the `FCALL roomcast_count` counting `n` connections of
/// `change.user` in the online set (`n` < 0: out).
pub fn count(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    change: &PresenceChange,
    n: i64,
    hooks: WebhookFlags,
) {
    let n = n.to_string();
    let hooks = hooks.at(ONLINE).args(keys);
    let mut args = vec![change.node.as_bytes(), change.user.as_bytes(), n.as_bytes()];
    args.extend(hooks.iter().map(AsRef::as_ref));
    fcall_with(out, b"roomcast_count", &function_keys(keys, true), &args);
}

/// The channel of direct messages and broadcasts, which every node
/// subscribes to on the server of the online set.
pub fn direct_channel(prefix: &str) -> String {
    format!("{prefix}:{{{}}}:direct", layout::NODE_TAG)
}

/// A direct message or broadcast on the direct channel:
/// `<origin> <length of to> <to><message text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Direct<'a> {
    pub origin: &'a str,
    /// `None`: a broadcast to every connection.
    pub to: Option<&'a str>,
    pub text: &'a [u8],
}

impl Direct<'_> {
    /// The channel payload `parse` reads back.
    pub fn write(&self) -> Vec<u8> {
        let to = self.to.unwrap_or("");
        let mut out = Vec::with_capacity(self.origin.len() + to.len() + self.text.len() + 8);
        out.extend_from_slice(self.origin.as_bytes());
        out.push(b' ');
        out.extend_from_slice(to.len().to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(to.as_bytes());
        out.extend_from_slice(self.text);
        out
    }
}

impl<'a> Direct<'a> {
    /// Reads a payload `write` made; `None` for anything else (a `to`
    /// longer than a user id can be among them).
    pub fn parse(payload: &'a [u8]) -> Option<Self> {
        let mut parts = payload.splitn(3, |&b| b == b' ');
        let origin = std::str::from_utf8(parts.next()?).ok()?;
        let len = decimal(std::str::from_utf8(parts.next()?).ok()?)?;
        let len = usize::try_from(len).ok().filter(|&n| n <= MAX_SUB_LEN)?;
        let rest = parts.next()?;
        let (to, text) = rest.split_at_checked(len)?;
        let to = std::str::from_utf8(to).ok()?;
        Some(Direct {
            origin,
            to: (len > 0).then_some(to),
            text,
        })
    }
}

/// Appends the `FCALL roomcast_send` that publishes `payload` on the
/// direct channel and answers how many connections of `to` (`None`: of
/// the cluster) it is for.
pub fn send(out: &mut Vec<u8>, prefix: &str, to: Option<&str>, payload: &[u8]) {
    let keys = RoomKeys::new(prefix, ONLINE);
    let channel = direct_channel(prefix);
    let args = [to.unwrap_or("").as_bytes(), channel.as_bytes(), payload];
    let keys = [keys.users.as_bytes(), keys.members.as_bytes()];
    fcall_with(out, b"roomcast_send", &keys, &args);
}

/// Appends the `FCALL roomcast_leave` counting a connection out; the last
/// member's leave lets the room expire `ttl_ms` after its newest message.
pub fn leave(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    change: &PresenceChange,
    ttl_ms: u64,
    hooks: RoomHooks<'_>,
) {
    let limit = change.event_limit.to_string();
    let ttl = ttl_ms.to_string();
    let hooks = hooks.args(keys);
    let mut args = vec![
        change.node.as_bytes(),
        change.user.as_bytes(),
        flag(change.announce),
        limit.as_bytes(),
        keys.channel.as_bytes(),
        change.origin.as_bytes(),
        &change.text,
        ttl.as_bytes(),
    ];
    args.extend(hooks.iter().map(AsRef::as_ref));
    fcall_with(out, b"roomcast_leave", &function_keys(keys, false), &args);
}

/// One user of a room as this node counts it, for `roomcast_sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUser {
    pub user: String,
    pub connections: u32,
    pub name: Option<String>,
}

/// What `roomcast_sync` needs of the room's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRules {
    /// The room announces presence (`--presence-rooms`).
    pub announce: bool,
    /// `--presence-event-limit`.
    pub event_limit: usize,
    /// `--history-ttl`, for a room left without members.
    pub ttl_ms: u64,
    /// The node's webhook flags (section 13.1).
    pub hooks: WebhookFlags,
}

/// Appends the `FCALL roomcast_sync` that sets `node`'s connections in
/// `room` to exactly `users` (none: a dead node's are all removed); a room
/// left without members expires `ttl_ms` after its newest message.
pub fn sync(
    out: &mut Vec<u8>,
    keys: &RoomKeys,
    room: &str,
    node: &str,
    rules: SyncRules,
    users: &[NodeUser],
) {
    let limit = rules.event_limit.to_string();
    let ttl = rules.ttl_ms.to_string();
    let counts: Vec<String> = users.iter().map(|u| u.connections.to_string()).collect();
    let hooks = rules.hooks.at(room).args(keys);
    let mut args: Vec<&[u8]> = vec![
        node.as_bytes(),
        room.as_bytes(),
        flag(rules.announce),
        limit.as_bytes(),
        keys.channel.as_bytes(),
        ttl.as_bytes(),
    ];
    args.extend(hooks.iter().map(AsRef::as_ref));
    for (user, count) in users.iter().zip(&counts) {
        args.push(user.user.as_bytes());
        args.push(count.as_bytes());
        args.push(user.name.as_deref().unwrap_or("").as_bytes());
    }
    fcall_with(out, b"roomcast_sync", &function_keys(keys, false), &args);
}

/// Appends the `FCALL roomcast_forget` of the Server API's
/// `history_remove`: the room's messages go, and the room itself when it
/// has no member in the cluster.
pub fn forget(out: &mut Vec<u8>, keys: &RoomKeys) {
    fcall(out, b"roomcast_forget", keys, true, &[]);
}

/// Appends the `FCALL roomcast_presence` listing at most `limit` users.
pub fn presence(out: &mut Vec<u8>, keys: &RoomKeys, limit: usize) {
    let limit = limit.to_string();
    let keys = [
        keys.users.as_bytes(),
        keys.names.as_bytes(),
        keys.members.as_bytes(),
    ];
    fcall_with(out, b"roomcast_presence", &keys, &[limit.as_bytes()]);
}

/// One user of `presence:get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentUser {
    pub user: String,
    pub name: Option<String>,
    pub connections: u64,
}

/// A room's presence in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Distinct users.
    pub users: u64,
    /// Connections.
    pub connections: u64,
    /// At most the limit asked for.
    pub listed: Vec<PresentUser>,
}

/// Reads the reply of `roomcast_presence`: at most `MAX_PRESENCE_USERS`
/// users listed (what was asked for), no more than the users counted,
/// each a user id of at most `MAX_SUB_LEN` bytes.
pub fn presence_reply(reply: &Reply) -> Option<Presence> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let [users, connections, Reply::Array(listed)] = items.as_slice() else {
        return None;
    };
    let users = count_reply(users)?;
    let shown = listed.len() / 3;
    if listed.len() % 3 != 0 || shown > MAX_PRESENCE_USERS || u64::try_from(shown).ok()? > users {
        return None;
    }
    let text = |r: &Reply| String::from_utf8(r.as_bytes()?.to_vec()).ok();
    let listed = listed
        .chunks_exact(3)
        .map(|c| {
            let [user, name, connections] = c else {
                return None;
            };
            let user = text(user).filter(|u| !u.is_empty() && u.len() <= MAX_SUB_LEN)?;
            Some(PresentUser {
                user,
                name: text(name),
                connections: count_reply(connections)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Presence {
        users,
        connections: count_reply(connections)?,
        listed,
    })
}

/// A room's history as a join sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    pub epoch: String,
    pub seq: u64,
    /// `None` when the join did not ask to recover (`since` absent).
    pub recovered: Option<bool>,
    /// Message texts, oldest first, exactly as delivered live: the last
    /// `messages.len()` events up to `seq`.
    pub messages: Vec<Vec<u8>>,
}

impl History {
    /// The `seq` of the oldest message; `None` when there are more
    /// messages than events up to `seq` (never so from `history_reply`).
    pub fn first_seq(&self) -> Option<u64> {
        let held = u64::try_from(self.messages.len()).ok()?;
        self.seq.checked_add(1)?.checked_sub(held)
    }
}

/// Reads the reply of `roomcast_history`: an epoch, a `seq` within
/// `MAX_COUNT`, whether it recovered (-1: not asked, 0, 1) and at most
/// `seq` and `MAX_HISTORY` messages.
pub fn history_reply(reply: &Reply) -> Option<History> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let [epoch_reply, seq, recovered, Reply::Array(messages)] = items.get(..4)? else {
        return None;
    };
    let seq = count_reply(seq)?;
    if messages.len() > MAX_HISTORY || u64::try_from(messages.len()).ok()? > seq {
        return None;
    }
    Some(History {
        epoch: epoch(epoch_reply.as_bytes()?)?,
        seq,
        recovered: match recovered.as_i64()? {
            -1 => None,
            0 => Some(false),
            1 => Some(true),
            _ => return None,
        },
        messages: messages
            .iter()
            .map(|m| m.as_bytes().map(<[u8]>::to_vec))
            .collect::<Option<_>>()?,
    })
}

/// Reads the reply of `roomcast_join`: the history, and the room's
/// connections in the cluster.
pub fn join_reply(reply: &Reply) -> Option<(History, u64)> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let members = count_reply(items.get(4)?)?;
    Some((history_reply(reply)?, members))
}

/// A room event as Redis sequenced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    pub epoch: String,
}

/// Reads the `{seq, epoch}` reply of `roomcast_publish` or `roomcast_emit`:
/// an event's `seq` is 1 to `MAX_COUNT`.
pub fn sequenced(reply: &Reply) -> Option<Sequenced> {
    let Reply::Array(items) = reply else {
        return None;
    };
    let [seq, epoch_reply] = items.as_slice() else {
        return None;
    };
    Some(Sequenced {
        seq: count_reply(seq).filter(|&seq| seq > 0)?,
        epoch: epoch(epoch_reply.as_bytes()?)?,
    })
}

/// Reads the reply of a `roomcast_publish` of `n` events: each one's
/// `Sequenced`, in the order they were passed (their seqs follow the
/// first's), every seq 1 to `MAX_COUNT`.
pub fn sequenced_run(reply: &Reply, n: usize) -> Option<Vec<Sequenced>> {
    let first = sequenced(reply)?;
    let last = first
        .seq
        .checked_add(u64::try_from(n).ok()?.checked_sub(1)?)?;
    if last > MAX_COUNT {
        return None;
    }
    Some(
        (first.seq..=last)
            .map(|seq| Sequenced {
                seq,
                epoch: first.epoch.clone(),
            })
            .collect(),
    )
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

/// The epoch of a presence event on a room's channel, whose `seq` is 0.
pub const PRESENCE_EPOCH: &str = "-";

/// The epoch of a volatile event (section 14) on a room's channel, whose
/// `seq` is 0: never a name (`layout::is_name`), so never a room's epoch.
pub const VOLATILE_EPOCH: &str = "~";

/// Appends the `SPUBLISH` of a volatile event on a room's `channel`:
/// `~ 0 <origin> <text>`, which `channel_message` reads back.
pub fn volatile(out: &mut Vec<u8>, channel: &str, origin: &str, text: &[u8]) {
    let mut payload = Vec::with_capacity(VOLATILE_EPOCH.len() + origin.len() + text.len() + 4);
    payload.extend_from_slice(VOLATILE_EPOCH.as_bytes());
    payload.extend_from_slice(b" 0 ");
    payload.extend_from_slice(origin.as_bytes());
    payload.push(b' ');
    payload.extend_from_slice(text);
    resp::write_command(out, &[b"SPUBLISH".as_slice(), channel.as_bytes(), &payload]);
}

/// Splits a channel payload; `None` if it is not one roomcast published:
/// a room event (an epoch and a `seq` of 1 to `MAX_COUNT`), a presence
/// event (`- 0`) or a volatile event (`~ 0`).
pub fn channel_message(payload: &[u8]) -> Option<ChannelMessage<'_>> {
    let mut parts = payload.splitn(4, |&b| b == b' ');
    let epoch = std::str::from_utf8(parts.next()?).ok()?;
    let seq = decimal(std::str::from_utf8(parts.next()?).ok()?)?;
    let unsequenced = epoch == PRESENCE_EPOCH || epoch == VOLATILE_EPOCH;
    let event = !unsequenced && layout::is_name(epoch, MAX_EPOCH_LEN);
    if !(unsequenced && seq == 0 || event && seq > 0) {
        return None;
    }
    let origin = std::str::from_utf8(parts.next()?).ok()?;
    let text = parts.next()?;
    Some(ChannelMessage {
        epoch,
        seq,
        origin,
        text,
    })
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
    pub exclude: Option<ConnRef>,
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
    /// Reads an origin `write` made; `None` for the emitter's `-` or
    /// anything else (numbers past `MAX_COUNT` among them).
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.splitn(3, '/');
        let node = parts.next()?;
        let read_micros = decimal(parts.next()?)?;
        let index = |text: Option<&str>| usize::try_from(decimal(text?)?).ok();
        let exclude = match parts.next()? {
            "-" => None,
            conn => {
                let mut ids = conn.splitn(3, '.');
                Some(ConnRef {
                    shard: index(ids.next())?,
                    key: index(ids.next())?,
                    id: decimal(ids.next()?)?,
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

    fn message(head: &[u8], origin: &str) -> Unsequenced {
        Unsequenced {
            head: head.to_vec(),
            tail: b"}".to_vec(),
            origin: origin.into(),
        }
    }

    #[test]
    fn a_missing_function_is_told_from_other_errors() {
        let missing = resp::Reply::Error("ERR Function not found".into());
        assert!(is_library_missing(&missing));
        assert!(!is_library_missing(&resp::Reply::Error("ERR other".into())));
        assert!(!is_library_missing(&resp::Reply::Bulk(
            b"ERR Function not found".to_vec()
        )));
    }

    #[test]
    fn a_publish_names_its_keys_channel_messages_and_webhook_flags() {
        let mut out = Vec::new();
        let keys = RoomKeys::new("rc", "lobby");
        let retention = HistoryConfig {
            messages: 100,
            ttl: std::time::Duration::from_secs(300),
        };
        let messages = [
            message(b"{\"seq\":", "n/1/-"),
            message(b"{\"s\":", "n/2/0.1.2"),
        ];
        publish(
            &mut out,
            &keys,
            &messages,
            "e1",
            retention,
            WebhookFlags {
                types: Types::of(&[crate::hooks::webhook::EventType::RoomMessage]),
                queue: 500,
            }
            .at("lobby"),
        );
        let before = crate::sys::unix_ms();
        let (reply, _) = resp::parse(&out).unwrap().unwrap();
        let Reply::Array(args) = reply else { panic!() };
        let mut args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes().unwrap()).collect();
        // The entries' time, from this node's clock.
        let now: u64 = std::str::from_utf8(args.remove(11))
            .unwrap()
            .parse()
            .unwrap();
        assert!(now.abs_diff(before) < 60_000, "{now} {before}");
        assert_eq!(
            args,
            [
                b"FCALL".as_slice(),
                b"roomcast_publish",
                b"4",
                b"rc:{lobby}:seq",
                b"rc:{lobby}:epoch",
                b"rc:{lobby}:log",
                b"rc:{lobby}:members",
                b"e1",
                b"100",
                b"300000",
                b"rc:{lobby}",
                b"2",
                b"{\"seq\":",
                b"}",
                b"n/1/-",
                b"{\"s\":",
                b"}",
                b"n/2/0.1.2",
                b"rc:webhooks",
                b"64",
                b"500",
                b"lobby",
            ]
        );
    }

    #[test]
    fn a_publish_without_webhooks_leaves_their_arguments_out() {
        let mut out = Vec::new();
        let keys = RoomKeys::new("rc", "lobby");
        let retention = HistoryConfig {
            messages: 1,
            ttl: std::time::Duration::from_secs(300),
        };
        let messages = [message(b"{\"seq\":", "-")];
        publish(&mut out, &keys, &messages, "e1", retention, RoomHooks::OFF);
        let (reply, _) = resp::parse(&out).unwrap().unwrap();
        let Reply::Array(args) = reply else { panic!() };
        // FCALL, the name, the key count, four keys, six arguments, one message.
        assert_eq!(args.len(), 16, "{args:?}");
        assert_eq!(args[10], Reply::Bulk(b"rc:{lobby}".to_vec()));
    }

    #[test]
    fn a_run_of_events_gets_consecutive_seqs_from_the_first() {
        let reply = |seq: i64| Reply::Array(vec![Reply::Integer(seq), Reply::Bulk(b"e1".to_vec())]);
        let run = sequenced_run(&reply(7), 3).unwrap();
        let seqs: Vec<u64> = run.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, [7, 8, 9]);
        assert!(run.iter().all(|s| s.epoch == "e1"));
        let last = i64::try_from(MAX_COUNT).unwrap();
        assert!(sequenced_run(&reply(last), 1).is_some());
        assert_eq!(sequenced_run(&reply(last), 2), None, "past MAX_COUNT");
        assert_eq!(sequenced_run(&reply(0), 1), None);
        assert_eq!(
            sequenced_run(&reply(1), 0),
            None,
            "a call sequences one at least"
        );
    }

    #[test]
    fn the_library_reads_the_type_mask_as_rust_writes_it() {
        for (i, t) in crate::hooks::webhook::EventType::ALL
            .into_iter()
            .enumerate()
        {
            let bit = 1u8 << i;
            assert_eq!(Types::of(&[t]).bits(), bit);
            let entry = format!("['{}'] = {bit}", t.name());
            assert!(LIBRARY.contains(&entry), "{entry}");
        }
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
    fn a_volatile_event_is_one_spublish_whose_payload_reads_back_unsequenced() {
        let mut out = Vec::new();
        volatile(&mut out, "rc:{lobby}", "n1/0/0.1.2", b"{\"a\":1}");
        let sent = String::from_utf8(out).unwrap();
        assert!(sent.starts_with("*3\r\n$8\r\nSPUBLISH\r\n$10\r\nrc:{lobby}\r\n"));
        let payload = sent.split("\r\n").nth(6).unwrap();
        assert_eq!(payload, "~ 0 n1/0/0.1.2 {\"a\":1}");
        let message = channel_message(payload.as_bytes()).unwrap();
        assert_eq!((message.epoch, message.seq), (VOLATILE_EPOCH, 0));
        assert_eq!(message.origin, "n1/0/0.1.2");
        assert_eq!(message.text, b"{\"a\":1}");
        // Strict: a volatile event has seq 0, and `~` is never an epoch.
        assert_eq!(channel_message(b"~ 1 - {}"), None);
        assert_eq!(channel_message(b"~~ 0 - {}"), None);
        assert_eq!(channel_message(b"~ 0 -"), None);
    }

    #[test]
    fn a_direct_message_reads_back_what_it_wrote() {
        for to in [Some("bob smith"), Some("b"), None] {
            let direct = Direct {
                origin: "n/1/0.3.4",
                to,
                text: br#"{"event":"x:y"}"#,
            };
            assert_eq!(Direct::parse(&direct.write()), Some(direct));
        }
        assert_eq!(Direct::parse(b"o 9 ab"), None);
        assert_eq!(Direct::parse(b"o x ab"), None);
    }

    #[test]
    fn an_origin_reads_back_what_it_wrote() {
        let with = Origin {
            node: "n-1",
            read_micros: 42,
            exclude: Some(ConnRef {
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

    fn bulk(text: &str) -> Reply {
        Reply::Bulk(text.as_bytes().to_vec())
    }

    /// `roomcast_history`'s reply shape: epoch, seq, recovered, messages.
    fn history_of(epoch: &str, seq: i64, recovered: i64, messages: usize) -> Reply {
        Reply::Array(vec![
            bulk(epoch),
            Reply::Integer(seq),
            Reply::Integer(recovered),
            Reply::Array(vec![bulk("{}"); messages]),
        ])
    }

    #[test]
    fn a_history_with_more_messages_than_its_seq_is_refused() {
        // Taken before, it made the recovery compute `seq + 1 - len`:
        // a panic in debug, a wrap (and events of seq near 2^64) in release.
        assert_eq!(history_reply(&history_of("n-1", 1, 1, 3)), None);
        assert_eq!(history_reply(&history_of("n-1", 0, -1, 1)), None);
        let exact = history_reply(&history_of("n-1", 3, 1, 3)).unwrap();
        assert_eq!((exact.seq, exact.first_seq()), (3, Some(1)));
        let mut join = history_of("n-1", 1, 1, 2);
        if let Reply::Array(items) = &mut join {
            items.push(Reply::Integer(1));
        }
        assert_eq!(join_reply(&join), None);
    }

    #[test]
    fn a_history_out_of_bounds_is_refused() {
        let longest = i64::try_from(MAX_HISTORY).unwrap();
        assert!(history_reply(&history_of("n-1", longest, -1, MAX_HISTORY)).is_some());
        assert_eq!(
            history_reply(&history_of("n-1", longest + 1, -1, MAX_HISTORY + 1)),
            None
        );
        let max = MAX_SAFE_INTEGER;
        assert!(history_reply(&history_of("n-1", max, -1, 0)).is_some());
        for (epoch, seq, recovered) in [
            ("n-1", max + 1, -1),
            ("n-1", i64::MAX, -1),
            ("n-1", -1, -1),
            ("n-1", 1, 2),
            ("n-1", 1, -2),
            ("", 1, -1),
            ("n 1", 1, -1),
            (&"e".repeat(MAX_EPOCH_LEN + 1), 1, -1),
        ] {
            assert_eq!(history_reply(&history_of(epoch, seq, recovered, 0)), None);
        }
        let members = |n: i64| {
            let Reply::Array(mut items) = history_of("n-1", 1, -1, 1) else {
                unreachable!()
            };
            items.push(Reply::Integer(n));
            join_reply(&Reply::Array(items))
        };
        assert_eq!(members(2).map(|(_, m)| m), Some(2));
        assert_eq!(members(-1), None);
        assert_eq!(members(max + 1), None);
    }

    #[test]
    fn a_sequenced_reply_out_of_bounds_is_refused() {
        let reply = |seq: i64, epoch: &str| Reply::Array(vec![Reply::Integer(seq), bulk(epoch)]);
        assert!(sequenced(&reply(MAX_SAFE_INTEGER, "n-1")).is_some());
        for (seq, epoch) in [
            (0, "n-1"),
            (-1, "n-1"),
            (MAX_SAFE_INTEGER + 1, "n-1"),
            (1, "a:b"),
        ] {
            assert_eq!(sequenced(&reply(seq, epoch)), None, "{seq} {epoch}");
        }
    }

    /// `roomcast_presence`'s reply shape: users, connections, then
    /// user, name, connections for each listed.
    fn presence_of(users: i64, connections: i64, listed: &[(&str, i64)]) -> Reply {
        let listed = listed
            .iter()
            .flat_map(|&(user, n)| [bulk(user), Reply::Nil, Reply::Integer(n)])
            .collect();
        Reply::Array(vec![
            Reply::Integer(users),
            Reply::Integer(connections),
            Reply::Array(listed),
        ])
    }

    #[test]
    fn a_presence_reply_out_of_bounds_is_refused() {
        let ok = presence_reply(&presence_of(2, 3, &[("a", 1), ("b", 2)])).unwrap();
        assert_eq!((ok.users, ok.connections, ok.listed.len()), (2, 3, 2));
        let long = "u".repeat(MAX_SUB_LEN + 1);
        let too_many: Vec<(&str, i64)> = vec![("u", 1); MAX_PRESENCE_USERS + 1];
        let max = MAX_SAFE_INTEGER;
        for reply in [
            presence_of(1, 3, &[("a", 1), ("b", 2)]),
            presence_of(-1, 3, &[]),
            presence_of(1, max + 1, &[("a", 1)]),
            presence_of(1, 1, &[("a", -1)]),
            presence_of(1, 1, &[("", 1)]),
            presence_of(1, 1, &[(&long, 1)]),
            presence_of(max, max, &too_many),
        ] {
            assert_eq!(presence_reply(&reply), None, "{reply:?}");
        }
        let Reply::Array(mut ragged) = presence_of(1, 1, &[("a", 1)]) else {
            unreachable!()
        };
        if let Some(Reply::Array(listed)) = ragged.last_mut() {
            listed.pop();
        }
        assert_eq!(presence_reply(&Reply::Array(ragged)), None);
    }

    #[test]
    fn a_channel_payload_out_of_bounds_is_refused() {
        let presence = channel_message(b"- 0 n/0/- {}").unwrap();
        assert_eq!((presence.epoch, presence.seq), (PRESENCE_EPOCH, 0));
        assert_eq!(
            channel_message(b"e1 9007199254740991 - {}").unwrap().seq,
            MAX_COUNT
        );
        for payload in [
            &b"e1 9007199254740992 - {}"[..],
            b"e1 18446744073709551616 - {}",
            b"e1 0 - {}",
            b"- 1 - {}",
            b"e1 +7 - {}",
            b"e1 07 - {}",
            b"e:1 7 - {}",
        ] {
            let text = String::from_utf8_lossy(payload);
            assert_eq!(channel_message(payload), None, "{text}");
        }
        for origin in [
            "n/9007199254740992/-",
            "n/1/0.1.18446744073709551616",
            "n/+1/-",
            "n/01/-",
        ] {
            assert_eq!(Origin::parse(origin), None, "{origin}");
        }
        let long = format!("o {} {}", MAX_SUB_LEN + 1, "u".repeat(MAX_SUB_LEN + 1));
        for payload in [
            long.as_bytes(),
            b"o +1 ab",
            b"o 01 ab",
            b"o 18446744073709551616 ab",
        ] {
            assert_eq!(Direct::parse(payload), None);
        }
    }
}
