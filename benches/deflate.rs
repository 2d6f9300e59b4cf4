//! Micro-benchmarks of permessage-deflate (`roomcast::ws::deflate`): one
//! 1 KiB JSON price update compressed once (what a room message costs the
//! server whatever its number of members, with no context takeover) and
//! inflated (what a compressed client message costs), against copying it.
//!
//! Owns only measurements; the behaviour is tested in `src/ws/deflate.rs`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roomcast::ws::deflate::{Deflater, Inflater};

/// A price update of about 1 KiB: JSON with repeated keys, as feeds send.
fn price_update() -> Vec<u8> {
    let mut text =
        String::from(r#"{"event":"price:tick","room":"prices:BTC-USD","data":{"levels":["#);
    let mut i = 0;
    while text.len() < 1000 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!(
            r#"{{"px":{}.{:02},"qty":{}.{}}}"#,
            67000 + i,
            i * 7 % 100,
            i % 9,
            i % 7
        ));
        i += 1;
    }
    text.push_str(r#"]},"from":"feed","seq":41,"ts":1700000000000}"#);
    text.into_bytes()
}

fn bench(c: &mut Criterion) {
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

criterion_group!(benches, bench);
criterion_main!(benches);
