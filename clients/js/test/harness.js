// What the tests against the real binary share: reading the server's
// output, and waiting for a client's next event.

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
