//! Micro-benchmarks of permessage-deflate (`roomcast::ws::deflate`): one
//! 1 KiB JSON price update compressed once (what a room message costs the
//! server whatever its number of members, with no context takeover) and
//! inflated (what a compressed client message costs), against copying it;
//! compress-once fan-out (one compression and a thousand shared `Arc`s)
//! against compressing for each of a thousand members; and what the
//! policy of no context takeover costs in compression ratio on a stream
//! of price updates, against one persistent deflate stream (context
//! takeover), printed as the bench starts.
//!
//! Owns only measurements; the behaviour is tested in `src/ws/deflate.rs`
//! and `src/conn/compression.rs`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flate2::{Compress, Compression, FlushCompress};
use roomcast::conn::compression::{Codec, SharedFrame};
use roomcast::conn::shard_frame::ShardFrame;
use roomcast::proto::wire;
use roomcast::ws::deflate::{Deflater, Inflater};

mod feed;

/// Members of the room in the fan-out benchmarks.
const MEMBERS: usize = 1000;
/// Messages in the context-takeover comparison.
const STREAM: usize = 1000;

/// A price update of about 1 KiB: JSON with repeated keys, as feeds send.
fn price_update() -> Vec<u8> {
    let mut text =
        String::from(r#"{"event":"price:tick","room":"prices:BTC-USD","data":{"levels":["#);
    feed::push_levels(&mut text, 1000);
    text.push_str(r#"]},"from":"feed","seq":41,"ts":1700000000000}"#);
    text.into_bytes()
}

/// Message `n` of a feed of 1 KiB price updates: the same keys and
/// symbols each time, prices and sizes that move.
fn price_tick(n: usize) -> Vec<u8> {
    let mut text = String::from(
        r#"{"event":"price:tick","room":"prices:BTC-USD","data":{"sym":"BTC-USD","levels":["#,
    );
    let mut i = 0;
    while text.len() < 1000 {
        if i > 0 {
            text.push(',');
        }
        let wobble = (n * 31 + i * 17) % 97;
        text.push_str(&format!(
            r#"{{"px":{}.{:02},"qty":{}.{:03}}}"#,
            67000 + i * 3 + n % 11,
            wobble,
            (n + i) % 9,
            (n * 7 + i * 13) % 1000
        ));
        i += 1;
    }
    text.push_str(&format!(
        r#"]}},"from":"feed","seq":{},"ts":{}}}"#,
        n + 1,
        1_700_000_000_000u64 + n as u64 * 250
    ));
    text.into_bytes()
}

/// Bytes `messages` take compressed with one deflate stream kept across
/// them (context takeover: each message sync-flushed, less its tail).
fn with_context_takeover(messages: &[Vec<u8>]) -> usize {
    let mut compress = Compress::new(Compression::fast(), false);
    let mut out = Vec::with_capacity(4096);
    let mut total = 0;
    for message in messages {
        out.clear();
        out.reserve(message.len() + 64);
        compress
            .compress_vec(message, &mut out, FlushCompress::Sync)
            .expect("compresses");
        total += out.len() - 4;
    }
    total
}

/// Bytes `messages` take compressed each on its own (no context
/// takeover, roomcast's policy).
fn without_context_takeover(messages: &[Vec<u8>]) -> usize {
    let mut deflater = Deflater::default();
    let mut out = Vec::with_capacity(4096);
    messages
        .iter()
        .map(|message| {
            out.clear();
            deflater.compress(message, &mut out);
            out.len()
        })
        .sum()
}

/// Prints what no context takeover costs in bytes on a feed.
fn report_context_takeover() {
    let messages: Vec<Vec<u8>> = (0..STREAM).map(price_tick).collect();
    let plain: usize = messages.iter().map(Vec::len).sum();
    let kept = with_context_takeover(&messages);
    let fresh = without_context_takeover(&messages);
    eprintln!(
        "deflate: {STREAM} price updates, {plain} bytes: {fresh} bytes ({:.1}%) without context \
         takeover, {kept} bytes ({:.1}%) with it",
        100.0 * fresh as f64 / plain as f64,
        100.0 * kept as f64 / plain as f64,
    );
}

/// Compress-once fan-out against one compression per member.
fn bench_fanout(c: &mut Criterion) {
    let frame = wire::text_frame(&price_tick(0));
    let mut group = c.benchmark_group("deflate_fanout");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    let mut codec = Codec::default();
    let mut queued: Vec<Arc<[u8]>> = Vec::with_capacity(MEMBERS);
    let mut on_shard: Vec<ShardFrame> = Vec::with_capacity(MEMBERS);
    group.bench_function("compress_once_1k_members", |b| {
        b.iter(|| {
            on_shard.clear();
            let mut shared = SharedFrame::new(ShardFrame::new(black_box(frame.clone())));
            for _ in 0..MEMBERS {
                on_shard.push(shared.for_member(true, &mut codec).clone());
            }
            black_box(on_shard.len())
        })
    });
    group.bench_function("compress_per_member_1k_members", |b| {
        b.iter(|| {
            queued.clear();
            for _ in 0..MEMBERS {
                let compressed = codec.compress_frame(black_box(&frame));
                queued.push(compressed.expect("worth compressing"));
            }
            black_box(queued.len())
        })
    });
    group.bench_function("plain_1k_members_baseline", |b| {
        b.iter(|| {
            queued.clear();
            for _ in 0..MEMBERS {
                queued.push(black_box(&frame).clone());
            }
            black_box(queued.len())
        })
    });
    group.finish();
}

/// One message of a feed compressed with and without context takeover.
fn bench_context_takeover(c: &mut Criterion) {
    let messages: Vec<Vec<u8>> = (0..64).map(price_tick).collect();
    let mut group = c.benchmark_group("deflate_context");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("64_updates_without_context_takeover", |b| {
        b.iter(|| black_box(without_context_takeover(black_box(&messages))))
    });
    group.bench_function("64_updates_with_context_takeover", |b| {
        b.iter(|| black_box(with_context_takeover(black_box(&messages))))
    });
    group.finish();
}

fn bench(c: &mut Criterion) {
    report_context_takeover();
    let message = price_update();
    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(message.len() as u64));
    let mut deflater = Deflater::default();
    let mut out = Vec::with_capacity(2048);
    group.bench_function("compress_once_1KiB_price_update", |b| {
        b.iter(|| {
            out.clear();
            deflater.compress(black_box(&message), &mut out);
            black_box(out.len())
        })
    });
    let mut compressed = Vec::new();
    Deflater::default().compress(&message, &mut compressed);
    eprintln!(
        "deflate: {} bytes compress to {} ({:.0}%)",
        message.len(),
        compressed.len(),
        100.0 * compressed.len() as f64 / message.len() as f64
    );
    let mut inflater = Inflater::default();
    let mut inflated = Vec::with_capacity(2048);
    group.bench_function("inflate_1KiB_price_update", |b| {
        b.iter(|| {
            inflated.clear();
            inflater
                .inflate(black_box(&compressed), 64 * 1024, &mut inflated)
                .expect("inflates");
            black_box(inflated.len())
        })
    });
    group.bench_function("copy_1KiB_baseline", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&message));
            black_box(out.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench, bench_fanout, bench_context_takeover);
criterion_main!(benches);
