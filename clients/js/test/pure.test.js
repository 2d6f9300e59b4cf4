// Unit tests of the client's pure parts: backoff, the offline queue, the
// room cursor (each seq once, in order) and reading a token's expiry.
import { test } from "node:test";
import assert from "node:assert/strict";

import { backoffDelay, OfflineQueue, RoomCursor, tokenExpiry, shouldReconnect } from "../roomcast.js";

test("backoff grows exponentially to the cap, with full jitter", () => {
  const options = { base: 100, cap: 1000 };
  assert.equal(backoffDelay(0, options, () => 0.999999), 99);
  assert.equal(backoffDelay(3, options, () => 0.5), 400);
  assert.equal(backoffDelay(10, options, () => 0.5), 500, "capped at 1000");
  assert.equal(backoffDelay(1000, options, () => 0.5), 500, "no overflow");
  assert.equal(backoffDelay(5, options, () => 0), 0, "full jitter reaches 0");
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(4, options);
    assert.ok(d >= 0 && d < 1000, `${d}`);
  }
});

test("the offline queue keeps order, refuses past its bound and expires by age", () => {
  let now = 0;
  const q = new OfflineQueue({ max: 3, ttl: 100 }, () => now);
  assert.ok(q.push("a"));
  now = 50;
  assert.ok(q.push("b"));
  assert.ok(q.push("c"));
  assert.equal(q.push("d"), false, "full");
  now = 120;
  assert.ok(q.push("e"), "a expired and made room");
  const { live, expired } = q.drain();
  assert.deepEqual(live, ["b", "c", "e"]);
  assert.deepEqual(expired, []);
  assert.equal(q.length, 0);
  q.push("f");
  now = 300;
  assert.deepEqual(q.drain(), { live: [], expired: ["f"] });
});

test("a room cursor passes each seq once, in order, and says where to recover from", () => {
  const cursor = new RoomCursor();
  assert.deepEqual(cursor.since(), {}, "never joined: nothing to recover");
  cursor.reset("e1", 5);
  assert.equal(cursor.accept(5), false, "the join covered it");
  assert.equal(cursor.accept(6), true);
  assert.equal(cursor.accept(6), false, "a duplicate");
  assert.equal(cursor.accept(4), false, "an old one");
  assert.equal(cursor.accept(8), true, "a gap is passed on");
  assert.equal(cursor.accept(undefined), true, "presence has no seq");
  assert.deepEqual(cursor.since(), { since: 8, epoch: "e1" });
});

test("a token's expiry is read from its payload", () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const token = `${b64({ alg: "HS256" })}.${b64({ sub: "u", exp: 1700000000 })}.sig`;
  assert.equal(tokenExpiry(token), 1700000000000);
  assert.equal(tokenExpiry("garbage"), null);
  assert.equal(tokenExpiry(`${b64({})}.${b64({ sub: "u" })}.s`), null);
});

test("the close codes to retry are sections 8 and 12's, and the ranges' edges", () => {
  const retried = [1001, 1006, 1011, 4002, 4003, 4008, 4000, 4499, 1005, 1012, 1013, 1014, 1015, 1999];
  const final = [1000, 1002, 1003, 1007, 1008, 1009, 4500, 4999, 3999, 3000, 2000, 5000, 999, 0];
  for (const code of retried) assert.equal(shouldReconnect(code), true, `${code}`);
  for (const code of final) assert.equal(shouldReconnect(code), false, `${code}`);
});
