//! Micro-benchmarks of the room path: envelope parse and validation, the
//! per-member enqueue of a fan-out, and the hand-off of a batch between
//! shards, and a room-name lookup with each hasher. `perf/README.md` has
//! the figures and the command.

use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use roomcast::auth::{self, Claims, Keys};
use roomcast::cli::ServeArgs;
use roomcast::codes::ErrorCode;
use roomcast::config::Config;
use roomcast::conn::cork;
use roomcast::conn::outbound::MAX_IO_SLICES;
use roomcast::conn::shard_frame::ShardFrame;
use roomcast::conn::{Admission, Connection, Context, Delivery, Observe};
use roomcast::metrics::{ShardMetrics, Snapshot};
use roomcast::proto::envelope::Parser;
use roomcast::proto::wire;
use roomcast::proto::{self, Request, Session, Sink};
use roomcast::rooms::bus::{BusMsg, ConnRef, Fanout};
use roomcast::rooms::hash::RoomHash;
use std::collections::HashMap;
use std::hint::black_box;

const SECRET: &str = "bench-secret";

struct Open;

impl Admission for Open {
    fn admit(&self, _: IpAddr, _: Instant) -> Result<(), ErrorCode> {
        Ok(())
    }
    fn release(&self, _: IpAddr) {}
    fn admit_publish(&self, _: &str, _: usize, _: f64, _: Instant) -> bool {
        true
    }
}

impl Observe for Open {
    fn snapshot(&self) -> Snapshot {
        Snapshot::default()
    }
    fn uptime(&self) -> Duration {
        Duration::ZERO
    }
}

struct Discard(usize);

impl Sink for Discard {
    fn send_text(&mut self, text: &[u8]) {
        self.0 += text.len();
    }
    fn request(&mut self, request: Request) {
        black_box(request);
        self.0 += 1;
    }
}

fn config() -> Config {
    let args = ServeArgs::try_parse_from(["--jwt-secret", SECRET]).expect("parses");
    let mut config = args
        .into_config(roomcast::cli::EnvLists::default(), 1, 100_000)
        .expect("valid");
    config.backpressure.max_write_buffer = 64 << 20;
    config
}

/// A connection that went through a real upgrade on `/ws`.
fn open_connection(id: u64, config: &Config, keys: &Keys, parser: &mut Parser) -> Connection {
    let now = Instant::now();
    let exp = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600) as f64;
    let token = auth::mint(&Claims::new(format!("u{id}"), exp), SECRET.as_bytes());
    let mut request = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    let mut conn = Connection::new(id, IpAddr::V4(Ipv4Addr::LOCALHOST), now);
    let mut scratch = Vec::new();
    let mut requests = Vec::new();
    let mut reports = Vec::new();
    let mut cx = Context {
        config,
        keys,
        admission: &Open,
        observe: &Open,
        metrics: &ShardMetrics::default(),
        parser,
        scratch: &mut scratch,
        codec: &mut Default::default(),
        now,
        unix_ms: 0,
        draining: false,
        issuer: roomcast::conn::id::Issuer {
            node: None,
            boot: 0,
        },
        requests: &mut requests,
        reports: &mut reports,
    };
    conn.on_input(&mut request, &mut cx);
    assert!(conn.is_open_websocket());
    drain(&mut conn);
    conn
}

fn drain(conn: &mut Connection) {
    let out = conn.outbound();
    let pending = out.pending();
    out.advance(pending);
}

fn bench_envelope(c: &mut Criterion) {
    let config = config();
    let keys = Keys::new(&[SECRET]);
    let claims = Claims {
        publish: Some(["*".into()].into()),
        ..Claims::new("u1", f64::MAX)
    };
    let message = br#"{"event":"chat:message","room":"lobby","data":{"text":"hello there","n":42},"id":"c17"}"#;
    let mut parser = Parser::default();
    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_validate_publish", |b| {
        b.iter_batched_ref(
            || message.to_vec(),
            |payload| {
                let session = Session {
                    claims: &claims,
                    rooms: &[],
                    config: &config.rooms,
                    keys: &keys,
                    leeway_secs: 0.0,
                    rpc_proxy: false,
                };
                let mut sink = Discard(0);
                proto::on_text(payload, &mut parser, session, 0, &mut Vec::new(), &mut sink);
                sink.0
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn bench_fanout(c: &mut Criterion) {
    const MEMBERS: usize = 10_000;
    let config = config();
    let keys = Keys::new(&[SECRET]);
    let mut parser = Parser::default();
    let mut members: Vec<Connection> = (0..MEMBERS as u64)
        .map(|id| open_connection(id, &config, &keys, &mut parser))
        .collect();
    let room: Arc<str> = Arc::from("lobby");
    let frame = wire::room_frame("chat:msg", "lobby", b"{\"p\":1}", "u", 1, 0);
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(MEMBERS as u64));
    group.bench_function("enqueue_10k_members", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let now = Instant::now();
                let start = Instant::now();
                let frame = ShardFrame::new(frame.clone());
                for member in &mut members {
                    member.deliver(Some(&room), &frame, Delivery::RoomEvent, now, &config);
                }
                total += start.elapsed();
                members.iter_mut().for_each(drain);
            }
            total
        })
    });
    // One turn of a closed-loop fan-out, all but the system call: 16 room
    // events queued for each of 1,000 members (with the write-through check
    // every delivery makes), then each member's queue turned into the
    // `writev` slices the flush would write and marked written.
    const TURN_MEMBERS: usize = 1_000;
    const TURN_EVENTS: usize = 16;
    let members = &mut members[..TURN_MEMBERS];
    group.throughput(Throughput::Elements((TURN_MEMBERS * TURN_EVENTS) as u64));
    // `corked`: the same, with each member's slices corked into the
    // shard's buffer the way the reactor writes them (`conn::cork`).
    for corked in [false, true] {
        let name = if corked {
            "turn_16_events_1k_members_corked"
        } else {
            "turn_16_events_1k_members_to_slices"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let now = Instant::now();
                for _ in 0..TURN_EVENTS {
                    // Wrapped once per fan-out, as the shard's outlet does.
                    let frame = ShardFrame::new(frame.clone());
                    for member in members.iter_mut() {
                        black_box(member.wants_write_through(frame.len(), &config));
                        member.deliver(Some(&room), &frame, Delivery::RoomEvent, now, &config);
                    }
                }
                let mut slices_total = 0;
                for member in members.iter_mut() {
                    let out = member.outbound();
                    let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
                    let count = out.io_slices(&mut slices);
                    slices_total += if corked {
                        cork::with_corked::<MAX_IO_SLICES, _>(&slices[..count], |s| {
                            black_box(s).len()
                        })
                    } else {
                        count
                    };
                    let pending = out.pending();
                    out.advance(pending);
                }
                slices_total
            })
        });
    }
    group.finish();
}

fn bench_handoff(c: &mut Criterion) {
    const BATCH: usize = 64;
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<BusMsg>>();
    let room: Arc<str> = Arc::from("lobby");
    let frame = wire::text_frame(b"{\"event\":\"a:b\"}");
    let poll = mio::Poll::new().expect("poll");
    let waker = mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker");
    let mut group = c.benchmark_group("handoff");
    group.throughput(Throughput::Elements(1));
    group.bench_function("batch_of_64_deliver_with_wake", |b| {
        b.iter(|| {
            let batch: Vec<BusMsg> = (0..BATCH)
                .map(|_| BusMsg::Deliver {
                    room: room.clone(),
                    frame: frame.clone(),
                    exclude: Some(ConnRef {
                        shard: 0,
                        key: 0,
                        id: 0,
                    }),
                    fanout: Fanout::RoomEvent {
                        read_at: Instant::now(),
                    },
                    made: Default::default(),
                })
                .collect();
            tx.send(batch).expect("send");
            waker.wake().expect("wake");
            black_box(rx.try_recv().expect("recv").len())
        })
    });
    group.finish();
}

/// A room-name lookup among 1,000 rooms, as each publish makes on its
/// owner and on every member shard: std's SipHash against `rooms::hash`.
fn bench_room_lookup(c: &mut Criterion) {
    fn lookups<S: std::hash::BuildHasher + Default>(c: &mut Criterion, name: &str) {
        let mut rooms: HashMap<Box<str>, u64, S> = HashMap::default();
        let names: Vec<String> = (0..1_000).map(|i| format!("bench-room-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            rooms.insert(name.as_str().into(), i as u64);
        }
        let mut next = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % names.len();
                black_box(rooms.get(black_box(names[next].as_str())))
            })
        });
    }
    lookups::<std::collections::hash_map::RandomState>(c, "room_lookup_siphash");
    lookups::<RoomHash>(c, "room_lookup_roomhash");
}

criterion_group!(
    benches,
    bench_envelope,
    bench_fanout,
    bench_handoff,
    bench_room_lookup
);
criterion_main!(benches);
