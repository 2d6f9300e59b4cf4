//! HTTP/1.1 on the shared port: bounded request-head parsing, chunked
//! request bodies, and the responses roomcast writes (errors, JSON bodies,
//! `100 Continue`, `101 Switching Protocols`), and the reading of a
//! response head for the binary's own clients (`client`).
//!
//! Takes bytes, returns bytes; knows nothing of sockets or WebSocket frames.

pub mod chunked;
pub mod client;
pub mod request;
pub mod response;
