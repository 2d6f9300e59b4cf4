//! HTTP/1.1 on the shared port: bounded request-head parsing and the
//! responses roomcast writes (errors, JSON bodies, `101 Switching Protocols`).
//!
//! Takes bytes, returns bytes; knows nothing of sockets or WebSocket frames.

pub mod request;
pub mod response;
