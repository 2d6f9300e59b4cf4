//! The client's surface: what a request is, what comes back, and the
//! handle shards send through. The bound of each URL's queue is kept here,
//! on the sender's side, so that a refusal is immediate and the channel
//! never holds more than the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::Waker;
use parking_lot::RwLock;

use crate::hooks::HookError;
use crate::metrics::HookMetrics;

/// A request for the hooks thread.
pub struct HookRequest<A> {
    /// Which of the client's URLs to POST to.
    pub url_index: usize,
    /// The JSON body, sent as is and signed.
    pub body: Vec<u8>,
    /// No answer is waited for past it, time in the queue included.
    pub deadline: Instant,
    /// Given back with the outcome.
    pub answer: A,
}

/// A complete response, whatever its status: what a non-`2xx` status
/// means is the caller's to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Where outcomes go: exactly one per request `send` accepted, on the
/// hooks thread, so an implementation only forwards (as the reactor's
/// sink does for the bridge).
pub trait HookSink: Send + 'static {
    type Answer: Send + 'static;
    fn answered(&self, answer: Self::Answer, outcome: Result<HookResponse, HookError>);
}

/// A request `send` did not take, given back with why: `Overloaded`,
/// `Stopped` or `NoSuchUrl`.
pub struct Refused<A> {
    pub error: HookError,
    pub request: HookRequest<A>,
}

impl<A> std::fmt::Debug for Refused<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Refused({:?})", self.error)
    }
}

/// What senders and the thread share.
pub(super) struct Shared {
    /// Per URL: requests sent and not yet on a connection or failed.
    pub(super) waiting: Box<[AtomicUsize]>,
    pub(super) queue: usize,
    /// Whether requests are taken. Senders hold it for reading while they
    /// send, so once the thread has set it false (holding it for writing)
    /// no request can slip into the channel behind its last look: every
    /// request taken is answered.
    pub(super) open: RwLock<bool>,
}

impl Shared {
    pub(super) fn is_open(&self) -> bool {
        *self.open.read()
    }

    pub(super) fn close(&self) {
        *self.open.write() = false;
    }
}

/// How shards reach the hooks thread.
pub struct HookHandle<A> {
    pub(super) requests: Sender<HookRequest<A>>,
    pub(super) waker: Arc<Waker>,
    pub(super) shared: Arc<Shared>,
    pub(super) metrics: Arc<HookMetrics>,
}

impl<A> Clone for HookHandle<A> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
            waker: self.waker.clone(),
            shared: self.shared.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<A> HookHandle<A> {
    /// Hands a request to the hooks thread, or refuses it at once: its
    /// URL's queue is full (`Overloaded`), the thread has stopped
    /// (`Stopped`), or there is no such URL (`NoSuchUrl`). Never blocks.
    pub fn send(&self, request: HookRequest<A>) -> Result<(), Refused<A>> {
        let refuse = |error, request| Err(Refused { error, request });
        let Some(waiting) = self.shared.waiting.get(request.url_index) else {
            return refuse(HookError::NoSuchUrl, request);
        };
        let open = self.shared.open.read();
        if !*open {
            return refuse(HookError::Stopped, request);
        }
        if waiting.fetch_add(1, Ordering::AcqRel) >= self.shared.queue {
            waiting.fetch_sub(1, Ordering::AcqRel);
            self.metrics.count_overloaded();
            return refuse(HookError::Overloaded, request);
        }
        if let Err(e) = self.requests.send(request) {
            waiting.fetch_sub(1, Ordering::AcqRel);
            return refuse(HookError::Stopped, e.0);
        }
        let _ = self.waker.wake();
        Ok(())
    }

    /// Asks the thread to stop: what waits or is in flight is answered
    /// `Stopped`, later sends are refused.
    pub fn stop(&self) {
        self.shared.close();
        let _ = self.waker.wake();
    }
}
