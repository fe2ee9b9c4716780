// Unit tests of WsAuthClient's logic, with a scripted WebSocket constructor and
// fetch passed in (as the client allows for use outside browsers). The real
// gateway is exercised by the browser tests in tests/browser.
import assert from "node:assert/strict";
import { test } from "node:test";

import { WsAuthClient, backoffDelayMs, jwtExpiryMs } from "../client.js";

const b64url = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
const jwtFor = (sub, expInS) =>
  `${b64url({ alg: "HS256" })}.${b64url({ sub, exp: Math.floor(Date.now() / 1000) + expInS })}.sig`;

/** A server side the test drives: sockets it saw, tokens it issued. */
function scriptedServer({ tokenStatus = 200 } = {}) {
  const server = { sockets: [], fetches: [], tokens: 0, openAtOnce: 0, maxOpenAtOnce: 0 };
  server.fetch = async (url, init) => {
    server.fetches.push({ url, authorization: init.headers.Authorization });
    const token = `tok${++server.tokens}`;
    const body = tokenStatus === 200 ? { token, expires_in: 60 } : { error: "JWT refused" };
    return { status: tokenStatus, ok: tokenStatus === 200, json: async () => body };
  };
  server.WebSocket = class {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closedByClient = null;
      server.sockets.push(this);
      server.openAtOnce++;
      server.maxOpenAtOnce = Math.max(server.maxOpenAtOnce, server.openAtOnce);
      setTimeout(() => this.onopen?.(), 0);
    }
    send(text) {
      this.sent.push(text);
    }
    close(code) {
      if (this.closedByClient === null) server.openAtOnce--;
      this.closedByClient = code;
    }
    push(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }
    drop(code, reason = "") {
      server.openAtOnce--;
      this.closedByClient = "server";
      this.onclose?.({ code, reason });
    }
  };
  server.last = () => server.sockets[server.sockets.length - 1];
  return server;
}

function record(client) {
  const events = [];
  for (const type of ["state", "broadcast", "message", "echo", "gap", "autherror", "refresh"]) {
    client.addEventListener(type, (event) => events.push({ type, ...event.detail }));
  }
  return events;
}

async function until(what, condition, ms = 3000) {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function newClient(server, getJwt, extra = {}) {
  return new WsAuthClient({
    url: "https://gw.example/",
    getJwt,
    WebSocket: server.WebSocket,
    fetch: server.fetch,
    initialBackoffMs: 5,
    maxBackoffMs: 20,
    ...extra,
  });
}

test("jwtExpiryMs reads exp from the payload and is null for anything else", () => {
  const jwt = jwtFor("alice", 60);
  const exp = JSON.parse(Buffer.from(jwt.split(".")[1], "base64url")).exp;
  assert.equal(jwtExpiryMs(jwt), exp * 1000);
  assert.equal(jwtExpiryMs("not-a-jwt"), null);
  assert.equal(jwtExpiryMs(`a.${b64url({ sub: "x" })}.c`), null);
});

test("backoff is full jitter under a doubling cap", () => {
  assert.equal(backoffDelayMs(0, 500, 30_000, () => 0.999999), 499);
  assert.equal(backoffDelayMs(3, 500, 30_000, () => 0.5), 2000);
  assert.equal(backoffDelayMs(20, 500, 30_000, () => 0.999999), 29_999);
  assert.equal(backoffDelayMs(5, 500, 30_000, () => 0), 0);
});

test("an attempt gets a ws token with the JWT, opens /ws?token= and sends the JWT first", async () => {
  const server = scriptedServer();
  const jwt = jwtFor("alice", 300);
  const client = newClient(server, async () => jwt);
  const events = record(client);
  client.connect();
  await until("a socket opened and sent its first frame", () => server.last()?.sent.length === 1);
  assert.deepEqual(server.fetches, [{ url: "https://gw.example/token/ws", authorization: `Bearer ${jwt}` }]);
  assert.equal(server.last().url, "wss://gw.example/ws?token=tok1");
  assert.deepEqual(JSON.parse(server.last().sent[0]), { type: "jwt", token: jwt });
  assert.equal(client.state, "authenticating");
  server.last().push({ type: "auth_ok", user_id: "alice" });
  assert.equal(client.state, "open");
  assert.equal(client.userId, "alice");
  assert.deepEqual(events.filter((e) => e.type === "state").map((e) => e.state), ["connecting", "authenticating", "open"]);
  assert.equal(client.send("hi"), true);
  assert.equal(server.last().sent[1], "hi");
  server.last().push({ type: "echo", data: "hi" });
  assert.deepEqual(events.at(-1), { type: "echo", data: "hi" });
  client.close();
  assert.equal(client.state, "closed");
  assert.equal(server.last().closedByClient, 1000);
  assert.equal(client.send("late"), false);
});

test("a dropped connection reconnects with a fresh token and since = the last event id", async () => {
  const server = scriptedServer();
  let calls = 0;
  const client = newClient(server, async () => {
    calls++;
    return jwtFor("alice", 300);
  });
  const events = record(client);
  client.connect();
  await until("first socket authenticating", () => client.state === "authenticating");
  server.last().push({ type: "auth_ok", user_id: "alice" });
  server.last().push({ type: "broadcast", id: "e:1-0", data: "one" });
  server.last().push({ type: "message", id: "e:2-0", data: "two" });
  assert.equal(client.lastEventId, "e:2-0");
  server.last().drop(1001, "gateway shutting down");
  assert.equal(client.state, "reconnecting");
  await until("second socket authenticating", () => server.sockets.length === 2 && client.state === "authenticating");
  assert.equal(calls, 2, "getJwt() before every attempt");
  assert.equal(server.last().url, "wss://gw.example/ws?token=tok2");
  assert.equal(JSON.parse(server.last().sent[0]).since, "e:2-0");
  assert.equal(server.maxOpenAtOnce, 1, "never two sockets at once");
  assert.deepEqual(
    events.filter((e) => e.type === "broadcast" || e.type === "message"),
    [
      { type: "broadcast", id: "e:1-0", data: "one" },
      { type: "message", id: "e:2-0", data: "two" },
    ],
  );
  client.close();
});

test("4401 and 4403 end in autherror, then closed, and no more attempts", async () => {
  for (const code of [4401, 4403]) {
    const server = scriptedServer();
    const client = newClient(server, async () => jwtFor("alice", 300));
    const events = record(client);
    client.connect();
    await until("authenticating", () => client.state === "authenticating");
    server.last().push({ type: "auth_ok", user_id: "alice" });
    server.last().drop(code, "revoked");
    assert.deepEqual(events.slice(-2), [
      { type: "autherror", code, reason: "revoked" },
      { type: "state", state: "closed" },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(server.sockets.length, 1, `no reconnect after ${code}`);
    assert.equal(server.fetches.length, 1);
  }
});

test("a 401 from /token/ws is an autherror, not a retry loop", async () => {
  const server = scriptedServer({ tokenStatus: 401 });
  const client = newClient(server, async () => jwtFor("alice", 300));
  const events = record(client);
  client.connect();
  await until("closed", () => client.state === "closed");
  assert.deepEqual(events.at(-2), { type: "autherror", code: 4401, reason: "JWT refused" });
  assert.equal(server.sockets.length, 0);
});

test("a 503 from /token/ws and a failing getJwt are retried with backoff", async () => {
  const server = scriptedServer({ tokenStatus: 503 });
  let calls = 0;
  const client = newClient(server, async () => {
    if (++calls === 1) throw new Error("identity provider down");
    return jwtFor("alice", 300);
  });
  client.connect();
  await until("three attempts", () => calls >= 3);
  assert.equal(client.state, "reconnecting");
  assert.equal(server.sockets.length, 0);
  client.close();
  const after = calls;
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(calls, after, "close() stops the retries");
});

test("auth_ok with gap:true and a gap frame both become a gap event", async () => {
  const server = scriptedServer();
  const client = newClient(server, async () => jwtFor("alice", 300));
  const events = record(client);
  client.connect();
  await until("authenticating", () => client.state === "authenticating");
  server.last().push({ type: "auth_ok", user_id: "alice", gap: true });
  server.last().push({ type: "gap" });
  assert.deepEqual(events.filter((e) => e.type === "gap"), [{ type: "gap" }, { type: "gap" }]);
  client.close();
});

test("a JWT about to expire is refreshed from getJwt() on the same socket", async () => {
  const server = scriptedServer();
  const jwts = [jwtFor("alice", 2), jwtFor("alice", 300)];
  let calls = 0;
  const client = newClient(server, async () => jwts[Math.min(calls++, 1)]);
  const events = record(client);
  client.connect();
  await until("authenticating", () => client.state === "authenticating");
  server.last().push({ type: "auth_ok", user_id: "alice" });
  await until("a refresh frame", () => server.last().sent.length === 2, 4000);
  assert.deepEqual(JSON.parse(server.last().sent[1]), { type: "jwt", token: jwts[1] });
  assert.equal(server.sockets.length, 1);
  assert.equal(client.state, "open");
  assert.equal(events.filter((e) => e.type === "refresh").length, 1);
  client.close();
});

test("a connect() while connected does not open a second socket", async () => {
  const server = scriptedServer();
  const client = newClient(server, async () => jwtFor("alice", 300));
  client.connect();
  client.connect();
  await until("authenticating", () => client.state === "authenticating");
  client.connect();
  assert.equal(server.sockets.length, 1);
  client.close();
});
