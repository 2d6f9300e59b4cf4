// The client under Node against the real roomcast binary, on a free loopback
// port, through a WebSocket constructor given as `connect(url, { WebSocket })`:
// join, publish and receive (a volatile event too); an expired token (4002) and a fresh one from
// getToken; the server's shutdown (SIGTERM: 1001) followed by a reconnect
// attempt. The binary is ROOMCAST_BIN, else target/debug/roomcast (run
// `cargo build` first).
//
// The client runs in a child node process: Node 20 has a global WebSocket only
// with --experimental-websocket (Node 22 always), and the child takes it off
// the global object, so only the constructor passed as an option can work.
// The parent starts the server and the child, each stopped by its PID.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import readline from "node:readline";

import { connect } from "../roomcast.js";
import { BOUND_MS, firstLine, next } from "./harness.js";

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), "../../..");
const BIN = process.env.ROOMCAST_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/roomcast");
const SECRET = "node-client-test-secret";

if (process.env.ROOMCAST_CLIENT_URL) await client(process.env.ROOMCAST_CLIENT_URL, JSON.parse(process.env.ROOMCAST_TOKENS));
else {
  test("the client under Node with a given WebSocket: events, 4002 with a fresh token, 1001 on shutdown", { timeout: BOUND_MS + 5000 }, async () => {
    assert.ok(existsSync(BIN), `no roomcast binary at ${BIN}: run cargo build (or set ROOMCAST_BIN)`);
    const server = spawn(BIN, ["serve", "--bind", "127.0.0.1:0", "--jwt-secret", SECRET, "--ping-interval", "1s"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let child;
    try {
      const addr = await firstLine(server, /^roomcast listening on (\S+)/);
      const tokens = { short: mint("rx", 2), long: mint("rx", 3600), tx: mint("tx", 3600, ["--pub", "live"]) };
      const flags = globalThis.WebSocket ? [] : ["--experimental-websocket"];
      child = spawn(process.execPath, [...flags, HERE], {
        stdio: ["ignore", "pipe", "inherit"],
        env: { ...process.env, ROOMCAST_CLIENT_URL: `ws://${addr}/ws`, ROOMCAST_TOKENS: JSON.stringify(tokens) },
      });
      const steps = readline.createInterface({ input: child.stdout });
      const report = [];
      for await (const line of steps) {
        const step = JSON.parse(line);
        report.push(step);
        if (step.step === "ready") server.kill("SIGTERM");
        if (step.step === "done") break;
      }
      assert.deepEqual(report, [
        { step: "no global WebSocket", code: "NO_WEBSOCKET" },
        { step: "received", data: { text: "hi" }, seq: 1, from: "tx" },
        { step: "volatile", data: { on: true }, keys: ["event", "room", "data", "from", "ts"] },
        { step: "volatile acked", acked: true },
        { step: "closed", info: { code: 4002, reason: "token expired", reconnect: true } },
        { step: "received", data: { text: "again" }, seq: 2, from: "tx" },
        { step: "ready" },
        { step: "closed", info: { code: 1001, reason: "server shutting down", reconnect: true } },
        { step: "reconnecting", attempt: 1 },
        { step: "done" },
      ]);
    } finally {
      if (child && child.exitCode === null) child.kill("SIGKILL");
      if (server.exitCode === null) server.kill("SIGKILL");
    }
  });
}

/** A token from the binary's own `roomcast token`. */
function mint(sub, ttl, extra = []) {
  const args = ["token", "--secret", SECRET, "--sub", sub, "--rooms", "*", "--ttl", `${ttl}`, ...extra];
  return execFileSync(BIN, args, { encoding: "utf8" }).trim();
}

/** The child: the client's side, each step a JSON line on stdout. */
async function client(url, tokens) {
  const say = (step) => process.stdout.write(`${JSON.stringify(step)}\n`);
  const bound = setTimeout(() => process.exit(2), BOUND_MS);
  const WebSocket = globalThis.WebSocket;
  delete globalThis.WebSocket;
  try {
    connect(url, { token: tokens.long });
  } catch (e) {
    say({ step: "no global WebSocket", code: e.code });
  }
  const options = { WebSocket, reconnect: { base: 50, cap: 200 } };
  const fresh = [tokens.short, tokens.long];
  // The first token lasts 2 s and is not refreshed: the server closes with 4002.
  const rx = connect(url, { ...options, getToken: () => fresh.shift() || tokens.long, refreshBefore: -60000 });
  const tx = connect(url, { ...options, token: tokens.tx });
  const received = () =>
    next(rx.room("live"), "chat:msg").then(([data, message]) => say({ step: "received", data, seq: message.seq, from: message.from }));
  const closed = () => next(rx, "close").then(([, , info]) => say({ step: "closed", info }));

  await rx.room("live").join();
  let heard = received();
  await tx.room("live").publish("chat:msg", { text: "hi" });
  await heard;
  // A volatile event: no seq, acked without one, and the next message's seq is 2.
  const typed = next(rx.room("live"), "typing:start").then(([data, message]) =>
    say({ step: "volatile", data, seq: message.seq, keys: Object.keys(message) }),
  );
  const acked = await tx.room("live").publish("typing:start", { on: true }, { volatile: true });
  await typed;
  say({ step: "volatile acked", acked: acked === undefined });
  const reopened = next(rx, "open");
  await closed();
  await reopened;
  heard = received();
  await tx.room("live").publish("chat:msg", { text: "again" });
  await heard;
  const retried = next(rx, "reconnecting").then(([attempt]) => say({ step: "reconnecting", attempt }));
  const shutdown = closed();
  say({ step: "ready" });
  await shutdown;
  await retried;
  say({ step: "done" });
  rx.close();
  tx.close();
  clearTimeout(bound);
}
