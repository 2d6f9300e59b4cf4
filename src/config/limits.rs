//! The limits group: the sizes, counts and rates past which a request,
//! connection or message is refused.

use super::{ConfigError, JsonFields, out_of_range};
use crate::codes::limits::FD_RESERVE;

/// What one client, or all of them together, may ask of the server.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest WebSocket message accepted (1009 above it).
    pub max_message_size: usize,
    /// Largest HTTP request head accepted (431 above it).
    pub max_header_bytes: usize,
    /// Most WebSocket connections at once (503 above it).
    pub max_connections: usize,
    /// Most WebSocket connections from one IP address (429 above it); 0: no limit.
    pub max_connections_per_ip: usize,
    /// WebSocket upgrade attempts per second per client address (IPv6: per
    /// /64), with a burst of as many; 0: no limit.
    pub handshake_rate: f64,
    /// `POST /publish` messages per second per token subject (the token's
    /// `rate` overrides); 0: no limit.
    pub publish_rate: f64,
    /// Messages per second per connection (the token's `rate` overrides);
    /// 0: unlimited.
    pub rate_limit: f64,
    /// Messages a connection may send at once above the rate.
    pub rate_burst: f64,
}

/// The largest message size the server accepts at all (for Autobahn's 16 MiB cases, with room).
const MAX_MESSAGE_SIZE_CEILING: usize = 64 * 1024 * 1024;

impl LimitsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_message_size == 0 || self.max_message_size > MAX_MESSAGE_SIZE_CEILING {
            return out_of_range("max-message-size", "must be between 1 byte and 64MiB");
        }
        if self.max_header_bytes < 256 || self.max_header_bytes > 1024 * 1024 {
            return out_of_range("max-header-bytes", "must be between 256 bytes and 1MiB");
        }
        if self.max_connections == 0 {
            return out_of_range("max-connections", "must be at least 1");
        }
        let rates = [
            ("publish-rate", self.publish_rate),
            ("handshake-rate", self.handshake_rate),
            ("rate-limit", self.rate_limit),
        ];
        if let Some((flag, _)) = rates.iter().find(|(_, rate)| !is_rate(*rate)) {
            return out_of_range(flag, "must be a number >= 0");
        }
        if !(self.rate_burst >= 1.0 && self.rate_burst.is_finite()) {
            return out_of_range("rate-burst", "must be a number >= 1");
        }
        Ok(())
    }

    /// `--max-connections` against the process's open-file limit, less the
    /// descriptors the listeners, pollers and plain HTTP requests need.
    pub fn validate_open_files(&self, open_file_limit: usize) -> Result<(), ConfigError> {
        let most = max_connections_for(open_file_limit);
        if self.max_connections > most {
            return out_of_range(
                "max-connections",
                format!(
                    "must be at most {most} (the open-file limit {open_file_limit} less \
                     {FD_RESERVE} reserved); raise the limit with ulimit -n"
                ),
            );
        }
        Ok(())
    }

    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.u64("max_message_size", self.max_message_size as u64);
        w.u64("max_header_bytes", self.max_header_bytes as u64);
        w.u64("max_connections", self.max_connections as u64);
        w.u64("max_connections_per_ip", self.max_connections_per_ip as u64);
        w.f64("handshake_rate", self.handshake_rate);
        w.f64("rate_limit", self.rate_limit);
        w.f64("rate_burst", self.rate_burst);
        w.f64("publish_rate", self.publish_rate);
    }
}

fn is_rate(rate: f64) -> bool {
    rate >= 0.0 && rate.is_finite()
}

/// The largest `--max-connections` an open-file limit leaves room for.
pub fn max_connections_for(open_file_limit: usize) -> usize {
    open_file_limit.saturating_sub(FD_RESERVE).max(1)
}
