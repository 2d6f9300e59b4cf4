//! Webhooks in a cluster (section 13.1): the Redis functions add every
//! transition to their server's stream (`redis::webhooks`), and one node
//! sends them all: the live node with the smallest id. Its bridge reads
//! each server's stream every `READ_EVERY` from a cursor it keeps in Redis
//! and hands the events, in stream order, to the webhooks thread, whose
//! one outbox then sees every transition of a room in order (so a room
//! re-occupied within the vacate delay cancels its vacate, whichever node
//! its members came through). The cursor in Redis moves only once the
//! backend acknowledged (or the outbox dropped) everything up to it, so a
//! node taking over sends again what was not acknowledged: at least once.
//!
//! Other nodes read nothing; their shards notice nothing (`notes` are off
//! in cluster mode).

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{Bridge, BridgeSink, Pending};
use crate::hooks::webhook::thread::{Cursor, WebhookHandle};
use crate::log_warn;
use crate::redis::layout;
use crate::redis::resp::{self, Reply};
use crate::redis::webhooks;

/// How often the sending node reads the streams.
const READ_EVERY: Duration = Duration::from_millis(50);

/// The bridge's ends of the webhooks thread.
pub struct WebhookFeed {
    /// Where the events read go.
    pub events: WebhookHandle,
    /// How far the outbox is done with each stream.
    pub cursors: Receiver<Cursor>,
}

/// The reading side, on the bridge thread.
pub(super) struct Reader {
    feed: WebhookFeed,
    next_read: Instant,
    stream: String,
    /// Per server: the id read up to, once known (read from Redis when this
    /// node becomes the sender), and whether a read is in flight.
    servers: Vec<(Option<String>, bool)>,
}

impl Reader {
    pub(super) fn new(feed: WebhookFeed, prefix: &str, servers: usize) -> Self {
        Self {
            feed,
            next_read: Instant::now(),
            stream: layout::webhooks(prefix),
            servers: vec![(None, false); servers],
        }
    }

    pub(super) fn next_read(&self) -> Instant {
        self.next_read
    }
}

impl<S: BridgeSink> Bridge<S> {
    /// Whether this node sends the cluster's webhooks.
    fn sends_webhooks(&self) -> bool {
        self.live_known
            && self.live_nodes.first().map(|n| &**n) == Some(self.config.cluster.node_id.as_str())
    }

    /// Stores the cursors the outbox is done with, and reads the streams
    /// when due.
    pub(super) fn read_webhooks(&mut self) {
        let sends = self.sends_webhooks();
        let prefix = &self.config.cluster.prefix;
        let Some(reader) = &mut self.webhooks else {
            return;
        };
        while let Ok(cursor) = reader.feed.cursors.try_recv() {
            let Some(link) = self.links.get_mut(cursor.server) else {
                continue;
            };
            if link.is_up() {
                let key = layout::webhooks_cursor(prefix, cursor.server);
                let _ = link.pipeline.push(Pending::Ignored, |out| {
                    resp::write_command(out, &["SET", key.as_str(), cursor.id.as_str()]);
                });
            }
        }
        let now = Instant::now();
        if now < reader.next_read {
            return;
        }
        reader.next_read = now + READ_EVERY;
        for (index, (after, busy)) in reader.servers.iter_mut().enumerate() {
            if !sends {
                // Read again from Redis's cursor should this node send later.
                *after = None;
                continue;
            }
            let link = &mut self.links[index];
            if *busy || !link.is_up() {
                continue;
            }
            let pushed = match after {
                None => {
                    let key = layout::webhooks_cursor(prefix, index);
                    link.pipeline.push(Pending::WebhookCursor { index }, |out| {
                        resp::write_command(out, &["GET", key.as_str()]);
                    })
                }
                Some(after) => link.pipeline.push(Pending::WebhookRead { index }, |out| {
                    webhooks::read(out, &reader.stream, after);
                }),
            };
            *busy = pushed.is_ok();
        }
    }

    /// A read's reply is in, or lost with its link (`None`).
    pub(super) fn on_webhook_cursor(&mut self, index: usize, reply: Option<&Reply>) {
        let sends = self.sends_webhooks();
        let Some((after, busy)) = self.reader_server(index) else {
            return;
        };
        *busy = false;
        match reply {
            Some(Reply::Nil) if sends => *after = Some("0".into()),
            Some(Reply::Bulk(id)) if sends => *after = String::from_utf8(id.clone()).ok(),
            Some(other) if sends => log_warn!("redis bridge: webhook cursor refused: {other:?}"),
            _ => {}
        }
    }

    pub(super) fn on_webhook_read(&mut self, index: usize, reply: Option<&Reply>) {
        let Some(reader) = &mut self.webhooks else {
            return;
        };
        let Some((after, busy)) = reader.servers.get_mut(index) else {
            return;
        };
        *busy = false;
        let (Some(reply), Some(_)) = (reply, after.as_ref()) else {
            return;
        };
        let Some(entries) = webhooks::entries(reply) else {
            return log_warn!("redis bridge: webhook stream read refused: {reply:?}");
        };
        if entries.len() >= webhooks::READ_COUNT {
            // More are waiting: read again at once.
            reader.next_read = Instant::now();
        }
        for entry in entries {
            if let Some(event) = entry.event {
                reader.feed.events.read(event, index, entry.id.clone());
            }
            *after = Some(entry.id);
        }
    }

    fn reader_server(&mut self, index: usize) -> Option<&mut (Option<String>, bool)> {
        self.webhooks.as_mut()?.servers.get_mut(index)
    }
}
