// The browser tests' harness: one headless Chromium per test file (launched
// before its tests, closed after them), the real roomcast binary on a free
// loopback port, HS256 tokens signed here independently of the server's
// code, and pages of the server's origin. Every process started here is
// stopped by its PID after the file's tests.
//
// Environment (set by scripts/test.sh): ROOMCAST_BIN (the binary),
// PLAYWRIGHT_CORE (the path of playwright-core's index.mjs) and CHROMIUM
// (Debian's chromium).
import { before, after } from "node:test";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import net from "node:net";

const BIN = process.env.ROOMCAST_BIN;
export const SECRET = "browser-test-secret";
const { chromium } = await import(process.env.PLAYWRIGHT_CORE);

/** The file's Chromium, from its first test on. */
export let browser;
const started = [];

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  for (const proc of started) if (proc.exitCode === null) proc.kill("SIGKILL");
});

function b64url(value) {
  return Buffer.from(JSON.stringify(value)).toString("base64url");
}

/** An HS256 token, signed here independently of the server's code. */
export function token(sub, ttlSeconds = 3600, extra = {}) {
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url({
    sub,
    exp: Math.floor(Date.now() / 1000) + ttlSeconds,
    ...extra,
  })}`;
  return `${head}.${createHmac("sha256", SECRET).update(head).digest("base64url")}`;
}

export function freePort() {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts a process and waits for a line of its stdout or stderr starting with `ready`. */
export function run(cmd, args, ready) {
  const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  started.push(proc);
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`${cmd} did not start: ${seen}`)), 20000);
    const look = (chunk) => {
      seen += chunk;
      if (seen.split("\n").some((line) => line.startsWith(ready))) {
        clearTimeout(timer);
        resolve(proc);
      }
    };
    proc.stdout.on("data", look);
    proc.stderr.on("data", look);
    proc.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited (${code ?? signal}) before it was ready: ${seen}`));
    });
  });
}

/** `roomcast serve` on 127.0.0.1:`port` with the harness's secret and `extra` flags. */
export function roomcast(port, ...extra) {
  return run(BIN, ["serve", "--bind", `127.0.0.1:${port}`, "--jwt-secret", SECRET, ...extra], "roomcast listening on");
}

/** A redis-server on a free loopback port, once it takes connections; its URL. */
export async function redis() {
  const port = await freePort();
  await run("redis-server", ["--port", `${port}`, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], "");
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => {
        socket.end();
        resolve(true);
      });
      socket.on("error", () => resolve(false));
    });
    if (up) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  return `redis://127.0.0.1:${port}`;
}

export function stop(proc, signal = "SIGKILL") {
  return new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once("exit", () => resolve());
    proc.kill(signal);
  });
}

/** A page of the server's origin, with the client module loaded as `rc`. */
export async function page(port) {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  await page.goto(`http://127.0.0.1:${port}/healthz`);
  await page.evaluate(async () => {
    window.rc = await import("/roomcast.js");
    window.log = [];
  });
  page.errors = errors;
  return page;
}

/** Polls `fn` until it is true; `what` (text, or a function giving it) names what timed out. */
export async function waitFor(fn, what, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === "function" ? await what() : what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
