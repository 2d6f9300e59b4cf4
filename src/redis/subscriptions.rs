//! Which room channels a node listens to, and how far each has been
//! delivered. A room's channel is subscribed when the first of the node's
//! shards has a member in it and unsubscribed when the last one has none
//! (Socket.IO's per-room subscriptions), so a node only receives the rooms
//! it serves, and Redis work per room message is one SPUBLISH whatever the
//! number of members.
//!
//! Each room served keeps a *cursor*: the epoch and `seq` of the last event
//! handed to the shards. It drops what was already delivered (a push that
//! a recovery also returned) and, after a reconnect, says from where to
//! recover what was missed; while that recovery is out, live events of the
//! room are dropped, since its answer, ordered after them on the one
//! connection, holds them too.
//!
//! Sans-IO: it says which SSUBSCRIBE / SUNSUBSCRIBE to send and which events
//! to forward; the bridge sends and forwards.

use std::collections::HashMap;
use std::sync::Arc;

/// What to send to the subscriber connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

/// The last event of a room handed to the shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub epoch: Arc<str>,
    pub seq: u64,
}

#[derive(Debug, Default)]
struct Served {
    /// The shards with members, as a bit set (a node has at most 64 shards:
    /// `--shards` is bounded by the cores).
    shards: u64,
    cursor: Option<Cursor>,
    recovering: bool,
}

/// Per room, the shards with members there and the room's cursor.
#[derive(Debug, Default)]
pub struct Subscriptions {
    rooms: HashMap<Arc<str>, Served>,
}

impl Subscriptions {
    /// Shard `shard` (below 64) now has members in `room`.
    pub fn shard_joined(&mut self, room: &Arc<str>, shard: usize) -> Option<Change> {
        let bit = 1u64 << shard;
        let served = self.rooms.entry(room.clone()).or_default();
        let first = served.shards == 0;
        served.shards |= bit;
        first.then(|| Change::Subscribe(room.clone()))
    }

    /// Shard `shard` has no member left in `room`.
    pub fn shard_left(&mut self, room: &str, shard: usize) -> Option<Change> {
        let served = self.rooms.get_mut(room)?;
        served.shards &= !(1u64 << shard);
        if served.shards != 0 {
            return None;
        }
        let (room, _) = self.rooms.remove_entry(room)?;
        Some(Change::Unsubscribe(room))
    }

    /// The shared name of a room some shard serves.
    pub fn room(&self, name: &str) -> Option<&Arc<str>> {
        self.rooms.get_key_value(name).map(|(room, _)| room)
    }

    /// Whether members of `room` are on shard `shard`.
    pub fn has(&self, room: &str, shard: usize) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|s| s.shards & (1 << shard) != 0)
    }

    /// The shards with members in `room`, lowest first.
    pub fn shards_of(&self, room: &str) -> impl Iterator<Item = usize> + '_ {
        let shards = self.rooms.get(room).map_or(0, |s| s.shards);
        (0..64).filter(move |s| shards & (1 << s) != 0)
    }

    /// Every room to subscribe again on a new connection.
    pub fn rooms(&self) -> impl Iterator<Item = &Arc<str>> {
        self.rooms.keys()
    }

    /// Whether the event `seq` of `epoch` in `room` goes to the shards: a
    /// served room, not recovering, and an event past the cursor (or of
    /// another epoch). The cursor moves to a forwarded event, whose epoch
    /// comes back shared (allocated only when the epoch changes).
    pub fn forward(&mut self, room: &str, epoch: &str, seq: u64) -> Option<Arc<str>> {
        let served = self.rooms.get_mut(room)?;
        if served.recovering {
            return None;
        }
        if let Some(cursor) = &mut served.cursor
            && &*cursor.epoch == epoch
        {
            if seq <= cursor.seq {
                return None;
            }
            cursor.seq = seq;
            return Some(cursor.epoch.clone());
        }
        let epoch: Arc<str> = epoch.into();
        served.cursor = Some(Cursor {
            epoch: epoch.clone(),
            seq,
        });
        Some(epoch)
    }

    /// A join read `room` at `seq` of `epoch`, in order with its events:
    /// what comes later is past it. Moves a cursor that is behind (or of
    /// another epoch), never back.
    pub fn observe(&mut self, room: &str, epoch: &str, seq: u64) {
        let Some(served) = self.rooms.get_mut(room) else {
            return;
        };
        match &mut served.cursor {
            Some(cursor) if &*cursor.epoch == epoch => cursor.seq = cursor.seq.max(seq),
            _ => {
                served.cursor = Some(Cursor {
                    epoch: epoch.into(),
                    seq,
                });
            }
        }
    }

    /// After a reconnect to the server of the rooms `on_server` picks:
    /// each of them with a cursor starts recovering from it, and its live
    /// events are dropped until `recovered`.
    pub fn start_recoveries(
        &mut self,
        on_server: impl Fn(&str) -> bool,
    ) -> Vec<(Arc<str>, Cursor)> {
        self.rooms
            .iter_mut()
            .filter(|(room, _)| on_server(room))
            .filter_map(|(room, served)| {
                let cursor = served.cursor.clone()?;
                served.recovering = true;
                Some((room.clone(), cursor))
            })
            .collect()
    }

    /// The recovery of `room` is answered: live events flow again, and the
    /// events it returned go through `forward` like live ones. False if the
    /// room is no longer recovering (left and served again meanwhile).
    pub fn recovered(&mut self, room: &str) -> bool {
        match self.rooms.get_mut(room) {
            Some(served) if served.recovering => {
                served.recovering = false;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_shard_in_subscribes_and_the_last_out_unsubscribes() {
        let mut subs = Subscriptions::default();
        let lobby: Arc<str> = "lobby".into();
        assert_eq!(
            subs.shard_joined(&lobby, 0),
            Some(Change::Subscribe(lobby.clone()))
        );
        assert_eq!(subs.shard_joined(&lobby, 3), None);
        assert_eq!(subs.shard_joined(&lobby, 3), None);
        assert_eq!(subs.shards_of("lobby").collect::<Vec<_>>(), [0, 3]);
        assert!(Arc::ptr_eq(subs.room("lobby").unwrap(), &lobby));
        assert_eq!(subs.shard_left("lobby", 0), None);
        assert!(!subs.has("lobby", 0) && subs.has("lobby", 3));
        assert_eq!(
            subs.shard_left("lobby", 3),
            Some(Change::Unsubscribe(lobby.clone()))
        );
        assert_eq!(subs.shard_left("lobby", 3), None);
        assert_eq!(subs.rooms().count(), 0);
    }

    #[test]
    fn after_a_reconnect_every_room_served_is_listed() {
        let mut subs = Subscriptions::default();
        for (i, room) in ["a", "b", "c"].iter().enumerate() {
            subs.shard_joined(&Arc::from(*room), i);
        }
        subs.shard_left("b", 1);
        let mut rooms: Vec<&str> = subs.rooms().map(|r| &**r).collect();
        rooms.sort_unstable();
        assert_eq!(rooms, ["a", "c"]);
    }

    #[test]
    fn the_cursor_forwards_each_event_once_and_in_order() {
        let mut subs = Subscriptions::default();
        let lobby: Arc<str> = "lobby".into();
        assert!(subs.forward("lobby", "e1", 1).is_none(), "not served");
        subs.shard_joined(&lobby, 0);
        subs.observe("lobby", "e1", 4);
        assert!(subs.forward("lobby", "e1", 4).is_none(), "the join read it");
        assert!(subs.forward("lobby", "e1", 5).is_some());
        assert!(subs.forward("lobby", "e1", 5).is_none(), "a duplicate");
        subs.observe("lobby", "e1", 3);
        assert!(
            subs.forward("lobby", "e1", 6).is_some(),
            "observe never moves back"
        );
        assert!(
            subs.forward("lobby", "e2", 1).is_some(),
            "a new epoch starts over"
        );
        assert!(subs.forward("lobby", "e2", 2).is_some());
    }

    #[test]
    fn a_recovery_holds_live_events_until_it_is_answered() {
        let mut subs = Subscriptions::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        subs.shard_joined(&a, 0);
        subs.shard_joined(&b, 0);
        assert!(subs.forward("a", "e", 7).is_some());
        let recoveries = subs.start_recoveries(|_| true);
        assert_eq!(
            recoveries,
            [(
                a.clone(),
                Cursor {
                    epoch: "e".into(),
                    seq: 7
                }
            )],
            "b never delivered anything: nothing to recover"
        );
        assert!(
            subs.forward("a", "e", 9).is_none(),
            "held: the recovery returns it"
        );
        assert!(subs.forward("b", "e", 1).is_some());
        assert!(subs.recovered("a"));
        assert!(!subs.recovered("a"));
        assert!(subs.forward("a", "e", 8).is_some());
        assert!(subs.forward("a", "e", 9).is_some());
    }
}
