//! The client tools the `roomcast` binary carries beside the server:
//! `roomcast api` (one call of the Server API, `api`), `roomcast bench`
//! (the load generator, `bench`), `roomcast connect` (an interactive
//! terminal client, `term`) and the demo's price feed (`roomcast demo-feed`
//! and `serve --demo`'s in-process feed, `demo`).
//!
//! They are modules of the binary, not of the library: they use the
//! library's frame codec, token minting, TLS provider and socket helpers as
//! any client could, and the server never depends on them. Each owns its
//! command's flags (`ApiArgs`, `BenchArgs`, `ConnectArgs`, `DemoFeedArgs`).

pub mod api;
pub mod bench;
pub mod demo;
pub mod pretty;
pub mod term;
