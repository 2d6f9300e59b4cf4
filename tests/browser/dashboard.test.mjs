// The dashboard (GET /) in a real Chromium against the real roomcast binary:
// its stats view, and its operator console driving the server API
// (PROTOCOL.md section 12) against pages running the browser client.
//
// Run by scripts/test.sh; the harness (harness.mjs) says with what.
import { test } from "node:test";
import assert from "node:assert/strict";

import { browser, freePort, page, redis, roomcast, stop, token, waitFor } from "./harness.mjs";

const KEY = "console-test-key";

/** The dashboard, with its page errors and console errors collected in `errors`. */
async function dashboard(port) {
  const p = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  const errors = [];
  p.on("pageerror", (e) => errors.push(e));
  // Failed /api answers are the console's subject here, not errors of the page.
  p.on("console", (m) => m.type() === "error" && !/status of [45]\d\d/.test(m.text()) && errors.push(m.text()));
  await p.goto(`http://127.0.0.1:${port}/`);
  p.errors = errors;
  return p;
}

/** Looks `user` up in the console and waits until their table has `rows` rows. */
async function lookUpUser(con, user, rows) {
  await con.fill("#user-name", user);
  await con.click("#user-form button");
  await waitFor(async () => (await con.$$eval("#user-connections tbody tr", (r) => r.length)) === rows
    && (await con.textContent("#user-summary")).startsWith(user),
  async () => `${rows} connections of ${user}; the console shows "${await text(con, "#user-summary")}" ${await text(con, "#user-error")}`);
}

/** A direct server API call, as a backend would make it. */
async function api(port, method, params) {
  const res = await fetch(`http://127.0.0.1:${port}/api/${method}`, {
    method: "POST",
    headers: { "x-api-key": KEY },
    body: JSON.stringify(params),
  });
  return { status: res.status, body: await res.json() };
}

const text = (p, selector) => p.textContent(selector).then((t) => t.trim());

test("the console disconnects one connection, then the rest with a code: the page sees each close and does not reconnect", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--api-key", "other-key", "--api-key", KEY);
  const victim = await page(port);
  const ids = await victim.evaluate(async ({ url, tok }) => {
    window.closes = { a: [], b: [] };
    window.reconnects = 0;
    const open = (name) => {
      const client = rc.connect(url, { token: tok, reconnect: { base: 20, cap: 50 } });
      client.on("close", (code, reason, info) => closes[name].push(info));
      client.on("reconnecting", () => reconnects++);
      return client;
    };
    window.a = open("a");
    window.b = open("b");
    await a.room("lobby").join();
    await b.room("lobby").join();
    await b.room("side").join();
    return [a.connId, b.connId];
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("victim") });
  const bystander = await page(port);
  await bystander.evaluate(async ({ url, tok }) => {
    window.client = rc.connect(url, { token: tok });
    await client.room("lobby").join();
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("bystander") });

  const con = await dashboard(port);
  await con.fill("#credential", KEY);
  assert.match(await text(con, "#credential-kind"), /X-API-Key/);
  await lookUpUser(con, "victim", 2);
  const rows = await con.$$eval("#user-connections tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent.trim())));
  assert.deepEqual(rows.map((r) => r[0]).sort(), [...ids].sort(), "one row per connection, by connId");
  const rowOf = (id) => rows.find((r) => r[0] === id);
  assert.equal(rowOf(ids[0])[2], "lobby");
  assert.deepEqual(rowOf(ids[1])[2].split(" ").sort(), ["lobby", "side"]);
  assert.ok(rows.every((r) => r[1].length > 0), "each connection names its node");

  // One connection, by its row: the default code and reason.
  await con.locator("#user-connections tbody tr", { hasText: ids[0] }).locator("button", { hasText: "Disconnect" }).click();
  await waitFor(async () => (await text(con, "#user-outcome")) === "disconnect: 1 connection", "the disconnect's reply");
  await waitFor(() => victim.evaluate(() => closes.a.length === 1), "the first close");
  // A code out of 4000-4999 is refused, and said so plainly.
  await con.fill("#disconnect-code", "1000");
  await con.click("#disconnect-all");
  await waitFor(async () => /^400 VALIDATION_ERROR: ./.test(await text(con, "#user-error")), "the refusal of code 1000");
  // The rest, with a code and reason of the operator's.
  await con.fill("#disconnect-code", "4700");
  await con.fill("#disconnect-reason", "maintenance");
  await con.click("#disconnect-all");
  await waitFor(() => victim.evaluate(() => closes.b.length === 1), "the second close");
  assert.equal(await text(con, "#user-error"), "");
  await new Promise((r) => setTimeout(r, 500)); // room for a reconnect that must not come
  const after = await victim.evaluate(() => ({ closes, reconnects, states: [a.state, b.state] }));
  assert.deepEqual(after.closes, {
    a: [{ code: 4500, reason: "disconnected", reconnect: false }],
    b: [{ code: 4700, reason: "maintenance", reconnect: false }],
  });
  assert.equal(after.reconnects, 0);
  assert.deepEqual(after.states, ["closed", "closed"]);
  await lookUpUser(con, "victim", 0);
  assert.equal(await bystander.evaluate(() => client.state), "open", "another user's connection stays");
  assert.deepEqual(con.errors, []);
  assert.deepEqual(victim.errors, []);
  await Promise.all([con.close(), victim.close(), bystander.close()]);
  await stop(server);
});

test("a disconnect with a code of 4000-4499 is followed by a reconnect", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--api-key", KEY);
  const p = await page(port);
  const first = await p.evaluate(async ({ url, tok }) => {
    window.client = rc.connect(url, { token: tok, reconnect: { base: 20, cap: 50 } });
    window.closes = [];
    client.on("close", (code, reason, info) => closes.push(info));
    await new Promise((resolve) => client.on("open", resolve));
    return client.connId;
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("flaky") });
  const reply = await api(port, "disconnect", { user: "flaky", code: 4499, reason: "move along" });
  assert.deepEqual([reply.status, reply.body], [200, { result: { connections: 1 } }]);
  await waitFor(() => p.evaluate((id) => client.state === "open" && client.connId !== id, first), "the reconnect");
  assert.deepEqual(await p.evaluate(() => closes), [{ code: 4499, reason: "move along", reconnect: true }]);
  assert.deepEqual(p.errors, []);
  await p.close();
  await stop(server);
});

test("a subscription from the console reaches room:subscribed, then what the console publishes reaches the page", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--api-key", KEY, "--history", "50");
  const reader = await page(port);
  await reader.evaluate(async ({ url, tok }) => {
    window.client = rc.connect(url, { token: tok });
    window.subs = [];
    window.unsubs = [];
    window.got = [];
    client.on("subscribed", (room, data) => {
      subs.push([room.name, data]);
      room.on("news:flash", (d, msg) => got.push({ data: d, from: msg.from, seq: msg.seq }));
    });
    client.on("unsubscribed", (room) => unsubs.push(room.name));
    await new Promise((resolve) => client.on("open", resolve));
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("reader", 3600, { rooms: ["own"] }) });

  const con = await dashboard(port);
  await con.fill("#credential", KEY);
  await lookUpUser(con, "reader", 1);
  // "news" is outside the reader's `rooms`: the API is trusted.
  await con.fill("#subscribe-room", "news");
  await con.click("#subscribe-form button");
  await waitFor(async () => (await text(con, "#user-outcome")) === "subscribe: 1 connection", "the subscribe's reply");
  await waitFor(() => reader.evaluate(() => subs.length === 1), "room:subscribed");
  const [[room, data]] = await reader.evaluate(() => subs);
  assert.equal(room, "news");
  assert.equal(typeof data.epoch, "string");
  assert.equal(data.seq, 0);
  assert.equal(data.members, 1);
  await waitFor(async () => (await text(con, "#user-connections tbody")).includes("news"), "the room in the user's row");

  // The room: presence, no messages yet, then a publish from the form.
  await con.fill("#room-name", "news");
  await con.click("#room-form button");
  await waitFor(async () => (await text(con, "#presence-summary")) === "news: 1 user", "the presence");
  assert.deepEqual(await con.$$eval("#presence tbody td", (tds) => tds.map((td) => td.textContent)), ["reader", "", "1"]);
  assert.match(await text(con, "#history-summary"), /^0 messages; epoch \S+, seq 0$/);
  await con.fill("#publish-event", "news:flash");
  await con.fill("#publish-data", "{not json");
  await con.click("#publish-form button");
  await waitFor(async () => /^the data is not JSON/.test(await text(con, "#room-error")), "the local refusal");
  const markup = '<img src=x onerror="window.pwned=1"><b>breaking</b>';
  await con.fill("#publish-data", JSON.stringify({ text: markup }));
  await con.click("#publish-form button");
  await waitFor(async () => (await text(con, "#publish-outcome")) === "published to news as seq 1", "the publish's reply");
  await waitFor(() => reader.evaluate(() => got.length === 1), "the message on the page");
  assert.deepEqual(await reader.evaluate(() => got), [{ data: { text: markup }, from: "api", seq: 1 }]);
  await waitFor(async () => (await con.$$eval("#history tbody tr", (r) => r.length)) === 1, "the message in the history");
  const cells = await con.$$eval("#history tbody td", (tds) => tds.map((td) => td.textContent));
  assert.deepEqual([cells[0], cells[1], cells[2], cells[4]], ["1", "news:flash", "api", JSON.stringify({ text: markup })]);
  assert.match(cells[3], /^\d\d:\d\d:\d\d\.\d{3}$/, "the time of day");
  assert.equal(await con.evaluate(() => document.querySelectorAll("#console img, #console b:not(#user-summary b)").length), 0,
    "server data is text, never markup");
  assert.equal(await con.evaluate(() => window.pwned), undefined);

  // Rooms by pattern; a room of no member is not listed.
  await api(port, "publish", { room: "newsless", event: "news:flash", data: 0 });
  await con.fill("#rooms-pattern", "new*");
  await con.click("#rooms-form button");
  await waitFor(async () => (await text(con, "#rooms-summary")) === "1 room", "the room list");
  assert.deepEqual(await con.$$eval("#room-list tbody td", (tds) => tds.map((td) => td.textContent)), ["news", "1", "1"]);
  await con.screenshot({ path: `${process.env.SCREENSHOT_DIR || "."}/console.png`, fullPage: true });

  // Unsubscribed from the console: nothing published later reaches the page.
  await con.click("#unsubscribe");
  await waitFor(async () => (await text(con, "#user-outcome")) === "unsubscribe: 1 connection", "the unsubscribe's reply");
  await waitFor(() => reader.evaluate(() => unsubs.length === 1), "room:unsubscribed");
  const late = await api(port, "publish", { room: "news", event: "news:flash", data: "late" });
  assert.equal(late.status, 200, JSON.stringify(late.body));
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await reader.evaluate(() => got.length), 1);
  assert.deepEqual(con.errors, []);
  assert.deepEqual(reader.errors, []);
  await Promise.all([con.close(), reader.close()]);
  await stop(server);
});

test("a subscription by a direct API call reaches the page's room:subscribed handler and the room's messages", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--api-key", KEY);
  const reader = await page(port);
  await reader.evaluate(async ({ url, tok }) => {
    window.client = rc.connect(url, { token: tok });
    window.got = [];
    client.room("alerts").on("subscribed", (data) => got.push(["subscribed", data.members]));
    client.room("alerts").on("ops:alert", (data, msg) => got.push([msg.event, data, msg.seq]));
    await new Promise((resolve) => client.on("open", resolve));
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("oncall") });
  const sub = await api(port, "subscribe", { user: "oncall", room: "alerts" });
  assert.deepEqual([sub.status, sub.body], [200, { result: { connections: 1 } }]);
  const pub = await api(port, "publish", { room: "alerts", event: "ops:alert", data: { level: 2 } });
  assert.equal(pub.status, 200, JSON.stringify(pub.body));
  await waitFor(() => reader.evaluate(() => got.length === 2), "the subscription and the message");
  assert.deepEqual(await reader.evaluate(() => got), [["subscribed", 1], ["ops:alert", { level: 2 }, 1]]);
  assert.deepEqual(reader.errors, []);
  await reader.close();
  await stop(server);
});

test("in a cluster the console reaches every node, and names a node that does not answer in time", async () => {
  const url = await redis();
  const [portA, portB] = [await freePort(), await freePort()];
  const cluster = (node) => ["--api-key", KEY, "--redis", url, "--node-id", node, "--api-timeout", "500ms"];
  const a = await roomcast(portA, ...cluster("east"));
  const b = await roomcast(portB, ...cluster("west"));
  const open = async (port) => {
    const p = await page(port);
    await p.evaluate(async ({ url, tok }) => {
      window.client = rc.connect(url, { token: tok });
      window.got = [];
      window.closes = [];
      client.on("subscribed", (room) => room.on("desk:note", (data) => got.push(data)));
      client.on("close", (code) => closes.push(code));
      await new Promise((resolve) => client.on("open", resolve));
    }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("roamer") });
    return p;
  };
  // A node learns of the others from Redis within a second of their start.
  await waitFor(async () => (await api(portA, "info", {})).body.result?.nodes.length === 2, "east to know west");
  const [onA, onB] = [await open(portA), await open(portB)];
  const con = await dashboard(portA);
  await con.fill("#credential", KEY);
  await lookUpUser(con, "roamer", 2);
  const nodes = await con.$$eval("#user-connections tbody tr", (trs) => trs.map((tr) => tr.cells[1].textContent).sort());
  assert.deepEqual(nodes, ["east", "west"]);
  await con.fill("#subscribe-room", "desk");
  await con.click("#subscribe-form button");
  await waitFor(async () => (await text(con, "#user-outcome")) === "subscribe: 2 connections", "the subscribe on both nodes");
  await con.fill("#room-name", "desk");
  await con.click("#room-form button");
  await waitFor(async () => (await text(con, "#presence-summary")) === "desk: 1 user", "the presence");
  await con.fill("#publish-event", "desk:note");
  await con.fill("#publish-data", '"hello"');
  await con.click("#publish-form button");
  await waitFor(async () => (await text(con, "#publish-outcome")) === "published to desk as seq 1", "the publish");
  for (const p of [onA, onB]) await waitFor(() => p.evaluate(() => got.length === 1), "the note on both nodes");
  assert.deepEqual(await onB.evaluate(() => got), ["hello"]);

  // West stops answering: the disconnect applies on east and says whom it missed.
  b.kill("SIGSTOP");
  try {
    await con.click("#disconnect-all");
    await waitFor(async () => (await text(con, "#user-outcome")).startsWith("disconnect:"), "the disconnect's reply", 5000);
    assert.equal(await text(con, "#user-outcome"), "disconnect: 1 connection (no answer in time from west)");
    await waitFor(() => onA.evaluate(() => closes.length === 1), "the close on east");
    assert.deepEqual(await onA.evaluate(() => closes), [4500]);
  } finally {
    b.kill("SIGCONT");
  }
  assert.deepEqual(con.errors, []);
  await Promise.all([con.close(), onA.close(), onB.close()]);
  await stop(a);
  await stop(b);
});

test("the console's credential: a token goes as Bearer, a key as X-API-Key, refusals are shown, and neither is stored", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--api-key", KEY);
  const con = await dashboard(port);
  const sent = [];
  con.on("request", (r) => sent.push({ url: r.url(), headers: r.headers() }));
  const listRooms = async (credential) => {
    await con.fill("#credential", credential);
    await con.evaluate(() => {
      document.getElementById("rooms-error").textContent = "";
      document.getElementById("rooms-view").hidden = true;
    });
    await con.press("#rooms-pattern", "Enter");
    await waitFor(async () => (await text(con, "#rooms-error")) !== "" || (await con.isVisible("#rooms-view")), "an answer");
    return text(con, "#rooms-error");
  };

  const admin = token("ops", 3600, { admin: true });
  assert.equal(await listRooms(admin), "");
  assert.match(await text(con, "#credential-kind"), /Bearer/);
  const apiCalls = () => sent.filter((r) => new URL(r.url).pathname.startsWith("/api/"));
  assert.equal(apiCalls().at(-1).headers.authorization, `Bearer ${admin}`);
  assert.equal(apiCalls().at(-1).headers["x-api-key"], undefined);

  assert.match(await listRooms(token("pleb")), /^403 FORBIDDEN: ./);
  assert.match(await listRooms(token("ops", -60, { admin: true })), /^401 TOKEN_EXPIRED: ./);
  assert.match(await listRooms("wrong-key"), /^401 UNAUTHENTICATED: ./);
  assert.equal(apiCalls().at(-1).headers["x-api-key"], "wrong-key");
  assert.equal(apiCalls().at(-1).headers.authorization, undefined);
  assert.equal(await listRooms(KEY), "");
  const callsBefore = apiCalls().length;
  assert.equal(await listRooms("clé"), "an API key or token is printable ASCII");
  assert.equal(apiCalls().length, callsBefore, "not sent");
  await con.click("#forget");
  assert.equal(await con.inputValue("#credential"), "");
  await con.press("#rooms-pattern", "Enter");
  await waitFor(async () => /API key or an admin token/.test(await text(con, "#rooms-error")), "the ask for a credential");

  // Typed, used and left in the field: in memory, nowhere else.
  await con.fill("#credential", admin);
  await con.press("#credential", "Enter");
  await con.press("#user-name", "Enter");
  await con.fill("#user-name", "nobody");
  await con.press("#user-name", "Enter");
  await waitFor(async () => (await text(con, "#user-summary")) === "nobody: 0 connections", "the lookup");
  const kept = await con.evaluate(() => ({
    local: JSON.stringify({ ...localStorage }),
    session: JSON.stringify({ ...sessionStorage }),
    cookie: document.cookie,
    url: location.href,
    entries: performance.getEntries().map((e) => e.name).join(" "),
  }));
  assert.deepEqual(kept, {
    local: "{}",
    session: "{}",
    cookie: "",
    url: `http://127.0.0.1:${port}/`,
    entries: kept.entries,
  });
  assert.ok(!kept.entries.includes(admin) && !kept.entries.includes(KEY), "no request URL holds a credential");
  for (const r of sent) assert.ok(!r.url.includes(admin) && !r.url.includes(KEY), r.url);
  assert.deepEqual(await con.context().cookies(), []);
  await con.reload();
  assert.equal(await con.inputValue("#credential"), "", "a reload forgets it");
  assert.deepEqual(con.errors, []);
  await con.close();
  await stop(server);
});

test("behind --metrics-bind the console calls the API of that listener", async () => {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const server = await roomcast(port, "--api-key", KEY, "--metrics-bind", `127.0.0.1:${metricsPort}`);
  const user = await page(port);
  await user.evaluate(async ({ url, tok }) => {
    window.client = rc.connect(url, { token: tok });
    await client.room("ops:desk").join();
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token("desk") });
  const con = await dashboard(metricsPort);
  await con.fill("#credential", KEY);
  await con.fill("#rooms-pattern", "ops:*");
  await con.click("#rooms-form button");
  await waitFor(async () => (await text(con, "#rooms-summary")) === "1 room", "the room list");
  assert.deepEqual(await con.$$eval("#room-list tbody td", (tds) => tds.map((td) => td.textContent)), ["ops:desk", "1", "1"]);
  assert.equal(await text(con, "#rooms-error"), "");
  assert.deepEqual(con.errors, []);
  await Promise.all([con.close(), user.close()]);
  await stop(server);
});

test("what users put in their token is shown as text", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--api-key", KEY);
  const sub = '<img src=x onerror="window.pwned=1">';
  const user = await page(port);
  await user.evaluate(async ({ url, tok }) => {
    window.client = rc.connect(url, { token: tok });
    await client.room("xss").join();
  }, { url: `ws://127.0.0.1:${port}/ws`, tok: token(sub, 3600, { name: "<script>window.pwned=2</script>" }) });
  const con = await dashboard(port);
  await con.fill("#credential", KEY);
  await lookUpUser(con, sub, 1);
  await con.locator("#user-connections tbody button", { hasText: "xss" }).click();
  await waitFor(async () => (await text(con, "#presence-summary")) === "xss: 1 user", "the presence");
  assert.deepEqual(await con.$$eval("#presence tbody td", (tds) => tds.map((td) => td.textContent)),
    [sub, "<script>window.pwned=2</script>", "1"]);
  assert.equal(await con.evaluate(() => document.querySelectorAll("#console img, #console script").length), 0);
  assert.equal(await con.evaluate(() => window.pwned), undefined);
  assert.deepEqual(con.errors, []);
  await Promise.all([con.close(), user.close()]);
  await stop(server);
});

test("the dashboard loads without errors and its plots update", async () => {
  const port = await freePort();
  const server = await roomcast(port, "--demo");
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  await page.goto(`http://127.0.0.1:${port}/`);
  // A viewer, so that deliveries and connections show up.
  const viewer = await browser.newPage();
  await viewer.goto(`http://127.0.0.1:${port}/demo`);
  await waitFor(async () => Number(await page.getAttribute("body", "data-samples")) >= 4, "four samples", 20000);
  const drawn = await page.evaluate(() =>
    [...document.querySelectorAll("canvas")].map((c) => {
      const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let ink = 0;
      for (let i = 3; i < data.length; i += 4) if (data[i] > 0) ink++;
      return ink;
    }),
  );
  for (const ink of drawn) assert.ok(ink > 100, `every plot has ink: ${drawn}`);
  assert.match(await page.textContent("#tiles"), /connections/);
  await waitFor(async () => (await page.$$eval("#rooms tbody tr", (r) => r.length)) > 0, "the busiest rooms");
  assert.match(await page.textContent("#rooms tbody"), /prices:T\d{3}/);
  assert.ok(Number(await page.textContent("#tiles .tile b")) >= 1, "the viewer is counted");
  const png = await page.screenshot({ path: `${process.env.SCREENSHOT_DIR || "."}/dashboard.png` });
  assert.ok(png.length > 10000, `a screenshot with content: ${png.length} bytes`);
  assert.deepEqual(errors, []);
  await viewer.close();
  await page.close();
  await stop(server);
});
