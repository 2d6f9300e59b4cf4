// `connect(url, { protocol: "msgpack" })` (section 14, `roomcast.msgpack`):
// the client's MessagePack codec on bytes written by hand from the
// specification, and against the real roomcast binary a MessagePack client
// and a JSON client in one room seeing the same events both ways, acks and
// errors decoded, and the keep-alive (a `ping` event, not the bare text,
// which would close a MessagePack connection with 1003) keeping a silent
// connection open, and a MessagePack member joined with `delta` rebuilding
// the `data` a plain member sees from deltas on the wire. The clients run in
// a child process, as in server.test.js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { connect, decodeMsgpack, encodeMsgpack } from "../roomcast.js";
import { BOUND_MS, childReport, collect, firstLine, mintPublisher } from "./harness.js";

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), "../../..");
const BIN = process.env.ROOMCAST_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/roomcast");
const SECRET = "node-msgpack-test-secret";
const DATA = { text: "héllo 😀", price: 67001.25, n: -40000, big: 2 ** 40, none: null, nested: [[{ ok: true }]] };

const TICKS = 8;
/** A tick JSON.stringify writes as the server does: compact, non-ASCII. */
const tick = (n) => ({ symbol: "ACME", bid: 100 + n + 0.25, desk: "Zürich – 東京 ✓", book: Array.from({ length: 20 }, (_, i) => i * n), n });

const hex = (bytes) => Buffer.from(bytes).toString("hex");

if (process.env.ROOMCAST_CLIENT_URL) await client(process.env.ROOMCAST_CLIENT_URL, JSON.parse(process.env.ROOMCAST_TOKENS));
else {
  test("MessagePack written as the specification says, smallest forms", () => {
    assert.equal(hex(encodeMsgpack({ a: [1, -1, -33, 256] })), "81a16194" + "01" + "ff" + "d0df" + "cd0100");
    assert.equal(hex(encodeMsgpack(null)), "c0");
    assert.equal(hex(encodeMsgpack([true, false])), "92c3c2");
    assert.equal(hex(encodeMsgpack(1.5)), "cb3ff8000000000000");
    assert.equal(hex(encodeMsgpack(2 ** 32)), "cf0000000100000000");
    assert.equal(hex(encodeMsgpack(-(2 ** 40))), "d3ffffff0000000000");
    assert.equal(hex(encodeMsgpack("é")), "a2c3a9");
    assert.equal(hex(encodeMsgpack("x".repeat(32))).slice(0, 4), "d920");
    assert.equal(hex(encodeMsgpack({ skip: undefined, f() {} })), "80", "left out as JSON.stringify does");
    assert.equal(hex(encodeMsgpack([NaN, undefined])), "92c0c0", "null as JSON.stringify writes");
  });

  test("MessagePack read as JSON.parse would read the same JSON; what JSON cannot say refused", () => {
    const bytes = (h) => Uint8Array.from(Buffer.from(h, "hex"));
    assert.deepEqual(decodeMsgpack(bytes("82a16101a162ca3dcccccd")), { a: 1, b: Math.fround(0.1) });
    assert.equal(decodeMsgpack(bytes("cfffffffffffffffff")), 2 ** 64);
    assert.equal(decodeMsgpack(bytes("d3ffffffffffffffff")), -1);
    assert.deepEqual(decodeMsgpack(bytes("81a95f5f70726f746f5f5f01")), JSON.parse('{"__proto__":1}'));
    for (const bad of ["c40101", "d40100", "8101c0", "92c0", "a1ff", "c0c0", "c1", ""]) {
      assert.throws(() => decodeMsgpack(bytes(bad)), { code: "INVALID_MSGPACK" }, bad);
    }
    const values = [DATA, [], {}, "", 0, -0.5, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, "x".repeat(70000)];
    for (const value of values) {
      const encoded = encodeMsgpack(value);
      assert.deepEqual(decodeMsgpack(encoded.buffer), JSON.parse(JSON.stringify(value)));
    }
  });

  test("a MessagePack and a JSON client see the same room events; the keep-alive holds", { timeout: BOUND_MS + 5000 }, async () => {
    assert.ok(existsSync(BIN), `no roomcast binary at ${BIN}: run cargo build (or set ROOMCAST_BIN)`);
    const server = spawn(BIN, ["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      const addr = await firstLine(server, /^roomcast listening on (\S+)/);
      const tokens = { packed: mintPublisher(BIN, SECRET, "packed"), json: mintPublisher(BIN, SECRET, "json") };
      const report = await childReport(HERE, { ROOMCAST_CLIENT_URL: `ws://${addr}/ws`, ROOMCAST_TOKENS: JSON.stringify(tokens) });
      assert.deepEqual(report, [
        { step: "protocol", protocol: "roomcast.msgpack", packed: true },
        { step: "json got", data: DATA, from: "packed", seq: 1 },
        { step: "packed got", data: DATA, from: "json", seq: 2 },
        { step: "refused", code: "VALIDATION_ERROR" },
        { step: "silent", closes: 0, rtt: true },
        { step: "deltas", same: true, whole: 1, deltas: TICKS - 1, errors: 0 },
      ]);
    } finally {
      if (server.exitCode === null) server.kill("SIGKILL");
    }
  });
}

function nextEvent(room, event) {
  return new Promise((resolve) => {
    const off = room.on(event, (data, message) => {
      off();
      resolve(message);
    });
  });
}

/** The child: the clients' side, each step a JSON line on stdout. */
async function client(url, tokens) {
  const say = (step) => process.stdout.write(`${JSON.stringify(step)}\n`);
  const bound = setTimeout(() => process.exit(2), BOUND_MS);
  const options = { WebSocket: globalThis.WebSocket, reconnect: { base: 50, cap: 200 } };
  // A short ping interval: the keep-alive goes out within the test.
  const packed = connect(url, { ...options, token: tokens.packed, protocol: "msgpack", pingInterval: 300, pongTimeout: 500 });
  const json = connect(url, { ...options, token: tokens.json });
  let closes = 0;
  packed.on("close", () => (closes += 1));
  await packed.room("r").join();
  await json.room("r").join();
  say({ step: "protocol", protocol: packed.ws.protocol, packed: packed.packed });

  const jsonGot = nextEvent(json.room("r"), "feed:tick");
  await packed.room("r").publish("feed:tick", DATA);
  const seen = await jsonGot;
  say({ step: "json got", data: seen.data, from: seen.from, seq: seen.seq });

  const packedGot = nextEvent(packed.room("r"), "feed:tock");
  await json.room("r").publish("feed:tock", DATA);
  const got = await packedGot;
  say({ step: "packed got", data: got.data, from: got.from, seq: got.seq });

  try {
    await packed.room("R O O M").join();
  } catch (e) {
    say({ step: "refused", code: e.code });
  }

  // Silent well past pingInterval + pongTimeout: only the keep-alive holds it.
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const rtt = await packed.ping();
  say({ step: "silent", closes, rtt: rtt >= 0 });

  // What came on the wire for the MessagePack member, before it was read.
  const wire = [];
  const onMessage = packed.onMessage.bind(packed);
  packed.onMessage = (payload) => {
    if (typeof payload !== "string") wire.push(decodeMsgpack(payload));
    onMessage(payload);
  };
  let errors = 0;
  packed.on("error", () => errors++);
  await packed.room("d").join({ delta: true });
  await json.room("d").join();
  const [packedTicks, jsonTicks] = [collect(packed.room("d"), TICKS), collect(json.room("d"), TICKS)];
  for (let n = 1; n <= TICKS; n++) await json.room("d").publish("feed:tick", tick(n), { echo: true });
  const [a, b] = [await packedTicks, await jsonTicks];
  const same = a.every((m, i) => JSON.stringify(m.data) === JSON.stringify(b[i].data) && m.seq === b[i].seq && !("delta" in m));
  const ticks = wire.filter((m) => m.event === "feed:tick");
  const deltas = ticks.filter((m) => typeof m.delta === "string").length;
  say({ step: "deltas", same, whole: ticks.length - deltas, deltas, errors });
  for (const c of [packed, json]) c.close();
  clearTimeout(bound);
}
