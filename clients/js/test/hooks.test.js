// The client against the real roomcast binary with a connect proxy and an rpc
// proxy (section 13.2) answered by a node:http backend: `connect(url)` without
// a token is admitted by the backend (here by the query, as Node's WebSocket
// sends no cookies; a browser's cookies go the same way), and `rpc()`
// resolves with the backend's result or rejects with its code. The client
// runs in a child process, as in server.test.js.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

import { connect } from "../roomcast.js";
import { BOUND_MS, childReport, firstLine } from "./harness.js";

const HERE = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(HERE), "../../..");
const BIN = process.env.ROOMCAST_BIN || path.join(process.env.CARGO_TARGET_DIR || path.join(ROOT, "target"), "debug/roomcast");

if (process.env.ROOMCAST_CLIENT_URL) await client(process.env.ROOMCAST_CLIENT_URL);
else {
  test("connect() without a token through the connect proxy, rpc() through the rpc proxy", { timeout: BOUND_MS + 5000 }, async () => {
    assert.ok(existsSync(BIN), `no roomcast binary at ${BIN}: run cargo build (or set ROOMCAST_BIN)`);
    const backend = await startBackend();
    const url = `http://127.0.0.1:${backend.address().port}`;
    const server = spawn(
      BIN,
      ["serve", "--bind", "127.0.0.1:0", "--jwt-secret", "node-hooks-secret", "--connect-proxy", `${url}/connect`, "--rpc-proxy", `${url}/rpc`],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    try {
      const addr = await firstLine(server, /^roomcast listening on (\S+)/);
      const report = await childReport(HERE, { ROOMCAST_CLIENT_URL: `ws://${addr}/ws` });
      assert.deepEqual(report, [
        { step: "refused" },
        { step: "open", user: "erin" },
        { step: "rpc", result: { user: "erin", method: "whoami", data: { n: 1 } } },
        { step: "rpc failed", code: "NO_SUCH_METHOD", message: "NO_SUCH_METHOD: nope" },
      ]);
    } finally {
      if (server.exitCode === null) server.kill("SIGKILL");
      backend.close();
    }
  });
}

/** Admits `?session=erin` as erin; answers `rpc:whoami` with the request. */
function startBackend() {
  const backend = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const asked = JSON.parse(body);
      let answer;
      if (req.url === "/connect") {
        answer = asked.query === "session=erin" ? { result: { sub: "erin" } } : { error: { code: "UNAUTHENTICATED", message: "no session" } };
      } else if (asked.method === "whoami") {
        answer = { result: { user: asked.user, method: asked.method, data: asked.data } };
      } else {
        answer = { error: { code: "NO_SUCH_METHOD", message: "nope" } };
      }
      const text = JSON.stringify(answer);
      res.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
      res.end(text);
    });
  });
  return new Promise((resolve) => backend.listen(0, "127.0.0.1", () => resolve(backend)));
}

/** The child: the client's side, each step a JSON line on stdout. */
async function client(url) {
  const say = (step) => process.stdout.write(`${JSON.stringify(step)}\n`);
  const bound = setTimeout(() => process.exit(2), BOUND_MS);
  const options = { WebSocket: globalThis.WebSocket, reconnect: { base: 50, cap: 200 } };
  const stranger = connect(url, options);
  // A refused upgrade is a socket error to a WebSocket (the 401 is not
  // shown to scripts).
  await new Promise((resolve) => {
    const off = stranger.on("error", () => {
      off();
      say({ step: "refused" });
      stranger.close();
      resolve();
    });
  });
  const erin = connect(`${url}?session=erin`, options);
  const hello = await new Promise((resolve) => erin.on("open", resolve));
  say({ step: "open", user: hello && hello.userId });
  say({ step: "rpc", result: await erin.rpc("whoami", { n: 1 }) });
  try {
    await erin.rpc("missing");
  } catch (e) {
    say({ step: "rpc failed", code: e.code, message: e.message });
  }
  erin.close();
  clearTimeout(bound);
}
