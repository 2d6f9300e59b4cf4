//! Webhooks (section 13.1): the events, their JSON, and the sans-IO
//! outbox that holds, batches, retries and bounds them.
//!
//! Owns: what an event is (`Event`, `EventType`), its JSON, and `Outbox`,
//! the state machine between the shards that notice events and the hooks
//! client that POSTs them. It is fed events and answers with the time and
//! says what to send and when it next needs the time; `thread` runs it on
//! a thread of its own ("webhooks"), so its clock (the 50 ms batching, the
//! vacate delay, the backoff) never runs on a thread that serves clients,
//! and a shard's part is one channel send per event.
//!
//! - Held: `room.vacated` and `user.offline` wait `--webhook-vacate-delay`;
//!   a `room.occupied` (`user.online`) for the same room (user) meanwhile
//!   cancels both. Any other event about that room sends its held vacate
//!   first, so that events about one room stay in the order they
//!   happened; a user's held offline waits its delay whatever comes (see
//!   `Outbox::push`).
//! - Batched: at most `MAX_BATCH` events, sent once the first has waited
//!   `LINGER` or the batch is full.
//! - One batch in flight at a time, in order: events about one room or one
//!   user arrive in the order they happened, retries included. A `2xx`
//!   acknowledges the batch; anything else is retried with backoff
//!   (`BACKOFF_MIN` doubling up to `BACKOFF_MAX`) until `--webhook-retry`
//!   has passed since its first try, then the batch is dropped and counted.
//! - Bounded: at most `--webhook-queue` events wait (the batch in flight
//!   not counted); past it the oldest is dropped and counted.
//!
//! - Stopping (`flush`): held events are sent at once, batches go without
//!   waiting, and the thread gives it one `--hook-timeout` (`thread`).
//!
//! Must not touch: sockets, channels, clocks (the thread's), or what the
//! shards know about rooms and users (they only say what happened).

pub mod thread;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::json;

/// Most events in one batch.
pub const MAX_BATCH: usize = 100;
/// Longest a batch's first event waits for others.
pub const LINGER: Duration = Duration::from_millis(50);
/// The first retry's delay; each next one doubles it.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// The longest delay between two tries.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The kinds of webhook events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    RoomOccupied,
    RoomVacated,
    UserOnline,
    UserOffline,
    PresenceJoin,
    PresenceLeave,
    RoomMessage,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::RoomOccupied,
        Self::RoomVacated,
        Self::UserOnline,
        Self::UserOffline,
        Self::PresenceJoin,
        Self::PresenceLeave,
        Self::RoomMessage,
    ];

    /// The `type` field.
    pub const fn name(self) -> &'static str {
        match self {
            Self::RoomOccupied => "room.occupied",
            Self::RoomVacated => "room.vacated",
            Self::UserOnline => "user.online",
            Self::UserOffline => "user.offline",
            Self::PresenceJoin => "presence.join",
            Self::PresenceLeave => "presence.leave",
            Self::RoomMessage => "room.message",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of event types (`--webhook-events`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Types(u8);

impl Types {
    pub const NONE: Self = Self(0);

    pub fn of(types: &[EventType]) -> Self {
        Self(types.iter().fold(0, |mask, t| mask | t.bit()))
    }

    pub fn contains(self, t: EventType) -> bool {
        self.0 & t.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The mask as `roomcast.lua` reads it (`TYPE_BITS`: bit `i` is
    /// `EventType::ALL[i]`).
    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn without(self, t: EventType) -> Self {
        Self(self.0 & !t.bit())
    }
}

/// A sequenced room message (`room.message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub room: Arc<str>,
    pub event: Box<str>,
    /// The `data` JSON text as published.
    pub data: Box<[u8]>,
    pub from: Box<str>,
    pub seq: u64,
    pub ts: u64,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    RoomOccupied(Arc<str>),
    RoomVacated(Arc<str>),
    UserOnline(Arc<str>),
    UserOffline(Arc<str>),
    PresenceJoin {
        room: Arc<str>,
        user: Arc<str>,
    },
    PresenceLeave {
        room: Arc<str>,
        user: Arc<str>,
    },
    RoomMessage(Box<Message>),
    /// A `room.message` as Redis recorded it in a cluster: the sequenced
    /// message text, whose fields (`event`, `room`, `data`, `from`, `seq`,
    /// `ts`) are the event's.
    RoomMessageText {
        room: Arc<str>,
        text: Box<[u8]>,
    },
}

/// An event as a shard noticed it, with its `time` (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub what: What,
    pub time: u64,
}

/// What a held event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Room(Arc<str>),
    User(Arc<str>),
}

impl What {
    pub fn kind(&self) -> EventType {
        match self {
            Self::RoomOccupied(_) => EventType::RoomOccupied,
            Self::RoomVacated(_) => EventType::RoomVacated,
            Self::UserOnline(_) => EventType::UserOnline,
            Self::UserOffline(_) => EventType::UserOffline,
            Self::PresenceJoin { .. } => EventType::PresenceJoin,
            Self::PresenceLeave { .. } => EventType::PresenceLeave,
            Self::RoomMessage(_) | Self::RoomMessageText { .. } => EventType::RoomMessage,
        }
    }

    fn room(&self) -> Option<&Arc<str>> {
        match self {
            Self::RoomOccupied(room) | Self::RoomVacated(room) => Some(room),
            Self::PresenceJoin { room, .. } | Self::PresenceLeave { room, .. } => Some(room),
            Self::RoomMessage(message) => Some(&message.room),
            Self::RoomMessageText { room, .. } => Some(room),
            Self::UserOnline(_) | Self::UserOffline(_) => None,
        }
    }

    fn user(&self) -> Option<&Arc<str>> {
        match self {
            Self::UserOnline(user) | Self::UserOffline(user) => Some(user),
            Self::PresenceJoin { user, .. } | Self::PresenceLeave { user, .. } => Some(user),
            Self::RoomOccupied(_)
            | Self::RoomVacated(_)
            | Self::RoomMessage(_)
            | Self::RoomMessageText { .. } => None,
        }
    }
}

impl Event {
    /// `{"id","type","time",...}`.
    fn write(&self, id: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":");
        json::write_str(out, id);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(self.what.kind().name().as_bytes());
        out.extend_from_slice(b"\",\"time\":");
        json::write_u64(out, self.time);
        if let What::RoomMessageText { text, .. } = &self.what
            && text.len() > 2
        {
            out.push(b',');
            out.extend_from_slice(&text[1..]);
            return;
        }
        let field = |out: &mut Vec<u8>, key: &str, value: &str| {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
            json::write_str(out, value);
        };
        match &self.what {
            What::RoomMessage(m) => {
                field(out, "room", &m.room);
                field(out, "event", &m.event);
                out.extend_from_slice(b",\"data\":");
                out.extend_from_slice(&m.data);
                field(out, "from", &m.from);
                out.extend_from_slice(b",\"seq\":");
                json::write_u64(out, m.seq);
                out.extend_from_slice(b",\"ts\":");
                json::write_u64(out, m.ts);
            }
            what => {
                if let Some(room) = what.room() {
                    field(out, "room", room);
                }
                if let Some(user) = what.user() {
                    field(out, "user", user);
                }
            }
        }
        out.push(b'}');
    }
}

/// How the outbox behaves.
#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Prefix of every event's `id`: unique to this process.
    pub node: String,
    pub vacate_delay: Duration,
    pub retry: Duration,
    pub queue: usize,
}

/// A batch to POST now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Given back with its answer (`Outbox::answered`).
    pub number: u64,
    /// `{"events":[...]}`.
    pub body: Vec<u8>,
}

/// What the outbox counted, for the metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Events acknowledged by the backend.
    pub delivered: u64,
    /// Tries after a batch's first.
    pub retries: u64,
    /// Events dropped: their batch ran out of `--webhook-retry`.
    pub dropped_retry: u64,
    /// Events dropped: the queue was full.
    pub dropped_queue: u64,
}

/// The batch at the backend or waiting to be tried again.
struct Flight {
    number: u64,
    body: Vec<u8>,
    events: usize,
    first_try: Instant,
    failures: u32,
    /// `None`: at the backend; `Some(at)`: to be tried again at `at`.
    retry_at: Option<Instant>,
    tags: Vec<Tag>,
}

/// What the feeder of a tagged event (`Outbox::push_tagged`) calls it, to
/// hear when the outbox is done with it (`Outbox::take_done`).
pub type Tag = u64;

/// Where a tagged event came from: its tag, and the `id` it is sent with,
/// the same whichever node sends it (so a backend can tell an event sent
/// again after a take-over).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub tag: Tag,
    pub id: Box<str>,
}

/// Between the shards and the backend; see the module doc.
pub struct Outbox {
    config: OutboxConfig,
    next_id: u64,
    next_batch: u64,
    /// Held vacates and offlines, by subject, with their generation and
    /// tag.
    held: HashMap<Subject, (u64, Event, Option<Source>)>,
    /// Held events by due time: the delay is one, so pushes come in order.
    due: VecDeque<(Instant, Subject, u64)>,
    next_generation: u64,
    /// Encoded events waiting, with when each came and their tag.
    queue: VecDeque<(Instant, Vec<u8>, Option<Tag>)>,
    flight: Option<Flight>,
    counts: Counts,
    /// Stopping: batches go without waiting for more events.
    flushing: bool,
    /// Tags of events that are done with (`take_done`).
    done: Vec<Tag>,
}

impl Outbox {
    pub fn new(config: OutboxConfig) -> Self {
        Self {
            config,
            next_id: 0,
            next_batch: 0,
            held: HashMap::new(),
            due: VecDeque::new(),
            next_generation: 0,
            queue: VecDeque::new(),
            flight: None,
            counts: Counts::default(),
            flushing: false,
            done: Vec::new(),
        }
    }

    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Events waiting (held ones not counted; the batch in flight is).
    pub fn depth(&self) -> usize {
        self.queue.len() + self.flight.as_ref().map_or(0, |f| f.events)
    }

    /// Whether nothing is held, waiting or in flight.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty() && self.queue.is_empty() && self.flight.is_none()
    }

    /// The server stops: held events are sent now (the rooms and users
    /// are gone and nobody will rejoin here), and batches no longer wait
    /// for more events.
    pub fn flush(&mut self, now: Instant) {
        while let Some((_, subject, generation)) = self.due.pop_front() {
            if self
                .held
                .get(&subject)
                .is_some_and(|(g, _, _)| *g == generation)
            {
                self.release(&subject, now);
            }
        }
        self.flushing = true;
    }

    /// An event a shard noticed.
    pub fn push(&mut self, event: Event, now: Instant) {
        self.push_tagged(event, None, now);
    }

    /// An event whose end (acknowledged, dropped, cancelled) its feeder
    /// wants to hear of: its tag comes out of `take_done` then.
    pub fn push_tagged(&mut self, event: Event, source: Option<Source>, now: Instant) {
        let cancels = match &event.what {
            What::RoomOccupied(room) => Some(Subject::Room(room.clone())),
            What::UserOnline(user) => Some(Subject::User(user.clone())),
            What::RoomVacated(room) => {
                return self.hold(Subject::Room(room.clone()), event, source, now);
            }
            What::UserOffline(user) => {
                return self.hold(Subject::User(user.clone()), event, source, now);
            }
            _ => None,
        };
        if let Some(subject) = cancels
            && let Some((_, _, held)) = self.held.remove(&subject)
        {
            let tags = held.into_iter().chain(source).map(|s| s.tag);
            self.done.extend(tags);
            return;
        }
        match &event.what {
            // A held user.offline is not sent early for a presence event:
            // a user's connections and their rooms are counted on different
            // shards, so the `user.online` that cancels it may come after a
            // `presence.join` of the new connection, and the `presence.leave`
            // of the last one after the offline itself.
            What::RoomOccupied(_) | What::UserOnline(_) => {}
            what => {
                if let Some(room) = what.room() {
                    self.release(&Subject::Room(room.clone()), now);
                }
            }
        }
        self.enqueue(&event, source, now);
    }

    /// The tags of the events the outbox is done with since last asked.
    pub fn take_done(&mut self) -> Vec<Tag> {
        std::mem::take(&mut self.done)
    }

    fn hold(&mut self, subject: Subject, event: Event, source: Option<Source>, now: Instant) {
        // A second vacate before any occupy cannot happen; were it to, the
        // first is sent rather than lost.
        self.release(&subject, now);
        let generation = self.next_generation;
        self.next_generation += 1;
        let due = now + self.config.vacate_delay;
        self.due.push_back((due, subject.clone(), generation));
        self.held.insert(subject, (generation, event, source));
    }

    /// Sends the held event about `subject` now, if there is one.
    fn release(&mut self, subject: &Subject, now: Instant) {
        if let Some((_, event, source)) = self.held.remove(subject) {
            self.enqueue(&event, source, now);
        }
    }

    fn enqueue(&mut self, event: &Event, source: Option<Source>, now: Instant) {
        let (tag, id) = match source {
            Some(Source { tag, id }) => (Some(tag), id.into_string()),
            None => {
                self.next_id += 1;
                (None, format!("{}-{}", self.config.node, self.next_id - 1))
            }
        };
        let mut text = Vec::with_capacity(96);
        event.write(&id, &mut text);
        if self.queue.len() >= self.config.queue
            && let Some((_, _, dropped)) = self.queue.pop_front()
        {
            self.done.extend(dropped);
            self.counts.dropped_queue += 1;
        }
        self.queue.push_back((now, text, tag));
    }

    /// Held events whose delay is over go to the queue.
    fn release_due(&mut self, now: Instant) {
        while let Some((due, _, _)) = self.due.front()
            && *due <= now
        {
            let (_, subject, generation) = self.due.pop_front().expect("front above");
            if self
                .held
                .get(&subject)
                .is_some_and(|(g, _, _)| *g == generation)
            {
                self.release(&subject, now);
            }
        }
    }

    /// The batch to send now, if any: a retry that is due, else a new
    /// batch when no other is in flight and the queue's first event has
    /// waited `LINGER` or a batch is full.
    pub fn poll(&mut self, now: Instant) -> Option<Batch> {
        self.release_due(now);
        if let Some(flight) = &mut self.flight {
            return match flight.retry_at {
                Some(at) if at <= now => {
                    flight.retry_at = None;
                    self.counts.retries += 1;
                    Some(Batch {
                        number: flight.number,
                        body: flight.body.clone(),
                    })
                }
                _ => None,
            };
        }
        let (first, _, _) = self.queue.front()?;
        if !self.flushing && self.queue.len() < MAX_BATCH && *first + LINGER > now {
            return None;
        }
        let take = self.queue.len().min(MAX_BATCH);
        let mut body = b"{\"events\":[".to_vec();
        let mut tags = Vec::new();
        for (i, (_, text, tag)) in self.queue.drain(..take).enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&text);
            tags.extend(tag);
        }
        body.extend_from_slice(b"]}");
        let number = self.next_batch;
        self.next_batch += 1;
        self.flight = Some(Flight {
            number,
            body: body.clone(),
            events: take,
            first_try: now,
            failures: 0,
            retry_at: None,
            tags,
        });
        Some(Batch { number, body })
    }

    /// The backend's answer to batch `number`: `acknowledged` for a `2xx`.
    pub fn answered(&mut self, number: u64, acknowledged: bool, now: Instant) {
        let Some(flight) = &mut self.flight else {
            return;
        };
        if flight.number != number || flight.retry_at.is_some() {
            return;
        }
        let give_up = flight.first_try + self.config.retry;
        if acknowledged || now >= give_up {
            if acknowledged {
                self.counts.delivered += flight.events as u64;
            } else {
                self.counts.dropped_retry += flight.events as u64;
            }
            self.done.append(&mut flight.tags);
            self.flight = None;
            return;
        }
        let backoff = BACKOFF_MIN
            .saturating_mul(1 << flight.failures.min(16))
            .min(BACKOFF_MAX);
        flight.failures += 1;
        flight.retry_at = Some((now + backoff).min(give_up));
    }

    /// When `poll` has something to do next, if ever without new input.
    pub fn next_timer(&self) -> Option<Instant> {
        let held = self.due.front().map(|(at, _, _)| *at);
        let linger = if self.flushing {
            Duration::ZERO
        } else {
            LINGER
        };
        let queued = match &self.flight {
            Some(flight) => flight.retry_at,
            None => self.queue.front().map(|(at, _, _)| *at + linger),
        };
        held.into_iter().chain(queued).min()
    }
}

#[cfg(test)]
mod tests;
