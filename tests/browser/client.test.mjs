// The browser client (GET /roomcast.js) in a real Chromium against the real
// roomcast binary and, for the restart drill, a real redis-server: every
// server on a free loopback port, stopped by its PID.
//
// Run by scripts/test.sh; the harness (harness.mjs) says with what.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import net from "node:net";

import { browser, freePort, page, redis, roomcast, stop, token, waitFor } from "./harness.mjs";

async function publishHttp(port, room, data) {
  const res = await fetch(`http://127.0.0.1:${port}/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${token("feed", 3600, { pub: ["*"] })}` },
    body: JSON.stringify({ room, event: "feed:n", data }),
  });
  return { status: res.status, body: await res.json() };
}

test("connect, join, publish with its ack, presence and a direct message", async () => {
  const port = await freePort();
  const server = await roomcast(port);
  const p = await page(port);
  const result = await p.evaluate(
    async ({ url, alice, bob }) => {
      const a = rc.connect(url, { token: alice });
      const b = rc.connect(url, { token: bob });
      const got = [];
      b.room("lobby").on("chat:msg", (data, msg) => got.push([msg.from, msg.seq, data]));
      const dms = [];
      b.on("user:message", (data, msg) => dms.push([msg.from, data]));
      const joins = [];
      a.room("lobby").on("presence:join", (data) => joins.push(data.userId));
      const joinA = await a.room("lobby").join();
      await b.room("lobby").join();
      const seq = await a.room("lobby").publish("chat:msg", { text: "hi" });
      while (got.length < 1) await new Promise((r) => setTimeout(r, 20));
      const presence = await a.room("lobby").presence();
      const delivered = await a.sendTo("bob", null, { secret: 42 });
      while (dms.length < 1) await new Promise((r) => setTimeout(r, 20));
      const rtt = await a.ping();
      let refused;
      try {
        await a.room("elsewhere").publish("chat:msg", 1);
      } catch (e) {
        refused = e.code;
      }
      return {
        state: a.state,
        joinA,
        seq,
        got,
        joins,
        users: presence.users.map((u) => u.userId).sort(),
        delivered,
        dms,
        rtt,
        refused,
      };
    },
    { url: `ws://127.0.0.1:${port}/ws`, alice: token("alice", 3600, { rooms: ["lobby"] }), bob: token("bob") },
  );
  assert.equal(result.state, "open");
  assert.equal(result.joinA.room, "lobby");
  assert.equal(result.seq, 1);
  assert.deepEqual(result.got, [["alice", 1, { text: "hi" }]]);
  assert.deepEqual(result.joins, ["bob"]);
  assert.deepEqual(result.users, ["alice", "bob"]);
  assert.equal(result.delivered, 1);
  assert.deepEqual(result.dms, [["alice", { secret: 42 }]]);
  assert.ok(result.rtt >= 0 && result.rtt < 5000);
  assert.equal(result.refused, "FORBIDDEN");
  assert.deepEqual(p.errors, []);
  await p.close();
  await stop(server);
});

test("killed and restarted, the node's page reconnects, rejoins and counts every seq once, in order", async () => {
  const url = await redis();
  const [portA, portB] = [await freePort(), await freePort()];
  const cluster = ["--redis", url, "--history", "1000"];
  let a = await roomcast(portA, ...cluster);
  const b = await roomcast(portB, ...cluster);
  const p = await page(portA);
  await p.evaluate(async ({ url, tok }) => {
    window.client = rc.connect(url, { token: tok, reconnect: { base: 100, cap: 500 } });
    window.seqs = [];
    window.resets = 0;
    window.reconnects = [];
    client.on("reconnecting", (attempt, delay) => reconnects.push([attempt, delay]));
    const room = client.room("ticks");
    room.on("feed:n", (data, msg) => seqs.push(msg.seq));
    room.on("reset", () => (window.resets += 1));
    await room.join();
  }, { url: `ws://127.0.0.1:${portA}/ws`, tok: token("viewer") });
  let published = 0;
  const publish = async (n) => {
    for (let i = 0; i < n; i++) {
      const { status } = await publishHttp(portB, "ticks", ++published);
      assert.equal(status, 200);
    }
  };
  await publish(20);
  await waitFor(async () => (await p.evaluate(() => seqs.length)) === 20, "the first 20");
  await stop(a); // SIGKILL, mid-stream
  await publish(30); // missed by the page, kept in Redis
  a = await roomcast(portA, ...cluster);
  await waitFor(async () => (await p.evaluate(() => client.state)) === "open", "the reconnect");
  await publish(20);
  await waitFor(async () => (await p.evaluate(() => seqs.length)) >= 70, "all 70");
  const { seqs, resets, reconnects } = await p.evaluate(() => ({ seqs, resets, reconnects }));
  assert.deepEqual(seqs, Array.from({ length: 70 }, (_, i) => i + 1), "every seq once, in order");
  assert.equal(resets, 0, "recovered, not reset");
  assert.ok(reconnects.length >= 1, "it reconnected with backoff");
  for (const [, delay] of reconnects) assert.ok(delay >= 0 && delay < 500, `${delay}`);
  assert.deepEqual(p.errors, []);
  await p.close();
  await stop(a);
  await stop(b);
});

test("an expired token (4002) reconnects with a fresh one from getToken", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--ping-interval", "1s");
  const p = await page(port);
  await p.exposeFunction("mint", (ttl) => token("short", ttl));
  const result = await p.evaluate(async (url) => {
    let calls = 0;
    const closes = [];
    const client = rc.connect(url, {
      // The first token expires in 2 s; later ones last an hour.
      getToken: async () => window.mint(++calls === 1 ? 2 : 3600),
      reconnect: { base: 50, cap: 200 },
      refreshBefore: -60000, // no refresh before expiry: let the server close with 4002
    });
    client.on("close", (code) => closes.push(code));
    let opens = 0;
    await new Promise((resolve) => client.on("open", () => ++opens === 2 && resolve()));
    const seq = await client.room("after").publish("x:y", 1).catch((e) => e.code);
    return { calls, closes, state: client.state, seq };
  }, `ws://127.0.0.1:${port}/ws`);
  assert.deepEqual(result.closes, [4002]);
  assert.equal(result.calls, 2);
  assert.equal(result.state, "open");
  assert.equal(result.seq, "NOT_IN_ROOM", "the new connection works (and is in no room)");
  await p.close();
  await stop(server);
});

test("a close the protocol says not to retry (1009) is final", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--max-message-size", "1KiB", "--max-write-buffer", "64KiB");
  const p = await page(port);
  const result = await p.evaluate(async ({ url, tok }) => {
    const client = rc.connect(url, { token: tok, reconnect: { base: 10, cap: 20 } });
    await new Promise((resolve) => client.on("open", resolve));
    const closed = new Promise((resolve) => client.on("close", resolve));
    let reconnecting = 0;
    client.on("reconnecting", () => reconnecting++);
    client.room("r").publish("x:y", "z".repeat(4096)).catch(() => {});
    const code = await closed;
    await new Promise((r) => setTimeout(r, 500));
    return { code, reconnecting, state: client.state };
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("big") });
  assert.deepEqual(result, { code: 1009, reconnecting: 0, state: "closed" });
  await p.close();
  await stop(server);
});

test("publishes made offline are kept and sent in order after the reconnect", async () => {
  const port = await freePort();
  let server = await roomcast(port, "--history", "10");
  const p = await page(port);
  await p.evaluate(async ({ url, tok }) => {
    window.client = rc.connect(url, { token: tok, reconnect: { base: 100, cap: 300 } });
    await client.room("q").join();
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("q", 3600, { pub: ["q"] }) });
  await stop(server);
  await waitFor(async () => (await p.evaluate(() => client.state)) === "reconnecting", "the disconnect");
  await p.evaluate(() => {
    window.acks = [];
    for (let i = 1; i <= 3; i++) client.room("q").publish("q:n", i).then((seq) => acks.push([i, seq]));
  });
  server = await roomcast(port, "--history", "10");
  await waitFor(async () => (await p.evaluate(() => acks.length)) === 3, "the queued acks");
  const acks = await p.evaluate(() => acks);
  assert.deepEqual(acks.map(([i]) => i), [1, 2, 3], "sent in order");
  const seqs = acks.map(([, seq]) => seq);
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));

  await p.close();
  await stop(server);
});

/** A WebSocket server that completes the upgrade, greets, then never answers. */
function silentServer() {
  return new Promise((resolve) => {
    const server = net.createServer((socket) => {
      let head = "";
      socket.on("data", (chunk) => {
        if (head.includes("\r\n\r\n")) return;
        head += chunk.toString("latin1");
        const key = /sec-websocket-key: *(\S+)/i.exec(head)?.[1];
        if (!head.includes("\r\n\r\n") || !key) return;
        const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
        socket.write(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
        );
        const hello = Buffer.from(JSON.stringify({ event: "connection:established", data: { connId: "1", pingInterval: 60000 } }));
        socket.write(Buffer.concat([Buffer.from([0x81, hello.length]), hello]));
      });
    });
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

test("an ack that never comes rejects with TIMEOUT", async () => {
  const port = await freePort();
  const server = await roomcast(port);
  const silent = await silentServer();
  const p = await page(port);
  const code = await p.evaluate(async (url) => {
    const client = rc.connect(url, { token: "t", ackTimeout: 300 });
    await new Promise((resolve) => client.on("open", resolve));
    const started = Date.now();
    const code = await client.room("q").publish("q:n", 1).then(() => "acked", (e) => e.code);
    return [code, Date.now() - started];
  }, `ws://127.0.0.1:${silent.address().port}/ws`);
  assert.equal(code[0], "TIMEOUT");
  assert.ok(code[1] >= 250 && code[1] < 3000, `${code[1]} ms`);
  silent.close();
  await p.close();
  await stop(server);
});

test("the demo page shows ticking prices", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--demo");
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(`http://127.0.0.1:${port}/demo`);
  await waitFor(async () => (await page.textContent("#state")) === "open", "the connection");
  const first = Number(await page.textContent("#ticks"));
  await waitFor(async () => Number(await page.textContent("#ticks")) >= first + 5, "ticks");
  const priced = await page.$$eval("#rows tr", (rows) =>
    rows.filter((r) => /^\d+\.\d\d$/.test(r.children[1].textContent)).length,
  );
  assert.ok(priced >= 3, `${priced} rows have a price`);
  assert.equal(await page.$$eval("#rows tr", (rows) => rows.length), 20);
  assert.deepEqual(errors, []);
  await page.close();
  await stop(server);
});
