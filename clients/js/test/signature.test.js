// The Node signature check of docs/hooks.md, taken from the page as it
// stands, run as the rpc backend (section 13.2) of the real roomcast binary:
// a request roomcast signed with the backend's secret is accepted (the
// client's rpc resolves with the backend's result), one from a server
// signing with another secret is refused (the client gets UNAVAILABLE), and
// copies of roomcast's own request with the body, the timestamp or the
// signature changed are refused, as is its timestamp seen from over five
// minutes away. The client runs in a child process, as in server.test.js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { createServer } from "node:http";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { connect } from "../roomcast.js";
import { BOUND_MS, childReport, firstLine } from "./harness.js";

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), "../../..");
const BIN = process.env.ROOMCAST_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/roomcast");
const JWT_SECRET = "node-signature-jwt-secret";
const HOOK_SECRET = "node-signature-hook-secret";
const FIVE_MINUTES = 5 * 60 * 1000;

if (process.env.ROOMCAST_CLIENT_URLS) await client(JSON.parse(process.env.ROOMCAST_CLIENT_URLS), process.env.ROOMCAST_TOKEN);
else {
  test("the Node signature check of docs/hooks.md accepts roomcast's requests and refuses tampered ones", { timeout: BOUND_MS + 5000 }, async () => {
    assert.ok(existsSync(BIN), `no roomcast binary at ${BIN}: run cargo build (or set ROOMCAST_BIN)`);
    const verify = await snippet();
    const backend = await startBackend(verify);
    const rpc = `http://127.0.0.1:${backend.address().port}/rpc`;
    const servers = [];
    try {
      const start = async (hookSecret) => {
        const args = ["serve", "--bind", "127.0.0.1:0", "--jwt-secret", JWT_SECRET, "--rpc-proxy", rpc, "--hook-secret", hookSecret];
        const server = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
        servers.push(server);
        return `ws://${await firstLine(server, /^roomcast listening on (\S+)/)}/ws`;
      };
      const urls = { signed: await start(HOOK_SECRET), other: await start("another-secret") };
      const token = execFileSync(BIN, ["token", "--secret", JWT_SECRET, "--sub", "node-alice", "--ttl", "600"], { encoding: "utf8" }).trim();
      const report = await childReport(HERE, { ROOMCAST_CLIENT_URLS: JSON.stringify(urls), ROOMCAST_TOKEN: token });
      assert.deepEqual(report, [
        { step: "accepted", result: { user: "node-alice", data: { text: "héllo ✓", n: [1, 2.5] } } },
        { step: "refused", code: "UNAVAILABLE" },
      ]);
      assert.deepEqual(
        backend.seen.map((r) => r.accepted),
        [true, false],
        "the request signed with the backend's secret passes, the other's does not",
      );

      // roomcast's own request, sent again as it was and with one part changed.
      const { headers, body } = backend.seen[0];
      const timestamp = headers["x-roomcast-timestamp"];
      const signature = headers["x-roomcast-signature"];
      assert.match(timestamp, /^[0-9]{13}$/);
      assert.match(signature, /^sha256=[0-9a-f]{64}$/);
      const flipped = signature.slice(0, -1) + (signature.endsWith("0") ? "1" : "0");
      const tampered = Buffer.from(body.toString("utf8").replace("node-alice", "node-mallo"));
      assert.notDeepEqual(tampered, body);
      const replay = async (ts, sig, text) => {
        const sent = { "Content-Type": "application/json" };
        if (ts !== undefined) sent["X-Roomcast-Timestamp"] = ts;
        if (sig !== undefined) sent["X-Roomcast-Signature"] = sig;
        return (await fetch(rpc, { method: "POST", headers: sent, body: text })).status;
      };
      assert.equal(await replay(timestamp, signature, body), 200, "the request as roomcast sent it");
      assert.equal(await replay(timestamp, signature, tampered), 401, "another body");
      assert.equal(await replay(String(Number(timestamp) + 1), signature, body), 401, "another timestamp");
      assert.equal(await replay(timestamp, flipped, body), 401, "another signature");
      assert.equal(await replay(timestamp, signature.slice("sha256=".length), body), 401, "no sha256= prefix");
      assert.equal(await replay(timestamp, signature.slice(0, -2), body), 401, "a signature cut short");
      assert.equal(await replay(undefined, signature, body), 401, "no timestamp");
      assert.equal(await replay(timestamp, undefined, body), 401, "no signature");

      // The same request seen from later (or earlier) clocks.
      const sent = Number(timestamp);
      assert.equal(verify(HOOK_SECRET, timestamp, signature, body, sent + FIVE_MINUTES), true, "5 minutes old");
      assert.equal(verify(HOOK_SECRET, timestamp, signature, body, sent + FIVE_MINUTES + 1), false, "over 5 minutes old");
      assert.equal(verify(HOOK_SECRET, timestamp, signature, body, sent - FIVE_MINUTES - 1), false, "over 5 minutes ahead");
      assert.equal(verify("another-secret", timestamp, signature, body, sent), false, "another secret");
    } finally {
      for (const server of servers) if (server.exitCode === null) server.kill("SIGKILL");
      backend.close();
    }
  });
}

/** The `verify` function of the page's Node snippet, imported as it stands. */
async function snippet() {
  const page = readFileSync(path.join(ROOT, "docs/hooks.md"), "utf8");
  const code = /```js\n([\s\S]*?)```/.exec(page);
  assert.ok(code, "docs/hooks.md has a ```js snippet");
  const module = await import(`data:text/javascript,${encodeURIComponent(code[1])}`);
  assert.equal(typeof module.verify, "function");
  return module.verify;
}

/**
 * An rpc backend that checks every request with `verify` before reading it:
 * a checked one is answered with its user and data, any other `401`.
 */
function startBackend(verify) {
  const seen = [];
  const backend = createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const accepted = verify(HOOK_SECRET, req.headers["x-roomcast-timestamp"], req.headers["x-roomcast-signature"], body);
      seen.push({ headers: req.headers, body, accepted });
      let status = 401;
      let answer = { error: { code: "BAD_SIGNATURE", message: "not signed by roomcast" } };
      if (accepted) {
        const asked = JSON.parse(body);
        status = 200;
        answer = { result: { user: asked.user, data: asked.data } };
      }
      const text = JSON.stringify(answer);
      res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
      res.end(text);
    });
  });
  backend.seen = seen;
  return new Promise((resolve) => backend.listen(0, "127.0.0.1", () => resolve(backend)));
}

/** The child: one rpc to each server, each outcome a JSON line on stdout. */
async function client(urls, token) {
  const say = (step) => process.stdout.write(`${JSON.stringify(step)}\n`);
  const bound = setTimeout(() => process.exit(2), BOUND_MS);
  const options = { WebSocket: globalThis.WebSocket, token, reconnect: { base: 50, cap: 200 } };
  const open = async (url) => {
    const c = connect(url, options);
    await new Promise((resolve) => c.on("open", resolve));
    return c;
  };
  const signed = await open(urls.signed);
  say({ step: "accepted", result: await signed.rpc("whoami", { text: "héllo ✓", n: [1, 2.5] }) });
  signed.close();
  const other = await open(urls.other);
  try {
    say({ step: "accepted by mistake", result: await other.rpc("whoami", { text: "hi" }) });
  } catch (e) {
    say({ step: "refused", code: e.code });
  }
  other.close();
  clearTimeout(bound);
}
