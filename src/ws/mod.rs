//! RFC 6455: the frame codec and the opening handshake.
//!
//! Owns the wire format of WebSocket frames (`frame`, `mask`, `utf8`,
//! `decoder`) and the validation of an HTTP upgrade request (`handshake`).
//! Knows nothing of sockets, rooms or the JSON envelope.

pub mod decoder;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;
