// What the tests against the real binary share: reading the server's
// output, and waiting for a client's next event; running a client in a child
// process and reading its report.
import { execFileSync, spawn } from "node:child_process";
import readline from "node:readline";

export const BOUND_MS = 20000;

/** The first match of `pattern` in a line of `proc`'s stdout or stderr, within the bound. */
export function firstLine(proc, pattern) {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(() => reject(new Error(`roomcast did not start: ${seen}`)), BOUND_MS);
    const look = (chunk) => {
      seen += chunk;
      const match = seen.split("\n").map((line) => pattern.exec(line)).find(Boolean);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    proc.stdout.on("data", look);
    proc.stderr.on("data", look);
    proc.on("exit", (code) => reject(new Error(`roomcast exited with ${code}: ${seen}`)));
  });
}

/** The arguments of `emitter`'s next `event`. */
export function next(emitter, event) {
  return new Promise((resolve) => {
    const off = emitter.on(event, (...args) => {
      off();
      resolve(args);
    });
  });
}

/**
 * Runs `file` as a child node process (with `--experimental-websocket` where
 * Node has no global WebSocket, as Node 20) with `env` added, and gives the
 * JSON lines it wrote on stdout. The child is killed by its PID if the
 * caller's bound ends first.
 */
export async function childReport(file, env) {
  const flags = globalThis.WebSocket ? [] : ["--experimental-websocket"];
  const child = spawn(process.execPath, [...flags, file], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  const timer = setTimeout(() => child.exitCode === null && child.kill("SIGKILL"), BOUND_MS);
  try {
    const report = [];
    for await (const line of readline.createInterface({ input: child.stdout })) report.push(JSON.parse(line));
    return report;
  } finally {
    clearTimeout(timer);
    if (child.exitCode === null) child.kill("SIGKILL");
  }
}

/** The first `count` events of `room`, as the application sees them. */
export function collect(room, count) {
  return new Promise((resolve) => {
    const got = [];
    const off = room.on("*", (message) => {
      got.push(message);
      if (got.length === count) {
        off();
        resolve(got);
      }
    });
  });
}

/**
 * Runs `body(addr)` against a `roomcast serve` of `bin` on 127.0.0.1 with
 * the JWT secret `secret`, killed by its PID once `body` is done.
 */
export async function withServer(bin, secret, body) {
  const server = spawn(bin, ["serve", "--bind", "127.0.0.1:0", "--jwt-secret", secret], { stdio: ["ignore", "pipe", "pipe"] });
  try {
    return await body(await firstLine(server, /^roomcast listening on (\S+)/));
  } finally {
    if (server.exitCode === null) server.kill("SIGKILL");
  }
}

/** A token of `bin` for `sub` under `secret`: every room, publishing too, no rate limit. */
export function mintPublisher(bin, secret, sub) {
  const args = ["token", "--secret", secret, "--sub", sub, "--rooms", "*", "--pub", "*", "--ttl", "3600", "--rate", "0"];
  return execFileSync(bin, args, { encoding: "utf8" }).trim();
}
