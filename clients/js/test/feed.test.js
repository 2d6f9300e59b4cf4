// `room.join({ maxRate })` (section 14) against the real roomcast binary: a
// member at 2 events a second gets a burst of 40 conflated to a few, in
// seq order, the burst's last event among them; a plain member gets all;
// an out-of-range rate is refused with VALIDATION_ERROR and the rate the
// room was joined with stays the one rejoins ask for. The client runs in a
// child process, as in server.test.js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { connect } from "../roomcast.js";
import { BOUND_MS, childReport, firstLine } from "./harness.js";

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), "../../..");
const BIN = process.env.ROOMCAST_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/roomcast");
const SECRET = "node-feed-test-secret";
const BURST = 40;

if (process.env.ROOMCAST_CLIENT_URL) await client(process.env.ROOMCAST_CLIENT_URL, JSON.parse(process.env.ROOMCAST_TOKENS));
else {
  test("join({ maxRate }) conflates a burst to the newest events; a bad rate is VALIDATION_ERROR", { timeout: BOUND_MS + 5000 }, async () => {
    assert.ok(existsSync(BIN), `no roomcast binary at ${BIN}: run cargo build (or set ROOMCAST_BIN)`);
    const server = spawn(BIN, ["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET], { stdio: ["ignore", "pipe", "pipe"] });
    try {
      const addr = await firstLine(server, /^roomcast listening on (\S+)/);
      const tokens = { paced: mint("paced"), plain: mint("plain"), tx: mint("tx", ["--pub", "feed"]) };
      const report = await childReport(HERE, { ROOMCAST_CLIENT_URL: `ws://${addr}/ws`, ROOMCAST_TOKENS: JSON.stringify(tokens) });
      assert.deepEqual(report, [
        { step: "refused", code: "VALIDATION_ERROR", kept: { maxRate: 2 } },
        { step: "plain", count: BURST + 1 },
        { step: "paced", fewer: true, increasing: true, last: "feed:end" },
      ]);
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

/** Every `feed:*` event of `room` until `feed:end`. */
function collect(room) {
  return new Promise((resolve) => {
    const got = [];
    const off = room.on("*", (message) => {
      got.push(message);
      if (message.event === "feed:end") {
        off();
        resolve(got);
      }
    });
  });
}

/** The child: the client's side, each step a JSON line on stdout. */
async function client(url, tokens) {
  const say = (step) => process.stdout.write(`${JSON.stringify(step)}\n`);
  const bound = setTimeout(() => process.exit(2), BOUND_MS);
  const options = { WebSocket: globalThis.WebSocket, reconnect: { base: 50, cap: 200 } };
  const paced = connect(url, { ...options, token: tokens.paced });
  const plain = connect(url, { ...options, token: tokens.plain });
  const tx = connect(url, { ...options, token: tokens.tx });
  const feed = paced.room("feed");
  await feed.join({ maxRate: 2 });
  try {
    await feed.join({ maxRate: 5000 });
  } catch (e) {
    say({ step: "refused", code: e.code, kept: feed.joinOptions });
  }
  await plain.room("feed").join();
  const pacedGot = collect(feed);
  const plainGot = collect(plain.room("feed"));
  const sends = [];
  for (let i = 1; i <= BURST; i++) sends.push(tx.room("feed").publish("feed:tick", { i }));
  sends.push(tx.room("feed").publish("feed:end", {}));
  await Promise.all(sends);
  say({ step: "plain", count: (await plainGot).length });
  const got = await pacedGot;
  say({
    step: "paced",
    fewer: got.length < BURST / 2,
    increasing: got.every((m, i) => i === 0 || m.seq > got[i - 1].seq),
    last: got[got.length - 1].event,
  });
  for (const c of [paced, plain, tx]) c.close();
  clearTimeout(bound);
}
