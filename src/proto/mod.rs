//! The event protocol on `/ws` (sections 4-6): what a client's text message
//! means and what the server answers.
//!
//! Sans-IO: takes an unmasked text payload and the session's identity,
//! appends JSON replies to a sink. Knows nothing of frames or sockets.

pub mod envelope;
pub mod names;
pub mod reply;
