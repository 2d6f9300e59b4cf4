//! The load of the drills that kill things: nodes with a long history,
//! subscribers spread over them that reconnect and recover
//! (`tracker::subscriber`), a publisher sending to each node in turn
//! (`tracker::publisher`), and the check, once it stops, that every
//! acknowledged message reached every subscriber once and in order, with
//! no reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{SECRET, Server, http_get, metric, wait_until};
use crate::harness::{Drill, ms};
use crate::tracker::{self, Seen};

/// A node on `redis` (keeping a history long enough for every outage) on
/// `port` (0: any), with `extra` flags.
pub fn node(redis: &str, port: u16, extra: &[&str]) -> Server {
    let mut command = Server::command();
    command.args([
        "serve",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--jwt-secret",
        SECRET,
    ]);
    command.args([
        "--redis",
        redis,
        "--history",
        "10000",
        "--log-level",
        "debug",
    ]);
    command.args(extra);
    let server = Server::spawn(command);
    wait_until(Duration::from_secs(15), "the node reaches Redis", || {
        http_get(server.addr(), "/healthz").status == 200
    });
    server
}

/// Starts `count` subscribers spread over `addrs`; waits until they are in.
pub fn subscribers(
    addrs: &[SocketAddr],
    count: usize,
    stop: &Arc<AtomicBool>,
    target: &Arc<std::sync::atomic::AtomicU64>,
) -> Vec<thread::JoinHandle<Seen>> {
    let handles = (0..count)
        .map(|i| {
            let name = format!("sub-{i}");
            tracker::subscriber(addrs.to_vec(), i, name, stop.clone(), target.clone())
        })
        .collect();
    wait_until(
        Duration::from_secs(20),
        "every subscriber connected",
        || {
            addrs
                .iter()
                .map(|a| metric(*a, "roomcast_connections"))
                .sum::<f64>()
                >= count as f64
        },
    );
    // Their joins are answered right after.
    thread::sleep(Duration::from_millis(300));
    handles
}

/// Subscribers spread over the nodes and a publisher sending to each node
/// in turn, running until `finish`.
pub struct Load {
    subscribers: Vec<thread::JoinHandle<Seen>>,
    publisher: thread::JoinHandle<tracker::Published>,
    /// Tells the subscribers to stop once they have seen `target`.
    stop: Arc<AtomicBool>,
    target: Arc<std::sync::atomic::AtomicU64>,
    /// Tells the publisher to stop.
    publishing: Arc<AtomicBool>,
}

impl Load {
    /// `count` subscribers (in before this returns) and a publisher that
    /// pauses `pause` between messages.
    pub fn start(addrs: &[SocketAddr], count: usize, pause: Duration) -> Load {
        let (stop, target) = (Arc::default(), tracker::target());
        let subscribers = subscribers(addrs, count, &stop, &target);
        let publishing = Arc::new(AtomicBool::new(false));
        let publisher = tracker::publisher(addrs.to_vec(), pause, publishing.clone());
        Load {
            subscribers,
            publisher,
            stop,
            target,
            publishing,
        }
    }

    /// Stops the publisher and the subscribers; checks and reports what
    /// each saw.
    pub fn finish(self, drill: &Drill) {
        let Load {
            subscribers,
            publisher,
            stop,
            target,
            publishing,
        } = self;
        publishing.store(true, Ordering::Relaxed);
        let tracker::Published {
            acked,
            failed,
            longest_gap,
        } = publisher.join().unwrap();
        tracker::set_target(&target, &acked);
        let waiting = Instant::now();
        stop.store(true, Ordering::Relaxed);
        let seen = tracker::join_all(subscribers);
        drill.figure(
            "publishes acknowledged, refused or failed",
            format!("{}, {failed}", acked.len()),
        );
        drill.figure(
            "longest time without an acknowledged publish",
            ms(longest_gap),
        );
        drill.figure(
            "subscribers caught up after the last publish in",
            ms(waiting.elapsed()),
        );
        let reconnects: u32 = seen.iter().map(|s| s.reconnects).sum();
        let longest = seen
            .iter()
            .map(|s| s.longest_outage)
            .max()
            .unwrap_or_default();
        drill.figure(
            "reconnects, longest time without a room",
            format!("{reconnects}, {}", ms(longest)),
        );
        assert!(
            acked.len() > 10,
            "the publisher got through: {}",
            acked.len()
        );
        for (i, subscriber) in seen.iter().enumerate() {
            let from = subscriber.seqs.first().copied().unwrap_or(u64::MAX);
            let (missed, in_order) = tracker::check(subscriber, &acked, from);
            assert!(
                missed.is_empty(),
                "subscriber {i} missed acknowledged {missed:?}"
            );
            assert!(
                in_order,
                "subscriber {i} saw a gap or a repeat: {:?}",
                subscriber.seqs
            );
            assert_eq!(subscriber.resets, 0, "subscriber {i} had to reset");
        }
    }
}
