//! The Sentinel watcher of a `redis+sentinel://` server: one small thread
//! per such server that finds the master and tells the bridge where it is.
//!
//! It does blocking I/O with short timeouts, so the bridge's loop never
//! waits on a Sentinel. It asks the Sentinels in turn (the first that
//! answers) for the master's address, keeps one Sentinel connection
//! subscribed to `+switch-master` so that a failover is heard as soon as
//! Sentinel switches, and asks again every `RECHECK` in case a message was
//! missed, or at once when the bridge found the master demoted (`look`).
//! Each address that differs from the last one sent goes to the bridge
//! over a channel, with a wake of its loop. Sentinels are asked without
//! `AUTH`. The thread ends when the bridge drops its `Watch`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::Waker;

use crate::redis::resp::{self, Reply};
use crate::redis::sentinel::{self, MasterAddr, SentinelError};
use crate::redis::url::Sentinels;
use crate::{log_info, log_warn};

/// Bound on connecting to a Sentinel and on each of its replies.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the master is asked for even without a `+switch-master`.
const RECHECK: Duration = Duration::from_secs(1);
/// How long the subscribed connection is read before the watcher looks at
/// the bridge's requests and its own clock again.
const TICK: Duration = Duration::from_millis(100);
/// The most a Sentinel may send before a reply or message is complete.
const MAX_INPUT: usize = 64 * 1024;

/// The bridge's end of a watcher: where its link's master is.
pub(super) struct Watch {
    /// The master the watcher named last (`None` until it found one).
    pub master: Option<SocketAddr>,
    look: Sender<()>,
}

impl Watch {
    /// Starts the watcher of link `index`; what it finds comes on `named`,
    /// with a wake of `waker`.
    pub fn start(
        index: usize,
        sentinels: Sentinels,
        named: Sender<(usize, SocketAddr)>,
        waker: Arc<Waker>,
    ) -> io::Result<Watch> {
        let (look, looks) = crossbeam_channel::unbounded();
        let watcher = Watcher {
            index,
            sentinels,
            named,
            waker,
            looks,
            next: 0,
            subscribed: None,
            last: None,
            failing: false,
            unresolved: None,
        };
        std::thread::Builder::new()
            .name(format!("redis-sentinel-{index}"))
            .spawn(move || watcher.run())?;
        Ok(Watch { master: None, look })
    }

    /// Asks the watcher to ask the Sentinels again at once: the master
    /// named last turned out not to be one.
    pub fn look_again(&self) {
        let _ = self.look.send(());
    }
}

struct Watcher {
    index: usize,
    sentinels: Sentinels,
    named: Sender<(usize, SocketAddr)>,
    waker: Arc<Waker>,
    looks: Receiver<()>,
    /// The Sentinel asked first: the one that answered last.
    next: usize,
    /// A Sentinel connection subscribed to `+switch-master`.
    subscribed: Option<Conn>,
    /// The address last sent to the bridge.
    last: Option<SocketAddr>,
    /// No Sentinel answered the last time: said once, not every second.
    failing: bool,
    /// A master named that does not resolve: said once too.
    unresolved: Option<MasterAddr>,
}

impl Watcher {
    fn run(mut self) {
        let mut next_check = Instant::now();
        let mut doubted = false;
        loop {
            if Instant::now() >= next_check {
                if !self.check(doubted) {
                    return;
                }
                doubted = false;
                if self.subscribed.is_none() {
                    self.subscribed = self.subscribe();
                }
                next_check = Instant::now() + RECHECK;
            }
            let switched = match &mut self.subscribed {
                Some(conn) => match conn.next_reply(TICK) {
                    Ok(reply) => reply.and_then(|r| sentinel::switched(&r, &self.sentinels.master)),
                    Err(e) => {
                        log_warn!("redis sentinel: {}: {e}", conn.addr);
                        self.subscribed = None;
                        None
                    }
                },
                None => None,
            };
            if let Some(master) = switched {
                log_info!(
                    "redis sentinel: {} switched to {master}",
                    self.sentinels.master
                );
                if !self.name(&master) {
                    return;
                }
            }
            // Without a subscription, this is the wait between rounds.
            let wait = if self.subscribed.is_some() {
                Duration::ZERO
            } else {
                TICK
            };
            match self.looks.recv_timeout(wait) {
                Ok(()) => {
                    while self.looks.try_recv().is_ok() {}
                    next_check = Instant::now();
                    doubted = true;
                }
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Asks the Sentinels in turn for the master; false once the bridge
    /// has gone. When the bridge `doubted` the master named last (it was
    /// not one), another Sentinel's different answer is preferred: the
    /// first to answer may be one that missed the failover.
    fn check(&mut self, doubted: bool) -> bool {
        let count = self.sentinels.addrs.len();
        let mut errors = Vec::new();
        let mut same = None;
        for step in 0..count {
            let which = (self.next + step) % count;
            match self.ask(which) {
                Ok(master) => {
                    if self.failing {
                        log_info!("redis sentinel: {} answers again", self.sentinel(which));
                        self.failing = false;
                    }
                    if doubted && resolve(&master) == self.last {
                        same.get_or_insert(master);
                        continue;
                    }
                    self.next = which;
                    return self.name(&master);
                }
                Err(e) => errors.push(format!("{}: {e}", self.sentinel(which))),
            }
        }
        if let Some(master) = same {
            return self.name(&master);
        }
        if !self.failing {
            log_warn!(
                "redis sentinel: no Sentinel names the master {}: {}",
                self.sentinels.master,
                errors.join("; ")
            );
            self.failing = true;
        }
        true
    }

    fn ask(&self, which: usize) -> Result<MasterAddr, AskError> {
        let mut conn = Conn::open(&self.sentinels.addrs[which])?;
        let mut command = Vec::new();
        sentinel::ask_master(&mut command, &self.sentinels.master);
        conn.send(&command)?;
        let reply = conn
            .next_reply(IO_TIMEOUT)?
            .ok_or(AskError::Io(io::ErrorKind::TimedOut.into()))?;
        Ok(sentinel::master_reply(&reply)?)
    }

    /// A connection subscribed to `+switch-master` on the first Sentinel
    /// that takes it.
    fn subscribe(&mut self) -> Option<Conn> {
        let count = self.sentinels.addrs.len();
        for step in 0..count {
            let which = (self.next + step) % count;
            let mut command = Vec::new();
            sentinel::subscribe(&mut command);
            let subscribed = Conn::open(&self.sentinels.addrs[which])
                .and_then(|mut conn| conn.send(&command).map(|()| conn));
            if let Ok(conn) = subscribed {
                return Some(conn);
            }
        }
        None
    }

    /// Tells the bridge about `master` if it is new; false once the bridge
    /// has gone.
    fn name(&mut self, master: &MasterAddr) -> bool {
        let Some(addr) = resolve(master) else {
            if self.unresolved.as_ref() != Some(master) {
                log_warn!("redis sentinel: the master {master} has no address");
                self.unresolved = Some(master.clone());
            }
            return true;
        };
        self.unresolved = None;
        if self.last == Some(addr) {
            return true;
        }
        self.last = Some(addr);
        if self.named.send((self.index, addr)).is_err() {
            return false;
        }
        let _ = self.waker.wake();
        true
    }

    fn sentinel(&self, which: usize) -> String {
        let (host, port) = &self.sentinels.addrs[which];
        format!("Sentinel {host}:{port}")
    }
}

fn resolve(master: &MasterAddr) -> Option<SocketAddr> {
    (master.host.as_str(), master.port)
        .to_socket_addrs()
        .ok()?
        .next()
}

/// Why one Sentinel gave no master.
#[derive(Debug)]
enum AskError {
    Io(io::Error),
    Sentinel(SentinelError),
}

impl From<io::Error> for AskError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<SentinelError> for AskError {
    fn from(e: SentinelError) -> Self {
        Self::Sentinel(e)
    }
}

impl std::fmt::Display for AskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Sentinel(e) => write!(f, "{e}"),
        }
    }
}

/// A blocking connection to one Sentinel.
struct Conn {
    addr: SocketAddr,
    stream: TcpStream,
    input: Vec<u8>,
}

impl Conn {
    fn open((host, port): &(String, u16)) -> io::Result<Conn> {
        let addr = (host.as_str(), *port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            addr,
            stream,
            input: Vec::new(),
        })
    }

    fn send(&mut self, command: &[u8]) -> io::Result<()> {
        self.stream.write_all(command)
    }

    /// The next reply or message, `None` if none came within `wait`.
    fn next_reply(&mut self, wait: Duration) -> io::Result<Option<Reply>> {
        let deadline = Instant::now() + wait;
        loop {
            let parsed = resp::parse(&self.input)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some((reply, used)) = parsed {
                self.input.drain(..used);
                return Ok(Some(reply));
            }
            if self.input.len() > MAX_INPUT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a reply past 64 KiB",
                ));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
