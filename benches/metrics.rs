//! Micro-benchmarks of counting and scraping: a single-writer increment
//! (what every shard does on its hot path) against an atomic
//! read-modify-write, and one whole scrape of `/metrics` and `/stats`.
//! `perf/README.md` has the figures and the command.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use roomcast::metrics::{Counter, ShardMetrics, Snapshot, prometheus, stats};

fn bench_increment(c: &mut Criterion) {
    let mut group = c.benchmark_group("increment");
    let counter = Counter::default();
    group.bench_function("single_writer_load_store", |b| {
        b.iter(|| black_box(&counter).inc())
    });
    let atomic = AtomicU64::new(0);
    group.bench_function("atomic_fetch_add", |b| {
        b.iter(|| black_box(&atomic).fetch_add(1, Ordering::Relaxed))
    });
    group.finish();
}

/// Two shards with every figure non-zero, as after some traffic.
fn busy_shards() -> Vec<ShardMetrics> {
    let shards: Vec<ShardMetrics> = (0..2).map(|_| ShardMetrics::default()).collect();
    for (i, shard) in shards.iter().enumerate() {
        shard.messages_in.add(1_000 + i as u64);
        shard.deliveries.add(1_000_000);
        shard.count_close(1000);
        shard.count_close(4008);
        for us in [3, 40, 700, 20_000] {
            shard.fanout_latency.observe(Duration::from_micros(us));
            shard.handshake_latency.observe(Duration::from_micros(us));
        }
    }
    shards
}

fn bench_scrape(c: &mut Criterion) {
    let shards = busy_shards();
    let mut group = c.benchmark_group("scrape");
    group.bench_function("metrics_text_2_shards", |b| {
        b.iter(|| {
            let snap = Snapshot::gather(black_box(&shards), 10_000, 9_000);
            black_box(prometheus::render(&snap, 12.5, "0.1.0"))
        })
    });
    let config = br#"{"bind":"127.0.0.1:8080","shards":2}"#;
    group.bench_function("stats_json_2_shards", |b| {
        b.iter(|| {
            let snap = Snapshot::gather(black_box(&shards), 10_000, 9_000);
            let about = stats::About {
                uptime_seconds: 12,
                version: "0.1.0",
                config_json: config,
            };
            let mut out = Vec::with_capacity(4096);
            stats::render(&mut out, &snap, &about);
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_increment, bench_scrape);
criterion_main!(benches);
