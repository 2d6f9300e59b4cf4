//! Every protocol constant in one place: close codes, error codes and the
//! bounds applied to anything that arrives from the network.
//!
//! Owns the numbers and strings of `docs/protocol.md`; owns no behaviour.
//! Any module that puts a code on the wire takes it from here.

/// WebSocket close codes used by roomcast (RFC 6455 section 7.4 and
/// `docs/protocol.md` section 8).
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke RFC 6455.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A binary message on `/ws`.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// Received but never sent: no status code was present.
    pub const NO_STATUS: u16 = 1005;
    /// Received but never sent: the connection dropped.
    pub const ABNORMAL: u16 = 1006;
    /// Text that is not valid UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A policy violation.
    pub const POLICY: u16 = 1008;
    /// A message over `--max-message-size`.
    pub const TOO_BIG: u16 = 1009;
    /// The server hit an internal error.
    pub const INTERNAL: u16 = 1011;
    /// The token expired and was not refreshed.
    pub const TOKEN_EXPIRED: u16 = 4002;
    /// The client flooded past its rate limit.
    pub const RATE_LIMITED: u16 = 4003;
    /// The client did not read its output fast enough.
    pub const SLOW_CONSUMER: u16 = 4008;
    /// The Server API's `disconnect` (section 12) without a `code`: the
    /// client does not reconnect.
    pub const API_DISCONNECT: u16 = 4500;
    /// The reason of an API `disconnect` without one.
    pub const API_DISCONNECT_REASON: &str = "disconnected";
    /// The close codes an API `disconnect` may give: 4000-4499 ask the
    /// client to reconnect, 4500-4999 not to.
    pub const API_CODES: std::ops::RangeInclusive<u16> = 4000..=4999;

    /// The reason the server puts in its close frame with `code`.
    pub const fn reason(code: u16) -> &'static str {
        match code {
            GOING_AWAY => "server shutting down",
            UNSUPPORTED_DATA => "binary messages are not supported",
            TOKEN_EXPIRED => "token expired",
            RATE_LIMITED => "rate limit exceeded",
            SLOW_CONSUMER => "slow consumer",
            _ => "",
        }
    }

    /// Whether a peer may send `code` in a close frame (RFC 6455 section 7.4).
    pub fn is_valid_from_peer(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
    }
}

/// Error codes carried in `error` events, failed acks and HTTP error bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    // Envelope and event errors (section 4).
    InvalidMessage,
    UnknownEvent,
    ValidationError,
    Forbidden,
    NotInRoom,
    RoomFull,
    RoomLimit,
    RateLimited,
    Unauthenticated,
    TokenExpired,
    Internal,
    /// Cluster mode: the node cannot reach Redis (section 10).
    Unavailable,
    // HTTP-only errors (sections 1, 2 and 9).
    BadRequest,
    UnsupportedVersion,
    OriginForbidden,
    ServerBusy,
    TooManyConnections,
    NotFound,
    MethodNotAllowed,
    HeadersTooLarge,
    PayloadTooLarge,
    LengthRequired,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 22] = [
        Self::InvalidMessage,
        Self::UnknownEvent,
        Self::ValidationError,
        Self::Forbidden,
        Self::NotInRoom,
        Self::RoomFull,
        Self::RoomLimit,
        Self::RateLimited,
        Self::Unauthenticated,
        Self::TokenExpired,
        Self::Internal,
        Self::Unavailable,
        Self::BadRequest,
        Self::UnsupportedVersion,
        Self::OriginForbidden,
        Self::ServerBusy,
        Self::TooManyConnections,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::HeadersTooLarge,
        Self::PayloadTooLarge,
        Self::LengthRequired,
    ];

    /// The code's position in `ALL`, for per-code tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidMessage => "INVALID_MESSAGE",
            Self::UnknownEvent => "UNKNOWN_EVENT",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::Forbidden => "FORBIDDEN",
            Self::NotInRoom => "NOT_IN_ROOM",
            Self::RoomFull => "ROOM_FULL",
            Self::RoomLimit => "ROOM_LIMIT",
            Self::RateLimited => "RATE_LIMITED",
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::TokenExpired => "TOKEN_EXPIRED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::BadRequest => "BAD_REQUEST",
            Self::UnsupportedVersion => "UNSUPPORTED_VERSION",
            Self::OriginForbidden => "ORIGIN_FORBIDDEN",
            Self::ServerBusy => "SERVER_BUSY",
            Self::TooManyConnections => "TOO_MANY_CONNECTIONS",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::HeadersTooLarge => "HEADERS_TOO_LARGE",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::LengthRequired => "LENGTH_REQUIRED",
        }
    }

    /// The HTTP status that goes with the code when it answers a request.
    pub const fn http_status(self) -> u16 {
        match self {
            Self::BadRequest
            | Self::InvalidMessage
            | Self::ValidationError
            | Self::UnknownEvent => 400,
            Self::Unauthenticated | Self::TokenExpired => 401,
            Self::Forbidden | Self::OriginForbidden | Self::NotInRoom => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::LengthRequired => 411,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedVersion => 426,
            Self::TooManyConnections | Self::RateLimited => 429,
            Self::HeadersTooLarge => 431,
            Self::ServerBusy | Self::RoomFull | Self::RoomLimit | Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The subprotocol of JSON text frames.
pub const SUBPROTOCOL: &str = "roomcast.v1";
/// The subprotocol of MessagePack binary frames (section 14); chosen over
/// `SUBPROTOCOL` when a client offers both.
pub const SUBPROTOCOL_MSGPACK: &str = "roomcast.msgpack";

/// Bounds on everything that comes from the network, and flag defaults.
pub mod limits {
    /// Control frames carry at most this many payload bytes (RFC 6455 5.5).
    pub const MAX_CONTROL_PAYLOAD: usize = 125;
    /// Longest accepted `event` name, in bytes.
    pub const MAX_EVENT_LEN: usize = 64;
    /// Longest accepted room name, in bytes.
    pub const MAX_ROOM_LEN: usize = 128;
    /// Longest accepted string `id`, in bytes.
    pub const MAX_ID_LEN: usize = 64;
    /// Largest magnitude of an integer `id`: 2^53 - 1.
    pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
    /// Longest accepted `sub` claim, in bytes.
    pub const MAX_SUB_LEN: usize = 128;
    /// Slowest `room:join` `data.maxRate`, in events per second (section 14).
    pub const MIN_MAX_RATE: f64 = 0.1;
    /// Fastest `room:join` `data.maxRate`, in events per second.
    pub const MAX_MAX_RATE: f64 = 1000.0;
    /// Deepest JSON nesting accepted in an envelope.
    pub const MAX_JSON_DEPTH: usize = 64;
    /// Most header lines accepted in one HTTP request.
    pub const MAX_HEADERS: usize = 64;
    /// Longest token accepted, in bytes: room for the `rooms` and `pub`
    /// claims at their full `MAX_PATTERNS` each. A token also has to fit the
    /// request head (`--max-header-bytes`, default 8 KiB, answered 431).
    pub const MAX_TOKEN_LEN: usize = 16 * 1024;
    /// Largest `--jwt-leeway`, in seconds.
    pub const MAX_JWT_LEEWAY_SECS: u64 = 60;
    /// Largest `--ping-interval` and `--ping-timeout`, in seconds: an hour.
    pub const MAX_HEARTBEAT_SECS: u64 = 3600;
    /// Largest `--drain-timeout`, in seconds: ten minutes.
    pub const MAX_DRAIN_TIMEOUT_SECS: u64 = 600;
    /// Largest `--handshake-timeout`, in seconds: five minutes.
    pub const MAX_HANDSHAKE_TIMEOUT_SECS: u64 = 300;
    /// File descriptors kept out of `--max-connections`: listeners, pollers,
    /// wakers and plain HTTP requests being answered.
    pub const FD_RESERVE: usize = 128;
    /// Client addresses (IPv6: /64 prefixes) whose handshake rate is tracked
    /// one by one; past this, new addresses share one bucket.
    pub const MAX_RATE_TRACKED_ADDRESSES: usize = 65_536;
    /// Longest request path written to the log, in bytes.
    pub const MAX_LOGGED_PATH: usize = 128;
    /// WebSocket sockets a shard accepts per event-loop turn before it
    /// serves its other connections; the rest wait for the next turn.
    pub const ACCEPT_BUDGET: usize = 64;
    /// Hand-off mode (`--accept handoff`): sockets the acceptor may have
    /// handed to the shards and they not yet adopted, per shard, before it
    /// stops accepting and leaves the rest in the kernel's backlog. The
    /// shards adopt `ACCEPT_BUDGET` a turn, as in reuseport mode.
    pub const HANDOFF_PER_SHARD: usize = 2 * ACCEPT_BUDGET;
    /// Connections the operator thread (`--metrics-bind`) reads a request
    /// head from at once; one more is refused with `503`. As many answers
    /// (refusals included) may be being written at once besides.
    pub const OPERATOR_CONNECTIONS: usize = 64;
    /// Room-traffic messages one shard may have sent another and not yet
    /// seen handled before it stops reading its client sockets; it reads
    /// again once the count is below half of this. Several event-loop turns
    /// of a busy publisher (a 256 KiB read budget holds a few thousand small
    /// events), so normal bursts never pause, yet small: a queued `Publish`
    /// of a small event is a few hundred bytes, so a few MB per pair of shards.
    pub const BUS_HIGH_WATER: usize = 16_384;
    /// Each socket's `SO_SNDBUF` is this many times `--max-write-buffer`
    /// (Linux doubles it again for bookkeeping). Near the bound, so that a
    /// client that stops reading holds little in the kernel, yet room
    /// enough that a burst of a few bounds to a client that reads leaves
    /// user space as fast as it arrives, and the bound judges only a
    /// client that falls behind.
    pub const SEND_BUFFER_PER_BOUND: usize = 2;
    /// Largest `--history`: the most messages a room keeps, and so the most
    /// a history read from Redis may hold.
    pub const MAX_HISTORY: usize = 10_000;
    /// Most users listed by `presence:get` (the count is exact beyond it).
    pub const MAX_PRESENCE_USERS: usize = 1000;
    /// Longest epoch read from Redis, in bytes: a node's own are its
    /// `--node-id` (at most 64) and a hex counter; the emitter's are shorter.
    pub const MAX_EPOCH_LEN: usize = 96;
    /// Most messages in one `POST /publish` body.
    pub const MAX_PUBLISH_MESSAGES: usize = 1000;
    /// The least a Server API body may hold whatever `--max-message-size`
    /// says (section 12: 1 MiB, or `--max-message-size` when larger).
    pub const MIN_API_BODY: usize = 1024 * 1024;
    /// Most commands in one API `batch`.
    pub const MAX_API_BATCH: usize = 100;
    /// Most rooms in one API `broadcast`.
    pub const MAX_API_BROADCAST_ROOMS: usize = 1000;
    /// Longest `reason` of an API `disconnect`, in bytes.
    pub const MAX_API_REASON: usize = 120;
    /// Most rooms an API `rooms` lists; past it the reply says `truncated`.
    pub const MAX_API_ROOMS: usize = 10_000;
    /// Longest API method name, in bytes (the longest is `history_remove`).
    pub const MAX_API_METHOD_LEN: usize = 32;
    /// Longest `--api-key`, in bytes.
    pub const MAX_API_KEY_BYTES: usize = 256;
    /// Largest API message between nodes of a cluster, in bytes (a `rooms`
    /// part of `MAX_API_ROOMS` long room names fits with room to spare).
    pub const MAX_API_CLUSTER_MESSAGE: usize = 16 * 1024 * 1024;
    /// Longest chunk-size line (size and ignored extensions) of a chunked
    /// body, in bytes, CRLF included.
    pub const MAX_CHUNK_LINE: usize = 1024;
    /// Largest trailer section of a chunked body, in bytes; trailers are
    /// read and discarded.
    pub const MAX_TRAILER_BYTES: usize = 4096;

    /// `--max-message-size` default: 64 KiB.
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
    /// `--max-header-bytes` default: 8 KiB.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 * 1024;
    /// `--max-write-buffer` default: 512 KiB.
    pub const DEFAULT_MAX_WRITE_BUFFER: usize = 512 * 1024;
    /// `--ping-interval` default, in seconds.
    pub const DEFAULT_PING_INTERVAL_SECS: u64 = 25;
    /// `--ping-timeout` default, in seconds.
    pub const DEFAULT_PING_TIMEOUT_SECS: u64 = 20;
    /// `--drain-timeout` default, in seconds.
    pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 10;
    /// How long a closing connection waits for the peer's close frame, and
    /// how long input is drained after an error response, before the socket
    /// is dropped.
    pub const CLOSE_LINGER_MILLIS: u64 = 2_000;
    /// How long a close the server decided on waits for the answers the
    /// rooms still owe the connection (acks of requests already executed).
    pub const CLOSE_AWAIT_ANSWERS_MILLIS: u64 = 2_000;
    /// permessage-deflate: data messages shorter than this are sent
    /// uncompressed (RSV1 clear) even to a connection that agreed to the
    /// extension. An ack or a short event gains a few bytes at best, and a
    /// deflate call costs more than the bytes it saves.
    pub const COMPRESS_MIN_BYTES: usize = 128;
    /// permessage-deflate: a compressed message may take this share more
    /// than `--max-message-size` on the wire (1/1024, plus
    /// `COMPRESSED_SLACK_BYTES`). Deflate's stored blocks grow incompressible
    /// data by 5 bytes per block (at most 64 KiB, often 16 KiB), so a message
    /// of the maximum size still fits compressed; the limit that counts is
    /// on the inflated size.
    pub const COMPRESSED_SLACK_DIVISOR: usize = 1024;
    /// permessage-deflate: the fixed part of the slack above (the block
    /// headers and the flush of a short message).
    pub const COMPRESSED_SLACK_BYTES: usize = 64;
    /// permessage-deflate: an inflate buffer grown past this by one large
    /// message is freed afterwards instead of kept by the shard.
    pub const MAX_KEPT_INFLATE_BUFFER: usize = 1024 * 1024;
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn index_is_the_position_in_all() {
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(code.index(), i, "{code}");
        }
    }
}
