//! The "webhooks" thread: runs the `Outbox` with the clock. Shards send it
//! events (`WebhookHandle::notice`, one channel send, never waiting), the
//! hooks client's sink sends it the answers to its batches (`Input`), and
//! it sends each batch through the hooks client. It serves no client, so
//! the batching, the vacate delay and the backoff wait here, never on a
//! shard; a dead backend fills the outbox (bounded), not a shard.
//!
//! Its channel is unbounded because a shard must never wait on it; the
//! thread only moves events into the outbox, whose bound drops the oldest.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{Event, Outbox, OutboxConfig, Types};
use crate::hooks::{HookError, HookHandle, HookRequest, HookResponse};
use crate::log_debug;
use crate::metrics::HookMetrics;

/// What the thread hears.
pub enum Input {
    Event(Event),
    /// The outcome of batch number `.0`.
    Answered(u64, Result<HookResponse, HookError>),
    Stop,
}

/// How shards and the hooks client reach the thread.
#[derive(Clone)]
pub struct WebhookHandle {
    inputs: Sender<Input>,
    /// The types sent (`--webhook-events`): shards skip the others before
    /// building them.
    pub types: Types,
}

impl WebhookHandle {
    /// An event a shard noticed; never blocks.
    pub fn notice(&self, event: Event) {
        if self.types.contains(event.what.kind()) {
            let _ = self.inputs.send(Input::Event(event));
        }
    }

    /// A batch's outcome, from the hooks client's sink.
    pub fn answered(&self, batch: u64, outcome: Result<HookResponse, HookError>) {
        let _ = self.inputs.send(Input::Answered(batch, outcome));
    }

    /// Asks the thread to stop: what is held or waits is sent at once, for
    /// at most one `--hook-timeout`; then it exits (join it before the
    /// hooks client stops, which carries the last batches).
    pub fn stop(&self) {
        let _ = self.inputs.send(Input::Stop);
    }
}

/// Where the thread sends its batches: the hooks client, `url_index` its
/// webhook URL, `wrap` making a batch number the client's answer type.
pub struct Client<A> {
    pub handle: HookHandle<A>,
    pub url_index: usize,
    pub timeout: Duration,
    pub wrap: fn(u64) -> A,
}

/// The thread's channel, made before the hooks client (whose sink needs
/// the handle) and the thread (which needs the client).
pub fn channel(types: Types) -> (WebhookHandle, Receiver<Input>) {
    let (inputs, rx) = crossbeam_channel::unbounded();
    (WebhookHandle { inputs, types }, rx)
}

/// Starts the thread.
pub fn start<A: Send + 'static>(
    config: OutboxConfig,
    inputs: Receiver<Input>,
    client: Client<A>,
    metrics: Arc<HookMetrics>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("webhooks".into())
        .spawn(move || run(Outbox::new(config), &inputs, &client, &metrics))
}

fn run<A>(mut outbox: Outbox, inputs: &Receiver<Input>, client: &Client<A>, metrics: &HookMetrics) {
    // Set once stopping: the last moment anything is sent.
    let mut stop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        while let Some(batch) = outbox.poll(now) {
            let request = HookRequest {
                url_index: client.url_index,
                body: batch.body,
                deadline: now + client.timeout,
                answer: (client.wrap)(batch.number),
            };
            if let Err(refused) = client.handle.send(request) {
                log_debug!("webhook batch refused: {}", refused.error);
                outbox.answered(batch.number, false, now);
            }
        }
        metrics.record_webhooks(outbox.depth(), outbox.counts());
        if let Some(at) = stop_at
            && (outbox.is_empty() || at <= now)
        {
            break;
        }
        let next = match (outbox.next_timer(), stop_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let input = match next {
            Some(at) => inputs.recv_timeout(at.saturating_duration_since(Instant::now())),
            None => inputs.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        match input {
            Ok(Input::Event(event)) => outbox.push(event, now),
            Ok(Input::Answered(batch, outcome)) => {
                let acknowledged = outcome
                    .as_ref()
                    .is_ok_and(|r| (200..300).contains(&r.status));
                if let Err(e) = &outcome {
                    log_debug!("webhook batch failed: {e}");
                }
                outbox.answered(batch, acknowledged, now);
            }
            Ok(Input::Stop) => {
                outbox.flush(now);
                stop_at.get_or_insert(now + client.timeout);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}
