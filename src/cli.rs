//! The server's command line: `roomcast serve` and `roomcast token`.
//!
//! Owns their flag names, defaults, help text and the `ROOMCAST_*`
//! environment variables, and turns them into a validated `Config`. Runs
//! nothing itself; the binary (`main.rs`) puts these commands beside the
//! client tools' and runs them.
//!
//! The flags of `serve` mirror `Config`'s groups: one clap `Args` struct per
//! group, flattened into `ServeArgs`, each with its own `--help` section
//! and its own conversion into the group.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, FromArgMatches, Subcommand};

use crate::config::{
    self, AcceptMode, ApiConfig, AuthConfig, BackpressureConfig, ClusterConfig, Compression,
    Config, ConfigError, HeartbeatConfig, HistoryConfig, HooksConfig, LimitsConfig, ListenConfig,
    LogConfig, PresenceConfig, RoomsConfig, SlowConsumer, WebConfig,
};
use crate::hooks::url::HookUrl;
use crate::log::{Format, Level};
use crate::redis::url::RedisUrls;
use crate::tls::TlsFiles;

/// The server's commands. The binary adds the client tools' commands
/// (`bench`, `connect`, `demo-feed`) beside them.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Print a signed token (JWT, HS256) for a user.
    Token(TokenArgs),
}

/// Flags of `roomcast serve`, in one group per concern of `Config` (each
/// its own section of `--help`); each flag also reads `ROOMCAST_<NAME>`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitsArgs,
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
    #[command(flatten)]
    pub backpressure: BackpressureArgs,
    #[command(flatten)]
    pub rooms: RoomsArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub web: WebArgs,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub hooks: HooksArgs,
    #[command(flatten)]
    pub log: LogArgs,
    /// Check the configuration, print it as JSON (secrets redacted) and exit: 0 when valid, 2 otherwise.
    #[arg(long, help_heading = "Check")]
    pub check_config: bool,
}

/// `Config::listen`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Listen")]
pub struct ListenArgs {
    /// Address to listen on.
    #[arg(long, env = "ROOMCAST_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Serve /metrics and /stats on this separate address (e.g. 127.0.0.1:9090) instead of the public port.
    #[arg(long, env = "ROOMCAST_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,
    /// Shard threads, each with its own event loop [default: number of cores].
    #[arg(long, env = "ROOMCAST_SHARDS")]
    pub shards: Option<usize>,
    /// How sockets reach the shards: a SO_REUSEPORT listener per shard (reuseport) or one acceptor handing off (handoff).
    #[arg(long, env = "ROOMCAST_ACCEPT", default_value = "reuseport", value_parser = accept_mode, hide = true)]
    pub accept: AcceptMode,
    /// Run this many copies of the server on the same port (SO_REUSEPORT), joined through --redis, restarted if one dies.
    #[arg(long, env = "ROOMCAST_PROCESSES", default_value_t = 1)]
    pub processes: usize,
    /// PEM certificate chain: the public port speaks TLS (https://, wss://); reloaded on SIGHUP. Needs --tls-key.
    #[arg(long, env = "ROOMCAST_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1); reloaded on SIGHUP.
    #[arg(long, env = "ROOMCAST_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// permessage-deflate (RFC 7692) for clients that offer it: off or on.
    #[arg(long, env = "ROOMCAST_COMPRESSION", value_enum, default_value = "off")]
    pub compression: Compression,
    /// How long a new connection may take to finish its TLS handshake and send its request head; an idle kept-alive connection gets as long for its next request.
    #[arg(long, env = "ROOMCAST_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,
    /// How long queued output is flushed at shutdown.
    #[arg(long, env = "ROOMCAST_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
}

/// `Config::auth`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Auth")]
pub struct AuthArgs {
    /// HS256 secret for tokens; repeat for key rotation. Merged with the
    /// comma-separated list in ROOMCAST_JWT_SECRET. None: a random one is generated and printed.
    #[arg(long = "jwt-secret", action = ArgAction::Append)]
    pub jwt_secret: Vec<String>,
    /// Leeway applied to exp and nbf (at most 60s).
    #[arg(long, env = "ROOMCAST_JWT_LEEWAY", default_value = "0", value_parser = duration)]
    pub jwt_leeway: Duration,
    /// Comma-separated origins allowed to upgrade; unset: any origin.
    #[arg(long, env = "ROOMCAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

/// `Config::limits`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsArgs {
    /// Largest WebSocket message (bytes, or KiB/MiB); larger closes with 1009.
    #[arg(long, env = "ROOMCAST_MAX_MESSAGE_SIZE", default_value = "64KiB", value_parser = size)]
    pub max_message_size: usize,
    /// Largest HTTP request head; larger gets 431.
    #[arg(long, env = "ROOMCAST_MAX_HEADER_BYTES", default_value = "8KiB", value_parser = size)]
    pub max_header_bytes: usize,
    /// Most WebSocket connections at once; more get 503 [default: the open-file limit less a reserve].
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Most WebSocket connections from one IP address; more get 429 (0: no limit).
    #[arg(long, env = "ROOMCAST_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// WebSocket upgrade attempts per second per client IP (IPv6: per /64), with a burst as large; more get 429 (0: no limit).
    #[arg(long, env = "ROOMCAST_HANDSHAKE_RATE", default_value_t = 0.0)]
    pub handshake_rate: f64,
    /// POST /publish messages per second per token subject, with a burst as large (the token's `rate` overrides; 0: no limit); over it 429 RATE_LIMITED.
    #[arg(long, env = "ROOMCAST_PUBLISH_RATE", default_value_t = 1000.0)]
    pub publish_rate: f64,
    /// Messages per second per connection (the token's `rate` claim overrides it; 0: unlimited).
    #[arg(long, env = "ROOMCAST_RATE_LIMIT", default_value_t = 50.0)]
    pub rate_limit: f64,
    /// Messages a connection may send in a burst above the rate.
    #[arg(long, env = "ROOMCAST_RATE_BURST", default_value_t = 100.0)]
    pub rate_burst: f64,
}

/// `Config::heartbeat`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Heartbeat")]
pub struct HeartbeatArgs {
    /// How often each connection is pinged (seconds, or ms/s/m).
    #[arg(long, env = "ROOMCAST_PING_INTERVAL", default_value = "25s", value_parser = duration)]
    pub ping_interval: Duration,
    /// A connection silent this long after a ping is aborted.
    #[arg(long, env = "ROOMCAST_PING_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub ping_timeout: Duration,
}

/// `Config::backpressure`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Backpressure")]
pub struct BackpressureArgs {
    /// Bound on each connection's unsent output; a client that falls further behind is closed with 4008.
    #[arg(long, env = "ROOMCAST_MAX_WRITE_BUFFER", default_value = "512KiB", value_parser = size)]
    pub max_write_buffer: usize,
    /// What happens to room events for a client over its write bound: close (4008), drop, or conflate.
    #[arg(
        long,
        env = "ROOMCAST_SLOW_CONSUMER",
        value_enum,
        default_value = "close"
    )]
    pub slow_consumer: SlowConsumer,
}

/// `Config::rooms`, with its history and presence.
#[derive(Debug, Args)]
#[command(next_help_heading = "Rooms")]
pub struct RoomsArgs {
    /// Comma-separated join patterns for tokens without a `rooms` claim.
    #[arg(
        long,
        env = "ROOMCAST_DEFAULT_ROOMS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub default_rooms: Vec<String>,
    /// Whether room members may publish without a matching `pub` pattern.
    #[arg(long, env = "ROOMCAST_MEMBERS_PUBLISH", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set)]
    pub members_publish: bool,
    /// Most rooms one connection may be in; more get ROOM_LIMIT.
    #[arg(long, env = "ROOMCAST_MAX_ROOMS_PER_CONNECTION", default_value_t = 100)]
    pub max_rooms_per_connection: usize,
    /// Most connections in one room; more get ROOM_FULL (0: no limit).
    #[arg(long, env = "ROOMCAST_MAX_ROOM_MEMBERS", default_value_t = 0)]
    pub max_room_members: usize,
    #[command(flatten)]
    pub history: HistoryArgs,
    #[command(flatten)]
    pub presence: PresenceArgs,
}

/// `Config::rooms.history`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Room history")]
pub struct HistoryArgs {
    /// Messages each room keeps for history and recovery (1: the last value; 0: none).
    #[arg(long, env = "ROOMCAST_HISTORY", default_value_t = 1)]
    pub history: usize,
    /// Age after which history entries are dropped.
    #[arg(long, env = "ROOMCAST_HISTORY_TTL", default_value = "300", value_parser = duration)]
    pub history_ttl: Duration,
}

/// `Config::rooms.presence`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Presence")]
pub struct PresenceArgs {
    /// Comma-separated patterns of rooms that announce joins and leaves.
    #[arg(
        long,
        env = "ROOMCAST_PRESENCE_ROOMS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub presence_rooms: Vec<String>,
    /// Rooms with more connections than this announce no joins and leaves.
    #[arg(long, env = "ROOMCAST_PRESENCE_EVENT_LIMIT", default_value_t = 1000)]
    pub presence_event_limit: usize,
}

/// `Config::cluster`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterArgs {
    /// A Redis server of the cluster, `redis://[[user]:password@]host[:port][/db]`, `rediss://` for TLS, or `redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db]` for the master Sentinel names (repeatable, or comma-separated: rooms are spread over them); or one Redis Cluster, `redis+cluster://[[user]:password@]host:port[,host:port...]`; unset: one process, no Redis.
    #[arg(long, env = "ROOMCAST_REDIS")]
    pub redis: Vec<RedisUrls>,
    /// Prefix of every Redis key and channel of the cluster.
    #[arg(long, env = "ROOMCAST_REDIS_PREFIX", default_value = "roomcast")]
    pub redis_prefix: String,
    /// This node's name in the cluster [default: generated at start].
    #[arg(long, env = "ROOMCAST_NODE_ID")]
    pub node_id: Option<String>,
    /// A PEM file of authorities trusted for rediss:// servers, instead of the system's.
    #[arg(long, env = "ROOMCAST_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// Acknowledge a publish only once this many replicas of its Redis server have it (WAIT, 1 s; else UNAVAILABLE), 0-16.
    #[arg(long, env = "ROOMCAST_REDIS_REPLICAS", default_value_t = 0)]
    pub redis_replicas: u8,
    /// A Redis server that answers no command (nor the PING sent every idle second) within this is unreachable: UNAVAILABLE, /healthz 503, reconnect (100ms-60s).
    #[arg(long, env = "ROOMCAST_REDIS_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub redis_timeout: Duration,
}

/// `Config::web`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Web")]
pub struct WebArgs {
    /// Serve /echo (verbatim echo, for conformance suites and raw benchmarks).
    #[arg(long, env = "ROOMCAST_ECHO", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set)]
    pub echo: bool,
    /// Run the demo: a synthetic price feed inside the server, and a live page at /demo.
    #[arg(long, env = "ROOMCAST_DEMO", default_value_t = false, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set)]
    pub demo: bool,
    /// Serve the live dashboard at / (where /stats is served: the --metrics-bind listener when set).
    #[arg(long, env = "ROOMCAST_DASHBOARD", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = ArgAction::Set)]
    pub dashboard: bool,
}

/// `Config::api`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Server API")]
pub struct ApiArgs {
    /// A key that opens POST /api/<method> (X-API-Key); repeatable. Merged with the
    /// comma-separated list in ROOMCAST_API_KEY. Admin tokens open it too.
    #[arg(long = "api-key", action = ArgAction::Append)]
    pub api_key: Vec<String>,
    /// How long a cluster-wide API command waits for every live node.
    #[arg(long, env = "ROOMCAST_API_TIMEOUT", default_value = "2s", value_parser = duration)]
    pub api_timeout: Duration,
}

/// `Config::hooks`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Backend hooks")]
pub struct HooksArgs {
    /// How long a hook request may take (webhooks, proxies), time in the queue included.
    #[arg(long, env = "ROOMCAST_HOOK_TIMEOUT", default_value = "1s", value_parser = duration)]
    pub hook_timeout: Duration,
    /// The secret hook requests are signed with (X-Roomcast-Signature) [default: the first JWT secret].
    #[arg(long, env = "ROOMCAST_HOOK_SECRET", hide_env_values = true)]
    pub hook_secret: Option<String>,
    /// Most hook requests in flight per hook URL; past a bounded queue, refused at once.
    #[arg(long, env = "ROOMCAST_HOOK_CONCURRENCY", default_value_t = 64)]
    pub hook_concurrency: usize,
    /// A PEM file of authorities trusted for https:// hooks, instead of the system's.
    #[arg(long, env = "ROOMCAST_HOOK_CA")]
    pub hook_ca: Option<PathBuf>,
    /// The backend URL that answers client `rpc:<method>` events (section 13.2).
    #[arg(long, env = "ROOMCAST_RPC_PROXY")]
    pub rpc_proxy: Option<HookUrl>,
    /// The backend URL that decides clients' room events before they are published.
    #[arg(long, env = "ROOMCAST_PUBLISH_PROXY")]
    pub publish_proxy: Option<HookUrl>,
    /// Comma-separated patterns of the rooms whose events go to --publish-proxy.
    #[arg(
        long,
        env = "ROOMCAST_PUBLISH_PROXY_ROOMS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub publish_proxy_rooms: Vec<String>,
    /// The backend URL that decides clients' joins (room:join) to matching rooms.
    #[arg(long, env = "ROOMCAST_SUBSCRIBE_PROXY")]
    pub subscribe_proxy: Option<HookUrl>,
    /// Comma-separated patterns of the rooms whose joins go to --subscribe-proxy.
    #[arg(
        long,
        env = "ROOMCAST_SUBSCRIBE_PROXY_ROOMS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub subscribe_proxy_rooms: Vec<String>,
    /// The backend URL that gives the claims of an upgrade to /ws without a token.
    #[arg(long, env = "ROOMCAST_CONNECT_PROXY")]
    pub connect_proxy: Option<HookUrl>,
    /// The backend URL webhooks are POSTed to, in batches (section 13.1).
    #[arg(long, env = "ROOMCAST_WEBHOOK")]
    pub webhook: Option<HookUrl>,
    /// Comma-separated webhook event types sent [default: every type].
    #[arg(
        long,
        env = "ROOMCAST_WEBHOOK_EVENTS",
        value_delimiter = ',',
        default_value = WEBHOOK_TYPES_DEFAULT
    )]
    pub webhook_events: Vec<String>,
    /// Comma-separated patterns of the rooms whose messages are sent as room.message webhooks.
    #[arg(long, env = "ROOMCAST_WEBHOOK_ROOMS", value_delimiter = ',')]
    pub webhook_rooms: Vec<String>,
    /// How long an emptied room (or a user gone offline) waits for a rejoin before room.vacated (user.offline).
    #[arg(long, env = "ROOMCAST_WEBHOOK_VACATE_DELAY", default_value = "3s", value_parser = duration)]
    pub webhook_vacate_delay: Duration,
    /// How long a webhook batch is retried (backoff 0.5s to 30s) before it is dropped.
    #[arg(long, env = "ROOMCAST_WEBHOOK_RETRY", default_value = "5m", value_parser = duration)]
    pub webhook_retry: Duration,
    /// Most webhook events waiting to be sent; past it the oldest are dropped.
    #[arg(long, env = "ROOMCAST_WEBHOOK_QUEUE", default_value_t = 100_000)]
    pub webhook_queue: usize,
}

/// Every webhook type, as `--webhook-events` defaults to.
const WEBHOOK_TYPES_DEFAULT: &str =
    "room.occupied,room.vacated,user.online,user.offline,presence.join,presence.leave,room.message";

impl From<HooksArgs> for HooksConfig {
    fn from(args: HooksArgs) -> Self {
        Self {
            timeout: args.hook_timeout,
            secret: args.hook_secret,
            concurrency: args.hook_concurrency,
            ca: args.hook_ca,
            rpc_proxy: args.rpc_proxy,
            publish_proxy: args.publish_proxy,
            publish_proxy_rooms: args.publish_proxy_rooms,
            subscribe_proxy: args.subscribe_proxy,
            subscribe_proxy_rooms: args.subscribe_proxy_rooms,
            connect_proxy: args.connect_proxy,
            webhook: args.webhook,
            webhook_events: args.webhook_events,
            webhook_rooms: args.webhook_rooms,
            webhook_vacate_delay: args.webhook_vacate_delay,
            webhook_retry: args.webhook_retry,
            webhook_queue: args.webhook_queue,
        }
    }
}

/// The lists the environment adds to repeatable flags: values separated
/// by commas, merged after the flags' own.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvLists<'a> {
    /// `ROOMCAST_JWT_SECRET`, added to `--jwt-secret`.
    pub jwt_secrets: Option<&'a str>,
    /// `ROOMCAST_API_KEY`, added to `--api-key`.
    pub api_keys: Option<&'a str>,
}

impl<'a> EnvLists<'a> {
    /// Only `ROOMCAST_JWT_SECRET`.
    pub fn secrets(jwt_secrets: Option<&'a str>) -> Self {
        Self {
            jwt_secrets,
            api_keys: None,
        }
    }
}

/// `flags`, then the non-empty comma-separated values of `env`.
fn merged(mut flags: Vec<String>, env: Option<&str>) -> Vec<String> {
    if let Some(list) = env {
        flags.extend(list.split(',').filter(|s| !s.is_empty()).map(String::from));
    }
    flags
}

/// `Config::log`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Log")]
pub struct LogArgs {
    /// Log verbosity.
    #[arg(long, env = "ROOMCAST_LOG_LEVEL", value_enum, default_value = "info")]
    pub log_level: Level,
    /// Log lines as text or as JSON objects, one per line.
    #[arg(long, env = "ROOMCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: Format,
}

/// Flags of `roomcast token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The user id (the `sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Display name shown in presence.
    #[arg(long)]
    pub name: Option<String>,
    /// A room pattern the user may join (repeatable): `lobby`, `prices:*`, `*`.
    #[arg(long = "rooms")]
    pub rooms: Vec<String>,
    /// A room pattern the user may publish to without joining (repeatable).
    #[arg(long = "pub")]
    pub publish: Vec<String>,
    /// Allow system:broadcast.
    #[arg(long)]
    pub admin: bool,
    /// Per-connection rate limit in messages per second (0: unlimited).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// The HS256 secret to sign with.
    #[arg(long, env = "ROOMCAST_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
}

fn duration(text: &str) -> Result<Duration, ConfigError> {
    config::parse_duration(text)
}

fn size(text: &str) -> Result<usize, ConfigError> {
    config::parse_size(text)
}

fn accept_mode(text: &str) -> Result<AcceptMode, String> {
    match text {
        "handoff" => Ok(AcceptMode::Handoff),
        "reuseport" => Ok(AcceptMode::ReusePort),
        _ => Err("expected handoff or reuseport".to_owned()),
    }
}

impl ServeArgs {
    /// Parses the flags of `roomcast serve` alone (no program or command
    /// name), with the environment's `ROOMCAST_*` variables: how the tests
    /// and benchmarks build a configuration.
    pub fn try_parse_from<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let command = Self::augment_args(clap::Command::new("serve").no_binary_name(true));
        Self::from_arg_matches(&command.try_get_matches_from(flags)?)
    }

    /// Builds and validates the configuration. `env` holds the lists of
    /// `ROOMCAST_JWT_SECRET` and `ROOMCAST_API_KEY`, merged with the
    /// `--jwt-secret` and `--api-key` flags; `cores`
    /// and `open_file_limit` give the defaults of `--shards` and
    /// `--max-connections`.
    pub fn into_config(
        self,
        env: EnvLists<'_>,
        cores: usize,
        open_file_limit: usize,
    ) -> Result<Config, ConfigError> {
        let config = Config {
            listen: self.listen.into_config(cores),
            auth: self.auth.into_config(env.jwt_secrets),
            limits: self.limits.into_config(open_file_limit),
            heartbeat: self.heartbeat.into(),
            backpressure: self.backpressure.into(),
            rooms: self.rooms.into(),
            cluster: self.cluster.into_config(),
            web: self.web.into(),
            api: ApiConfig {
                keys: merged(self.api.api_key, env.api_keys),
                timeout: self.api.api_timeout,
            },
            hooks: self.hooks.into(),
            log: self.log.into(),
        };
        config.validate()?;
        config.limits.validate_open_files(open_file_limit)?;
        Ok(config)
    }
}

impl ListenArgs {
    fn into_config(self, cores: usize) -> ListenConfig {
        ListenConfig {
            bind: self.bind,
            metrics_bind: self.metrics_bind,
            shards: self.shards.unwrap_or(cores),
            accept_mode: self.accept,
            processes: self.processes,
            tls: match (self.tls_cert, self.tls_key) {
                (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
                _ => None,
            },
            compression: self.compression,
            handshake_timeout: self.handshake_timeout,
            drain_timeout: self.drain_timeout,
        }
    }
}

impl AuthArgs {
    fn into_config(self, env_secrets: Option<&str>) -> AuthConfig {
        AuthConfig {
            secrets: merged(self.jwt_secret, env_secrets),
            leeway: self.jwt_leeway,
            allowed_origins: self.allowed_origins,
        }
    }
}

impl LimitsArgs {
    fn into_config(self, open_file_limit: usize) -> LimitsConfig {
        LimitsConfig {
            max_message_size: self.max_message_size,
            max_header_bytes: self.max_header_bytes,
            max_connections: self
                .max_connections
                .unwrap_or_else(|| config::max_connections_for(open_file_limit)),
            max_connections_per_ip: self.max_connections_per_ip,
            handshake_rate: self.handshake_rate,
            publish_rate: self.publish_rate,
            rate_limit: self.rate_limit,
            rate_burst: self.rate_burst,
        }
    }
}

impl From<HeartbeatArgs> for HeartbeatConfig {
    fn from(args: HeartbeatArgs) -> Self {
        Self {
            interval: args.ping_interval,
            timeout: args.ping_timeout,
        }
    }
}

impl From<BackpressureArgs> for BackpressureConfig {
    fn from(args: BackpressureArgs) -> Self {
        Self {
            max_write_buffer: args.max_write_buffer,
            slow_consumer: args.slow_consumer,
        }
    }
}

impl From<RoomsArgs> for RoomsConfig {
    fn from(args: RoomsArgs) -> Self {
        Self {
            default_rooms: args.default_rooms,
            members_publish: args.members_publish,
            max_rooms_per_connection: args.max_rooms_per_connection,
            max_room_members: args.max_room_members,
            history: HistoryConfig {
                messages: args.history.history,
                ttl: args.history.history_ttl,
            },
            presence: PresenceConfig {
                rooms: args.presence.presence_rooms,
                event_limit: args.presence.presence_event_limit,
            },
        }
    }
}

impl From<WebArgs> for WebConfig {
    fn from(args: WebArgs) -> Self {
        Self {
            echo: args.echo,
            demo: args.demo,
            dashboard: args.dashboard,
        }
    }
}

impl From<LogArgs> for LogConfig {
    fn from(args: LogArgs) -> Self {
        Self {
            level: args.log_level,
            format: args.log_format,
        }
    }
}

impl ClusterArgs {
    /// `None` without `--redis`; a node id is generated when none is given.
    fn into_config(self) -> Option<ClusterConfig> {
        (!self.redis.is_empty()).then(|| ClusterConfig {
            servers: self.redis.into_iter().flat_map(|list| list.0).collect(),
            prefix: self.redis_prefix,
            node_id: self
                .node_id
                .unwrap_or_else(|| format!("n{:012x}", crate::auth::random_u64() >> 16)),
            ca: self.redis_ca,
            replicas: self.redis_replicas,
            timeout: self.redis_timeout,
        })
    }
}

/// Seconds of token lifetime above which `roomcast token` refuses: a year.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        ServeArgs::try_parse_from(args).expect("parses")
    }

    #[test]
    fn defaults_follow_the_protocol() {
        let config = serve(&[])
            .into_config(EnvLists::default(), 2, 20_000)
            .unwrap();
        assert_eq!(config.listen.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.listen.shards, 2);
        assert_eq!(config.limits.max_message_size, 64 * 1024);
        assert_eq!(config.limits.max_header_bytes, 8 * 1024);
        assert_eq!(config.backpressure.max_write_buffer, 512 * 1024);
        assert_eq!(config.heartbeat.interval, Duration::from_secs(25));
        assert_eq!(config.heartbeat.timeout, Duration::from_secs(20));
        assert_eq!(config.listen.drain_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.max_connections, 20_000 - 128);
        assert!(!config.web.echo);
        assert_eq!(config.listen.compression, Compression::Off);
        assert_eq!(config.hooks.timeout, Duration::from_secs(1));
        assert_eq!(config.hooks.concurrency, 64);
        assert_eq!(config.hooks.secret, None);
        assert_eq!(config.hooks.ca, None);
    }

    #[test]
    fn hook_flags_fill_their_group_and_hide_the_secret() {
        let args = [
            "--hook-timeout=250ms",
            "--hook-secret=s",
            "--hook-concurrency=3",
            "--hook-ca=/ca.pem",
            "--jwt-secret=jwt",
        ];
        let config = serve(&args)
            .into_config(EnvLists::default(), 2, 20_000)
            .unwrap();
        assert_eq!(config.hooks.timeout, Duration::from_millis(250));
        assert_eq!(config.hooks.secret(&config.auth.secrets), Some("s"));
        assert_eq!(config.hooks.concurrency, 3);
        assert_eq!(config.hooks.ca, Some(PathBuf::from("/ca.pem")));
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let secret = command
            .get_arguments()
            .find(|a| a.get_id() == "hook_secret")
            .unwrap();
        assert!(secret.is_hide_env_values_set());
    }

    #[test]
    fn compression_is_off_or_on() {
        assert_eq!(
            serve(&["--compression", "on"]).listen.compression,
            Compression::On
        );
        assert_eq!(
            serve(&["--compression=off"]).listen.compression,
            Compression::Off
        );
        assert!(ServeArgs::try_parse_from(["--compression", "gzip"]).is_err());
    }

    #[test]
    fn secrets_from_flags_and_environment_are_merged() {
        let config = serve(&["--jwt-secret", "a", "--jwt-secret", "b"])
            .into_config(EnvLists::secrets(Some("c,d")), 2, 1000)
            .unwrap();
        assert_eq!(config.auth.secrets, ["a", "b", "c", "d"]);
    }

    #[test]
    fn redis_flags_make_a_cluster_and_bad_names_are_refused() {
        let alone = serve(&[])
            .into_config(EnvLists::default(), 2, 1000)
            .unwrap();
        assert!(alone.cluster.is_none(), "no --redis: one process");
        let config = serve(&[
            "--redis",
            "redis://a:1,redis://:pw@b/2",
            "--node-id",
            "web-1",
        ])
        .into_config(EnvLists::default(), 2, 1000)
        .unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.servers.len(), 2);
        assert_eq!(
            cluster.replicas, 0,
            "acknowledged without waiting by default"
        );
        assert_eq!(cluster.servers[1].password.as_deref(), Some("pw"));
        assert_eq!(
            (cluster.prefix.as_str(), cluster.node_id.as_str()),
            ("roomcast", "web-1")
        );
        assert_eq!(cluster.timeout, Duration::from_secs(2));
        let generated = serve(&["--redis", "redis://a"])
            .into_config(EnvLists::default(), 2, 1000)
            .unwrap();
        let id = generated.cluster.unwrap().node_id;
        assert!(
            id.len() > 4 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{id}"
        );
        for bad in [
            &["--redis", "redis://a", "--node-id", "a/b"][..],
            &["--redis", "redis://a", "--redis-prefix", "x:{y}"],
            &["--redis", "redis+cluster://a:1,redis://b"],
            &["--redis", "redis://a", "--redis-replicas", "17"],
            &["--redis", "redis://a", "--redis-timeout", "50ms"],
            &["--redis", "redis://a", "--redis-timeout", "61s"],
            &[
                "--redis",
                "redis://a",
                "--redis-replicas",
                "1",
                "--redis-timeout",
                "1s",
            ],
        ] {
            let error = serve(bad)
                .into_config(EnvLists::default(), 2, 1000)
                .unwrap_err();
            assert!(error.to_string().starts_with("--"), "{error}");
        }
        assert!(ServeArgs::try_parse_from(["--redis", "http://a"]).is_err());
        let tls = serve(&["--redis", "rediss://a", "--redis-ca", "/ca.pem"])
            .into_config(EnvLists::default(), 2, 1000)
            .unwrap()
            .cluster
            .unwrap();
        assert!(tls.servers[0].tls);
        assert_eq!(tls.ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
        let cluster = serve(&["--redis", "redis+cluster://:pw@a:7000,b:7001"])
            .into_config(EnvLists::default(), 2, 1000)
            .unwrap()
            .cluster
            .unwrap();
        assert!(cluster.is_redis_cluster());
        assert_eq!(cluster.servers.len(), 1);
        assert_eq!(cluster.servers[0].seeds().len(), 2);
        let hooked = [
            "--redis",
            "redis+cluster://a:1",
            "--webhook",
            "http://h/x",
            "--hook-secret",
            "s3cret-s3cret-s3cret-s3cret-s3cret",
        ];
        let error = serve(&hooked)
            .into_config(EnvLists::default(), 2, 1000)
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--webhook: not with a redis+cluster://"),
            "{error}"
        );
    }

    #[test]
    fn echo_takes_a_bare_flag_or_a_boolean() {
        assert!(serve(&["--echo"]).web.echo);
        assert!(serve(&["--echo=true"]).web.echo);
        assert!(!serve(&["--echo=false"]).web.echo);
    }

    #[test]
    fn nonsense_values_are_refused() {
        assert!(
            serve(&["--shards", "0"])
                .into_config(EnvLists::default(), 2, 1000)
                .is_err()
        );
        assert!(
            serve(&["--jwt-leeway", "61"])
                .into_config(EnvLists::default(), 2, 1000)
                .is_err()
        );
        let parse = |args: &[&str]| ServeArgs::try_parse_from(args).is_err();
        assert!(parse(&["--ping-interval", "soon"]));
        assert!(parse(&["--log-format", "xml"]));
        assert!(parse(&["--max-message-size", "1GB"]));
    }

    /// The message for `args`, which must be refused.
    fn refusal(args: &[&str]) -> String {
        match serve(args).into_config(EnvLists::default(), 2, 10_000) {
            Ok(config) => panic!("{args:?} accepted: {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_refusal_names_its_flag() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--max-message-size", "1MiB"],
                "--max-write-buffer: must be at least --max-message-size (1048576 bytes)",
            ),
            (&["--ping-interval", "61m"], "--ping-interval: "),
            (&["--ping-timeout", "2h"], ""),
            (&["--drain-timeout", "11m"], "--drain-timeout: "),
            (&["--history-ttl", "0"], "--history-ttl: "),
            (&["--presence-event-limit", "0"], "--presence-event-limit: "),
            (
                &["--max-connections", "9873"],
                "--max-connections: must be at most 9872",
            ),
            (
                &[
                    "--bind",
                    "127.0.0.1:9000",
                    "--metrics-bind",
                    "127.0.0.1:9000",
                ],
                "--metrics-bind: ",
            ),
            (
                &["--allowed-origins", "https://a.example/"],
                "--allowed-origins: ",
            ),
            (&["--default-rooms", "a*b"], "--default-rooms: "),
            (&["--presence-rooms", "lobby,"], "--presence-rooms: "),
            (&["--rate-limit", "NaN"], "--rate-limit: "),
            (&["--handshake-rate=-1"], "--handshake-rate: "),
            (&["--handshake-rate", "inf"], "--handshake-rate: "),
            // Settings that one group allows only with another's.
            (
                &["--demo", "--tls-cert", "a.pem", "--tls-key", "a.key"],
                "--demo: ",
            ),
            (&["--processes", "2"], "--processes: needs --redis"),
            (
                &["--redis", "redis://a", "--shards", "65"],
                "--shards: must be at most 64 with --redis",
            ),
            (
                &["--max-write-buffer", "1023"],
                "--max-write-buffer: must be at least 1KiB",
            ),
            (&["--hook-timeout", "0"], "--hook-timeout: "),
            (&["--hook-timeout", "61s"], "--hook-timeout: "),
            (&["--hook-secret", ""], "--hook-secret: "),
            (&["--hook-concurrency", "0"], "--hook-concurrency: "),
            (&["--hook-concurrency", "1025"], "--hook-concurrency: "),
            (&["--webhook-events", "room.opened"], "--webhook-events: "),
            (&["--webhook-queue", "0"], "--webhook-queue: "),
            (&["--webhook-rooms", "a room"], "--webhook-rooms: "),
        ];
        for (args, message) in cases {
            if ServeArgs::try_parse_from(*args).is_err() {
                assert!(message.is_empty(), "{args:?} not parsed");
                continue;
            }
            let text = refusal(args);
            assert!(text.starts_with(message), "{args:?}: {text}");
        }
    }

    #[test]
    fn sensible_values_are_accepted() {
        let config = serve(&[
            "--max-message-size",
            "16MiB",
            "--max-write-buffer",
            "16MiB",
            "--history",
            "0",
            "--history-ttl",
            "0",
            "--allowed-origins",
            "https://a.example,http://localhost:3000,null",
            "--default-rooms",
            "lobby,prices:*",
            "--handshake-rate",
            "2.5",
            "--metrics-bind",
            "127.0.0.1:0",
            "--bind",
            "127.0.0.1:0",
        ])
        .into_config(EnvLists::default(), 2, 10_000)
        .unwrap();
        assert_eq!(config.limits.handshake_rate, 2.5);
    }
}
