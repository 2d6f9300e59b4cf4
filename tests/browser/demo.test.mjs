// Section 14's feed options in a real Chromium against the real binary: a
// member joined with `delta` sees exactly the events a plain member sees, seq
// by seq, on fewer bytes; and the demo page's options (maxRate, deltas,
// MessagePack) change what the page receives. The prices are published by
// the test over POST /publish; counts have slack and waits are bounded, as
// the machine is shared.
//
// Run by scripts/test.sh; the harness (harness.mjs) says with what.
import { test } from "node:test";
import assert from "node:assert/strict";

import { browser, freePort, page, roomcast, stop, token, waitFor } from "./harness.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * A price update whose `data` is mostly what the last one was (an order
 * book that moves at one level), so a delta of it is a few bytes of ~2 KB.
 */
function price(i) {
  const book = Array.from({ length: 100 }, (_, k) => ({ level: k, size: k === i % 100 ? i : 1000 + k }));
  return { price: 100 + i / 100, change: (i % 7) / 1000 - 0.003, book };
}

async function publish(port, room, data) {
  const res = await fetch(`http://127.0.0.1:${port}/publish`, {
    method: "POST",
    headers: { authorization: `Bearer ${token("feed", 3600, { pub: ["prices:*"], rate: 0 })}` },
    body: JSON.stringify({ room, event: "price:tick", data }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** Publishes `price(i)` into `room` every `ms` until stopped; resolves when it has stopped. */
function feed(port, room, ms) {
  let running = true;
  const done = (async () => {
    for (let i = 0; running; i++) {
      await publish(port, room, price(i));
      await sleep(ms);
    }
  })();
  return () => {
    running = false;
    return done;
  };
}

test("a member joined with delta sees the same values as a plain one, seq by seq, on fewer bytes", async () => {
  const port = await freePort();
  const server = await roomcast(port);
  const p = await page(port);
  const N = 60;
  await p.evaluate(
    async ({ url, alice, bob }) => {
      window.plain = rc.connect(url, { token: alice });
      window.delta = rc.connect(url, { token: bob });
      window.got = { plain: [], delta: [] };
      plain.room("prices:X").on("price:tick", (data, msg) => got.plain.push([msg.seq, data]));
      delta.room("prices:X").on("price:tick", (data, msg) => got.delta.push([msg.seq, data]));
      await plain.room("prices:X").join();
      await delta.room("prices:X").join({ delta: true });
      window.before = { plain: plain.bytesReceived, delta: delta.bytesReceived };
    },
    { url: `ws://127.0.0.1:${port}/ws`, alice: token("alice"), bob: token("bob") },
  );
  for (let i = 0; i < N; i++) await publish(port, "prices:X", price(i));
  await waitFor(
    () => p.evaluate((n) => got.plain.length >= n && got.delta.length >= n, N),
    async () => `${N} events each, got ${await p.evaluate(() => [got.plain.length, got.delta.length])}`,
  );
  const result = await p.evaluate(() => ({
    got,
    bytes: { plain: plain.bytesReceived - before.plain, delta: delta.bytesReceived - before.delta },
  }));
  assert.deepEqual(
    result.got.plain.map(([seq]) => seq),
    Array.from({ length: N }, (_, i) => i + 1),
  );
  assert.deepEqual(result.got.plain.map(([, data]) => data), Array.from({ length: N }, (_, i) => price(i)));
  assert.deepEqual(result.got.delta, result.got.plain, "the same values, seq by seq");
  // Whole, each event is ~2 KB; as deltas, tens of bytes after the first.
  assert.ok(result.bytes.plain > N * 1500, `plain bytes ${result.bytes.plain}`);
  assert.ok(result.bytes.delta < result.bytes.plain / 3, `delta bytes ${result.bytes.delta}, plain ${result.bytes.plain}`);
  assert.deepEqual(p.errors, []);
  await p.close();
  await stop(server);
});

test("the demo page's maxRate, delta and MessagePack options change what it receives", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--demo");
  const p = await browser.newPage();
  const errors = [];
  p.on("pageerror", (e) => errors.push(e));
  await p.goto(`http://127.0.0.1:${port}/demo`);
  const state = () => p.textContent("#state");
  const ticks = () => p.evaluate(() => Number(document.querySelector('tr[data-symbol="T000"]').dataset.ticks));
  const total = () => p.evaluate(() => Number(document.getElementById("bps").dataset.total));
  await waitFor(async () => (await state()) === "open", async () => `the page open, it is ${await state()}`);
  assert.equal(await p.textContent("#proto"), "JSON");

  // Bytes per update of T000 over the next `n` of them (the demo feed's
  // small ticks into the other rooms ride along, the same either way).
  async function bytesPerTick(n) {
    const [t0, b0] = [await ticks(), await total()];
    await waitFor(async () => (await ticks()) >= t0 + n, async () => `${n} ticks of T000, got ${(await ticks()) - t0}`, 30000);
    // The gauge's total is sampled each second.
    await sleep(1100);
    const [t1, b1] = [await ticks(), await total()];
    return (b1 - b0) / (t1 - t0);
  }
  // Once the page has connected anew after a change, and its first updates are in.
  async function changed(select) {
    await select();
    await waitFor(async () => (await state()) === "open", async () => `the page open again, it is ${await state()}`);
    const t = await ticks();
    await waitFor(async () => (await ticks()) > t, "an update after the change", 20000);
  }

  const stopFeed = feed(port, "prices:T000", 50);
  try {
    const plain = await bytesPerTick(30);
    assert.ok(plain > 1500, `whole events of ~2 KB, got ${plain} bytes per update`);

    await changed(() => p.check("#delta"));
    const delta = await bytesPerTick(40);
    // Most updates are a delta of tens of bytes; a loose bound, as the odd
    // event may still come whole (the demo feed's own ticks into T000).
    assert.ok(delta < plain * 0.75, `with deltas ${delta} bytes per update, without ${plain}`);
    assert.match(await p.textContent("#bps"), /^\d+$/);

    // 20 updates/s published; at most 1/s delivered, and still some.
    await changed(() => p.selectOption("#maxRate", "1"));
    const t0 = await ticks();
    const started = Date.now();
    await sleep(5000);
    const got = (await ticks()) - t0;
    const seconds = (Date.now() - started) / 1000;
    assert.ok(got >= 1 && got <= seconds + 3, `${got} updates in ${seconds} s at maxRate 1`);

    await p.selectOption("#maxRate", "");
    await changed(() => p.uncheck("#delta"));
    await changed(() => p.check("#msgpack"));
    assert.equal(await p.textContent("#proto"), "MessagePack");
    // Every update again, whole.
    const packed = await bytesPerTick(20);
    assert.ok(packed > plain / 2, `over MessagePack ${packed} bytes per update, whole JSON ${plain}`);

    // MessagePack with deltas: most updates are deltas again (an update
    // whose previous data is not in the canonical form comes whole).
    await changed(() => p.check("#delta"));
    const packedDelta = await bytesPerTick(40);
    assert.ok(packedDelta < packed * 0.75, `over MessagePack with deltas ${packedDelta} bytes per update, without ${packed}`);
  } finally {
    await stopFeed();
  }
  const shown = await p.evaluate(() => document.querySelector('tr[data-symbol="T000"]').children[1].textContent);
  // The test's feed (100.00 and up) or, after it stopped, the demo's own
  // ticks of T000 (a walk from 50.00): either way a price the page rebuilt.
  assert.match(shown, /^\d{2,3}\.\d\d$/);
  assert.deepEqual(errors, []);
  await p.close();
  await stop(server);
});
