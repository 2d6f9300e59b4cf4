//! RFC 6455: the frame codec and the opening handshake.
//!
//! Owns the wire format of WebSocket frames (`frame`, `mask`, `utf8`,
//! `decoder`), the validation of an HTTP upgrade request (`handshake`) and
//! permessage-deflate (RFC 7692): its negotiation (`extensions`) and its
//! compression (`deflate`), offered with `--compression on`.
//! Knows nothing of sockets, rooms or the JSON envelope.

pub mod decoder;
pub mod deflate;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod utf8;
