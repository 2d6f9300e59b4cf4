//! The Server API (protocol section 12): `POST /api/<method>`, for
//! operators and application backends, with effect on the whole cluster.
//!
//! Sans-IO, like the rest of the protocol core:
//! - `auth`: who calls (an `--api-key` or an admin token), checked before
//!   anything else;
//! - `command`: what a body asks, validated as a whole before anything
//!   runs (`batch` included), bounded in every length and count;
//! - `part`: what each shard and each node answers for a command that
//!   reaches all of them, and how those answers add up;
//! - `reply`: the JSON of results and errors;
//! - `cluster`: the messages between nodes over Redis.
//!
//! Must not touch: sockets, clocks, HTTP framing (`conn`), or the rooms
//! themselves: `rooms::api` carries commands out on the shards.

pub mod auth;
pub mod cluster;
pub mod command;
pub mod part;
pub mod reply;

use std::borrow::Cow;
use std::fmt;

use crate::codes::ErrorCode;

pub use command::{Call, Command, Method, NodeCommand};

/// A command that failed, with the error code and message of its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: Cow<'static, str>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `400 VALIDATION_ERROR`: a parameter is missing or bad.
    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    /// `503 UNAVAILABLE`: the cluster's Redis is away (section 10).
    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::Unavailable,
            "the cluster's Redis is unreachable; try again",
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The `node` of a process that is not part of a cluster (it has no
/// `--node-id`).
pub const STANDALONE_NODE: &str = "local";
