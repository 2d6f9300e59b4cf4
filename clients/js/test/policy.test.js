// The client's reconnect policy over a fake WebSocket: which close codes it
// retries (section 8), what it does with pending acks and the offline queue.
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
    this.onmessage({ data: JSON.stringify({ event: "ack", id, success: true, data }) });
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

test("1008 (and 1002, 1003, 1007, 1009) are final; 1006 and 4008 are retried", async () => {
  for (const [code, retried] of [[1008, false], [1002, false], [1009, false], [1006, true], [4008, true], [1001, true]]) {
    FakeSocket.all = [];
    const c = client();
    await tick();
    FakeSocket.all[0].open();
    FakeSocket.all[0].serverClose(code);
    await tick(20);
    assert.equal(FakeSocket.all.length > 1, retried, `close ${code}`);
    assert.equal(c.state === "closed", !retried, `close ${code}: ${c.state}`);
  }
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
