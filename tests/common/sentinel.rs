//! A Redis Sentinel setup on loopback: a master, its replicas and three
//! Sentinels (`redis-server <conf> --sentinel`, quorum 2, the master down
//! after 1 s without answers), all on free ports, each Sentinel with its
//! configuration file in a directory of its own; every process is stopped
//! by its PID, and every directory removed, when its guard drops. And a
//! fake Sentinel that answers what a test tells it to.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use roomcast::redis::resp::{self, Reply};

use super::redis::{RedisConn, RedisServer, free_port};
use super::wait_until;

/// The name the Sentinels know the master by.
pub const MASTER_NAME: &str = "roomcast";

pub struct SentinelSetup {
    /// `None` once killed (`kill_master`).
    pub master: Option<RedisServer>,
    pub replicas: Vec<RedisServer>,
    pub sentinels: Vec<SocketAddr>,
    processes: Vec<Sentinel>,
}

/// One Sentinel process.
pub struct Sentinel {
    child: Child,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl SentinelSetup {
    /// Starts the master, `replicas` replicas of it, then the Sentinels,
    /// and waits until every Sentinel knows the replicas and the two other
    /// Sentinels (what a failover needs).
    pub fn start(replicas: usize) -> SentinelSetup {
        let master = RedisServer::start();
        let replicas: Vec<RedisServer> = (0..replicas)
            .map(|_| RedisServer::start_replica_of(&master))
            .collect();
        let processes: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(master.addr.port(), 2))
            .collect();
        let setup = SentinelSetup {
            master: Some(master),
            replicas,
            sentinels: processes.iter().map(|s| s.addr).collect(),
            processes,
        };
        for &sentinel in &setup.sentinels {
            let mut conn = RedisConn::connect(sentinel);
            wait_until(
                Duration::from_secs(20),
                "the Sentinels know each other",
                || {
                    let others = conn.call(&["SENTINEL", "sentinels", MASTER_NAME]);
                    let replicas = conn.call(&["SENTINEL", "replicas", MASTER_NAME]);
                    let count = setup.replicas.len();
                    matches!((others, replicas), (Reply::Array(o), Reply::Array(r)) if o.len() == 2 && r.len() == count)
                },
            );
        }
        setup
    }

    /// `redis+sentinel://` with the three Sentinels and the master's name.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.sentinels.iter().map(|a| a.to_string()).collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// Where the first Sentinel that answers says the master is.
    pub fn master_addr(&self) -> Option<SocketAddr> {
        self.sentinels.iter().find_map(|&s| master_addr_at(s))
    }

    /// Kills the master (SIGKILL).
    pub fn kill_master(&mut self) {
        if let Some(master) = self.master.take() {
            master.stop();
        }
    }

    /// Waits until the Sentinels name a master other than `old`; returns
    /// it and when it was first seen.
    pub fn wait_for_switch(&self, old: SocketAddr, within: Duration) -> (SocketAddr, Instant) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(new) = self.master_addr().filter(|&a| a != old) {
                return (new, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "Sentinel did not switch from {old} within {within:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Sentinel {
    /// Starts one Sentinel on a free port monitoring a master on
    /// `master_port` (which need not be listening) with `quorum`.
    pub fn start(master_port: u16, quorum: u8) -> Sentinel {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("roomcast-sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temp dir for the Sentinel");
        let conf = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} {quorum}\n\
         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
         sentinel failover-timeout {MASTER_NAME} 5000\n",
            dir = dir.display()
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel (apt-get install redis-server) to start");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let sentinel = Sentinel { child, addr, dir };
        wait_until(Duration::from_secs(10), "the Sentinel listens", || {
            TcpStream::connect(addr).is_ok()
        });
        sentinel
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the Sentinel at `sentinel` names the master, if it answers.
pub fn master_addr_at(sentinel: SocketAddr) -> Option<SocketAddr> {
    let stream = TcpStream::connect_timeout(&sentinel, Duration::from_millis(500)).ok()?;
    drop(stream);
    let mut conn = RedisConn::connect(sentinel);
    match conn.call(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME]) {
        Reply::Array(items) => match items.as_slice() {
            [Reply::Bulk(host), Reply::Bulk(port)] => format!(
                "{}:{}",
                String::from_utf8_lossy(host),
                String::from_utf8_lossy(port)
            )
            .parse()
            .ok(),
            _ => None,
        },
        _ => None,
    }
}

/// A Sentinel that is not one: it answers every command but `SUBSCRIBE`
/// with the next of the `answers` set last (raw RESP, in turn), for tests
/// of what a node does with bad or changing answers. `SUBSCRIBE` is
/// confirmed and the connection then left quiet.
pub struct FakeSentinel {
    pub addr: SocketAddr,
    answers: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
}

impl FakeSentinel {
    pub fn start() -> FakeSentinel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the fake Sentinel");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let answers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (answers2, stop2) = (answers.clone(), stop.clone());
        thread::spawn(move || {
            let turn = Arc::new(AtomicUsize::new(0));
            while !stop2.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let (answers, stop, turn) = (answers2.clone(), stop2.clone(), turn.clone());
                thread::spawn(move || serve_fake(stream, &answers, &stop, &turn));
            }
        });
        FakeSentinel {
            addr,
            answers,
            stop,
        }
    }

    /// What the next commands are answered, in turn.
    pub fn answer(&self, answers: &[&[u8]]) {
        *self.answers.lock().unwrap() = answers.iter().map(|a| a.to_vec()).collect();
    }
}

/// `get-master-addr-by-name`'s answer naming `addr`.
pub fn master_answer(addr: SocketAddr) -> Vec<u8> {
    let (host, port) = (addr.ip().to_string(), addr.port().to_string());
    format!(
        "*2\r\n${}\r\n{host}\r\n${}\r\n{port}\r\n",
        host.len(),
        port.len()
    )
    .into_bytes()
}

fn serve_fake(
    mut stream: TcpStream,
    answers: &Mutex<Vec<Vec<u8>>>,
    stop: &AtomicBool,
    turn: &AtomicUsize,
) {
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut input = Vec::new();
    let mut chunk = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => input.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while let Ok(Some((command, used))) = resp::parse(&input) {
            input.drain(..used);
            let subscribe = matches!(&command, Reply::Array(items)
                if matches!(items.first(), Some(Reply::Bulk(verb)) if verb.eq_ignore_ascii_case(b"subscribe")));
            let answer = if subscribe {
                b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n".to_vec()
            } else {
                let answers = answers.lock().unwrap();
                if answers.is_empty() {
                    b"$-1\r\n".to_vec()
                } else {
                    answers[turn.fetch_add(1, Ordering::Relaxed) % answers.len()].clone()
                }
            };
            if stream.write_all(&answer).is_err() {
                return;
            }
        }
    }
}

impl Drop for FakeSentinel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
