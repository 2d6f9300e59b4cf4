// roomcast.js: the browser client of roomcast (docs/protocol.md, docs/client.md).
// A dependency-free ES module; the server serves it at GET /roomcast.js.
//
//   import { connect } from "/roomcast.js";
//   const client = connect("ws://localhost:8080/ws", { getToken: () => fetchToken() });
//   const lobby = client.room("lobby");
//   lobby.on("chat:message", (data, msg) => console.log(msg.from, data));
//   await lobby.join();
//   const seq = await lobby.publish("chat:message", { text: "hi" });
//
// It reconnects with exponential backoff and full jitter after the close codes
// sections 8 and 12 say to retry (`shouldReconnect`), rejoins every room it
// joined with its last `since`/`epoch`, follows the rooms the server subscribes
// it to (`room:subscribed`, `room:unsubscribed`, section 12),
// delivers what it recovered before live events, in seq order and once each,
// keeps publishes made while offline (bounded, with a TTL) and sends them after
// the rejoin, and treats a connection that stays silent past the ping interval
// plus a timeout as dead (browsers cannot see ping frames: it sends the bare
// `ping` text, which the server answers `pong`). It uses the global
// `WebSocket`, or the constructor given as `connect(url, { WebSocket })`.
// With `connect(url, { protocol: "msgpack" })` it offers the `roomcast.msgpack`
// subprotocol (section 14) and, once the server chose it, speaks MessagePack
// in binary frames with its own small codec (`encodeMsgpack`, `decodeMsgpack`);
// a room joined with `delta` keeps each whole event's `data` as the server's
// canonical JSON text (`msgpackToJson`), the base of the next delta.

/**
 * Close codes below 2000 after which a client does not reconnect: a normal
 * close, and the ones the same messages would cause again (section 8).
 */
export const FINAL_CLOSE_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009]);

/**
 * Whether a close with `code` is followed by a reconnect (sections 8 and 12):
 * yes after 4000-4499 (4002, 4003, 4008 and the server API's retryable
 * `disconnect` codes) and after any 1001-1999 but FINAL_CLOSE_CODES (1001,
 * 1006, 1011 and the other transport or server-side failures, which a later
 * attempt may not meet); no after 4500-4999 (the server API's `disconnect`,
 * 4500 by default) nor after codes no one gave roomcast a meaning
 * (below 1000, 2000-3999, 5000 and up): retrying what is not understood could
 * go against what the server meant.
 */
export function shouldReconnect(code) {
  if (code >= 4000 && code <= 4499) return true;
  return code >= 1001 && code <= 1999 && !FINAL_CLOSE_CODES.has(code);
}
/** The token expired: reconnect with a fresh one. */
export const TOKEN_EXPIRED = 4002;

const DEFAULTS = {
  reconnect: { base: 500, cap: 30000, maxAttempts: Infinity },
  ackTimeout: 10000,
  offlineQueue: { max: 1000, ttl: 60000 },
  pongTimeout: 10000,
  refreshBefore: 30000,
};

/**
 * The delay before reconnect attempt `attempt` (0 first): exponential backoff
 * with full jitter, a random point in [0, min(cap, base * 2^attempt)).
 */
export function backoffDelay(attempt, { base, cap }, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/** The `exp` claim of a JWT, in ms since the epoch; null if unreadable. */
export function tokenExpiry(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(payload + "=".repeat((4 - (payload.length % 4)) % 4)));
    return typeof json.exp === "number" ? json.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * Publishes made while offline: kept in order, at most `max`, each for at most
 * `ttl` ms. `push` refuses (returns false) when full; `drain` hands back the
 * live ones in order and the expired ones apart.
 */
export class OfflineQueue {
  constructor({ max, ttl }, now = Date.now) {
    this.max = max;
    this.ttl = ttl;
    this.now = now;
    this.items = [];
  }
  get length() {
    return this.items.length;
  }
  push(item) {
    this.dropExpired();
    if (this.items.length >= this.max) return false;
    this.items.push({ item, at: this.now() });
    return true;
  }
  /** Removes expired items; returns them. */
  dropExpired() {
    const limit = this.now() - this.ttl;
    const expired = [];
    while (this.items.length && this.items[0].at <= limit) expired.push(this.items.shift().item);
    return expired;
  }
  /** Everything, in order: `{ live, expired }`. The queue is left empty. */
  drain() {
    const expired = this.dropExpired();
    const live = this.items.map((e) => e.item);
    this.items = [];
    return { live, expired };
  }
}

/**
 * A room's position: its epoch and the last seq delivered. `accept` says
 * whether an event is new (and moves past it): each seq once, in order.
 */
export class RoomCursor {
  constructor() {
    this.epoch = null;
    this.seq = 0;
  }
  /** A join answered with `epoch` at `seq`. */
  reset(epoch, seq) {
    this.epoch = epoch;
    this.seq = seq;
  }
  accept(seq) {
    if (typeof seq !== "number") return true;
    if (seq <= this.seq) return false;
    this.seq = seq;
    return true;
  }
  /** What a rejoin asks for: everything after the last event seen. */
  since() {
    return this.epoch === null ? {} : { since: this.seq, epoch: this.epoch };
  }
}

const FOSSIL_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";
const FOSSIL_VALUES = new Map([...FOSSIL_DIGITS].map((c, i) => [c.charCodeAt(0), i]));

/** Fossil's checksum: the sum of the bytes' big-endian 32-bit words, the last padded. */
function fossilChecksum(bytes) {
  let sum = 0;
  for (let i = 0; i < bytes.length; i += 4) {
    const word = bytes[i] * 0x1000000 + (bytes[i + 1] ?? 0) * 0x10000 + (bytes[i + 2] ?? 0) * 0x100 + (bytes[i + 3] ?? 0);
    sum = (sum + word) % 0x100000000;
  }
  return sum;
}

/**
 * Applies a Fossil delta (the format of the Fossil SCM, section 14's
 * `data.delta`) to `source`; both and the result are `Uint8Array`s. Throws
 * on a delta that does not apply, its checksum included.
 */
export function fossilApply(source, delta) {
  let pos = 0;
  const int = () => {
    let v = 0;
    for (let d; pos < delta.length && (d = FOSSIL_VALUES.get(delta[pos])) !== undefined; pos++) v = v * 64 + d;
    return v;
  };
  const fail = (why) => {
    throw new RoomcastError("DELTA", why);
  };
  const limit = int();
  if (delta[pos++] !== 0x0a) fail("size not terminated by a newline");
  const out = new Uint8Array(limit);
  let total = 0;
  while (pos < delta.length) {
    const count = int();
    const op = delta[pos++];
    if (op === 0x40) {
      const offset = int();
      if (delta[pos++] !== 0x2c) fail("copy not terminated by ','");
      if (total + count > limit) fail("output larger than announced");
      if (offset + count > source.length) fail("copy past the end of the source");
      out.set(source.subarray(offset, offset + count), total);
      total += count;
    } else if (op === 0x3a) {
      if (total + count > limit) fail("output larger than announced");
      if (pos + count > delta.length) fail("insert past the end of the delta");
      out.set(delta.subarray(pos, pos + count), total);
      total += count;
      pos += count;
    } else if (op === 0x3b) {
      if (total !== limit) fail("output shorter than announced");
      if (count !== fossilChecksum(out)) fail("bad checksum");
      return out;
    } else {
      fail("unknown operator");
    }
  }
  return fail("unterminated delta");
}

function skipString(text, i) {
  for (i++; i < text.length; i++) {
    if (text[i] === "\\") i++;
    else if (text[i] === '"') return i + 1;
  }
  return text.length;
}

function skipValue(text, i) {
  if (text[i] === '"') return skipString(text, i);
  if (text[i] === "{" || text[i] === "[") {
    for (let depth = 0; i < text.length; ) {
      const c = text[i];
      if (c === '"') {
        i = skipString(text, i);
        continue;
      }
      if (c === "{" || c === "[") depth++;
      else if ((c === "}" || c === "]") && --depth === 0) return i + 1;
      i++;
    }
    return i;
  }
  while (i < text.length && !",}] \t\r\n".includes(text[i])) i++;
  return i;
}

/**
 * The exact text of the top-level `data` of a JSON object text, which a
 * delta's source is (section 14): a re-serialised value could differ.
 */
export function dataText(text) {
  const space = /[ \t\r\n]*/y;
  const ws = (i) => {
    space.lastIndex = i;
    space.test(text);
    return space.lastIndex;
  };
  let i = ws(0);
  if (text[i] !== "{") return null;
  i++;
  for (;;) {
    i = ws(i);
    if (text[i] !== '"') return null;
    const keyEnd = skipString(text, i);
    const key = text.slice(i + 1, keyEnd - 1);
    i = ws(keyEnd);
    if (text[i] !== ":") return null;
    const start = ws(i + 1);
    const end = skipValue(text, start);
    if (key === "data") return text.slice(start, end);
    i = ws(end);
    if (text[i] !== ",") return null;
    i++;
  }
}

/**
 * A whole event's `data` text, the source of the next delta: the exact
 * text of a JSON payload; for a MessagePack one, its canonical JSON text,
 * which the server sends a MessagePack member a delta from only when it is
 * the very text it used (section 14).
 */
function sourceText(payload) {
  try {
    return dataText(typeof payload === "string" ? payload : msgpackToJson(payload));
  } catch {
    return null;
  }
}

/** The subprotocol of `connect(url, { protocol: "msgpack" })`. */
export const MSGPACK_PROTOCOL = "roomcast.msgpack";

const utf8Encoder = new TextEncoder();

/** The UTF-8 length of `text`, without encoding it. */
function utf8Length(text) {
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    // A surrogate pair is one 4-byte character; a lone surrogate is
    // encoded as U+FFFD (3 bytes), as TextEncoder does.
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The MessagePack bytes (a Uint8Array) of what `JSON.stringify` would write
 * of `value`: objects as maps (keys in order, `undefined` and functions
 * left out), safe integers as integers in their smallest form, every other
 * number as a float64 (NaN and infinities, which JSON writes `null`, as nil),
 * strings as UTF-8, `toJSON` honoured.
 */
export function encodeMsgpack(value) {
  const out = [];
  const bytes = (...b) => out.push(...b);
  const be = (n, width) => {
    for (let shift = (width - 1) * 8; shift >= 0; shift -= 8) out.push(Math.floor(n / 2 ** shift) % 256);
  };
  const header = (n, fix, fixMax, tags) => {
    if (n <= fixMax) bytes(fix | n);
    else if (n <= 0xff && tags[0]) bytes(tags[0], n);
    else if (n <= 0xffff) (bytes(tags[1]), be(n, 2));
    else (bytes(tags[2]), be(n, 4));
  };
  const write = (v) => {
    if (v && typeof v.toJSON === "function") v = v.toJSON();
    if (v === null || v === undefined || typeof v === "function" || typeof v === "symbol") return bytes(0xc0);
    if (v === true) return bytes(0xc3);
    if (v === false) return bytes(0xc2);
    if (typeof v === "number") {
      if (!Number.isFinite(v)) return bytes(0xc0);
      if (Number.isSafeInteger(v) && !Object.is(v, -0)) {
        if (v >= 0 && v < 0x80) return bytes(v);
        if (v < 0 && v >= -32) return bytes(v + 256);
        if (v >= 0) {
          if (v <= 0xff) return bytes(0xcc, v);
          if (v <= 0xffff) return (bytes(0xcd), be(v, 2));
          if (v <= 0xffffffff) return (bytes(0xce), be(v, 4));
          return (bytes(0xcf), be(v, 8));
        }
        if (v >= -0x80) return bytes(0xd0, v + 0x100);
        if (v >= -0x8000) return (bytes(0xd1), be(v + 0x10000, 2));
        if (v >= -0x80000000) return (bytes(0xd2), be(v + 0x100000000, 4));
        // Two's complement of a safe negative integer in 64 bits.
        return (bytes(0xd3), be(Math.floor(v / 2 ** 32) + 2 ** 32, 4), be(((v % 2 ** 32) + 2 ** 32) % 2 ** 32, 4));
      }
      const view = new DataView(new ArrayBuffer(8));
      view.setFloat64(0, v);
      return bytes(0xcb, ...new Uint8Array(view.buffer));
    }
    if (typeof v === "bigint") return write(Number(v));
    if (typeof v === "string") {
      const utf8 = utf8Encoder.encode(v);
      header(utf8.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
      for (const b of utf8) out.push(b);
      return;
    }
    if (Array.isArray(v)) {
      header(v.length, 0x90, 15, [0, 0xdc, 0xdd]);
      for (const item of v) write(item);
      return;
    }
    if (v instanceof Number || v instanceof String || v instanceof Boolean) return write(v.valueOf());
    const entries = Object.entries(v).filter(([, item]) => item !== undefined && typeof item !== "function" && typeof item !== "symbol");
    header(entries.length, 0x80, 15, [0, 0xde, 0xdf]);
    for (const [key, item] of entries) {
      write(key);
      write(item);
    }
  };
  write(value);
  return Uint8Array.from(out);
}

/**
 * Reads the one MessagePack value of `data` (ArrayBuffer or byte view),
 * built by `form`'s methods: `int` (a number), `bigint` (64-bit ones),
 * `float` (with its width, 32 or 64), `str`, `nil`, `bool`, `array(n,
 * item)` and `map(n, key, item)`, where `item()` reads the next value and
 * `key()` the next map key, a string. Throws `INVALID_MSGPACK` on bin, ext,
 * non-string keys, bad UTF-8, nesting past 512, truncation or trailing
 * bytes.
 */
function readMsgpack(data, form) {
  const input = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  let at = 0;
  const need = (n) => {
    if (at + n > input.length) failMsgpack("truncated");
    const start = at;
    at += n;
    return start;
  };
  const uint = (n) => {
    const start = need(n);
    let v = 0;
    for (let i = 0; i < n; i++) v = v * 256 + input[start + i];
    return v;
  };
  const text = (n) => {
    const start = need(n);
    try {
      return utf8Decoder.decode(input.subarray(start, start + n));
    } catch {
      return failMsgpack("a string is not UTF-8");
    }
  };
  const key = () => {
    const tag = uint(1);
    if (tag >= 0xa0 && tag <= 0xbf) return text(tag & 0x1f);
    if (tag >= 0xd9 && tag <= 0xdb) return text(uint(2 ** (tag - 0xd9)));
    return failMsgpack("a map key is not a string");
  };
  const read = (depth) => {
    if (depth > 512) failMsgpack("nested too deep");
    const item = () => read(depth + 1);
    const tag = uint(1);
    if (tag < 0x80) return form.int(tag);
    if (tag >= 0xe0) return form.int(tag - 256);
    if (tag >= 0xa0 && tag <= 0xbf) return form.str(text(tag & 0x1f));
    if (tag >= 0x90 && tag <= 0x9f) return form.array(tag & 0x0f, item);
    if (tag >= 0x80 && tag <= 0x8f) return form.map(tag & 0x0f, key, item);
    switch (tag) {
      case 0xc0: return form.nil();
      case 0xc2: return form.bool(false);
      case 0xc3: return form.bool(true);
      case 0xca: return form.float(view.getFloat32(need(4)), 32);
      case 0xcb: return form.float(view.getFloat64(need(8)), 64);
      case 0xcc: return form.int(uint(1));
      case 0xcd: return form.int(uint(2));
      case 0xce: return form.int(uint(4));
      case 0xcf: return form.bigint(view.getBigUint64(need(8)));
      case 0xd0: return form.int(view.getInt8(need(1)));
      case 0xd1: return form.int(view.getInt16(need(2)));
      case 0xd2: return form.int(view.getInt32(need(4)));
      case 0xd3: return form.bigint(view.getBigInt64(need(8)));
      case 0xd9: return form.str(text(uint(1)));
      case 0xda: return form.str(text(uint(2)));
      case 0xdb: return form.str(text(uint(4)));
      case 0xdc: return form.array(uint(2), item);
      case 0xdd: return form.array(uint(4), item);
      case 0xde: return form.map(uint(2), key, item);
      case 0xdf: return form.map(uint(4), key, item);
      default: return failMsgpack(`type 0x${tag.toString(16)} has no JSON form`);
    }
  };
  const value = read(0);
  if (at !== input.length) failMsgpack("bytes after the value");
  return value;
}

function failMsgpack(why) {
  throw new RoomcastError("INVALID_MSGPACK", why);
}

/** MessagePack read as JSON.parse would read the same JSON. */
const AS_VALUES = {
  int: (n) => n,
  bigint: (n) => Number(n),
  float: (x) => x,
  str: (s) => s,
  nil: () => null,
  bool: (b) => b,
  array(n, item) {
    const items = [];
    for (let i = 0; i < n; i++) items.push(item());
    return items;
  },
  map(n, key, item) {
    const object = {};
    for (let i = 0; i < n; i++) {
      // defineProperty: a "__proto__" key is an own property, as JSON.parse makes it.
      Object.defineProperty(object, key(), { value: item(), enumerable: true, writable: true, configurable: true });
    }
    return object;
  },
};

/**
 * The value of one MessagePack message (ArrayBuffer or byte view), as
 * `JSON.parse` would give it of the same JSON: maps as objects (string
 * keys only), integers beyond 2^53 as the nearest number. Throws
 * `INVALID_MSGPACK` on bin, ext, non-string keys, bad UTF-8, truncation or
 * trailing bytes.
 */
export function decodeMsgpack(data) {
  return readMsgpack(data, AS_VALUES);
}

const JSON_ESCAPES = { '"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/** A string in the canonical form: only `"`, `\` and controls escaped. */
function canonicalString(s) {
  const escape = (c) => JSON_ESCAPES[c] ?? `\\u00${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  return `"${s.replace(/["\\\u0000-\u001f]/g, escape)}"`;
}

/**
 * The shortest decimal digits that read back as `x` (positive) at its
 * `width`, and the exponent of the first. Of two as short and as close (a
 * tie: `x` exactly halfway), the larger, as Rust picks: `toExponential(n)`
 * rounds half up, while `toExponential()` may round down.
 */
function shortestDigits(x, width) {
  const readsBack = (text) => (width === 32 ? Math.fround(Number(text)) : Number(text)) === x;
  let text = x.toExponential();
  // A float32 reads back from fewer digits than its float64 widening needs.
  for (let precision = 0; width === 32 && precision < 9; precision++) {
    if (readsBack(x.toExponential(precision))) {
      text = x.toExponential(precision);
      break;
    }
  }
  const rounded = x.toExponential(text.split("e")[0].replace(".", "").length - 1);
  if (readsBack(rounded)) text = rounded;
  const [mantissa, exponent] = text.split("e");
  return { digits: mantissa.replace(/^-/, "").replace(".", ""), exponent: Number(exponent) };
}

/**
 * A finite float in the canonical form (as Rust's `{:?}` writes it):
 * decimal with at least one fractional digit when 1e-4 <= |x| < 1e16 or x
 * is zero, else the shortest digits in exponent form (`1e-5`, `1.5e16`).
 */
function canonicalFloat(x, width) {
  if (!Number.isFinite(x)) failMsgpack("a float is NaN or infinite");
  const sign = x < 0 || Object.is(x, -0) ? "-" : "";
  if (x === 0) return `${sign}0.0`;
  const abs = Math.abs(x);
  const [low, high] = width === 32 ? [Math.fround(1e-4), Math.fround(1e16)] : [1e-4, 1e16];
  const { digits, exponent } = shortestDigits(abs, width);
  if (abs < low || abs >= high) {
    const fraction = digits.length > 1 ? `.${digits.slice(1)}` : "";
    return `${sign}${digits[0]}${fraction}e${exponent}`;
  }
  if (exponent < 0) return `${sign}0.${"0".repeat(-exponent - 1)}${digits}`;
  const whole = digits.slice(0, exponent + 1).padEnd(exponent + 1, "0");
  return `${sign}${whole}.${digits.slice(exponent + 1) || "0"}`;
}

/** MessagePack written as the server's canonical JSON text. */
const AS_CANONICAL_JSON = {
  int: (n) => String(n),
  bigint: (n) => n.toString(),
  float: canonicalFloat,
  str: canonicalString,
  nil: () => "null",
  bool: (b) => String(b),
  array(n, item) {
    const items = [];
    for (let i = 0; i < n; i++) items.push(item());
    return `[${items.join(",")}]`;
  },
  map(n, key, item) {
    const entries = [];
    for (let i = 0; i < n; i++) entries.push(`${canonicalString(key())}:${item()}`);
    return `{${entries.join(",")}}`;
  },
};

/**
 * The JSON text the server writes of one MessagePack message (section 14's
 * canonical form, docs/protocol.md): compact, map keys in their order,
 * integers exact (64-bit ones too), floats as Rust's `{:?}` writes them,
 * strings with only `"`, `\` and control characters escaped (`\n`, `\r`,
 * `\t`, else `\u00XX`). Read from the bytes, never through a JavaScript
 * value, which would reorder integer-like keys and round big integers.
 * Throws `INVALID_MSGPACK` as `decodeMsgpack` does, and on NaN or infinity.
 */
export function msgpackToJson(data) {
  return readMsgpack(data, AS_CANONICAL_JSON);
}

/** An error from the server (`code` as in docs/protocol.md) or from the client. */
export class RoomcastError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

class Emitter {
  constructor() {
    this.handlers = new Map();
  }
  on(event, fn) {
    if (!this.handlers.has(event)) this.handlers.set(event, new Set());
    this.handlers.get(event).add(fn);
    return () => this.off(event, fn);
  }
  off(event, fn) {
    this.handlers.get(event)?.delete(fn);
  }
  emit(event, ...args) {
    for (const fn of [...(this.handlers.get(event) || [])]) {
      try {
        fn(...args);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

/**
 * One room of a client: join, publish, presence and its events. A room is
 * `joined` by the application (and rejoined by the client after reconnects)
 * or `subscribed` by the server (section 12: restored by the server, never
 * rejoined by the client), or both.
 */
export class Room extends Emitter {
  constructor(client, name) {
    super();
    this.client = client;
    this.name = name;
    this.cursor = new RoomCursor();
    this.joined = false;
    this.subscribed = false;
    this.joinOptions = {};
    // Live events held while a recovery is in flight, so recovered ones come first.
    this.held = null;
    // The `data` text of the last live sequenced event: a delta's source,
    // kept once the room was joined with `delta`.
    this.lastData = null;
    this.keepsData = false;
  }

  /**
   * Section 14's deltas, as a message arrives: keeps each live sequenced
   * event's `data` text and rebuilds a delta event's `data` from the one
   * before, so the application sees `data` as if the event came whole.
   * False for a delta that does not apply (reported as an `error`).
   */
  undelta(text, message) {
    if (typeof message.seq !== "number") return true;
    if (typeof message.delta !== "string") {
      if (this.keepsData) this.lastData = "data" in message ? sourceText(text) : null;
      return true;
    }
    try {
      if (this.lastData === null) throw new RoomcastError("DELTA", "no event to apply a delta to");
      const bytes = fossilApply(utf8Encoder.encode(this.lastData), utf8Encoder.encode(message.delta));
      this.lastData = utf8Decoder.decode(bytes);
      message.data = JSON.parse(this.lastData);
    } catch (e) {
      this.lastData = null;
      this.client.emit("error", e instanceof RoomcastError ? e : new RoomcastError("DELTA", String(e)));
      return false;
    }
    delete message.delta;
    return true;
  }

  /**
   * Joins (and keeps rejoining after reconnects, with the options of the
   * last join the server accepted); resolves with the ack data.
   */
  async join(options = {}) {
    this.joined = true;
    if (options.delta) this.keepsData = true;
    const data = await this.client.request("room:join", { room: this.name, ...options });
    this.joinOptions = options;
    this.cursor.reset(data.epoch, data.seq);
    this.deliverAll(data.messages || []);
    return data;
  }

  async leave() {
    this.joined = false;
    this.subscribed = false;
    return this.client.request("room:leave", { room: this.name });
  }

  /**
   * Publishes; resolves with the `seq` Redis or the server gave it. A
   * `volatile` event (typing, cursors) reaches the members connected now,
   * with no `seq` or history: it resolves with `undefined`, and is never
   * kept in the offline queue (it would be stale): offline it rejects with
   * `DISCONNECTED`.
   */
  publish(event, data, { echo = false, volatile = false } = {}) {
    const message = { event, room: this.name, data };
    if (echo) message.echo = true;
    if (volatile) message.volatile = true;
    return this.client.send(message, { queue: !volatile }).then((ack) => ack.seq);
  }

  presence() {
    return this.client.request("presence:get", { room: this.name });
  }

  /**
   * Joins again from where this room's events stopped and delivers what was
   * missed (after a reconnect, or when the server restores a subscription).
   * Live events that arrive meanwhile wait for the recovered ones.
   */
  async rejoin() {
    // A rejoin already holding events (a reconnect's and a restored
    // subscription's) lets the first one release them.
    const holding = this.held === null;
    if (holding) this.held = [];
    try {
      const data = await this.client.request("room:join", {
        room: this.name,
        ...this.joinOptions,
        ...this.cursor.since(),
      });
      this.recovered(data);
      return data;
    } finally {
      if (holding) this.release();
    }
  }

  /** Delivers the live events held during a recovery. */
  release() {
    const held = this.held;
    this.held = null;
    this.deliverAll(held);
  }

  /** A rejoin's answer: the missed messages in order, or a `reset`. */
  recovered(data) {
    if (data.recovered === false) {
      this.cursor.reset(data.epoch, data.seq);
      this.emit("reset", { epoch: data.epoch, seq: data.seq, messages: data.messages || [] });
    } else {
      if (data.epoch !== this.cursor.epoch) this.cursor.reset(data.epoch, this.cursor.seq);
      this.deliverAll(data.messages || []);
      this.cursor.accept(data.seq);
    }
  }

  /**
   * `room:subscribed` (section 12): the server put this connection in the
   * room. A first subscription starts at the server's `seq`; one the server
   * restores after a reconnect delivers what was missed since the last `seq`
   * (a `room:join` with `since`, harmless for a connection already in the
   * room) or, when that is refused (a subscription skips the join
   * permissions), emits `reset` with no messages.
   */
  onSubscribed(data) {
    const restored = this.subscribed && this.cursor.epoch !== null;
    this.subscribed = true;
    this.client.emit("subscribed", this, data);
    this.emit("subscribed", data);
    if (!restored) return this.cursor.reset(data.epoch, data.seq);
    if (data.epoch === this.cursor.epoch && data.seq <= this.cursor.seq) return;
    this.rejoin().catch((e) => this.unrecovered(data, e));
  }

  /** A restored subscription whose missed messages could not be had. */
  unrecovered(data, error) {
    this.client.emit("error", error);
    if (error.code === "DISCONNECTED") return;
    this.cursor.reset(data.epoch, Math.max(data.seq, this.cursor.seq));
    this.emit("reset", { epoch: data.epoch, seq: data.seq, messages: [] });
  }

  /** `room:unsubscribed`: the server took this connection out of the room. */
  onUnsubscribed(data) {
    this.subscribed = false;
    this.joined = false;
    this.client.emit("unsubscribed", this, data);
    this.emit("unsubscribed", data);
  }

  /** Messages of a join's or a rejoin's answer, or held ones: delivered now. */
  deliverAll(messages) {
    for (const message of messages) this.pass(message);
  }

  /** A live message: held while a recovery is in flight. */
  deliver(message) {
    if (this.held) this.held.push(message);
    else this.pass(message);
  }

  pass(message) {
    if (message.event.startsWith("presence:")) {
      this.emit(message.event, message.data, message);
      return;
    }
    if (!this.cursor.accept(message.seq)) return;
    this.emit(message.event, message.data, message);
    this.emit("*", message);
  }
}

/** A connection that comes back by itself. `state`: connecting, open, reconnecting, closed. */
export class Client extends Emitter {
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = {
      ...DEFAULTS,
      ...options,
      reconnect: { ...DEFAULTS.reconnect, ...(options.reconnect || {}) },
      offlineQueue: { ...DEFAULTS.offlineQueue, ...(options.offlineQueue || {}) },
    };
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new RoomcastError("NO_WEBSOCKET", "no global WebSocket: pass one as connect(url, { WebSocket })");
    }
    this.token = options.token || null;
    this.state = "connecting";
    this.rooms = new Map();
    this.pending = new Map();
    this.queue = new OfflineQueue(this.options.offlineQueue);
    this.nextId = 0;
    this.attempt = 0;
    this.ws = null;
    this.timers = {};
    this.pingInterval = options.pingInterval || 25000;
    if (options.protocol && options.protocol !== "json" && options.protocol !== "msgpack") {
      throw new RoomcastError("BAD_OPTION", `protocol is "json" or "msgpack", not ${JSON.stringify(options.protocol)}`);
    }
    // Whether the current connection speaks MessagePack: the server chose
    // it, which its first message (binary) shows.
    this.packed = false;
    // What every connection so far received, in bytes of WebSocket message
    // payload (a text message's UTF-8, a binary one's length; frame headers
    // and compression are not seen from a WebSocket): for a bytes/s gauge.
    this.bytesReceived = 0;
    this.messagesReceived = 0;
    this.connectNow();
  }

  /** The room `name` (the same object each time). */
  room(name) {
    if (!this.rooms.has(name)) this.rooms.set(name, new Room(this, name));
    return this.rooms.get(name);
  }

  /** A direct message to every connection of `user`; resolves with `delivered`. */
  sendTo(user, event, data) {
    const payload = { to: user, data };
    if (event) payload.event = event;
    return this.request("user:send", payload).then((d) => d.delivered);
  }

  /**
   * Calls `method` on the application's backend through the server's
   * `--rpc-proxy` (`rpc:<method>`); resolves with the backend's result,
   * rejects with its error code.
   */
  rpc(method, data) {
    return this.request(`rpc:${method}`, data === undefined ? null : data);
  }

  /** Round trip to the server, in ms. */
  async ping() {
    const start = Date.now();
    await this.request("ping", null);
    return Date.now() - start;
  }

  /** Closes for good: no reconnect; queued publishes are refused. */
  close() {
    this.state = "closed";
    this.clearTimers();
    if (this.ws) this.ws.close(1000);
    const { live, expired } = this.queue.drain();
    for (const entry of [...live, ...expired]) entry.reject(new RoomcastError("CLOSED", "client closed"));
  }

  /**
   * Sends a reserved event with `data`; resolves with the ack data. Made
   * while (re)connecting, it waits for the connection like a publish.
   */
  request(event, data) {
    return this.send({ event, data }, { queue: true });
  }

  /**
   * Sends `message` with a fresh id; resolves with the ack's data, rejects
   * with its error, a timeout, or a lost connection. With `queue`, a message
   * sent while offline waits for the reconnect (bounded, with a TTL).
   */
  send(message, { queue = false } = {}) {
    return new Promise((resolve, reject) => {
      const entry = { message, resolve, reject };
      if (this.state === "open") return this.transmit(entry);
      if (queue && this.state !== "closed") {
        if (!this.queue.push(entry)) reject(new RoomcastError("QUEUE_FULL", "the offline queue is full"));
        return;
      }
      reject(new RoomcastError("DISCONNECTED", "not connected"));
    });
  }

  transmit({ message, resolve, reject }) {
    const id = `c${++this.nextId}`;
    const timer = setTimeout(() => {
      this.pending.delete(id);
      reject(new RoomcastError("TIMEOUT", `no ack within ${this.options.ackTimeout} ms`));
    }, this.options.ackTimeout);
    this.pending.set(id, { resolve, reject, timer });
    this.write({ ...message, id });
  }

  /** Sends one message in the connection's encoding. */
  write(message) {
    this.ws.send(this.packed ? encodeMsgpack(message) : JSON.stringify(message));
  }

  async connectNow() {
    if (this.state === "closed") return;
    try {
      if (this.options.getToken) this.token = await this.options.getToken();
    } catch (e) {
      this.emit("error", e);
      return this.scheduleReconnect(1006);
    }
    // Without a token the upgrade goes as it is: the server's connect proxy
    // decides it by what the browser sends (its cookies, the query).
    const sep = this.url.includes("?") ? "&" : "?";
    const target = this.token ? `${this.url}${sep}token=${encodeURIComponent(this.token)}` : this.url;
    const msgpack = this.options.protocol === "msgpack";
    const ws = msgpack ? new this.WebSocket(target, MSGPACK_PROTOCOL) : new this.WebSocket(target);
    if (msgpack) ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.packed = false;
    ws.onmessage = (e) => {
      this.count(e.data);
      this.onMessage(e.data);
    };
    ws.onerror = () => this.emit("error", new RoomcastError("SOCKET", "WebSocket error"));
    ws.onclose = (e) => {
      if (this.ws === ws) this.onClose(e.code, e.reason);
    };
  }

  /** Adds one received message to `bytesReceived` and `messagesReceived`. */
  count(payload) {
    const size = typeof payload === "string" ? utf8Length(payload) : payload.byteLength ?? payload.size ?? 0;
    this.bytesReceived += size;
    this.messagesReceived += 1;
  }

  onMessage(payload) {
    this.heard();
    if (payload === "pong") return;
    let message;
    try {
      if (typeof payload === "string") message = JSON.parse(payload);
      else {
        message = decodeMsgpack(payload);
        this.packed = true;
      }
    } catch {
      return;
    }
    if (message.event === "connection:established") return this.onEstablished(message.data);
    if (message.event === "ack") return this.onAck(message);
    if (message.event === "error") return this.emit("error", new RoomcastError(message.data.code, message.data.message));
    if (message.event === "room:subscribed") return this.room(message.room).onSubscribed(message.data);
    if (message.event === "room:unsubscribed") return this.rooms.get(message.room)?.onUnsubscribed(message.data);
    if (message.room && this.rooms.has(message.room)) {
      const room = this.rooms.get(message.room);
      if (room.undelta(payload, message)) room.deliver(message);
      return;
    }
    this.emit(message.event, message.data, message);
  }

  async onEstablished(data) {
    this.pingInterval = data.pingInterval || this.pingInterval;
    this.connId = data.connId;
    this.state = "open";
    this.attempt = 0;
    this.heard();
    this.scheduleRefresh();
    // Rooms joined on an earlier connection; a first join still waiting
    // goes out with the queue below.
    const rejoins = [...this.rooms.values()]
      .filter((r) => r.joined && r.cursor.epoch !== null)
      .map((r) => r.rejoin().catch((e) => this.emit("error", e)));
    await Promise.all(rejoins);
    this.emit("open", data);
    const { live, expired } = this.queue.drain();
    for (const entry of expired) entry.reject(new RoomcastError("QUEUE_EXPIRED", "queued past its TTL"));
    for (const entry of live) {
      if (this.state === "open") this.transmit(entry);
      else if (!this.queue.push(entry)) entry.reject(new RoomcastError("QUEUE_FULL", "the offline queue is full"));
    }
  }

  onAck(ack) {
    const pending = this.pending.get(ack.id);
    if (!pending) return;
    this.pending.delete(ack.id);
    clearTimeout(pending.timer);
    if (ack.success) pending.resolve(ack.data);
    else pending.reject(new RoomcastError(ack.error.code, ack.error.message));
  }

  onClose(code, reason) {
    this.clearTimers();
    this.ws = null;
    for (const [id, pending] of this.pending) {
      clearTimeout(pending.timer);
      pending.reject(new RoomcastError("DISCONNECTED", "the connection closed before the ack"));
      this.pending.delete(id);
    }
    const reconnect = this.state !== "closed" && shouldReconnect(code) && this.attempt < this.options.reconnect.maxAttempts;
    this.emit("close", code, reason, { code, reason, reconnect });
    if (this.state === "closed") return;
    if (!shouldReconnect(code)) {
      this.state = "closed";
      const { live, expired } = this.queue.drain();
      for (const entry of [...live, ...expired]) entry.reject(new RoomcastError("CLOSED", `closed with ${code}`));
      return;
    }
    this.scheduleReconnect(code);
  }

  scheduleReconnect(code) {
    const { maxAttempts } = this.options.reconnect;
    if (this.attempt >= maxAttempts) {
      this.state = "closed";
      this.emit("error", new RoomcastError("GAVE_UP", `no connection after ${this.attempt} attempts`));
      return;
    }
    // A token that expired is replaced by getToken() on the next attempt.
    if (code === TOKEN_EXPIRED && !this.options.getToken) this.emit("error", new RoomcastError("TOKEN_EXPIRED", "give getToken to reconnect"));
    const delay = backoffDelay(this.attempt, this.options.reconnect);
    this.attempt += 1;
    this.state = "reconnecting";
    this.emit("reconnecting", this.attempt, delay);
    this.timers.reconnect = setTimeout(() => this.connectNow(), delay);
  }

  /** Something came in: the connection lives. Arms the ping and the dead-line. */
  heard() {
    clearTimeout(this.timers.ping);
    clearTimeout(this.timers.dead);
    if (this.state === "closed") return;
    this.timers.ping = setTimeout(() => {
      // The bare "ping" text has no MessagePack form: a `ping` event then.
      if (this.ws && this.ws.readyState === 1) {
        if (this.packed) this.write({ event: "ping" });
        else this.ws.send("ping");
      }
    }, this.pingInterval);
    this.timers.dead = setTimeout(() => {
      // Silent past the ping interval and the timeout: gone without a close.
      if (this.ws) {
        const ws = this.ws;
        this.ws = null;
        ws.onclose = null;
        try {
          ws.close();
        } catch {}
        this.onClose(1006, "heartbeat timeout");
      }
    }, this.pingInterval + this.options.pongTimeout);
  }

  /** With getToken: `connection:refresh` shortly before the token expires. */
  scheduleRefresh() {
    clearTimeout(this.timers.refresh);
    const exp = this.token && tokenExpiry(this.token);
    if (!exp || !this.options.getToken) return;
    const at = Math.max(exp - Date.now() - this.options.refreshBefore, 1000);
    this.timers.refresh = setTimeout(async () => {
      try {
        this.token = await this.options.getToken();
        await this.request("connection:refresh", { token: this.token });
        this.scheduleRefresh();
      } catch (e) {
        this.emit("error", e);
      }
    }, at);
  }

  clearTimers() {
    for (const timer of Object.values(this.timers)) clearTimeout(timer);
    this.timers = {};
  }
}

/**
 * Opens a client to `url` (`ws://host/ws`) with `{ token }` or `{ getToken }`
 * (or neither, where the server's `--connect-proxy` admits the browser by its
 * cookies), and `{ WebSocket }` where there is no global one (Node 20 without
 * `--experimental-websocket`: the `ws` package's). Throws `NO_WEBSOCKET` when
 * there is neither. `{ protocol: "msgpack" }` offers `roomcast.msgpack`:
 * every message both ways is then MessagePack in a binary frame (the
 * application still sees and gives plain values).
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}
