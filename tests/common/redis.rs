//! A real `redis-server` on a free loopback port, stopped by its PID when
//! its guard drops, and a blocking RESP client for the tests (built on the
//! server's own codec, `roomcast::redis::resp`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use roomcast::redis::resp::{self, Reply};

use super::pki::Issued;
use super::{Server, http_get, wait_until};

pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
    /// The TLS port's address, for servers started with `start_tls`.
    pub tls_addr: Option<SocketAddr>,
}

impl RedisServer {
    /// Starts `redis-server` with no persistence on a free port; panics
    /// with a hint when it is not installed (scripts/test.sh installs it).
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port())
    }

    /// Starts one on `port` (again, after `stop`, for restart drills).
    pub fn start_on(port: u16) -> RedisServer {
        RedisServer::spawn(port, &["--appendonly", "no"])
    }

    /// Starts one on `port` that keeps its data in `dir` with an
    /// append-only file synced before every reply, so a restart after
    /// SIGKILL loses nothing it acknowledged.
    pub fn start_persistent(port: u16, dir: &std::path::Path) -> RedisServer {
        let dir = dir.to_str().expect("a UTF-8 path");
        RedisServer::spawn(
            port,
            &[
                "--dir",
                dir,
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
        )
    }

    /// Starts one that also speaks TLS, on a port of its own (`tls_url`),
    /// with `cert`; the plain port stays for the tests' own commands.
    pub fn start_tls(cert: &Issued, ca: &Path) -> RedisServer {
        let tls_port = free_port();
        let (cert, key) = (cert.cert.to_str().unwrap(), cert.key.to_str().unwrap());
        let mut server = RedisServer::spawn(
            free_port(),
            &[
                "--appendonly",
                "no",
                "--tls-port",
                &tls_port.to_string(),
                "--tls-cert-file",
                cert,
                "--tls-key-file",
                key,
                "--tls-ca-cert-file",
                ca.to_str().unwrap(),
                "--tls-auth-clients",
                "no",
            ],
        );
        server.tls_addr = Some(format!("127.0.0.1:{tls_port}").parse().unwrap());
        server
    }

    /// Starts a replica of `master` (no persistence) on a free port, once
    /// it is in sync: its link to the master is up and the master counts
    /// it. For replicated setups (`--redis-replicas`, Sentinel).
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        let (host, port) = (master.addr.ip().to_string(), master.addr.port().to_string());
        let replica = RedisServer::spawn(
            free_port(),
            &["--appendonly", "no", "--replicaof", &host, &port],
        );
        let before = Instant::now();
        let (mut on_master, mut on_replica) = (master.connect(), replica.connect());
        loop {
            let linked = info_has(&mut on_replica, "master_link_status:up");
            if linked
                && info_has(
                    &mut on_master,
                    &format!("port={},state=online", replica.addr.port()),
                )
            {
                return replica;
            }
            assert!(
                before.elapsed() < Duration::from_secs(10),
                "the replica on {} did not sync with {}",
                replica.addr,
                master.addr
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the server (SIGSTOP): it keeps its connections but answers
    /// nothing, as a hung host would, until `resume`.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill to run");
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    fn spawn(port: u16, persistence: &[&str]) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--protected-mode", "no"])
            // A replica's full sync then goes over the socket, so no test
            // leaves an RDB file in its working directory.
            .args([
                "--repl-diskless-sync",
                "yes",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .args(["--repl-diskless-load", "on-empty-db"])
            .args(persistence)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server) to start");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {addr}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            child,
            addr,
            tls_addr: None,
        }
    }

    /// Kills the server (SIGKILL: what it held is lost).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Freezes the server (SIGSTOP) until the guard is dropped (SIGCONT):
    /// its sockets stay open and it answers nothing, as a Redis stuck in a
    /// long command, swapping or paused by its host does. Even a test that
    /// panics meanwhile thaws it (and `Drop` kills it anyway).
    pub fn freeze(&self) -> Frozen<'_> {
        roomcast::sys::signal(self.child.id(), libc::SIGSTOP).expect("SIGSTOP redis-server");
        Frozen { redis: self }
    }

    /// `rediss://` to the TLS port, by IP address: the certificate must
    /// name `127.0.0.1`.
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://{}",
            self.tls_addr.expect("started with start_tls")
        )
    }

    pub fn connect(&self) -> RedisConn {
        RedisConn::connect(self.addr)
    }
}

/// Whether `INFO replication` holds `needle`.
fn info_has(conn: &mut RedisConn, needle: &str) -> bool {
    match conn.call(&["INFO", "replication"]) {
        Reply::Bulk(info) => String::from_utf8_lossy(&info).contains(needle),
        other => panic!("INFO replication: {other:?}"),
    }
}

/// A `roomcast` node of a cluster on `redis` (each URL one `--redis`,
/// `--history 100` unless `extra` says otherwise), plus `extra`, once it
/// reached Redis.
pub fn node(redis: &[&RedisServer], extra: &[&str]) -> Server {
    let mut args: Vec<String> = Vec::new();
    for server in redis {
        args.extend(["--redis".into(), server.url()]);
    }
    if !extra.contains(&"--history") {
        args.extend(["--history".into(), "100".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&args);
    wait_until(Duration::from_secs(10), "the node reaches Redis", || {
        http_get(server.addr(), "/healthz").status == 200
    });
    server
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server dies of SIGKILL all the same.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A frozen `RedisServer`; dropping it thaws the server.
pub struct Frozen<'a> {
    redis: &'a RedisServer,
}

impl Frozen<'_> {
    /// Lets the server run again (SIGCONT).
    pub fn thaw(self) {}
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = roomcast::sys::signal(self.redis.child.id(), libc::SIGCONT);
    }
}

/// One blocking connection.
pub struct RedisConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RedisConn {
    pub fn connect(addr: SocketAddr) -> RedisConn {
        let stream = TcpStream::connect(addr).expect("connect to redis");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        RedisConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends bytes already encoded (one or more commands).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to redis");
    }

    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        let mut out = Vec::new();
        resp::write_command(&mut out, args);
        self.send_raw(&out);
        self.reply()
    }

    /// The next reply (or pushed pub/sub message).
    pub fn reply(&mut self) -> Reply {
        loop {
            if let Some((reply, used)) = resp::parse(&self.buf).expect("valid RESP") {
                self.buf.drain(..used);
                return reply;
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).expect("a reply from redis");
            assert!(n > 0, "redis closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// A TCP proxy in front of a Redis server, so a test can cut one node's
/// link while the others keep theirs: `cut` closes every proxied
/// connection and refuses new ones until `restore`.
pub struct Proxy {
    pub addr: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    streams: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (open2, stop2, streams2) = (open.clone(), stop.clone(), streams.clone());
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if !open2.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let mut list = streams2.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            open,
            streams,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Relaxed);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.cut();
    }
}

/// A Redis Cluster of real `redis-server`s on free loopback ports, each in
/// a temporary directory of its own (its `nodes.conf`): `masters` masters
/// with `replicas` replicas each, made by `redis-cli --cluster create`,
/// and waited for until every node says `cluster_state:ok`. Every
/// process is killed by its PID when the guard drops.
pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
    masters: usize,
    dir: std::path::PathBuf,
}

/// One node of a `RedisCluster`.
pub struct ClusterNode {
    child: Option<Child>,
    pub addr: SocketAddr,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("roomcast-rcluster-{}-{nanos}", std::process::id()));
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = cluster_port();
            let node_dir = dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).unwrap();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--cluster-node-timeout", "1000"])
                // Otherwise every slot is refused while one has no master.
                .args(["--cluster-require-full-coverage", "no"])
                // A replica may take over however long ago it last heard
                // its master (a test kills one soon after the start).
                .args(["--cluster-replica-validity-factor", "0"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (apt-get install redis-server) to start");
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            nodes.push(ClusterNode {
                child: Some(child),
                addr,
            });
        }
        let cluster = RedisCluster {
            nodes,
            masters,
            dir,
        };
        for node in &cluster.nodes {
            wait_until(Duration::from_secs(10), "a cluster node listens", || {
                TcpStream::connect(node.addr).is_ok()
            });
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(cluster.nodes.iter().map(|n| n.addr.to_string()));
        create.args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"]);
        let status = create
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli to run");
        assert!(status.success(), "redis-cli --cluster create failed");
        for node in &cluster.nodes {
            cluster.wait_state_ok(node.addr);
        }
        for node in &cluster.nodes[masters..] {
            wait_until(Duration::from_secs(20), "a replica in sync", || {
                let info = RedisConn::connect(node.addr).call(&["INFO", "replication"]);
                info.as_bytes()
                    .is_some_and(|b| String::from_utf8_lossy(b).contains("master_link_status:up"))
            });
        }
        cluster
    }

    fn wait_state_ok(&self, addr: SocketAddr) {
        wait_until(Duration::from_secs(20), "cluster_state:ok", || {
            let Ok(stream) = TcpStream::connect(addr) else {
                return false;
            };
            drop(stream);
            let info = RedisConn::connect(addr).call(&["CLUSTER", "INFO"]);
            info.as_bytes()
                .is_some_and(|b| String::from_utf8_lossy(b).contains("cluster_state:ok"))
        });
    }

    /// `redis+cluster://` with every master's address as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes[..self.masters]
            .iter()
            .map(|n| n.addr.to_string())
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// A node still running, to ask.
    pub fn any(&self) -> RedisConn {
        let node = self
            .nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node");
        RedisConn::connect(node.addr)
    }

    /// The address of the master of `slot`, as the running nodes say.
    pub fn master_of(&self, slot: u16) -> SocketAddr {
        let reply = self.any().call(&["CLUSTER", "SLOTS"]);
        let Reply::Array(ranges) = reply else {
            panic!("CLUSTER SLOTS: {reply:?}")
        };
        for range in ranges {
            let Reply::Array(items) = range else { continue };
            let (Some(start), Some(end)) = (items[0].as_i64(), items[1].as_i64()) else {
                continue;
            };
            if (start..=end).contains(&i64::from(slot)) {
                let Reply::Array(master) = &items[2] else {
                    continue;
                };
                let host = String::from_utf8_lossy(master[0].as_bytes().unwrap()).into_owned();
                let port = master[1].as_i64().unwrap();
                return format!("{host}:{port}").parse().unwrap();
            }
        }
        panic!("no master for slot {slot}")
    }

    /// SIGKILLs the node at `addr`.
    pub fn kill(&mut self, addr: SocketAddr) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.addr == addr)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the running nodes name another master than `gone` for
    /// `slot` and say `cluster_state:ok` (a replica was promoted).
    pub fn wait_failover(&self, slot: u16, gone: SocketAddr) -> SocketAddr {
        wait_until(Duration::from_secs(30), "a replica is promoted", || {
            self.master_of(slot) != gone
        });
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            self.wait_state_ok(node.addr);
        }
        self.master_of(slot)
    }
}

/// A free port whose cluster bus port (+ 10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        let bus = port.checked_add(10_000);
        if bus.is_some_and(|bus| TcpListener::bind(("127.0.0.1", bus)).is_ok()) {
            return port;
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisCluster {
    /// Moves `slot` and its keys to the master at `to`, as a reshard does:
    /// IMPORTING/MIGRATING, `MIGRATE` of every key, then `SETSLOT NODE` on
    /// every master.
    pub fn move_slot(&self, slot: u16, to: SocketAddr) {
        let from = self.master_of(slot);
        let id = |addr: SocketAddr| {
            let reply = RedisConn::connect(addr).call(&["CLUSTER", "MYID"]);
            String::from_utf8_lossy(reply.as_bytes().expect("an id")).into_owned()
        };
        let (from_id, to_id) = (id(from), id(to));
        let slot = slot.to_string();
        let mut source = RedisConn::connect(from);
        let mut target = RedisConn::connect(to);
        target.call(&["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        source.call(&["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let Reply::Array(keys) = source.call(&["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
            else {
                panic!("GETKEYSINSLOT")
            };
            if keys.is_empty() {
                break;
            }
            let (host, port) = (to.ip().to_string(), to.port().to_string());
            let mut migrate: Vec<Vec<u8>> = ["MIGRATE", &host, &port, "", "0", "5000", "KEYS"]
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect();
            migrate.extend(keys.iter().map(|k| k.as_bytes().unwrap().to_vec()));
            let reply = source.call(&migrate);
            assert!(!matches!(reply, Reply::Error(_)), "MIGRATE: {reply:?}");
        }
        for node in self.nodes[..self.masters]
            .iter()
            .filter(|n| n.child.is_some())
        {
            RedisConn::connect(node.addr).call(&["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        wait_until(Duration::from_secs(10), "the slot moved", || {
            self.master_of(slot.parse().unwrap()) == to
        });
    }

    /// The masters' addresses.
    pub fn masters(&self) -> Vec<SocketAddr> {
        self.nodes[..self.masters].iter().map(|n| n.addr).collect()
    }
}
