// Section 14's canonical form: a MessagePack delta member rebuilds the
// base of the next delta by writing the `data` of a whole event back as
// JSON text exactly as the server does (`msgpackToJson`), and the server
// sends it a delta only from a base whose text is in that form. Without the
// binary: `msgpackToJson` on a table of tricky floats, integers, strings and
// key orders. Against the real roomcast binary: `msgpackToJson` against the
// server's own conversion (a MessagePack member publishes random values,
// written byte by byte in every MessagePack form, and a JSON member reads
// the `data` text the server made of them), then feeds whose `data` text is
// not canonical (spaces, `1.50`, `\u00e9`), canonical, and both in turn: a
// MessagePack delta member sees exactly what a JSON delta member sees, with
// no `DELTA` error, whole events where the base was not canonical and deltas
// otherwise. The clients run in a child process, as in server.test.js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { connect, dataText, decodeMsgpack, encodeMsgpack, msgpackToJson } from "../roomcast.js";
import { BOUND_MS, childReport, collect, mintPublisher, withServer } from "./harness.js";

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), "../../..");
const BIN = process.env.ROOMCAST_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/roomcast");
const SECRET = "node-canonical-test-secret";
const RANDOM_VALUES = 300;
const SEED = Number(process.env.ROOMCAST_SEED || 20261207);
const TICKS = 8;

const bytes = (hex) => Uint8Array.from(Buffer.from(hex.replace(/ /g, ""), "hex"));
const concat = (...parts) => Uint8Array.from(parts.flatMap((p) => [...p]));
const be = (n, width) => Array.from({ length: width }, (_, i) => Number((BigInt(n) >> BigInt(8 * (width - 1 - i))) & 0xffn));
const f64 = (x) => {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  return concat([0xcb], new Uint8Array(view.buffer));
};
const f32 = (x) => {
  const view = new DataView(new ArrayBuffer(4));
  view.setFloat32(0, x);
  return concat([0xca], new Uint8Array(view.buffer));
};
/** A MessagePack string in the form `tag` (0xa0 fixstr, 0xd9, 0xda, 0xdb). */
const str = (s, tag) => {
  const utf8 = new TextEncoder().encode(s);
  if (tag === undefined || (tag === 0xa0 && utf8.length >= 32)) tag = utf8.length < 32 ? 0xa0 : 0xd9;
  const header = tag === 0xa0 ? [0xa0 | utf8.length] : [tag, ...be(utf8.length, 2 ** (tag - 0xd9))];
  return concat(header, utf8);
};
const map = (entries) => concat([0x80 | entries.length], ...entries.flatMap(([k, v]) => [str(k), v]));

/** Tricky values, written as MessagePack, and the text Rust's writer gives them. */
const TABLE = [
  [f64(101), "101.0"],
  [f64(1.5), "1.5"],
  [f64(0.1), "0.1"],
  [f64(-1721992492.67578125), "-1721992492.6757813"],
  [f64(0.30000000000000004), "0.30000000000000004"],
  [f64(1e-4), "0.0001"],
  [f64(9.999999999999999e-5), "9.999999999999999e-5"],
  [f64(1e-5), "1e-5"],
  [f64(-1.25e-7), "-1.25e-7"],
  [f64(9999999999999998), "9999999999999998.0"],
  [f64(1e16), "1e16"],
  [f64(1.5e16), "1.5e16"],
  [f64(123456.789), "123456.789"],
  [f64(5e-324), "5e-324"],
  [f64(1.7976931348623157e308), "1.7976931348623157e308"],
  [f64(0), "0.0"],
  [f64(-0), "-0.0"],
  [f64(2 ** 53), "9007199254740992.0"],
  [f32(0.1), "0.1"],
  [f32(1e-5), "1e-5"],
  [f32(16777216), "16777216.0"],
  [f32(3.4028234663852886e38), "3.4028235e38"],
  [f32(1.401298464324817e-45), "1e-45"],
  [bytes("cf ffffffffffffffff"), "18446744073709551615"],
  [bytes("cf 0020000000000001"), "9007199254740993"],
  [bytes("d3 8000000000000000"), "-9223372036854775808"],
  [bytes("d0 80"), "-128"],
  [bytes("e0"), "-32"],
  [bytes("cd 0100"), "256"],
  [str("\u0000\u001f\"\\/\u007f\u2028é😀\n\r\t\b\f"), '"\\u0000\\u001f\\"\\\\/\u007f\u2028é😀\\n\\r\\t\\u0008\\u000c"'],
  [str("short", 0xda), '"short"'],
  [map([["b", bytes("01")], ["2", bytes("02")], ["1", bytes("03")], ["__proto__", bytes("c0")]]), '{"b":1,"2":2,"1":3,"__proto__":null}'],
  [bytes("dc 0002 c3 c2"), "[true,false]"],
  [bytes("de 0001 a1 61 90"), '{"a":[]}'],
];

/** A small deterministic generator, so a failure replays (ROOMCAST_SEED). */
function rng(seed) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
}

const CHARS = ["a", "Z", " ", "\u0000", "\u0008", "\u001f", '"', "\\", "/", "\u007f", "é", "東", "😀", "\u2028", "\n", "\t"];
const KEYS = ["a", "b", "0", "1", "2", "10", "-1", "01", "__proto__", "é", "x y"];

/** A random MessagePack value, in any form the specification allows for it. */
function randomValue(random, depth = 0) {
  const int = (n) => Math.floor(random() * n);
  const bits = (n) => Array.from({ length: n }, () => int(256));
  const finite = (make) => {
    for (;;) {
      const b = make();
      if (Number.isFinite(decodeMsgpack(b))) return b;
    }
  };
  const kinds = [
    () => bytes(["c0", "c2", "c3"][int(3)]),
    () => Uint8Array.of(random() < 0.5 ? int(0x80) : 0xe0 + int(32)),
    () => {
      const tag = [0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3][int(8)];
      const width = 2 ** ((tag - 0xcc) % 4);
      return concat([tag], bits(width));
    },
    () => finite(() => concat([0xcb], bits(8))),
    () => finite(() => concat([0xca], bits(4))),
    () => f64((int(2000000) - 1000000) / [1, 10, 100, 1000, 1e6][int(5)]),
    () => f64((random() - 0.5) * 10 ** (int(40) - 20)),
    // Binary fractions: exactly halfway between two shortest candidates at times.
    () => f64(((random() < 0.5 ? -1 : 1) * (int(2 ** 26) * 2 ** 26 + int(2 ** 26))) / 2 ** int(30)),
    () => TABLE[int(TABLE.length)][0],
    () => str(Array.from({ length: int(40) }, () => CHARS[int(CHARS.length)]).join(""), [0xa0, 0xd9, 0xda, 0xdb][int(4)]),
  ];
  if (depth < 3) {
    kinds.push(() => {
      const n = int(5);
      return concat([0x90 | n], ...Array.from({ length: n }, () => randomValue(random, depth + 1)));
    });
    kinds.push(() => {
      const keys = [...new Set(Array.from({ length: int(5) }, () => KEYS[int(KEYS.length)]))];
      return map(keys.map((k) => [k, randomValue(random, depth + 1)]));
    });
  }
  return kinds[int(kinds.length)]();
}

/** `data` texts of ticks: canonical, or not (spaces, `1.50`, `\u00e9`). */
function tickText(n, canonical) {
  const book = Array.from({ length: 16 }, (_, i) => `{"px":${100 + i}.0,"qty":${i * n}}`).join(",");
  const tail = `"desk":"Zürich – 東京","2":"integer-like key after a string one","big":9007199254740993,"tiny":1e-7,"book":[${book}]`;
  return canonical
    ? `{"symbol":"ACME","bid":${100 + n}.5,${tail}}`
    : `{ "symbol": "\\u00e9CME", "bid": ${100 + n}.50, ${tail}}`;
}

const FEEDS = {
  canonical: (n) => tickText(n, true),
  spaced: (n) => tickText(n, false),
  mixed: (n) => tickText(n, n % 2 === 1),
};

if (process.env.ROOMCAST_CLIENT_URL) await client(process.env.ROOMCAST_CLIENT_URL, JSON.parse(process.env.ROOMCAST_TOKENS));
else {
  test("msgpackToJson writes floats, integers, strings and key orders as the server does", () => {
    for (const [packed, text] of TABLE) assert.equal(msgpackToJson(packed), text, Buffer.from(packed).toString("hex"));
    assert.throws(() => msgpackToJson(f64(NaN)), { code: "INVALID_MSGPACK" });
    assert.throws(() => msgpackToJson(bytes("81 01 c0")), { code: "INVALID_MSGPACK" });
    assert.throws(() => msgpackToJson(bytes("c4 01 01")), { code: "INVALID_MSGPACK" });
  });

  test("msgpackToJson is the server's conversion; MessagePack delta members rebuild every feed", { timeout: BOUND_MS + 5000 }, async () => {
    assert.ok(existsSync(BIN), `no roomcast binary at ${BIN}: run cargo build (or set ROOMCAST_BIN)`);
    const report = await withServer(BIN, SECRET, (addr) => {
      const tokens = Object.fromEntries(["packed", "json", "feeder"].map((sub) => [sub, mintPublisher(BIN, SECRET, sub)]));
      return childReport(HERE, { ROOMCAST_CLIENT_URL: `ws://${addr}/ws`, ROOMCAST_TOKENS: JSON.stringify(tokens) });
    });
    const each = (pattern) => Array.from({ length: TICKS }, (_, i) => pattern(i + 1));
    assert.deepEqual(report, [
      { step: "oracle", seed: SEED, compared: RANDOM_VALUES + TABLE.length, mismatches: [] },
      // The first event after a join is whole; then deltas, from a canonical base only.
      { step: "canonical", same: true, errors: 0, packed: each((n) => n > 1), json: each((n) => n > 1) },
      { step: "spaced", same: true, errors: 0, packed: each(() => false), json: each((n) => n > 1) },
      { step: "mixed", same: true, errors: 0, packed: each((n) => n > 1 && n % 2 === 0), json: each((n) => n > 1) },
    ]);
  });
}

/** Records, for each `event` a client is sent, its raw payload. */
function tap(client, event) {
  const payloads = [];
  const onMessage = client.onMessage.bind(client);
  client.onMessage = (payload) => {
    const message = typeof payload === "string" ? JSON.parse(payload) : decodeMsgpack(payload);
    if (message.event === event) payloads.push({ room: message.room, payload, delta: typeof message.delta === "string" });
    onMessage(payload);
  };
  return payloads;
}

/** Each event of `room` as the application sees it, with the base text kept after it. */
function watch(room) {
  const seen = [];
  room.on("*", (message) => seen.push({ data: message.data, text: room.lastData }));
  return seen;
}

/** The child: the clients' side, each step a JSON line on stdout. */
async function client(url, tokens) {
  const say = (step) => process.stdout.write(`${JSON.stringify(step)}\n`);
  const bound = setTimeout(() => process.exit(2), BOUND_MS);
  const options = { WebSocket: globalThis.WebSocket, reconnect: { base: 50, cap: 200 } };
  const packed = connect(url, { ...options, token: tokens.packed, protocol: "msgpack" });
  const json = connect(url, { ...options, token: tokens.json });
  const feeder = connect(url, { ...options, token: tokens.feeder });
  let errors = 0;
  packed.on("error", () => errors++);
  const packedWire = tap(packed, "feed:tick");
  const jsonWire = tap(json, "value:sent");

  // The oracle: the `data` text the server writes of each value a
  // MessagePack member publishes, as a JSON member reads it.
  await packed.room("o").join();
  await json.room("o").join();
  const random = rng(SEED);
  const values = [...TABLE.map(([b]) => b), ...Array.from({ length: RANDOM_VALUES }, () => randomValue(random))];
  const arrived = new Promise((resolve) => {
    const check = setInterval(() => jsonWire.length === values.length && (clearInterval(check), resolve()), 10);
  });
  for (const value of values) {
    packed.ws.send(concat([0x83], str("event"), str("value:sent"), str("room"), str("o"), str("data"), value));
  }
  await arrived;
  const mismatches = [];
  values.forEach((value, i) => {
    const server = dataText(jsonWire[i].payload);
    const mine = msgpackToJson(value);
    if (server !== mine) mismatches.push({ hex: Buffer.from(value).toString("hex"), server, mine });
  });
  say({ step: "oracle", seed: SEED, compared: values.length, mismatches: mismatches.slice(0, 5) });

  for (const [feed, text] of Object.entries(FEEDS)) {
    const [a, b] = [packed.room(feed), json.room(feed)];
    await a.join({ delta: true });
    await b.join({ delta: true });
    await feeder.room(feed).join();
    const [packedSeen, jsonSeen] = [watch(a), watch(b)];
    const [packedAll, jsonAll] = [collect(a, TICKS), collect(b, TICKS)];
    const jsonFeed = tap(json, "feed:tick");
    for (let n = 1; n <= TICKS; n++) {
      feeder.ws.send(`{"event":"feed:tick","room":"${feed}","data":${text(n)}}`);
    }
    await Promise.all([packedAll, jsonAll]);
    const packedDeltas = packedWire.filter((m) => m.room === feed).map((m) => m.delta);
    const jsonDeltas = jsonFeed.filter((m) => m.room === feed).map((m) => m.delta);
    // Where the MessagePack member took a delta, it rebuilt the very text
    // the JSON member was given; everywhere, the same value.
    const same = packedSeen.every(
      (m, i) => JSON.stringify(m.data) === JSON.stringify(jsonSeen[i].data) && (!packedDeltas[i] || m.text === jsonSeen[i].text),
    );
    say({ step: feed, same, errors, packed: packedDeltas, json: jsonDeltas });
  }
  for (const c of [packed, json, feeder]) c.close();
  clearTimeout(bound);
}
