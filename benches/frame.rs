//! Micro-benchmarks of the frame codec: decoding (header parse, unmask,
//! UTF-8 validation), the UTF-8 validator alone, and frame encoding.
//!
//! Owns only measurements; must not test behaviour (the unit tests in
//! `src/ws/` do) nor touch anything outside `roomcast::ws`.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use roomcast::ws::decoder::{Decoder, Message};
use roomcast::ws::frame::{OpCode, encode_frame, encode_masked_frame};
use roomcast::ws::utf8::Utf8Validator;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const KIB: usize = 1024;

fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    encode_masked_frame(true, opcode, payload, MASK, &mut frame);
    frame
}

fn binary_payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn ascii_text(len: usize) -> Vec<u8> {
    b"{\"event\":\"publish\",\"room\":\"lobby\",\"data\":\"hello\"}"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// Roughly a third each of 1-, 2-, 3- and 4-byte code points, cut to `len`
/// bytes on a char boundary.
fn mixed_text(len: usize) -> Vec<u8> {
    let sample = "ascii é ü ß € 日本語 𝄞 😀 ";
    let mut text = String::with_capacity(len + sample.len());
    while text.len() < len {
        text.push_str(sample);
    }
    let mut end = len;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.into_bytes()
}

/// Decodes one fresh copy of `frame` per iteration (the copy is made
/// outside the timed part, since decoding unmasks in place).
fn bench_decode_frame(c: &mut Criterion, group_name: &str, cases: &[(String, Vec<u8>)]) {
    let mut group = c.benchmark_group(group_name);
    for (name, frame) in cases {
        let payload_len = frame.len() - header_len(frame.len());
        group.throughput(Throughput::Bytes(payload_len as u64));
        let mut decoder = Decoder::new(1 << 20, true);
        let batch = if frame.len() > 4 * KIB {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |input| {
                    let decoded = decoder.decode(input).expect("valid frame");
                    match decoded.message {
                        Some(Message::Binary(bytes) | Message::Text(bytes)) => {
                            black_box(bytes.len());
                        }
                        _ => panic!("expected one data message"),
                    }
                },
                batch,
            );
        });
    }
    group.finish();
}

/// Header length of a masked frame of `frame_len` bytes in total.
fn header_len(frame_len: usize) -> usize {
    match frame_len {
        n if n <= 125 + 6 => 6,
        n if n <= 65535 + 8 => 8,
        _ => 14,
    }
}

fn decode(c: &mut Criterion) {
    let cases: Vec<(String, Vec<u8>)> = [(32, "32B"), (KIB, "1KiB"), (64 * KIB, "64KiB")]
        .into_iter()
        .map(|(len, name)| {
            (
                name.to_owned(),
                masked_frame(OpCode::Binary, &binary_payload(len)),
            )
        })
        .collect();
    bench_decode_frame(c, "decode", &cases);
}

fn decode_text(c: &mut Criterion) {
    let mut cases = Vec::new();
    for (len, size) in [(KIB, "1KiB"), (64 * KIB, "64KiB")] {
        cases.push((
            format!("ascii/{size}"),
            masked_frame(OpCode::Text, &ascii_text(len)),
        ));
        cases.push((
            format!("mixed/{size}"),
            masked_frame(OpCode::Text, &mixed_text(len)),
        ));
    }
    bench_decode_frame(c, "decode_text", &cases);
}

fn utf8_feed(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8_feed");
    for (name, text) in [
        ("ascii/64KiB", ascii_text(64 * KIB)),
        ("mixed/64KiB", mixed_text(64 * KIB)),
    ] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            let mut validator = Utf8Validator::default();
            b.iter(|| {
                validator.feed(black_box(&text)).expect("valid text");
                validator.finish().expect("complete text");
            });
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_frame");
    for (len, name) in [(32, "32B"), (KIB, "1KiB")] {
        let payload = binary_payload(len);
        let mut out = Vec::with_capacity(len + 16);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                encode_frame(OpCode::Binary, black_box(&payload), &mut out);
                black_box(out.len());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, decode, decode_text, utf8_feed, encode);
criterion_main!(benches);
