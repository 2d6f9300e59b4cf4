//! The "webhooks" thread: runs the `Outbox` with the clock. Shards send it
//! events (`WebhookHandle::notice`, one channel send, never waiting), the
//! hooks client's sink sends it the answers to its batches (`Input`), and
//! it sends each batch through the hooks client. It serves no client, so
//! the batching, the vacate delay and the backoff wait here, never on a
//! shard; a dead backend fills the outbox (bounded), not a shard.
//!
//! Its channel is unbounded because a shard must never wait on it; the
//! thread only moves events into the outbox, whose bound drops the oldest.
//!
//! In a cluster the events come from Redis instead (`WebhookHandle::read`,
//! from the bridge of the node that sends them), each with where it was
//! read: once the outbox is done with every event of a server up to one
//! (`Cursors`), that event's id goes back to the bridge (`Cursor`), which
//! keeps it in Redis for the node that takes over.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{Event, Outbox, OutboxConfig, Source, Tag, Types};
use crate::hooks::{HookError, HookHandle, HookRequest, HookResponse};
use crate::log_debug;
use crate::metrics::HookMetrics;

/// What the thread hears.
pub enum Input {
    Event(Event),
    /// An event read from server `server`'s stream under entry `id`.
    Read {
        event: Event,
        server: usize,
        id: String,
    },
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

    /// An event read from Redis (cluster mode), in the stream's order.
    pub fn read(&self, event: Event, server: usize, id: String) {
        if self.types.contains(event.what.kind()) {
            let _ = self.inputs.send(Input::Read { event, server, id });
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

/// How far the outbox is done with server `server`'s stream: every entry
/// up to `id` included, so a node taking over reads from after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub server: usize,
    pub id: String,
}

/// The events read from Redis that the outbox is not done with, per
/// server in stream order, to tell how far each stream is done with.
#[derive(Default)]
struct Cursors {
    next_tag: Tag,
    server_of: HashMap<Tag, usize>,
    /// Per server: (tag, entry id, done) in stream order.
    open: Vec<VecDeque<(Tag, String, bool)>>,
}

impl Cursors {
    fn track(&mut self, server: usize, id: String) -> Tag {
        let tag = self.next_tag;
        self.next_tag += 1;
        if self.open.len() <= server {
            self.open.resize_with(server + 1, VecDeque::new);
        }
        self.open[server].push_back((tag, id, false));
        self.server_of.insert(tag, server);
        tag
    }

    /// Marks `tags` done; the cursors that moved.
    fn done(&mut self, tags: &[Tag]) -> Vec<Cursor> {
        let mut moved: Vec<Option<String>> = vec![None; self.open.len()];
        for tag in tags {
            let Some(server) = self.server_of.remove(tag) else {
                continue;
            };
            let open = &mut self.open[server];
            if let Ok(i) = open.binary_search_by_key(tag, |(t, _, _)| *t) {
                open[i].2 = true;
            }
            while let Some((_, _, true)) = open.front() {
                let (_, id, _) = open.pop_front().expect("front above");
                moved[server] = Some(id);
            }
        }
        moved
            .into_iter()
            .enumerate()
            .filter_map(|(server, id)| id.map(|id| Cursor { server, id }))
            .collect()
    }
}

/// The thread's channel, made before the hooks client (whose sink needs
/// the handle) and the thread (which needs the client).
pub fn channel(types: Types) -> (WebhookHandle, Receiver<Input>) {
    let (inputs, rx) = crossbeam_channel::unbounded();
    (WebhookHandle { inputs, types }, rx)
}

/// Starts the thread.
/// Starts the thread; `cursors` hears how far the events read from Redis
/// are done with.
pub fn start<A: Send + 'static>(
    config: OutboxConfig,
    inputs: Receiver<Input>,
    client: Client<A>,
    metrics: Arc<HookMetrics>,
    cursors: Option<Sender<Cursor>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("webhooks".into())
        .spawn(move || {
            let ends = Ends {
                client: &client,
                metrics: &metrics,
                cursors: cursors.as_ref(),
            };
            run(Outbox::new(config), &inputs, &ends);
        })
}

/// Where the thread's results go.
struct Ends<'a, A> {
    client: &'a Client<A>,
    metrics: &'a HookMetrics,
    cursors: Option<&'a Sender<Cursor>>,
}

fn run<A>(mut outbox: Outbox, inputs: &Receiver<Input>, ends: &Ends<'_, A>) {
    let (client, metrics) = (ends.client, ends.metrics);
    let mut tracked = Cursors::default();
    // Set once stopping: the last moment anything is sent.
    let mut stop_at: Option<Instant> = None;
    loop {
        if let Some(cursors) = ends.cursors {
            for cursor in tracked.done(&outbox.take_done()) {
                let _ = cursors.send(cursor);
            }
        }
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
            Ok(Input::Read { event, server, id }) => {
                // The entry names the event in the cluster: every node that
                // sends it sends it under the same id.
                let source = Source {
                    id: format!("r{server}-{id}").into(),
                    tag: tracked.track(server, id),
                };
                outbox.push_tagged(event, Some(source), now);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_moves_only_past_events_all_done_before_it() {
        let mut cursors = Cursors::default();
        let a1 = cursors.track(0, "1-0".into());
        let b1 = cursors.track(1, "5-0".into());
        let a2 = cursors.track(0, "2-0".into());
        let a3 = cursors.track(0, "3-0".into());
        // a2 done, a1 not yet: server 0's cursor stays.
        assert_eq!(cursors.done(&[a2]), []);
        assert_eq!(
            cursors.done(&[a1, b1]),
            [
                Cursor {
                    server: 0,
                    id: "2-0".into()
                },
                Cursor {
                    server: 1,
                    id: "5-0".into()
                }
            ]
        );
        assert_eq!(
            cursors.done(&[a3, a3]),
            [Cursor {
                server: 0,
                id: "3-0".into()
            }]
        );
    }
}
