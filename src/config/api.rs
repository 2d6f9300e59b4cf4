//! The Server API group (protocol section 12): the keys that open
//! `POST /api/<method>` beside admin tokens, and how long a cluster-wide
//! command waits for the other nodes.

use std::time::Duration;

use super::{ConfigError, JsonFields, out_of_range};
use crate::codes::limits;

/// Who may call the Server API, and how long it waits.
#[derive(Clone)]
pub struct ApiConfig {
    /// `--api-key` and `ROOMCAST_API_KEY`, merged; compared in constant time.
    pub keys: Vec<String>,
    /// `--api-timeout`: how long a command waits for every live node.
    pub timeout: Duration,
}

impl ApiConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.keys.iter().any(|k| k.is_empty()) {
            return out_of_range("api-key", "a key must not be empty");
        }
        if let Some(long) = self
            .keys
            .iter()
            .find(|k| k.len() > limits::MAX_API_KEY_BYTES)
        {
            return out_of_range(
                "api-key",
                format!(
                    "a key must be at most {} bytes (one is {})",
                    limits::MAX_API_KEY_BYTES,
                    long.len()
                ),
            );
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(60) {
            return out_of_range("api-timeout", "must be between 1ms and 60s");
        }
        Ok(())
    }

    /// Keys are never written, only how many there are.
    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.str("api_keys", &format!("<{} redacted>", self.keys.len()));
        w.u64("api_timeout_ms", self.timeout.as_millis() as u64);
    }
}
