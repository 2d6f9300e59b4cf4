//! The bridge's connections to its Redis servers, one RESP3 connection per
//! server: connecting and setting up (`HELLO 3`, `SELECT`, the function
//! library, the subscriptions and recoveries of the rooms served), reading
//! replies and pushes in order, writing what the pipeline holds, and on
//! failure answering what was in flight `Unavailable` and retrying with
//! backoff and jitter. A Sentinel-managed server is connected where its
//! watcher last named the master, checked with `ROLE`, and left for the
//! new master as soon as the watcher names one; a `READONLY` reply means
//! the master was demoted: the link is dropped and the watcher asked to
//! look again.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Interest, Token};

use super::stream::Stream;
use super::{Bridge, BridgeSink, Link, Pending, Sequenced, Unavailable};
use crate::redis;
use crate::redis::layout::RoomKeys;
use crate::redis::pipeline::Incoming;
use crate::redis::resp::{self, Reply};
use crate::redis::sentinel::{self, Role};
use crate::redis::url::RedisUrl;
use crate::{log_info, log_warn};

impl<S: BridgeSink> Bridge<S> {
    /// Opens the connection of every link that is down and due a retry.
    pub(super) fn connect_due(&mut self) {
        let now = Instant::now();
        for index in 0..self.links.len() {
            let link = &self.links[index];
            if link.stream.is_some() || link.retired || now < link.retry_at || !link.knows_address()
            {
                continue;
            }
            if let Err(e) = self.open(index) {
                log_warn!("redis bridge: {}: {e}", self.links[index].url);
                self.drop_link(index);
            }
        }
    }

    /// Connects, and queues the setup, the subscriptions of every room
    /// served on this server and the recovery of each.
    pub(super) fn open(&mut self, index: usize) -> io::Result<()> {
        let link = &mut self.links[index];
        let addr = match &link.watch {
            Some(watch) => watch
                .master
                .ok_or_else(|| io::Error::other("no master named"))?,
            None => resolve(&link.url)?,
        };
        link.addr = Some(addr);
        let mut stream = Stream::connect(addr, &link.url, self.config.tls.as_ref())?;
        let both = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(stream.socket(), Token(index), both)?;
        let in_cluster = self.topology.is_some();
        let link = &mut self.links[index];
        link.pipeline.reset();
        let setup = setup_commands(&link.url, &self.config.cluster.node_id);
        link.setup_left = setup.len() + 1;
        for command in setup {
            let pushed = link
                .pipeline
                .push(Pending::Setup, |out| resp::write_command(out, &command));
            debug_assert!(pushed.is_ok());
        }
        if link.watch.is_some() {
            link.setup_left += 1;
            let _ = link
                .pipeline
                .push(Pending::Role, |out| resp::write_command(out, &["ROLE"]));
        }
        if in_cluster {
            // Before the library: a replica refuses FUNCTION LOAD, and its
            // map still says where the masters are.
            let _ = link.pipeline.push(Pending::Topology, |out| {
                resp::write_command(out, &["CLUSTER", "SLOTS"]);
            });
        }
        let _ = link.pipeline.push(Pending::Setup, redis::load_library);
        if self.route(redis::ONLINE) == index {
            self.subscribe_node_channels(index);
        }
        let rooms: Vec<Arc<str>> = self
            .subscriptions
            .rooms()
            .filter(|room| self.route(room) == index)
            .cloned()
            .collect();
        self.serve_on(index, &rooms);
        let link = &mut self.links[index];
        link.stream = Some(stream);
        link.connected = false;
        link.ready = false;
        Ok(())
    }

    /// Subscribes the direct and Server API channels on link `index`.
    pub(super) fn subscribe_node_channels(&mut self, index: usize) {
        let channels = [
            self.direct_channel.clone(),
            self.api_channel.clone(),
            self.api_node_channel.clone(),
        ];
        for channel in channels {
            self.push_subscription(index, "SSUBSCRIBE", &channel, None);
        }
    }

    /// Subscribes `rooms` on link `index` and recovers, from its cursor,
    /// what each missed meanwhile.
    pub(super) fn serve_on(&mut self, index: usize, rooms: &[Arc<str>]) {
        let prefix = self.config.cluster.prefix.clone();
        for room in rooms {
            let channel = RoomKeys::new(&prefix, room).channel;
            self.push_subscription(index, "SSUBSCRIBE", &channel, Some(room.clone()));
        }
        let wanted: HashSet<&str> = rooms.iter().map(|r| &**r).collect();
        let retention = self.config.history;
        let link = &mut self.links[index];
        for (room, cursor) in self.subscriptions.start_recoveries(|r| wanted.contains(r)) {
            let keys = RoomKeys::new(&prefix, &room);
            // The epoch a room that Redis lost entirely starts: one this
            // node never made before, as the room may have lost an epoch
            // started by an earlier recovery at the same seq.
            self.epochs_made += 1;
            let epoch = format!("{}-r{:x}", self.config.cluster.node_id, self.epochs_made);
            // Queued ahead of any publish this connection will carry, so a
            // room's seq is raised before the next one is given out.
            let _ = link.pipeline.push(Pending::Recover { room }, |out| {
                redis::recover(out, &keys, (&cursor.epoch, cursor.seq), &epoch, retention);
            });
        }
    }

    /// Queues `verb` (`SSUBSCRIBE` or `SUNSUBSCRIBE`) of one channel on link
    /// `index`. In a Redis Cluster it waits for its confirmation, since a
    /// node that does not serve the channel's slot answers an error.
    pub(super) fn push_subscription(
        &mut self,
        index: usize,
        verb: &'static str,
        channel: &str,
        room: Option<Arc<str>>,
    ) {
        let link = &mut self.links[index];
        let write = |out: &mut Vec<u8>| resp::write_command(out, &[verb, channel]);
        if self.topology.is_none() {
            return link.pipeline.push_unanswered(write);
        }
        let kind: &'static [u8] = if verb == "SSUBSCRIBE" {
            b"ssubscribe"
        } else {
            b"sunsubscribe"
        };
        let subscribe = verb == "SSUBSCRIBE";
        let _ = link.pipeline.push_confirmed(
            Pending::Subscribed { room, subscribe },
            kind,
            channel.as_bytes(),
            write,
        );
    }

    /// A link failed: its socket goes, what it had in flight is answered
    /// `Unavailable`, and the next attempt is scheduled.
    pub(super) fn drop_link(&mut self, index: usize) {
        let link = &mut self.links[index];
        if let Some(mut stream) = link.stream.take() {
            let _ = self.poll.registry().deregister(stream.socket());
        }
        link.ready = false;
        link.liveness.down();
        let lost = link.pipeline.reset();
        for answer in link.replication.reset() {
            self.sink.sequenced(answer, Err(Unavailable));
        }
        let delay = link.backoff.next_delay(random());
        link.retry_at = Instant::now() + delay;
        if let Some(topology) = &mut self.topology {
            topology.link_lost();
        }
        for pending in lost {
            self.answer_unavailable(pending);
        }
    }

    /// Answers a request whose reply will not come, or will not be read.
    pub(super) fn answer_unavailable(&mut self, pending: Pending<S::Answer>) {
        match pending {
            Pending::Publish { room, answers, .. } => {
                self.publish_answered(&room, answers.len());
                for answer in answers {
                    self.sink.sequenced(answer, Err(Unavailable));
                }
            }
            Pending::Join { answer, .. } => self.sink.joined(answer, Err(Unavailable)),
            Pending::Presence { answer } => self.sink.presence(answer, Err(Unavailable)),
            Pending::RoomRead { answer, .. } => self.sink.room_read(answer, Err(Unavailable)),
            Pending::RoomUsers { gather, index } => self.counted_users(gather, index, None),
            Pending::Sent { answer } => self.sink.sent(answer, Err(Unavailable)),
            Pending::WebhookCursor { index } => self.on_webhook_cursor(index, None),
            Pending::WebhookRead { index } => self.on_webhook_read(index, None),
            Pending::Topology => self.on_topology(None),
            Pending::Recover { room } => {
                // Live events flow again; in a Redis Cluster the room is
                // served again after the next slot map.
                self.subscriptions.recovered(&room);
                if let Some(topology) = &mut self.topology {
                    topology.serve_again(Some(room));
                }
            }
            Pending::Setup
            | Pending::Role
            | Pending::Replicated { .. }
            | Pending::Subscribed { .. }
            | Pending::Ignored
            | Pending::DeadNodes
            | Pending::LiveNodes
            | Pending::DeadRooms { .. } => {}
        }
    }

    /// The watcher of link `index` names `addr` the master: a link
    /// connected elsewhere leaves at once, and the next attempt is now.
    pub(super) fn on_master(&mut self, index: usize, addr: SocketAddr) {
        let Some(link) = self.links.get_mut(index) else {
            return;
        };
        let Some(watch) = link.watch.as_mut() else {
            return;
        };
        if watch.master.replace(addr).is_some() {
            self.metrics.master_changes.inc();
        }
        log_info!(
            "redis bridge: {}: Sentinel names the master {addr}",
            link.url
        );
        if link.stream.is_some() && link.addr != Some(addr) {
            self.drop_link(index);
        }
        self.links[index].retry_at = Instant::now();
    }

    /// The server of link `index` is not the master (any more).
    fn not_master(&mut self, index: usize, what: &str) -> io::Error {
        let link = &self.links[index];
        if let Some(watch) = &link.watch {
            watch.look_again();
        }
        let addr = link.addr.map_or_else(String::new, |a| format!(" ({a})"));
        io::Error::other(format!("the server{addr} is not the master: {what}"))
    }

    pub(super) fn next_retry(&self) -> Option<Duration> {
        let now = Instant::now();
        self.links
            .iter()
            .filter(|l| l.stream.is_none() && !l.retired && l.knows_address())
            .map(|l| l.retry_at.saturating_duration_since(now))
            .min()
    }

    pub(super) fn report_link(&mut self) {
        let up = self.links.iter().filter(|l| !l.retired).all(Link::is_up);
        // A node that has not tried yet is not down: nothing is said (and
        // `/healthz` keeps its 503) until every first attempt ended.
        let waited_out = self.started.elapsed() >= self.config.cluster.timeout;
        let trying = |l: &Link<S::Answer>| l.first_try() && (l.knows_address() || !waited_out);
        if self.up.is_none() && !up && self.links.iter().any(trying) {
            return;
        }
        if self.up != Some(up) {
            self.up = Some(up);
            self.metrics.up.set(u64::from(up));
            self.sink.link(up);
        }
    }

    pub(super) fn on_readable(&mut self, index: usize) {
        if index >= self.links.len() {
            return;
        }
        if let Err(e) = self.read(index) {
            log_warn!("redis bridge: {}: {e}", self.links[index].url);
            self.drop_link(index);
        }
    }

    pub(super) fn read(&mut self, index: usize) -> io::Result<()> {
        let link = &mut self.links[index];
        let Some(stream) = link.stream.as_mut() else {
            return Ok(());
        };
        link.connected = true;
        self.read_buf.clear();
        // What came before a close is still handled: replies answered,
        // events delivered.
        let closed = stream.read_available(&mut self.read_buf);
        let incoming = link
            .pipeline
            .on_input(&self.read_buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        // Past a reply that fails the link, the replies read with it are
        // answered as the link's in-flight requests are.
        let mut failed = Ok(());
        for item in incoming {
            match item {
                Incoming::Push(items) => self.on_push(&items),
                Incoming::Reply(pending, _) if failed.is_err() => self.answer_unavailable(pending),
                Incoming::Reply(pending, reply) => failed = self.on_reply(index, pending, reply),
                Incoming::Redirect { token, .. } if failed.is_err() => {
                    self.answer_unavailable(token);
                }
                Incoming::Redirect {
                    token,
                    error,
                    command,
                    redirects,
                } => self.redirected(token, &error, command, redirects),
            }
        }
        failed.and(closed)
    }

    /// A call of `n` publishes to `room` is answered (or never will be):
    /// the room's next batch may go, and the bound no longer counts them.
    fn publish_answered(&mut self, room: &str, n: usize) {
        self.batched = self.batched.saturating_sub(n - 1);
        self.batches.answered(room);
    }

    /// The outcomes of a batch of publishes of link `index`, each answered
    /// now or, with replicas to wait for, once its `WAIT` is.
    fn sequenced(
        &mut self,
        index: usize,
        outcomes: impl Iterator<Item = (S::Answer, Result<Sequenced, Unavailable>)>,
    ) {
        for (answer, outcome) in outcomes {
            let now = self.links[index].replication.sequenced(answer, outcome);
            if let Some((answer, outcome)) = now {
                self.sink.sequenced(answer, outcome);
            }
        }
    }

    pub(super) fn on_reply(
        &mut self,
        index: usize,
        pending: Pending<S::Answer>,
        reply: Reply,
    ) -> io::Result<()> {
        let readonly = sentinel::is_readonly(&reply);
        let library_missing = redis::is_library_missing(&reply);
        self.answer(index, pending, reply)?;
        if readonly {
            return Err(self.not_master(index, "it answered READONLY"));
        }
        if library_missing {
            return Err(io::Error::other(
                "the server lost roomcast's functions; setting the link up again",
            ));
        }
        Ok(())
    }

    fn answer(
        &mut self,
        index: usize,
        pending: Pending<S::Answer>,
        reply: Reply,
    ) -> io::Result<()> {
        match pending {
            Pending::Role => match sentinel::role(&reply) {
                Role::Master => self.on_setup_reply(index),
                Role::Replica => return Err(self.not_master(index, "ROLE says replica")),
                Role::Other => return Err(self.not_master(index, "ROLE says neither")),
            },
            Pending::Setup => {
                if let Reply::Error(e) = reply {
                    return Err(io::Error::other(format!("setup refused: {e}")));
                }
                self.on_setup_reply(index);
            }
            Pending::Publish {
                room,
                answers,
                sent,
            } => {
                self.metrics.command_latency.observe(sent.elapsed());
                let n = answers.len();
                self.publish_answered(&room, n);
                let outcomes: Vec<_> = match redis::sequenced_run(&reply, n) {
                    Some(run) => run.into_iter().map(Ok).collect(),
                    None => {
                        log_warn!("redis bridge: publish refused: {reply:?}");
                        std::iter::repeat_n(Err(Unavailable), n).collect()
                    }
                };
                self.sequenced(index, answers.into_iter().zip(outcomes));
            }
            Pending::Replicated { covers } => self.on_replicated(index, covers, &reply),
            Pending::Join { answer, room, sent } => {
                self.metrics.command_latency.observe(sent.elapsed());
                let outcome = redis::join_reply(&reply).ok_or(Unavailable);
                match &outcome {
                    Ok((history, _)) => {
                        self.subscriptions
                            .observe(&room, &history.epoch, history.seq);
                    }
                    Err(_) => log_warn!("redis bridge: join refused: {reply:?}"),
                }
                self.sink.joined(answer, outcome);
            }
            Pending::RoomUsers { gather, index } => {
                let count = redis::count_reply(&reply);
                self.counted_users(gather, index, count);
            }
            Pending::RoomRead { answer, remove } => {
                let outcome = if remove {
                    redis::count_reply(&reply).map(|_| None).ok_or(Unavailable)
                } else {
                    redis::history_reply(&reply).map(Some).ok_or(Unavailable)
                };
                if outcome.is_err() {
                    log_warn!("redis bridge: history read refused: {reply:?}");
                }
                self.sink.room_read(answer, outcome);
            }
            Pending::Presence { answer } => {
                let outcome = redis::presence_reply(&reply).ok_or(Unavailable);
                if outcome.is_err() {
                    log_warn!("redis bridge: presence refused: {reply:?}");
                }
                self.sink.presence(answer, outcome);
            }
            Pending::Sent { answer } => {
                let outcome = redis::count_reply(&reply).ok_or(Unavailable);
                if outcome.is_err() {
                    log_warn!("redis bridge: send refused: {reply:?}");
                }
                self.sink.sent(answer, outcome);
            }
            Pending::Ignored => {
                if let Reply::Error(e) = reply {
                    log_warn!("redis bridge: a command was refused: {e}");
                }
            }
            Pending::DeadNodes => self.on_dead_nodes(index, &reply),
            Pending::LiveNodes => self.on_live_nodes(&reply),
            Pending::DeadRooms { node } => self.on_dead_rooms(index, &node, &reply),
            Pending::Recover { room } => self.on_recovered(&room, &reply),
            Pending::Topology => self.on_topology(Some((index, &reply))),
            Pending::Subscribed { room, subscribe } => self.on_subscribed(room, subscribe, &reply),
            Pending::WebhookCursor { index } => self.on_webhook_cursor(index, Some(&reply)),
            Pending::WebhookRead { index } => self.on_webhook_read(index, Some(&reply)),
        }
        Ok(())
    }

    fn on_setup_reply(&mut self, index: usize) {
        let link = &mut self.links[index];
        link.setup_left = link.setup_left.saturating_sub(1);
        if link.setup_left == 0 {
            self.on_setup_answered(index);
        }
    }

    /// The last setup reply is in (the library is loaded): the link takes
    /// requests.
    pub(super) fn on_setup_answered(&mut self, index: usize) {
        let link = &mut self.links[index];
        if link.ready {
            return;
        }
        link.ready = true;
        link.backoff.reset();
        link.liveness.ready(Instant::now());
        if link.was_up {
            self.metrics.reconnects.inc();
            log_info!("redis bridge: {} is back", link.url);
        }
        link.was_up = true;
        self.next_heartbeat = Instant::now();
        self.next_live_read = Instant::now();
        self.sink.resync();
    }

    /// Writes what a link has queued (and a `WAIT` for its publishes,
    /// with `--redis-replicas`).
    pub(super) fn flush(&mut self, index: usize) {
        self.cover_publishes(index);
        let link = &mut self.links[index];
        let Some(stream) = link.stream.as_mut().filter(|_| link.connected) else {
            return;
        };
        match stream.write_available(link.pipeline.output()) {
            Ok(n) => link.pipeline.written(n),
            Err(e) => {
                log_warn!("redis bridge: {}: {e}", link.url);
                self.drop_link(index);
            }
        }
    }
}

/// `HELLO 3` (with AUTH when the URL has a password, and the node's client
/// name) and SELECT.
fn setup_commands(url: &RedisUrl, node_id: &str) -> Vec<Vec<String>> {
    let mut hello = vec!["HELLO".to_string(), "3".into()];
    if let Some(password) = &url.password {
        let user = url.user.clone().unwrap_or_else(|| "default".into());
        hello.extend(["AUTH".into(), user, password.clone()]);
    }
    hello.extend(["SETNAME".into(), format!("roomcast-{node_id}")]);
    let mut commands = vec![hello];
    if url.db != 0 {
        commands.push(vec!["SELECT".into(), url.db.to_string()]);
    }
    commands
}

fn resolve(url: &RedisUrl) -> io::Result<SocketAddr> {
    (url.host.as_str(), url.port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the Redis host"))
}

/// Randomness for the backoff's jitter: std's randomly keyed hasher (fresh
/// keys per `RandomState`) over the time, so nodes do not retry in step.
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_database_become_setup_commands() {
        let url: RedisUrl = "redis://app:pw@h/2".parse().unwrap();
        let name = ["SETNAME", "roomcast-n1"];
        let hello = |auth: &[&'static str]| {
            let mut all = vec!["HELLO", "3"];
            all.extend_from_slice(auth);
            all.extend_from_slice(&name);
            all
        };
        assert_eq!(
            setup_commands(&url, "n1"),
            [hello(&["AUTH", "app", "pw"]), vec!["SELECT", "2"]]
        );
        let url: RedisUrl = "redis://:pw@h".parse().unwrap();
        assert_eq!(
            setup_commands(&url, "n1"),
            [hello(&["AUTH", "default", "pw"])]
        );
        assert_eq!(
            setup_commands(&"redis://h".parse().unwrap(), "n1"),
            [hello(&[])]
        );
    }
}
