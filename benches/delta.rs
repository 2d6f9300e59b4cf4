//! Micro-benchmarks of section 14's deltas: a 1 KiB JSON price update in
//! which one or two fields change from the previous one. Printed as the
//! bench starts: the bytes of the whole frame against the delta frame a
//! member gets. Measured: encoding the delta (`proto::fossil::encode`, what
//! a room message costs a node once, whatever its number of delta members),
//! applying it (what a client does), and one fan-out plan on a shard with
//! a thousand delta members (`rooms::delta::Deltas::plan`, encoding
//! included; the event's frame is written in each iteration, and alone as
//! `write_event_frame_alone`, to subtract), the same with MessagePack
//! members, whose plan also checks once that the base is canonical, and
//! that check alone (`proto::msgpack::is_canonical`, once per event and
//! node when a MessagePack delta member takes the delta).
//!
//! Owns only measurements; the behaviour is tested in `src/proto/fossil.rs`
//! and `src/rooms/delta.rs`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use roomcast::proto::{fossil, msgpack, wire};
use roomcast::rooms::bus::SharedDelta;
use roomcast::rooms::delta::{Deltas, Encoding};

mod feed;

/// Delta members of the room in the fan-out benchmark.
const MEMBERS: usize = 1000;

/// Tick `n` of a price feed: about 1 KiB of JSON where the last price and
/// the volume change, the book and the rest stay.
fn tick(n: u64) -> String {
    let mut text = format!(
        r#"{{"sym":"BTC-USD","venue":"xchg","last":{}.{:02},"volume":{},"levels":["#,
        67000 + n % 5,
        n * 7 % 100,
        1_000_000 + n * 13
    );
    feed::push_levels(&mut text, 1000);
    text.push_str("]}");
    text
}

fn event(n: u64) -> Arc<[u8]> {
    wire::room_frame(
        "price:tick",
        "prices:BTC-USD",
        tick(n).as_bytes(),
        "feed",
        n,
        1_700_000_000_000,
    )
}

fn deltas(c: &mut Criterion) {
    let (a, b) = (tick(41), tick(42));
    let delta = fossil::encode(a.as_bytes(), b.as_bytes());
    println!("data {} bytes, delta {} bytes", b.len(), delta.len());
    let mut group = c.benchmark_group("delta");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_1KiB_tick", |bench| {
        bench.iter(|| {
            black_box(fossil::encode(
                black_box(a.as_bytes()),
                black_box(b.as_bytes()),
            ))
        })
    });
    group.bench_function("apply_1KiB_tick", |bench| {
        bench.iter(|| {
            black_box(fossil::apply(
                black_box(a.as_bytes()),
                black_box(&delta),
                1 << 20,
            ))
        })
    });

    let room: Arc<str> = Arc::from("prices:BTC-USD");
    let members: Vec<usize> = (0..MEMBERS).collect();
    let mut shard = Deltas::default();
    for &key in &members {
        shard.set(&room, key, Some(Encoding::Json));
    }
    let mut n = 1;
    let first = event(n);
    let plan = shard.plan(&room, &first, &members, None, None);
    shard.sent(&room, &plan.whole, &plan.whole);
    n += 1;
    let second = event(n);
    let plan = shard.plan(&room, &second, &members, None, None);
    let (frame, takers) = plan.delta.expect("a delta");
    shard.sent(&room, &takers, &takers);
    println!(
        "delta frame {} bytes, whole frame {} bytes",
        frame.frame.len(),
        second.len()
    );
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.bench_function("plan_1000_delta_members", |bench| {
        bench.iter(|| {
            n += 1;
            let frame = event(n);
            let plan = shard.plan(&room, &frame, &members, None, Some(&SharedDelta::default()));
            let (_, takers) = plan.delta.as_ref().expect("a delta");
            shard.sent(&room, takers, takers);
            black_box(plan.whole.len())
        })
    });
    let mut packed = Deltas::default();
    for &key in &members {
        packed.set(&room, key, Some(Encoding::MessagePack));
    }
    group.bench_function("plan_1000_msgpack_delta_members", |bench| {
        bench.iter(|| {
            n += 1;
            let frame = event(n);
            let plan = packed.plan(&room, &frame, &members, None, Some(&SharedDelta::default()));
            packed.sent(&room, &plan.whole, &plan.whole);
            if let Some((_, takers)) = &plan.delta {
                packed.sent(&room, takers, takers);
            }
            black_box(plan.whole.len())
        })
    });
    group.throughput(Throughput::Elements(1));
    println!("tick 42 canonical: {}", msgpack::is_canonical(b.as_bytes()));
    group.bench_function("is_canonical_1KiB_tick", |bench| {
        bench.iter(|| black_box(msgpack::is_canonical(black_box(b.as_bytes()))))
    });
    group.bench_function("write_event_frame_alone", |bench| {
        bench.iter(|| {
            n += 1;
            black_box(event(n))
        })
    });
    group.finish();
}

criterion_group!(benches, deltas);
criterion_main!(benches);
