//! The heartbeat group: how often each connection is pinged and how long
//! a silent one is kept.

use std::time::Duration;

use super::{ConfigError, JsonFields, millis, out_of_range};
use crate::codes::limits::MAX_HEARTBEAT_SECS;

/// `--ping-interval` and `--ping-timeout`.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatConfig {
    /// How often the server pings each connection.
    pub interval: Duration,
    /// How long after a ping a silent connection is aborted.
    pub timeout: Duration,
}

impl HeartbeatConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let heartbeat = 10..=MAX_HEARTBEAT_SECS * 1000;
        if !heartbeat.contains(&millis(self.interval)) {
            return out_of_range("ping-interval", "must be between 10ms and 60m");
        }
        if !heartbeat.contains(&millis(self.timeout)) {
            return out_of_range("ping-timeout", "must be between 10ms and 60m");
        }
        Ok(())
    }

    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.u64("ping_interval_ms", self.interval.as_millis() as u64);
        w.u64("ping_timeout_ms", self.timeout.as_millis() as u64);
    }
}
