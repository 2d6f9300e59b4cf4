//! The log group: verbosity and format of the lifecycle log on stderr.

use super::JsonFields;

/// `--log-level` and `--log-format`.
#[derive(Debug, Clone, Copy)]
pub struct LogConfig {
    /// Verbosity of the lifecycle log on stderr.
    pub level: crate::log::Level,
    /// Text lines or JSON lines.
    pub format: crate::log::Format,
}

impl LogConfig {
    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.str("log_level", self.level.as_str());
        w.str("log_format", self.format.as_str());
    }
}
