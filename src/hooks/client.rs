//! The hooks thread: one per process, with its own mio loop, that POSTs
//! hook requests to their backends and hands each outcome to a sink.
//!
//! Per URL (`origin`): requests wait in arrival order until one of at most
//! `concurrency` connections can take them; a connection carries one
//! request at a time (no pipelining: a slow answer must not hold up the
//! next) and is kept alive after a response that allows it, idle for at
//! most `IDLE_TIMEOUT`. Every request's `deadline` bounds all of it: a
//! request whose deadline passes while it waits is failed without being
//! sent, one that passes while connecting, writing or reading closes its
//! connection (a backend that never answers or drips a byte at a time is
//! cut off there).
//!
//! The queue bound is kept by the senders: `HookHandle::send` counts the
//! URL's waiting requests and refuses past `queue` before anything is
//! queued, so the channel never holds more than `queue` per URL.
//!
//! A connection that cannot be made sent nothing, so its request goes to
//! the host's next address, if it has another, within its deadline
//! (`origin`: `localhost` may be `::1` and `127.0.0.1` with the backend on
//! one). That is the only second attempt: once a byte may have reached
//! the backend, nothing is sent again.
//!
//! Known limit: a host name is resolved on this thread, blocking
//! (`Resolver::system`), when a connection is opened and the last lookup
//! is stale (10 s; 1 s for one that found nothing), so a slow resolver
//! delays this thread's other work, never a shard. Give IP addresses or
//! names in `/etc/hosts` for backends that must not wait on DNS.

mod config;
mod conn;
mod handle;
mod origin;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use mio::{Events, Poll, Token, Waker};
use parking_lot::RwLock;
use slab::Slab;

use super::HookError;
use crate::log_warn;
use crate::metrics::HookMetrics;
pub use config::{ClientConfig, Resolver, SetupError};
use conn::{Conn, Pumped};
use handle::Shared;
pub use handle::{HookHandle, HookRequest, HookResponse, HookSink, Refused};
use origin::{Address, Origin, Waiting};

const WAKER: Token = Token(usize::MAX);
/// How long an idle connection is kept: under the 5 s Node.js keeps one
/// by default (the shortest common default), so that roomcast closes it
/// first. A request written into a connection the backend is closing at
/// that instant fails `Closed` and is not sent again (a POST may not be
/// safe to repeat); a backend with a shorter idle timeout makes that
/// likelier.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// One read's scratch buffer.
const READ_BUF: usize = 16 * 1024;

/// Starts the hooks thread; it writes `metrics` alone (but for the
/// senders' `overloaded` count).
pub fn start<S: HookSink>(
    config: ClientConfig,
    sink: S,
    metrics: Arc<HookMetrics>,
) -> io::Result<(HookHandle<S::Answer>, JoinHandle<()>)> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        waiting: config.urls.iter().map(|_| AtomicUsize::new(0)).collect(),
        queue: config.queue,
        open: RwLock::new(true),
    });
    let mut client = Client {
        poll,
        requests: rx,
        shared: shared.clone(),
        sink,
        origins: config.urls.iter().cloned().map(Origin::new).collect(),
        conns: Slab::new(),
        read_buf: vec![0; READ_BUF],
        metrics: metrics.clone(),
        config,
    };
    let thread = std::thread::Builder::new()
        .name("hooks".into())
        .spawn(move || client.run())?;
    let handle = HookHandle {
        requests: tx,
        waker,
        shared,
        metrics,
    };
    Ok((handle, thread))
}

/// A request on a connection.
struct Job<A> {
    answer: A,
    deadline: Instant,
    taken: Instant,
    /// Addresses that refused the connection for it.
    refused: usize,
}

/// A connection, the URL it is for, and the request it carries if any.
struct Entry<A> {
    conn: Conn,
    url: usize,
    job: Option<Job<A>>,
}

struct Client<S: HookSink> {
    poll: Poll,
    requests: Receiver<HookRequest<S::Answer>>,
    shared: Arc<Shared>,
    sink: S,
    config: ClientConfig,
    origins: Vec<Origin<S::Answer>>,
    /// Every connection, keyed by its mio token.
    conns: Slab<Entry<S::Answer>>,
    read_buf: Vec<u8>,
    metrics: Arc<HookMetrics>,
}

impl<S: HookSink> Client<S> {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .next_timer()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout)
                && e.kind() != io::ErrorKind::Interrupted
            {
                log_warn!("hooks: poll failed: {e}");
                break;
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.on_event(event.token().0);
                }
            }
            if !self.take_requests() {
                break;
            }
            let now = Instant::now();
            self.expire(now);
            self.dispatch(now);
            self.report();
        }
        self.stop_all();
    }

    /// Queues every request sent; false once stopped.
    fn take_requests(&mut self) -> bool {
        if !self.shared.is_open() {
            return false;
        }
        let taken = Instant::now();
        loop {
            match self.requests.try_recv() {
                Ok(request) => {
                    self.metrics.requests.inc();
                    self.origins[request.url_index].push(Waiting {
                        answer: request.answer,
                        body: request.body,
                        deadline: request.deadline,
                        taken,
                    });
                }
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
    }

    /// The next instant something is due: a deadline, or an idle
    /// connection's timeout.
    fn next_timer(&self) -> Option<Instant> {
        let waiting = self.origins.iter().filter_map(Origin::earliest);
        let conns = self.conns.iter().map(|(_, e)| match &e.job {
            Some(job) => job.deadline,
            None => e.conn.idle_since + IDLE_TIMEOUT,
        });
        waiting.chain(conns).min()
    }

    /// Fails what is past its deadline and closes connections idle too long.
    fn expire(&mut self, now: Instant) {
        for url in 0..self.origins.len() {
            for late in self.origins[url].expire(now) {
                self.leave_queue(url);
                self.fail(late.answer, HookError::Timeout);
            }
        }
        let due: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, e)| match &e.job {
                Some(job) => job.deadline <= now,
                None => e.conn.idle_since + IDLE_TIMEOUT <= now,
            })
            .map(|(key, _)| key)
            .collect();
        for key in due {
            self.close(key, HookError::Timeout);
        }
    }

    /// Puts waiting requests on connections while the caps allow.
    fn dispatch(&mut self, now: Instant) {
        for url in 0..self.origins.len() {
            while let Some(next) = self.origins[url].next(self.config.concurrency) {
                self.leave_queue(url);
                if next.deadline <= now {
                    self.fail(next.answer, HookError::Timeout);
                    continue;
                }
                match self.connection(url, now) {
                    Ok(key) => self.send_on(key, next),
                    Err(e) => self.fail(next.answer, e),
                }
            }
        }
    }

    /// A request left the URL's queue: one more may be sent.
    fn leave_queue(&self, url: usize) {
        self.shared.waiting[url].fetch_sub(1, Ordering::AcqRel);
    }

    /// An idle connection of `url`, or a new one.
    fn connection(&mut self, url: usize, now: Instant) -> Result<usize, HookError> {
        if let Some(key) = self.origins[url].idle.pop() {
            return Ok(key);
        }
        let addr = self.resolve(url, now)?;
        let origin = &self.origins[url];
        let mut conn = Conn::open(addr, &origin.url, self.config.tls.as_ref())?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        conn.register(self.poll.registry(), Token(key))
            .map_err(|_| HookError::Connect)?;
        self.metrics.connects.inc();
        entry.insert(Entry {
            conn,
            url,
            job: None,
        });
        Ok(key)
    }

    /// Where a new connection of `url` goes: a lookup (blocking) when the
    /// last is stale.
    fn resolve(&mut self, url: usize, now: Instant) -> Result<SocketAddr, HookError> {
        let origin = &mut self.origins[url];
        if origin.address(now) == Address::Lookup {
            let addrs = self
                .config
                .resolver
                .resolve(&origin.url.host, origin.url.port);
            origin.resolved(addrs, now);
        }
        match origin.address(now) {
            Address::Use(addr) => Ok(addr),
            Address::Unresolved | Address::Lookup => Err(HookError::Connect),
        }
    }

    /// Writes the request on connection `key` (signed now) and starts it.
    fn send_on(&mut self, key: usize, waiting: Waiting<S::Answer>) {
        let url = &self.origins[self.conns[key].url].url;
        let timestamp = crate::sys::unix_ms();
        let signature = self.config.signer.sign(timestamp, &waiting.body);
        let mut request = Vec::new();
        super::http::write_request(&mut request, url, &waiting.body, timestamp, &signature);
        let job = Job {
            answer: waiting.answer,
            deadline: waiting.deadline,
            taken: waiting.taken,
            refused: 0,
        };
        self.start_on(key, job, request);
    }

    /// Starts `job`, whose bytes are `request`, on connection `key`.
    fn start_on(&mut self, key: usize, job: Job<S::Answer>, request: Vec<u8>) {
        let entry = &mut self.conns[key];
        entry.conn.start(request, self.config.max_response_body);
        entry.job = Some(job);
        self.origins[entry.url].busy += 1;
        // Edge-triggered: a kept-alive connection will not say it is
        // writable again, so the request is written now.
        self.on_event(key);
    }

    fn on_event(&mut self, key: usize) {
        let Some(entry) = self.conns.get_mut(key) else {
            return;
        };
        match entry.conn.pump(&mut self.read_buf) {
            Ok(Pumped::Waiting) => {}
            Ok(Pumped::Answered { response, reusable }) => {
                let job = entry.job.take();
                let url = entry.url;
                if let Some(job) = job {
                    self.origins[url].busy -= 1;
                    self.metrics.latency.observe(job.taken.elapsed());
                    self.metrics.responses.inc();
                    if !(200..300).contains(&response.status) {
                        self.metrics.non_2xx.inc();
                    }
                    let response = super::HookResponse {
                        status: response.status,
                        body: response.body,
                    };
                    self.sink.answered(job.answer, Ok(response));
                }
                if reusable {
                    self.origins[url].idle.push(key);
                } else {
                    self.close(key, HookError::Closed);
                }
            }
            Err(e) => self.close(key, e),
        }
    }

    /// Closes connection `key`; its request, if any, fails with `error`.
    fn close(&mut self, key: usize, error: HookError) {
        let Some(mut entry) = self.conns.try_remove(key) else {
            return;
        };
        entry.conn.deregister(self.poll.registry());
        let origin = &mut self.origins[entry.url];
        origin.idle.retain(|&k| k != key);
        let Some(mut job) = entry.job else {
            return;
        };
        origin.busy -= 1;
        if error != HookError::Connect {
            return self.fail(job.answer, error);
        }
        // Nothing was sent: the next address may take it, within its time.
        job.refused += 1;
        let addresses = origin.skip_address();
        if job.refused >= addresses || job.deadline <= Instant::now() {
            return self.fail(job.answer, error);
        }
        match self.connection(entry.url, Instant::now()) {
            Ok(next) => self.start_on(next, job, entry.conn.take_request()),
            Err(e) => self.fail(job.answer, e),
        }
    }

    fn fail(&self, answer: S::Answer, error: HookError) {
        self.metrics.failures[error.index()].inc();
        self.sink.answered(answer, Err(error));
    }

    fn report(&self) {
        let waiting: usize = self.origins.iter().map(Origin::waiting).sum();
        let busy: usize = self.origins.iter().map(|o| o.busy).sum();
        self.metrics.queued.set(waiting as u64);
        self.metrics.in_flight.set(busy as u64);
        self.metrics.connections.set(self.conns.len() as u64);
    }

    /// Answers everything left `Stopped`, and refuses what comes after.
    fn stop_all(&mut self) {
        self.shared.close();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, HookError::Stopped);
        }
        for url in 0..self.origins.len() {
            let waiting: Vec<_> = self.origins[url].drain().collect();
            for late in waiting {
                self.leave_queue(url);
                self.fail(late.answer, HookError::Stopped);
            }
        }
        // Requests sent before the client closed; none can follow them.
        while let Ok(request) = self.requests.try_recv() {
            self.leave_queue(request.url_index);
            self.fail(request.answer, HookError::Stopped);
        }
        self.report();
    }
}
