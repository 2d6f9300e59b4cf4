// Types of roomcast.js, the browser client of roomcast (docs/client.md).

export type CloseCode = number;

/** What the `close` event says: the code, the reason, and whether the client reconnects. */
export interface CloseInfo {
  code: CloseCode;
  reason: string;
  /** `shouldReconnect(code)`, unless the client was closed or ran out of attempts. */
  reconnect: boolean;
}

/** A WebSocket constructor: the browser's, Node 22's, or the `ws` package's. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => {
  readonly readyState: number;
  /** The subprotocol the server chose ("" for none). */
  readonly protocol?: string;
  binaryType?: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
};

export interface ReconnectOptions {
  /** First backoff ceiling, ms (default 500). */
  base?: number;
  /** Largest backoff ceiling, ms (default 30000). */
  cap?: number;
  /** Attempts before giving up (default: no limit). */
  maxAttempts?: number;
}

export interface ConnectOptions {
  /** A JWT, used for every connection. */
  token?: string;
  /** Called before every (re)connection and before the token expires. */
  getToken?: () => string | Promise<string>;
  reconnect?: ReconnectOptions;
  /** How long a request waits for its ack, ms (default 10000). */
  ackTimeout?: number;
  /** Publishes kept while offline: at most `max`, each for `ttl` ms (1000, 60000). */
  offlineQueue?: { max?: number; ttl?: number };
  /** Extra silence past the ping interval before the connection is dead, ms (10000). */
  pongTimeout?: number;
  /** How long before `exp` the token is refreshed, ms (30000). */
  refreshBefore?: number;
  /** The WebSocket constructor to use (default: the global one; `connect` throws NO_WEBSOCKET without either). */
  WebSocket?: WebSocketConstructor;
  /**
   * "msgpack": offer `roomcast.msgpack` (section 14) and, once the server
   * chose it, speak MessagePack in binary frames (default "json").
   */
  protocol?: "json" | "msgpack";
}

export interface RoomMessage<T = unknown> {
  event: string;
  room: string;
  data: T;
  from: string;
  /** Absent on a volatile event. */
  seq?: number;
  ts: number;
}

export interface JoinOptions {
  /** Latest messages to get back. */
  history?: number;
  /**
   * At most this many of the room's events a second (0.1 to 1000, section
   * 14): faster ones are conflated to the newest, which arrives within
   * `1/maxRate` s; skipped events show as `seq` gaps. A join without it on a
   * joined room removes the rate.
   */
  maxRate?: number;
  /**
   * Events that directly follow the last one received come as Fossil
   * deltas of their `data` (section 14), fewer bytes on the wire; the client
   * applies them before the application sees the event, whose `data` is
   * then as if it came whole. A delta that does not apply is an `error`
   * (code `DELTA`) and its event is left out.
   */
  delta?: boolean;
}

export interface JoinAck {
  room: string;
  epoch: string;
  seq: number;
  messages: RoomMessage[];
  recovered?: boolean;
  members: number;
}

/** `room:subscribed` (the server API's `subscribe`): where the room stands. */
export interface Subscribed {
  epoch: string;
  seq: number;
  members: number;
}

export interface PresenceList {
  room: string;
  count: number;
  users: { userId: string; name: string | null; connections: number }[];
  truncated?: true;
}

export interface Reset {
  epoch: string;
  seq: number;
  messages: RoomMessage[];
}

export class RoomcastError extends Error {
  /** A code of docs/protocol.md (FORBIDDEN, RATE_LIMITED, UNAVAILABLE, ...) or of the
   *  client: TIMEOUT, DISCONNECTED, QUEUE_FULL, QUEUE_EXPIRED, CLOSED, GAVE_UP, NO_WEBSOCKET,
   *  BAD_OPTION; INVALID_MSGPACK from `decodeMsgpack`. */
  code: string;
}

export class Room {
  readonly name: string;
  /** Joined by the application: rejoined by the client after every reconnect. */
  readonly joined: boolean;
  /** Subscribed by the server (room:subscribed) until room:unsubscribed or leave(); the server restores it after a reconnect. */
  readonly subscribed: boolean;
  join(options?: JoinOptions): Promise<JoinAck>;
  leave(): Promise<{ room: string }>;
  /** A volatile event (typing, cursors): to the members connected now, no `seq` or history; never queued offline. */
  publish(event: string, data: unknown, options: { echo?: boolean; volatile: true }): Promise<undefined>;
  /** Resolves with the message's `seq`. */
  publish(event: string, data?: unknown, options?: { echo?: boolean; volatile?: false }): Promise<number>;
  presence(): Promise<PresenceList>;
  on(event: "reset", fn: (reset: Reset) => void): () => void;
  on(event: "subscribed", fn: (data: Subscribed) => void): () => void;
  on(event: "unsubscribed", fn: (data: {}) => void): () => void;
  on(event: "presence:join", fn: (data: { userId: string; name: string | null }) => void): () => void;
  on(event: "presence:leave", fn: (data: { userId: string }) => void): () => void;
  on(event: "*", fn: (message: RoomMessage) => void): () => void;
  on<T = unknown>(event: string, fn: (data: T, message: RoomMessage<T>) => void): () => void;
  off(event: string, fn: (...args: any[]) => void): void;
}

export type ClientState = "connecting" | "open" | "reconnecting" | "closed";

export class Client {
  readonly state: ClientState;
  readonly connId?: string;
  /**
   * Bytes of WebSocket message payload received over every connection so
   * far (a text message's UTF-8 length, a binary one's length; not frame
   * headers, not compression, which a WebSocket does not show).
   */
  readonly bytesReceived: number;
  /** WebSocket messages received over every connection so far, pongs included. */
  readonly messagesReceived: number;
  room(name: string): Room;
  /** Resolves with `delivered`. */
  sendTo(user: string, event: string | null, data?: unknown): Promise<number>;
  /** `rpc:<method>` answered by the server's --rpc-proxy: the backend's result. */
  rpc<T = unknown>(method: string, data?: unknown): Promise<T>;
  /** Round trip, ms. */
  ping(): Promise<number>;
  close(): void;
  on(event: "open", fn: (established: { connId: string; userId: string; serverTime: number; pingInterval: number }) => void): () => void;
  on(event: "close", fn: (code: CloseCode, reason: string, info: CloseInfo) => void): () => void;
  on(event: "subscribed", fn: (room: Room, data: Subscribed) => void): () => void;
  on(event: "unsubscribed", fn: (room: Room, data: {}) => void): () => void;
  on(event: "reconnecting", fn: (attempt: number, delayMs: number) => void): () => void;
  on(event: "error", fn: (error: Error) => void): () => void;
  on(event: string, fn: (data: unknown, message: unknown) => void): () => void;
  off(event: string, fn: (...args: any[]) => void): void;
}

export function connect(url: string, options?: ConnectOptions): Client;

/** Codes below 2000 that are never followed by a reconnect: 1000, 1002, 1003, 1007, 1008, 1009. */
export const FINAL_CLOSE_CODES: Set<number>;
/** Reconnect after 4000-4499 and 1001-1999 but FINAL_CLOSE_CODES; not after anything else (4500-4999 included). */
export function shouldReconnect(code: CloseCode): boolean;
export function backoffDelay(attempt: number, options: { base: number; cap: number }, random?: () => number): number;
export function tokenExpiry(token: string): number | null;
/** Applies a Fossil delta (section 14) to `source`; throws a `RoomcastError` (code `DELTA`) when it does not apply. */
export function fossilApply(source: Uint8Array, delta: Uint8Array): Uint8Array;
/** The exact text of the top-level `data` of a JSON object text, or null. */
export function dataText(text: string): string | null;

/** "roomcast.msgpack", the subprotocol of `{ protocol: "msgpack" }`. */
export const MSGPACK_PROTOCOL: string;
/** The MessagePack bytes of what `JSON.stringify` would write of `value`. */
export function encodeMsgpack(value: unknown): Uint8Array;
/** One MessagePack message's value, as `JSON.parse` reads the same JSON; throws INVALID_MSGPACK on bin, ext, non-string keys, bad UTF-8, truncated or trailing bytes. */
export function decodeMsgpack(data: ArrayBuffer | ArrayBufferView): unknown;
/** The JSON text the server writes of one MessagePack message (section 14's canonical form): the base a MessagePack delta member rebuilds; throws INVALID_MSGPACK as `decodeMsgpack` does, and on NaN or infinity. */
export function msgpackToJson(data: ArrayBuffer | ArrayBufferView): string;
