// `room.join({ delta: true })` (section 14). Against the real roomcast
// binary: a delta member's application sees, event by event, exactly the
// `data` a plain member sees, over random JSON pairs with non-ASCII text,
// while most events came as deltas on the wire; each delta the server sent
// also applies with the npm package `fossil-delta` (an independent Fossil
// implementation, pinned by scripts/setup.sh, path in FOSSIL_DELTA) to the
// same text. Without the binary: `fossilApply` against deltas that package
// writes, and refusals of broken deltas. The client runs in a child process,
// as in server.test.js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { connect, fossilApply, dataText, Client } from "../roomcast.js";
import { BOUND_MS, childReport, collect, firstLine } from "./harness.js";

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), "../../..");
const BIN = process.env.ROOMCAST_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/roomcast");
const ORACLE = process.env.FOSSIL_DELTA || path.join(ROOT, "target/node-oracles/node_modules/fossil-delta/fossil-delta.js");
const SECRET = "node-delta-test-secret";
const EVENTS = 60;
const utf8 = new TextEncoder();

/** A small deterministic generator, so a failure replays. */
function rng(seed) {
  return () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed / 2147483648;
  };
}

/** A random JSON value of about a kilobyte whose fields change a little from `n` to `n + 1`. */
function tick(random, n) {
  const words = ["price", "größe", "東京", "€", "ok", "naïve", "😀", "level", "x"];
  const pick = () => words[Math.floor(random() * words.length)];
  const book = Array.from({ length: 12 }, (_, i) => ({ px: 100 + i + (random() < 0.2 ? random() : 0), qty: Math.floor(random() * 4) * 10, tag: pick() }));
  return { symbol: "ACME", n, bid: 100 + random(), note: `${pick()} ${pick()}`, book, flags: { open: random() < 0.9, venue: pick() } };
}

function pick(random) {
  return ["a", "é", "東"][Math.floor(random() * 3)];
}

if (process.env.ROOMCAST_CLIENT_URL) await client(process.env.ROOMCAST_CLIENT_URL, JSON.parse(process.env.ROOMCAST_TOKENS));
else {
  test("fossilApply rebuilds what fossil-delta writes and refuses broken deltas", { skip: !existsSync(ORACLE) && `no fossil-delta at ${ORACLE} (scripts/setup.sh)` }, async () => {
    const oracle = await import(ORACLE);
    const random = rng(7);
    let a = JSON.stringify(tick(random, 0));
    for (let i = 1; i <= 200; i++) {
      const b = JSON.stringify(i % 17 === 0 ? { other: pick(random) } : tick(random, i));
      const source = utf8.encode(a);
      const target = utf8.encode(b);
      const delta = oracle.createDelta(source, target);
      assert.deepEqual(fossilApply(source, delta), target, `pair ${i}`);
      a = b;
    }
    const source = utf8.encode("0123456789abcdefghij");
    const good = oracle.createDelta(source, utf8.encode("0123456789abcdefghij!"));
    assert.deepEqual(fossilApply(source, good), utf8.encode("0123456789abcdefghij!"));
    const broken = good.slice();
    broken[broken.length - 2] ^= 1;
    assert.throws(() => fossilApply(source, broken), (e) => e.code === "DELTA");
    assert.throws(() => fossilApply(source, utf8.encode("5\n9@0,")), (e) => e.code === "DELTA");
    assert.throws(() => fossilApply(new Uint8Array(0), utf8.encode("3\n3@0,0;")), (e) => e.code === "DELTA");
    assert.equal(dataText('{"event":"e","data":{"a":"}\\"","b":[1,{}]},"from":"u"}'), '{"a":"}\\"","b":[1,{}]}');
  });

  test("join({ delta: true }) gives the application what a plain member gets, mostly as deltas", { timeout: BOUND_MS + 5000 }, async () => {
    assert.ok(existsSync(BIN), `no roomcast binary at ${BIN}: run cargo build (or set ROOMCAST_BIN)`);
    const server = spawn(BIN, ["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET, "--shards", "2"], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      const addr = await firstLine(server, /^roomcast listening on (\S+)/);
      const tokens = { delta: mint("delta"), plain: mint("plain"), tx: mint("tx", ["--pub", "feed"]) };
      const report = await childReport(HERE, {
        ROOMCAST_CLIENT_URL: `ws://${addr}/ws`,
        ROOMCAST_TOKENS: JSON.stringify(tokens),
        FOSSIL_DELTA: existsSync(ORACLE) ? ORACLE : "",
      });
      const [result] = report;
      assert.equal(result.count, EVENTS);
      assert.equal(result.same, true, "the delta member's data equals the plain member's, event by event");
      assert.ok(result.deltas >= EVENTS - 5, `deltas on the wire: ${result.deltas}`);
      assert.equal(result.firstWhole, true);
      assert.equal(result.errors, 0);
      if (existsSync(ORACLE)) assert.equal(result.oracleAgrees, result.deltas, "fossil-delta applies every delta the same");
    } finally {
      if (server.exitCode === null) server.kill("SIGKILL");
    }
  });
}

/** A token from the binary's own `roomcast token`, unlimited in rate. */
function mint(sub, extra = []) {
  const args = ["token", "--secret", SECRET, "--sub", sub, "--rooms", "*", "--ttl", "3600", "--rate", "0", ...extra];
  return execFileSync(BIN, args, { encoding: "utf8" }).trim();
}

/** The child: the client's side; one JSON line on stdout. */
async function client(url, tokens) {
  const bound = setTimeout(() => process.exit(2), BOUND_MS);
  const oracle = process.env.FOSSIL_DELTA ? await import(process.env.FOSSIL_DELTA) : null;
  // What came on the wire for the delta member, before the client read it.
  const wire = [];
  const onMessage = Client.prototype.onMessage;
  Client.prototype.onMessage = function (text) {
    if (this === deltaClient && text.includes('"event":"feed:tick"')) wire.push(text);
    return onMessage.call(this, text);
  };
  const options = { WebSocket: globalThis.WebSocket, reconnect: { base: 50, cap: 200 } };
  const deltaClient = connect(url, { ...options, token: tokens.delta });
  const plain = connect(url, { ...options, token: tokens.plain });
  const tx = connect(url, { ...options, token: tokens.tx });
  let errors = 0;
  deltaClient.on("error", () => errors++);
  await deltaClient.room("feed").join({ delta: true });
  await plain.room("feed").join();
  const deltaGot = collect(deltaClient.room("feed"), EVENTS);
  const plainGot = collect(plain.room("feed"), EVENTS);
  const random = rng(42);
  for (let i = 1; i <= EVENTS; i++) await tx.room("feed").publish("feed:tick", tick(random, i));
  const [a, b] = [await deltaGot, await plainGot];
  const same = a.every((m, i) => JSON.stringify(m.data) === JSON.stringify(b[i].data) && m.seq === b[i].seq && !("delta" in m));
  let deltas = 0;
  let oracleAgrees = 0;
  let previous = null;
  for (const text of wire) {
    const message = JSON.parse(text);
    if (typeof message.delta === "string") {
      deltas++;
      if (oracle && previous !== null) {
        const rebuilt = new TextDecoder().decode(oracle.applyDelta(utf8.encode(previous), utf8.encode(message.delta)));
        if (JSON.stringify(JSON.parse(rebuilt)) === JSON.stringify(b[wire.indexOf(text)].data)) oracleAgrees++;
        previous = rebuilt;
      }
    } else {
      previous = dataText(text);
    }
  }
  const firstWhole = !("delta" in JSON.parse(wire[0]));
  process.stdout.write(`${JSON.stringify({ count: a.length, same, deltas, firstWhole, errors, oracleAgrees })}\n`);
  for (const c of [deltaClient, plain, tx]) c.close();
  clearTimeout(bound);
}
