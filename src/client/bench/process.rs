//! Worker processes and the orchestrator.
//!
//! One process may open at most about 19,000 sockets (the open-file limit
//! here cannot be raised), so `roomcast bench` runs its clients in worker
//! processes — copies of itself with `--worker-index` — and aggregates them.
//! Worker protocol on stdout, one line each: `READY` once every connection
//! is open (and joined), `PROGRESS {json}` once a second, `RESULT {json}` at
//! the end; the orchestrator starts the measured window by writing `GO` to
//! every worker's stdin, so all publish only once all subscribers are in.

use std::io::{self, BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

use crate::client::bench::args::{BenchArgs, Scenario};
use crate::client::bench::report::{Progress, WorkerResult};
use crate::client::bench::worker::{self, Shared, Tally, phase};

/// How long deliveries may keep arriving after the measured window.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Deliveries are done when none arrived for this long, or for twice the
/// largest latency seen, up to `DRAIN_QUIET_MAX`: a fan-out to 100,000
/// members reaches its last one long after its first.
const DRAIN_QUIET: Duration = Duration::from_millis(300);
const DRAIN_QUIET_MAX: Duration = Duration::from_secs(2);

/// Runs this process as worker `index`: connects, reports, measures.
pub fn run_worker(args: BenchArgs, index: usize) -> io::Result<()> {
    let threads = args.thread_count();
    let mine: Vec<usize> = (0..args.clients())
        .filter(|g| g % args.workers == index)
        .collect();
    let shared = Arc::new(Shared::new(args));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let share: Vec<usize> = mine.iter().copied().skip(t).step_by(threads).collect();
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || worker::run(&shared, share))
        })
        .collect::<io::Result<_>>()?;
    let mut stdout = io::stdout().lock();
    let started = Instant::now();
    while shared.ready.load(Ordering::Acquire) < threads
        && started.elapsed() < shared.args.connect_limit
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    writeln!(stdout, "READY {}", shared.connected.load(Ordering::Relaxed))?;
    stdout.flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    let cpu_before = own_cpu_seconds();
    shared.phase.store(phase::MEASURE, Ordering::Release);
    measure(&shared, &mut stdout)?;
    shared.phase.store(phase::DRAIN, Ordering::Release);
    drain(&shared);
    shared.phase.store(phase::STOP, Ordering::Release);
    let mut tallies = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(tally)) => tallies.push(tally),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("a bench thread panicked")),
        }
    }
    let mut result = combine(&shared, &tallies);
    result.cpu_seconds = own_cpu_seconds() - cpu_before;
    writeln!(stdout, "RESULT {}", result.to_json())?;
    stdout.flush()
}

/// The measured window: a progress line a second until the duration or
/// the message count is reached.
fn measure(shared: &Shared, stdout: &mut impl Write) -> io::Result<()> {
    let args = &shared.args;
    let start = Instant::now();
    let mut next = start + Duration::from_secs(1);
    loop {
        let now = Instant::now();
        let done = now.duration_since(start) >= args.duration
            || args.count.is_some_and(|n| match args.scenario {
                Scenario::Connect => shared.handshakes.load(Ordering::Relaxed) >= n,
                _ => shared.sent.load(Ordering::Relaxed) >= n,
            });
        if done {
            return Ok(());
        }
        if now >= next {
            next += Duration::from_secs(1);
            writeln!(stdout, "PROGRESS {}", progress(shared).to_json())?;
            stdout.flush()?;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn drain(shared: &Shared) {
    let slowest = shared
        .latency
        .lock()
        .map(|h| Duration::from_micros(h.max().saturating_mul(2)))
        .unwrap_or_default();
    let quiet = slowest.clamp(DRAIN_QUIET, DRAIN_QUIET_MAX);
    let start = Instant::now();
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    while start.elapsed() < DRAIN_LIMIT {
        std::thread::sleep(Duration::from_millis(20));
        let now = shared.delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= quiet {
            return;
        }
    }
}

fn progress(shared: &Shared) -> Progress {
    let latency = shared
        .latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| worker::new_histogram());
    Progress {
        sent: shared.sent.load(Ordering::Relaxed),
        delivered: shared.delivered.load(Ordering::Relaxed),
        connected: shared.connected.load(Ordering::Relaxed),
        handshakes: shared.handshakes.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
    }
}

fn combine(shared: &Shared, tallies: &[Tally]) -> WorkerResult {
    let rooms = shared.args.rooms;
    let mut published = vec![0u64; rooms];
    for tally in tallies {
        for (room, n) in tally.published.iter().enumerate() {
            published[room] += n;
        }
    }
    let latency = shared
        .latency
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| worker::new_histogram());
    WorkerResult {
        sent: shared.sent.load(Ordering::Relaxed),
        delivered: tallies.iter().map(|t| t.delivered).sum(),
        out_of_order: tallies.iter().map(|t| t.out_of_order).sum(),
        handshakes: tallies.iter().map(|t| t.handshakes).sum(),
        errors: tallies.iter().fold(Default::default(), |mut all, t| {
            all.merge(&t.errors);
            all
        }),
        connected: shared.connected.load(Ordering::Relaxed),
        published,
        latency: encode_histogram(&latency),
        cpu_seconds: 0.0,
        bytes_read: tallies.iter().map(|t| t.bytes_read).sum(),
        compressed: tallies.iter().map(|t| t.compressed).sum(),
        recovered: tallies.iter().map(|t| t.recovered).sum(),
        last_delivery: tallies.iter().fold(Default::default(), |mut all, t| {
            all.merge(&t.last_delivery);
            all
        }),
    }
}

fn own_cpu_seconds() -> f64 {
    roomcast::sys::process_usage(std::process::id()).map_or(0.0, |u| u.cpu_seconds)
}

/// A histogram as base64 text (V2 serialization), to cross a process boundary.
pub fn encode_histogram(histogram: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    if V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .is_err()
    {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of `encode_histogram`.
pub fn decode_histogram(text: &str) -> Option<Histogram<u64>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    Deserializer::new().deserialize(&mut bytes.as_slice()).ok()
}

/// A running worker process.
pub struct WorkerProcess {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub lines: crossbeam_channel::Receiver<String>,
}

impl WorkerProcess {
    /// Starts worker `index` of `workers` with the orchestrator's own flags.
    pub fn spawn(index: usize, workers: usize) -> io::Result<Self> {
        let mut argv: Vec<String> = std::env::args().skip(1).collect();
        argv.extend([
            "--worker-index".into(),
            index.to_string(),
            "--workers".into(),
            workers.to_string(),
        ]);
        let mut child = Command::new(std::env::current_exe()?)
            .args(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no worker stdout"))?;
        let (tx, lines) = crossbeam_channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    /// Starts the measured window.
    pub fn go(&mut self) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(stdin) => {
                stdin.write_all(b"GO\n")?;
                stdin.flush()
            }
            None => Err(io::Error::other("worker stdin closed")),
        }
    }
}
