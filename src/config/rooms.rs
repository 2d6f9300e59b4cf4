//! The rooms group: default permissions, room limits, and the history and
//! presence each room keeps (`docs/protocol.md` sections 6-8).
//!
//! The room table and the Redis bridge take these structs as they are, so a
//! room setting is declared once, here.

use std::time::Duration;

use super::{ConfigError, JsonFields, millis, out_of_range};
use crate::proto::names::is_valid_room;

/// The flags that shape rooms.
#[derive(Debug, Clone)]
pub struct RoomsConfig {
    /// Join patterns for tokens without a `rooms` claim.
    pub default_rooms: Vec<String>,
    /// Whether members may publish without a `pub` pattern.
    pub members_publish: bool,
    /// Most rooms one connection may be in.
    pub max_rooms_per_connection: usize,
    /// Most connections in one room; 0: no limit.
    pub max_room_members: usize,
    /// What each room keeps for `history` and recovery.
    pub history: HistoryConfig,
    /// Which rooms announce joins and leaves.
    pub presence: PresenceConfig,
}

/// What the history of a room keeps (`--history`, `--history-ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per room.
    pub messages: usize,
    /// Age after which history entries are dropped; in cluster mode also
    /// how long after its newest message a room without members is
    /// forgotten.
    pub ttl: Duration,
}

/// Which rooms announce presence (`--presence-rooms`,
/// `--presence-event-limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceConfig {
    /// Patterns of the rooms whose joins and leaves are announced.
    pub rooms: Vec<String>,
    /// Rooms with more connections than this announce no joins and leaves.
    pub event_limit: usize,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            default_rooms: vec!["*".into()],
            members_publish: true,
            max_rooms_per_connection: 100,
            max_room_members: 0,
            history: HistoryConfig {
                messages: 1,
                ttl: Duration::from_secs(300),
            },
            presence: PresenceConfig {
                rooms: vec!["*".into()],
                event_limit: 1000,
            },
        }
    }
}

impl RoomsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_rooms_per_connection == 0 || self.max_rooms_per_connection > 10_000 {
            return out_of_range("max-rooms-per-connection", "must be between 1 and 10000");
        }
        self.history.validate()?;
        self.presence.validate()?;
        let lists = [
            ("default-rooms", &self.default_rooms),
            ("presence-rooms", &self.presence.rooms),
        ];
        for (flag, patterns) in lists {
            if let Some(bad) = patterns.iter().find(|p| !is_room_pattern(p)) {
                return out_of_range(
                    flag,
                    format!(
                        "{bad:?} is not a room pattern (an exact room name, a prefix ending \
                         in *, or *)"
                    ),
                );
            }
        }
        Ok(())
    }

    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.strs("default_rooms", &self.default_rooms);
        w.bool("members_publish", self.members_publish);
        w.strs("presence_rooms", &self.presence.rooms);
        w.u64("presence_event_limit", self.presence.event_limit as u64);
        w.u64(
            "max_rooms_per_connection",
            self.max_rooms_per_connection as u64,
        );
        w.u64("max_room_members", self.max_room_members as u64);
        w.u64("history", self.history.messages as u64);
        w.u64("history_ttl_ms", self.history.ttl_ms());
    }
}

impl HistoryConfig {
    /// The TTL in milliseconds, as the Redis functions take it.
    pub fn ttl_ms(&self) -> u64 {
        millis(self.ttl)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.messages > crate::codes::limits::MAX_HISTORY {
            return out_of_range("history", "must be at most 10000");
        }
        if self.messages > 0 && self.ttl < Duration::from_secs(1) {
            return out_of_range(
                "history-ttl",
                "must be at least 1s when --history is above 0",
            );
        }
        Ok(())
    }
}

impl PresenceConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.event_limit == 0 {
            return out_of_range("presence-event-limit", "must be at least 1");
        }
        Ok(())
    }
}

/// An exact room name, a room-name prefix ending in `*`, or `*` alone
/// (what `proto::names::pattern_matches` understands).
fn is_room_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => is_valid_room(prefix),
        None => is_valid_room(pattern),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_patterns_are_names_prefixes_or_star() {
        for ok in ["*", "lobby", "prices:*", "a.b/c@d-e_f:*"] {
            assert!(is_room_pattern(ok), "{ok:?} refused");
        }
        for bad in [
            "",
            "**",
            "a*b",
            "*a",
            "with space",
            "p:**",
            &"r".repeat(129),
        ] {
            assert!(!is_room_pattern(bad), "{bad:?} accepted");
        }
    }
}
