//! The listen group: where the server listens, with how many threads and
//! processes, how the public port speaks (TLS, permessage-deflate), and
//! how long it waits for a handshake and for the drain at shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, JsonFields, millis, out_of_range};
use crate::codes::limits;

/// The listeners and the threads and processes behind them.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Address of the one public listener.
    pub bind: SocketAddr,
    /// A separate listener for `/metrics` and `/stats`; when set, the public
    /// port no longer serves them.
    pub metrics_bind: Option<SocketAddr>,
    /// Number of shard threads, each with its own event loop.
    pub shards: usize,
    /// How connections reach the shards.
    pub accept_mode: AcceptMode,
    /// Copies of the server on this machine (`--processes`), 1: just this one.
    pub processes: usize,
    /// `--tls-cert` and `--tls-key`: the public port speaks TLS.
    pub tls: Option<crate::tls::TlsFiles>,
    /// `--compression`: whether permessage-deflate is negotiated.
    pub compression: Compression,
    /// How long a new connection has for its TLS handshake and request
    /// head (and a kept-alive one for its next request).
    pub handshake_timeout: Duration,
    /// How long queued output is flushed at shutdown before the exit.
    pub drain_timeout: Duration,
}

/// How accepted sockets are spread over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptMode {
    /// One acceptor thread hands sockets round-robin to the shards.
    Handoff,
    /// Every shard accepts on its own `SO_REUSEPORT` listener.
    ReusePort,
}

/// `--compression`: whether the server negotiates permessage-deflate
/// (RFC 7692) with clients that offer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compression {
    /// `Sec-WebSocket-Extensions` is ignored: the wire is exactly v1.
    #[default]
    Off,
    /// An acceptable offer is agreed to (`docs/protocol.md`, decisions).
    On,
}

impl Compression {
    /// The flag value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::On => "on",
        }
    }
}

/// Most `--processes`.
const MAX_PROCESSES: usize = 64;

impl ListenConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.shards == 0 || self.shards > 1024 {
            return out_of_range("shards", "must be between 1 and 1024");
        }
        if self.drain_timeout > Duration::from_secs(limits::MAX_DRAIN_TIMEOUT_SECS) {
            return out_of_range("drain-timeout", "must be at most 10m");
        }
        let handshake = 100..=limits::MAX_HANDSHAKE_TIMEOUT_SECS * 1000;
        if !handshake.contains(&millis(self.handshake_timeout)) {
            return out_of_range("handshake-timeout", "must be between 100ms and 5m");
        }
        if let Some(metrics) = self.metrics_bind
            && same_listener(metrics, self.bind)
        {
            return out_of_range("metrics-bind", "must differ from --bind (use another port)");
        }
        self.validate_processes()
    }

    fn validate_processes(&self) -> Result<(), ConfigError> {
        if self.processes == 0 || self.processes > MAX_PROCESSES {
            return out_of_range("processes", "must be between 1 and 64");
        }
        if self.processes > 1
            && (self.bind.port() == 0 || self.metrics_bind.is_some_and(|a| a.port() == 0))
        {
            return out_of_range(
                "processes",
                "needs a fixed --bind port (and --metrics-bind port): every process listens on it",
            );
        }
        Ok(())
    }

    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.str("bind", &self.bind.to_string());
        match self.metrics_bind {
            Some(addr) => w.str("metrics_bind", &addr.to_string()),
            None => w.null("metrics_bind"),
        }
        w.u64("shards", self.shards as u64);
        w.u64("processes", self.processes as u64);
        match &self.tls {
            Some(files) => {
                w.str("tls_cert", &files.cert.display().to_string());
                w.str("tls_key", &files.key.display().to_string());
            }
            None => w.null("tls_cert"),
        }
        w.str("compression", self.compression.as_str());
        w.u64(
            "handshake_timeout_ms",
            self.handshake_timeout.as_millis() as u64,
        );
        w.u64("drain_timeout_ms", self.drain_timeout.as_millis() as u64);
    }
}

/// Two explicit addresses that would be the same listener: one port, not
/// 0, and the same address or a wildcard on either side.
fn same_listener(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_listener_must_be_another_one() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(same_listener(
            addr("127.0.0.1:9000"),
            addr("127.0.0.1:9000")
        ));
        assert!(same_listener(addr("0.0.0.0:9000"), addr("127.0.0.1:9000")));
        assert!(!same_listener(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
        assert!(!same_listener(
            addr("127.0.0.1:9000"),
            addr("127.0.0.1:9001")
        ));
        assert!(!same_listener(
            addr("127.0.0.1:9000"),
            addr("127.0.0.2:9000")
        ));
    }
}
