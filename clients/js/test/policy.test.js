// The client over a fake WebSocket: which close codes it retries (sections 8
// and 12) and what it tells the application, what it does with pending acks
// and the offline queue (volatile publishes stay out of it), the WebSocket constructor it uses, and the rooms the
// server subscribes it to (section 12).
import { test, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";

import { connect } from "../roomcast.js";

class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(text) {
    this.sent.push(text);
  }
  close() {}
  /** The server side: the upgrade and the greeting. */
  open() {
    this.readyState = 1;
    this.onmessage({ data: JSON.stringify({ event: "connection:established", data: { connId: "1", pingInterval: 60000 } }) });
  }
  serverClose(code) {
    this.readyState = 3;
    this.onclose({ code, reason: "" });
  }
  ack(index, data) {
    const { id } = JSON.parse(this.sent[index]);
    this.receive({ event: "ack", id, success: true, data });
  }
  refuse(index, code) {
    const { id } = JSON.parse(this.sent[index]);
    this.receive({ event: "ack", id, success: false, error: { code, message: code } });
  }
  receive(message) {
    this.onmessage({ data: JSON.stringify(message) });
  }
  /** The messages the client sent, parsed. */
  messages() {
    return this.sent.map((text) => JSON.parse(text));
  }
}

const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));
let clients = [];

beforeEach(() => {
  FakeSocket.all = [];
  globalThis.WebSocket = FakeSocket;
});

afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});

function client(options = {}) {
  const c = connect("ws://h/ws", { token: "t", reconnect: { base: 1, cap: 2 }, ...options });
  clients.push(c);
  return c;
}

test("the close code decides the reconnect, and the close event says so", async () => {
  const cases = [[1008, false], [1002, false], [1009, false], [4500, false], [4999, false], [3999, false],
    [1006, true], [4008, true], [1001, true], [4000, true], [4499, true]];
  for (const [code, retried] of cases) {
    FakeSocket.all = [];
    const c = client();
    const closes = [];
    c.on("close", (...args) => closes.push(args));
    await tick();
    FakeSocket.all[0].open();
    FakeSocket.all[0].onclose({ code, reason: "bye" });
    await tick(20);
    assert.deepEqual(closes, [[code, "bye", { code, reason: "bye", reconnect: retried }]], `close ${code}`);
    assert.equal(FakeSocket.all.length > 1, retried, `close ${code}`);
    assert.equal(c.state === "closed", !retried, `close ${code}: ${c.state}`);
  }
});

test("a close after the last allowed attempt says it will not reconnect", async () => {
  const c = client({ reconnect: { base: 1, cap: 2, maxAttempts: 0 } });
  const infos = [];
  c.on("close", (code, reason, info) => infos.push(info));
  await tick();
  FakeSocket.all[0].open();
  FakeSocket.all[0].serverClose(1006);
  await tick(20);
  assert.deepEqual(infos, [{ code: 1006, reason: "", reconnect: false }]);
  assert.equal(FakeSocket.all.length, 1);
  assert.equal(c.state, "closed");
});

test("the WebSocket constructor can be given; with none at all, connect says so", async () => {
  delete globalThis.WebSocket;
  assert.throws(() => connect("ws://h/ws", { token: "t" }), (e) => e.code === "NO_WEBSOCKET");
  const c = client({ WebSocket: FakeSocket });
  await tick();
  assert.equal(FakeSocket.all.length, 1);
  FakeSocket.all[0].open();
  assert.equal(c.state, "open");
});

test("a publish waiting for its ack is refused when the connection drops; one made offline waits", async () => {
  const c = client();
  await tick();
  FakeSocket.all[0].open();
  const sent = c.room("r").publish("x:y", 1);
  FakeSocket.all[0].serverClose(1006);
  await assert.rejects(sent, (e) => e.code === "DISCONNECTED");
  const queued = c.room("r").publish("x:y", 2);
  await tick(20);
  const second = FakeSocket.all.at(-1);
  second.open();
  await tick();
  assert.equal(JSON.parse(second.sent[0]).data, 2, "sent after the reconnect");
  second.ack(0, { seq: 7 });
  assert.equal(await queued, 7);
});

test("a volatile publish carries volatile, resolves without a seq, and is never queued offline", async () => {
  const c = client();
  await tick();
  FakeSocket.all[0].open();
  const sent = c.room("r").publish("typing:start", null, { volatile: true });
  assert.equal(FakeSocket.all[0].messages()[0].volatile, true);
  FakeSocket.all[0].ack(0, {});
  assert.equal(await sent, undefined);
  FakeSocket.all[0].serverClose(1006);
  await assert.rejects(c.room("r").publish("typing:stop", null, { volatile: true }), (e) => e.code === "DISCONNECTED");
  const queued = c.room("r").publish("x:y", 2);
  await tick(20);
  const second = FakeSocket.all.at(-1);
  second.open();
  await tick();
  assert.deepEqual(
    second.messages().map((m) => m.event),
    ["x:y"],
    "only the sequenced publish waited for the reconnect",
  );
  second.ack(0, { seq: 1 });
  assert.equal(await queued, 1);
});

test("getToken gives every connection a fresh token", async () => {
  let n = 0;
  client({ getToken: async () => `tok${++n}` });
  await tick();
  FakeSocket.all[0].open();
  FakeSocket.all[0].serverClose(4002);
  await tick(20);
  assert.match(FakeSocket.all[0].url, /token=tok1$/);
  assert.match(FakeSocket.all[1].url, /token=tok2$/);
});

/** A client, open, that the server subscribed to room `s` at epoch e1, seq 5. */
async function subscribedClient() {
  const c = client();
  await tick();
  FakeSocket.all[0].open();
  const told = [];
  c.on("subscribed", (room, data) => told.push(["subscribed", room.name, data]));
  c.room("s").on("n", (data, msg) => told.push(["n", msg.seq]));
  c.room("s").on("reset", (reset) => told.push(["reset", reset.seq, reset.messages.length]));
  c.on("unsubscribed", (room) => told.push(["unsubscribed", room.name]));
  FakeSocket.all[0].receive({ event: "room:subscribed", room: "s", data: { epoch: "e1", seq: 5, members: 2 } });
  return { c, told };
}

/** The server closes the latest connection with `code`; the client's next one opens. */
async function reconnect(code) {
  FakeSocket.all.at(-1).serverClose(code);
  await tick(20);
  const ws = FakeSocket.all.at(-1);
  ws.open();
  await tick();
  return ws;
}

const event = (seq) => ({ event: "n", room: "s", data: seq, from: "u", seq, ts: 1 });

test("room:subscribed gives the application the room, from the server's seq on", async () => {
  const { c, told } = await subscribedClient();
  const ws = FakeSocket.all[0];
  ws.receive(event(5));
  ws.receive(event(6));
  assert.deepEqual(told, [["subscribed", "s", { epoch: "e1", seq: 5, members: 2 }], ["n", 6]]);
  assert.equal(c.room("s").subscribed, true);
  assert.deepEqual(c.room("s").cursor.since(), { since: 6, epoch: "e1" });
  assert.deepEqual(ws.messages(), [], "no join sent for it");
});

test("a subscription is not rejoined by the client; restored by the server, it recovers the gap first", async () => {
  const { told } = await subscribedClient();
  FakeSocket.all[0].receive(event(6));
  const ws = await reconnect(1006);
  assert.deepEqual(ws.messages(), [], "the server restores it, not the client");
  ws.receive({ event: "room:subscribed", room: "s", data: { epoch: "e1", seq: 8, members: 2 } });
  const join = ws.messages()[0];
  assert.deepEqual({ ...join, id: 0 }, { event: "room:join", data: { room: "s", since: 6, epoch: "e1" }, id: 0 });
  ws.receive(event(9)); // live, before the recovery's answer: it waits
  ws.ack(0, { room: "s", epoch: "e1", seq: 8, messages: [event(7), event(8)], recovered: true, members: 2 });
  await tick();
  assert.deepEqual(told.filter(([what]) => what === "n").map(([, seq]) => seq), [6, 7, 8, 9]);
});

test("a restored subscription whose gap the server refuses to fill emits reset", async () => {
  const { told } = await subscribedClient();
  const ws = await reconnect(1001);
  ws.receive({ event: "room:subscribed", room: "s", data: { epoch: "e1", seq: 9, members: 1 } });
  ws.refuse(0, "FORBIDDEN");
  await tick();
  ws.receive(event(10));
  assert.deepEqual(told.slice(1).filter(([what]) => what !== "subscribed"), [["reset", 9, 0], ["n", 10]]);
});

test("room:unsubscribed ends it: handlers told, no rejoin after a reconnect", async () => {
  const { c, told } = await subscribedClient();
  const room = c.room("s");
  const joined = room.join();
  FakeSocket.all[0].ack(0, { room: "s", epoch: "e1", seq: 5, messages: [], members: 2 });
  await joined;
  const ended = [];
  room.on("unsubscribed", (data) => ended.push(data));
  FakeSocket.all[0].receive({ event: "room:unsubscribed", room: "s", data: {} });
  assert.deepEqual(ended, [{}]);
  assert.deepEqual(told.at(-1), ["unsubscribed", "s"]);
  assert.equal(room.subscribed, false);
  const ws = await reconnect(1006);
  assert.deepEqual(ws.messages(), [], "neither rejoined nor resubscribed");
});

test("bytesReceived and messagesReceived count every message's payload, over reconnects", async () => {
  const c = client();
  assert.equal(c.bytesReceived, 0);
  assert.equal(c.messagesReceived, 0);
  const ws = FakeSocket.all[0];
  ws.open();
  const greeting = JSON.stringify({ event: "connection:established", data: { connId: "1", pingInterval: 60000 } });
  assert.equal(c.bytesReceived, greeting.length);
  // UTF-8 bytes, not UTF-16 units: é is 2 bytes, € 3, 😀 (a surrogate pair) 4.
  ws.onmessage({ data: "pong" });
  ws.receive({ event: "x", data: "é€😀" });
  const text = JSON.stringify({ event: "x", data: "é€😀" });
  assert.equal(c.bytesReceived, greeting.length + 4 + Buffer.byteLength(text));
  assert.equal(c.messagesReceived, 3);
  ws.serverClose(1006);
  await tick(20);
  const again = FakeSocket.all[1];
  assert.ok(again, "reconnected");
  again.onmessage({ data: new Uint8Array([0x81, 0xa1, 0x78, 0x01]).buffer });
  assert.equal(c.bytesReceived, greeting.length + 4 + Buffer.byteLength(text) + 4, "a binary message counts its byteLength");
  assert.equal(c.messagesReceived, 4);
});
