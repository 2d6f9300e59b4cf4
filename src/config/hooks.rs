//! The hooks group (section 13): how long a hook request may take, the
//! secret requests are signed with, how many may be in flight per URL, and
//! the authorities an `https://` backend's certificate is checked against.
//! The proxies' URLs (`--rpc-proxy`, `--publish-proxy`, `--subscribe-proxy`
//! and their rooms, `--connect-proxy`) are
//! here too, and the webhook's (`--webhook` and how its events are chosen,
//! held, retried and bounded): the server starts one hooks client for all
//! of them, so it reads them together.

use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, JsonFields, out_of_range};
use crate::hooks::url::HookUrl;
use crate::hooks::webhook::{EventType, Types};
use crate::proto::names::is_valid_pattern;

/// Longest `--hook-timeout`.
const MAX_HOOK_TIMEOUT: Duration = Duration::from_secs(60);
/// Most `--hook-concurrency`.
const MAX_HOOK_CONCURRENCY: usize = 1024;
/// Requests that may wait per URL, per request allowed in flight: a burst
/// of sixteen times the backend's parallelism is absorbed, beyond that the
/// backend is not keeping up and callers hear so at once.
pub const HOOK_QUEUE_PER_SLOT: usize = 16;

/// Longest `--webhook-vacate-delay`.
const MAX_VACATE_DELAY: Duration = Duration::from_secs(3600);
/// Longest `--webhook-retry`.
const MAX_WEBHOOK_RETRY: Duration = Duration::from_secs(24 * 3600);
/// Most `--webhook-queue`.
const MAX_WEBHOOK_QUEUE: usize = 10_000_000;

/// How backend hooks are sent.
#[derive(Clone)]
pub struct HooksConfig {
    /// `--hook-timeout`: bounds each request, time in the queue included.
    pub timeout: Duration,
    /// `--hook-secret`; `None`: the first JWT secret (`secret`).
    pub secret: Option<String>,
    /// `--hook-concurrency`: most requests in flight per URL.
    pub concurrency: usize,
    /// `--hook-ca`: a PEM bundle trusted instead of the system's.
    pub ca: Option<PathBuf>,
    /// `--rpc-proxy`: where `rpc:<method>` events go.
    pub rpc_proxy: Option<HookUrl>,
    /// `--publish-proxy`: decides client room events before they are
    /// sequenced.
    pub publish_proxy: Option<HookUrl>,
    /// `--publish-proxy-rooms`: the room patterns whose events it decides.
    pub publish_proxy_rooms: Vec<String>,
    /// `--subscribe-proxy`: decides clients' joins.
    pub subscribe_proxy: Option<HookUrl>,
    /// `--subscribe-proxy-rooms`: the room patterns whose joins it decides.
    pub subscribe_proxy_rooms: Vec<String>,
    /// `--connect-proxy`: gives the claims of upgrades to `/ws` without a
    /// token.
    pub connect_proxy: Option<HookUrl>,
    /// `--webhook`: where webhook batches are POSTed.
    pub webhook: Option<HookUrl>,
    /// `--webhook-events`: the types sent (names of `EventType`).
    pub webhook_events: Vec<String>,
    /// `--webhook-rooms`: the room patterns whose messages are sent.
    pub webhook_rooms: Vec<String>,
    /// `--webhook-vacate-delay`: how long `room.vacated` and `user.offline`
    /// wait for a rejoin that cancels them.
    pub webhook_vacate_delay: Duration,
    /// `--webhook-retry`: how long a batch is retried before it is dropped.
    pub webhook_retry: Duration,
    /// `--webhook-queue`: most events waiting; past it the oldest go.
    pub webhook_queue: usize,
}

/// The flags' defaults, with no hook URL.
impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(1),
            secret: None,
            concurrency: 64,
            ca: None,
            rpc_proxy: None,
            publish_proxy: None,
            publish_proxy_rooms: vec!["*".into()],
            subscribe_proxy: None,
            subscribe_proxy_rooms: vec!["*".into()],
            connect_proxy: None,
            webhook: None,
            webhook_events: EventType::ALL.iter().map(|t| t.name().into()).collect(),
            webhook_rooms: Vec::new(),
            webhook_vacate_delay: Duration::from_secs(3),
            webhook_retry: Duration::from_secs(300),
            webhook_queue: 100_000,
        }
    }
}

impl HooksConfig {
    /// The key requests are signed with: `--hook-secret`, else the first
    /// JWT secret (the first `--jwt-secret` flag, else the first of
    /// `ROOMCAST_JWT_SECRET`, else the one generated at start-up).
    pub fn secret<'a>(&'a self, jwt_secrets: &'a [String]) -> Option<&'a str> {
        self.secret
            .as_deref()
            .or(jwt_secrets.first().map(String::as_str))
    }

    /// Most requests waiting per URL beyond those in flight.
    pub fn queue(&self) -> usize {
        self.concurrency * HOOK_QUEUE_PER_SLOT
    }

    /// Whether any hook URL is given: only then is a client started.
    pub fn any_url(&self) -> bool {
        self.rpc_proxy.is_some()
            || self.publish_proxy.is_some()
            || self.subscribe_proxy.is_some()
            || self.connect_proxy.is_some()
            || self.webhook.is_some()
    }

    /// The webhook types `--webhook-events` chose (every name was checked
    /// by `validate`).
    pub fn webhook_types_set(&self) -> Types {
        let types: Vec<EventType> = self
            .webhook_events
            .iter()
            .filter_map(|name| EventType::from_name(name))
            .collect();
        Types::of(&types)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let patterns = [
            ("publish-proxy-rooms", &self.publish_proxy_rooms),
            ("subscribe-proxy-rooms", &self.subscribe_proxy_rooms),
            ("webhook-rooms", &self.webhook_rooms),
        ];
        for (flag, patterns) in patterns {
            if !patterns.iter().all(|p| is_valid_pattern(p)) {
                return out_of_range(flag, "every pattern must be a room pattern");
            }
        }
        if self.timeout.is_zero() || self.timeout > MAX_HOOK_TIMEOUT {
            return out_of_range("hook-timeout", "must be between 1ms and 60s");
        }
        if self.secret.as_deref().is_some_and(str::is_empty) {
            return out_of_range("hook-secret", "must not be empty");
        }
        if self.concurrency == 0 || self.concurrency > MAX_HOOK_CONCURRENCY {
            return out_of_range("hook-concurrency", "must be between 1 and 1024");
        }
        self.validate_webhook()
    }

    fn validate_webhook(&self) -> Result<(), ConfigError> {
        if let Some(bad) = self
            .webhook_events
            .iter()
            .find(|name| EventType::from_name(name).is_none())
        {
            return out_of_range(
                "webhook-events",
                format!(
                    "{bad:?} is not a webhook type (room.occupied, room.vacated, user.online, user.offline, presence.join, presence.leave, room.message)"
                ),
            );
        }
        if self.webhook_vacate_delay > MAX_VACATE_DELAY {
            return out_of_range("webhook-vacate-delay", "must be at most 60m");
        }
        if self.webhook_retry > MAX_WEBHOOK_RETRY {
            return out_of_range("webhook-retry", "must be at most 1440m (a day)");
        }
        if self.webhook_queue == 0 || self.webhook_queue > MAX_WEBHOOK_QUEUE {
            return out_of_range("webhook-queue", "must be between 1 and 10000000");
        }
        Ok(())
    }

    /// The secret is never written: only whether it is its own.
    pub(super) fn write_json(&self, w: &mut JsonFields) {
        w.u64("hook_timeout_ms", super::millis(self.timeout));
        let secret = match self.secret {
            Some(_) => "<redacted>",
            None => "<the first JWT secret>",
        };
        w.str("hook_secret", secret);
        w.u64("hook_concurrency", self.concurrency as u64);
        match &self.ca {
            Some(path) => w.str("hook_ca", &path.to_string_lossy()),
            None => w.null("hook_ca"),
        }
        for (key, url) in [
            ("rpc_proxy", &self.rpc_proxy),
            ("publish_proxy", &self.publish_proxy),
            ("subscribe_proxy", &self.subscribe_proxy),
            ("connect_proxy", &self.connect_proxy),
        ] {
            match url {
                Some(url) => w.str(key, &url.to_string()),
                None => w.null(key),
            }
        }
        w.strs("publish_proxy_rooms", &self.publish_proxy_rooms);
        w.strs("subscribe_proxy_rooms", &self.subscribe_proxy_rooms);
        match &self.webhook {
            Some(url) => w.str("webhook", &url.to_string()),
            None => w.null("webhook"),
        }
        w.strs("webhook_events", &self.webhook_events);
        w.strs("webhook_rooms", &self.webhook_rooms);
        w.u64(
            "webhook_vacate_delay_ms",
            super::millis(self.webhook_vacate_delay),
        );
        w.u64("webhook_retry_ms", super::millis(self.webhook_retry));
        w.u64("webhook_queue", self.webhook_queue as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks() -> HooksConfig {
        HooksConfig {
            webhook_events: vec!["room.message".into()],
            ..HooksConfig::default()
        }
    }

    #[test]
    fn the_secret_defaults_to_the_first_jwt_secret() {
        let jwt = ["first".to_owned(), "second".to_owned()];
        assert_eq!(hooks().secret(&jwt), Some("first"));
        assert_eq!(hooks().secret(&[]), None);
        let own = HooksConfig {
            secret: Some("own".into()),
            ..hooks()
        };
        assert_eq!(own.secret(&jwt), Some("own"));
        assert_eq!(hooks().queue(), 1024);
    }

    #[test]
    fn values_out_of_range_name_their_flag() {
        let refusal = |config: HooksConfig| config.validate().unwrap_err().to_string();
        let zero = HooksConfig {
            timeout: Duration::ZERO,
            ..hooks()
        };
        assert!(refusal(zero).starts_with("--hook-timeout"));
        let empty = HooksConfig {
            secret: Some(String::new()),
            ..hooks()
        };
        assert!(refusal(empty).starts_with("--hook-secret"));
        let none = HooksConfig {
            concurrency: 0,
            ..hooks()
        };
        assert!(refusal(none).starts_with("--hook-concurrency"));
        let spaces = HooksConfig {
            subscribe_proxy_rooms: vec!["a room".into()],
            ..hooks()
        };
        assert!(refusal(spaces).starts_with("--subscribe-proxy-rooms"));
        let empty = HooksConfig {
            publish_proxy_rooms: vec![String::new()],
            ..hooks()
        };
        assert!(refusal(empty).starts_with("--publish-proxy-rooms"));
        let unknown = HooksConfig {
            webhook_events: vec!["room.opened".into()],
            ..hooks()
        };
        assert!(refusal(unknown).starts_with("--webhook-events"));
        let none = HooksConfig {
            webhook_queue: 0,
            ..hooks()
        };
        assert!(refusal(none).starts_with("--webhook-queue"));
        let spaces = HooksConfig {
            webhook_rooms: vec!["a room".into()],
            ..hooks()
        };
        assert!(refusal(spaces).starts_with("--webhook-rooms"));
        assert!(hooks().validate().is_ok());
    }

    #[test]
    fn the_json_never_shows_the_secret() {
        let config = HooksConfig {
            secret: Some("s3cret".into()),
            ca: Some("/etc/ca.pem".into()),
            ..hooks()
        };
        let mut fields = JsonFields::default();
        config.write_json(&mut fields);
        let mut out = Vec::new();
        fields.write_ordered(&mut out);
        let json = String::from_utf8(out).unwrap();
        assert_eq!(
            json,
            r#"{"hook_timeout_ms":1000,"hook_secret":"<redacted>","hook_concurrency":64,"hook_ca":"/etc/ca.pem","rpc_proxy":null,"publish_proxy":null,"subscribe_proxy":null,"connect_proxy":null,"publish_proxy_rooms":["*"],"subscribe_proxy_rooms":["*"],"webhook":null,"webhook_events":["room.message"],"webhook_rooms":[],"webhook_vacate_delay_ms":3000,"webhook_retry_ms":300000,"webhook_queue":100000}"#
        );
    }
}
