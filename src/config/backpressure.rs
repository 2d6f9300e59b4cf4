//! The backpressure group: how much unsent output a connection may hold,
//! and what happens to room events for a client past that bound
//! (`docs/protocol.md` section 8).

use super::{ConfigError, JsonFields, out_of_range};

/// `--max-write-buffer` and `--slow-consumer`.
#[derive(Debug, Clone, Copy)]
pub struct BackpressureConfig {
    /// Bound on each connection's unsent output held in user space.
    pub max_write_buffer: usize,
    /// What happens to room events for a client over its write bound.
    pub slow_consumer: SlowConsumer,
}

/// The `--slow-consumer` policies of section 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlowConsumer {
    /// Discard what is pending and close with 4008.
    Close,
    /// Drop the event for that client and tell it how many later.
    Drop,
    /// Keep only the newest undelivered event per room.
    Conflate,
}

impl SlowConsumer {
    /// The flag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Close => "close",
            Self::Drop => "drop",
            Self::Conflate => "conflate",
        }
    }
}

impl BackpressureConfig {
    /// `max_message_size`: a whole message must fit in the buffer.
    pub(super) fn validate(&self, max_message_size: usize) -> Result<(), ConfigError> {
        if self.max_write_buffer < 1024 {
            return out_of_range("max-write-buffer", "must be at least 1KiB");
        }
        if self.max_write_buffer < max_message_size {
            return out_of_range(
                "max-write-buffer",
                format!("must be at least --max-message-size ({max_message_size} bytes)"),
            );
        }
        Ok(())
    }

    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.u64("max_write_buffer", self.max_write_buffer as u64);
        w.str("slow_consumer", self.slow_consumer.as_str());
    }
}
