//! `roomcast bench`: the load generator users run to size a deployment.
//!
//! Owns its own client side — mio event loops per thread (`worker`), the
//! client handshake and framing (`client`), pre-encoded pre-masked messages
//! (`payload`), worker processes (`process`) and the report (`report`). It
//! shares only the frame codec and token minting with the server, and
//! only ever targets loopback addresses.

pub mod args;
pub mod client;
pub mod failure;
pub mod last_delivery;
pub mod payload;
pub mod process;
pub mod report;
pub mod seqs;
pub mod tls;
pub mod worker;

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use args::{BenchArgs, Scenario};
use process::WorkerProcess;
use report::{Progress, ServerFigures, Summary, WorkerResult};

/// Runs `roomcast bench` with these flags.
pub fn run(args: BenchArgs) -> ExitCode {
    if let Err(e) = args.validate() {
        eprintln!("roomcast bench: {e}");
        return ExitCode::from(crate::EXIT_BAD_CONFIG);
    }
    let outcome = match args.worker_index {
        Some(index) => process::run_worker(args, index).map(|()| ExitCode::SUCCESS),
        None => orchestrate(&args),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("roomcast bench: {e}");
        ExitCode::FAILURE
    })
}

/// How long after the window the workers' results may take.
const RESULT_GRACE: Duration = Duration::from_secs(180);

fn orchestrate(args: &BenchArgs) -> io::Result<ExitCode> {
    let workers = args.sockets().div_ceil(args.sockets_per_process).max(1);
    let server_before = server_usage(&args.server_pid);
    let mut processes = (0..workers)
        .map(|i| WorkerProcess::spawn(i, workers))
        .collect::<io::Result<Vec<_>>>()?;
    let mut connected = 0;
    for worker in &processes {
        let limit = args.connect_limit + Duration::from_secs(30);
        let line = next_line(worker, "READY", limit)?;
        connected += line.trim().parse::<u64>().unwrap_or(0);
    }
    eprintln!(
        "roomcast bench: {connected} connections open in {workers} process(es); measuring for {:?}",
        args.duration
    );
    let server_start = server_usage(&args.server_pid);
    let start = Instant::now();
    for worker in &mut processes {
        worker.go()?;
    }
    let results = collect(args, &processes, start)?;
    let window_seconds = start.elapsed().as_secs_f64();
    let bench_cpu_seconds = results.iter().map(|r| r.cpu_seconds).sum();
    let server_end = server_usage(&args.server_pid);
    // The end of the window for whoever counts the server's CPU from the
    // outside (perf/feed-options.sh's PERF_STAT), as "measuring for" is its start.
    eprintln!("roomcast bench: window over");
    for worker in &mut processes {
        let _ = worker.child.wait();
    }
    let summary = summarize(
        args,
        &results,
        window_seconds,
        server_before,
        server_start,
        server_end,
        bench_cpu_seconds,
        workers,
    );
    let mut stdout = io::stdout().lock();
    if args.json {
        writeln!(stdout, "{}", summary.to_json(args))?;
    } else {
        write!(stdout, "{}", summary.to_table(args))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The server's CPU time and memory, summed over its processes; `None`
/// without any, or when one cannot be read (it exited).
fn server_usage(pids: &[u32]) -> Option<roomcast::sys::ProcessUsage> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(
        roomcast::sys::ProcessUsage {
            cpu_seconds: 0.0,
            user_seconds: 0.0,
            rss_bytes: 0,
        },
        |sum, &pid| {
            let usage = roomcast::sys::process_usage(pid)?;
            Some(roomcast::sys::ProcessUsage {
                cpu_seconds: sum.cpu_seconds + usage.cpu_seconds,
                user_seconds: sum.user_seconds + usage.user_seconds,
                rss_bytes: sum.rss_bytes + usage.rss_bytes,
            })
        },
    )
}

/// Waits for a worker line starting with `prefix`; returns the rest.
fn next_line(worker: &WorkerProcess, prefix: &str, limit: Duration) -> io::Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match worker.lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(rest.trim().to_owned());
                }
            }
            Err(_) => return Err(io::Error::other(format!("a worker sent no {prefix} line"))),
        }
    }
}

/// Prints a progress line a second and gathers every worker's result.
fn collect(
    args: &BenchArgs,
    processes: &[WorkerProcess],
    start: Instant,
) -> io::Result<Vec<WorkerResult>> {
    let mut latest = vec![Progress::default(); processes.len()];
    let mut results: Vec<Option<WorkerResult>> = vec![None; processes.len()];
    let mut last_print = Instant::now();
    let mut last_delivered = 0;
    let mut fresh = false;
    // Workers drain, close and report after the window; on a machine
    // saturated by a million connections (120 processes on 2 cores) that
    // took over 30 s.
    let limit = args.duration + RESULT_GRACE;
    while results.iter().any(Option::is_none) {
        if start.elapsed() > limit {
            return Err(io::Error::other("workers did not finish in time"));
        }
        for (i, worker) in processes.iter().enumerate() {
            while let Ok(line) = worker.lines.try_recv() {
                if let Some(json) = line.strip_prefix("PROGRESS ") {
                    latest[i] = Progress::from_json(json).unwrap_or(latest[i]);
                    fresh = true;
                } else if let Some(json) = line.strip_prefix("RESULT ") {
                    results[i] = WorkerResult::from_json(json);
                    if results[i].is_none() {
                        return Err(io::Error::other("a worker's result did not parse"));
                    }
                }
            }
        }
        if fresh
            && last_print.elapsed() >= Duration::from_millis(900)
            && results.iter().all(Option::is_none)
        {
            fresh = false;
            let delivered: u64 = latest.iter().map(|p| p.delivered).sum();
            let rate = (delivered - last_delivered.min(delivered)) as f64
                / last_print.elapsed().as_secs_f64();
            last_delivered = delivered;
            last_print = Instant::now();
            eprintln!(
                "[{:>4.0}s] {:>10.0} msg/s  delivered {:>10}  p50 {:>6} µs  p99 {:>7} µs  connections {:>6}  handshakes {:>7}  errors {}",
                start.elapsed().as_secs_f64(),
                rate,
                delivered,
                latest.iter().map(|p| p.p50_us).max().unwrap_or(0),
                latest.iter().map(|p| p.p99_us).max().unwrap_or(0),
                latest.iter().map(|p| p.connected).sum::<u64>(),
                latest.iter().map(|p| p.handshakes).sum::<u64>(),
                latest.iter().map(|p| p.errors).sum::<u64>(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(results.into_iter().flatten().collect())
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    args: &BenchArgs,
    results: &[WorkerResult],
    window_seconds: f64,
    server_before: Option<roomcast::sys::ProcessUsage>,
    server_start: Option<roomcast::sys::ProcessUsage>,
    server_end: Option<roomcast::sys::ProcessUsage>,
    bench_cpu_seconds: f64,
    workers: usize,
) -> Summary {
    let mut latency = worker::new_histogram();
    for result in results {
        if let Some(h) = process::decode_histogram(&result.latency) {
            let _ = latency.add(&h);
        }
    }
    let mut published = vec![0u64; args.rooms];
    for result in results {
        for (room, n) in result.published.iter().enumerate() {
            published[room] += n;
        }
    }
    // Paced subscribers get fewer deliveries by design.
    let expected = (args.scenario == Scenario::Fanout && args.max_rate.is_none()).then(|| {
        let probes = probes_per_room(args);
        published
            .iter()
            .enumerate()
            .map(|(room, n)| n * (args.members_of(room) + probes[room]))
            .sum()
    });
    let server = match (server_before, server_start, server_end) {
        (Some(before), Some(start), Some(end)) => Some(ServerFigures {
            cpu_seconds: end.cpu_seconds - start.cpu_seconds,
            user_cpu_seconds: end.user_seconds - start.user_seconds,
            rss_before: before.rss_bytes,
            rss_after: start.rss_bytes.max(end.rss_bytes),
        }),
        _ => None,
    };
    Summary {
        window_seconds,
        connected: results.iter().map(|r| r.connected).sum(),
        sent: results.iter().map(|r| r.sent).sum(),
        delivered: results.iter().map(|r| r.delivered).sum(),
        expected,
        out_of_order: results.iter().map(|r| r.out_of_order).sum(),
        handshakes: results.iter().map(|r| r.handshakes).sum(),
        errors: results.iter().fold(Default::default(), |mut all, r| {
            all.merge(&r.errors);
            all
        }),
        latency,
        server,
        bench_cpu_seconds,
        bench_threads: args.thread_count() * workers,
        bytes_read: results.iter().map(|r| r.bytes_read).sum(),
        compressed: results.iter().map(|r| r.compressed).sum(),
        recovered: results.iter().map(|r| r.recovered).sum(),
        last_delivery: results.iter().fold(Default::default(), |mut all, r| {
            all.merge(&r.last_delivery);
            all
        }),
    }
}

/// Probe subscribers per room: one for each publisher publishing to it,
/// when publishers keep a window per room.
fn probes_per_room(args: &BenchArgs) -> Vec<u64> {
    let mut probes = vec![0; args.rooms];
    if args.probed() {
        for publisher in 0..args.publishers {
            for room in args.rooms_of_publisher(publisher) {
                probes[room] += 1;
            }
        }
    }
    probes
}
