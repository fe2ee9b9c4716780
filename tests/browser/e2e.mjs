// The browser client in headless Chromium, against real auth, gateway and
// Redis processes that the Rust e2e test `browser` runs and drives.
//
// The Rust side owns the services; this script owns the browser. They talk in
// JSON lines: a step request on stdout ({"step":"publish",...}), its reply on
// stdin ({"ok":true,...} or {"error":"..."}). Diagnostics go to stderr.
// Exit 0 only when every check passed.
//
// Environment: WSAUTH_JWT_SECRET (HS256, the harness auth's), WSAUTH_WEB_DIR
// (services/gateway/web), WSAUTH_ARTIFACTS (where the screenshot goes),
// CHROMIUM (default /usr/bin/chromium).
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SECRET = required("WSAUTH_JWT_SECRET");
const WEB_DIR = required("WSAUTH_WEB_DIR");
const ARTIFACTS = required("WSAUTH_ARTIFACTS");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
/** The whole run; the Rust side has its own, longer deadline. */
const RUN_DEADLINE_MS = 150_000;
/** One wait for something to show on a page. */
const STEP_MS = 15_000;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} must be set (the Rust test sets it)`);
  return value;
}

const note = (...args) => console.error("[browser]", ...args);

// === control channel ===

const replies = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust side to do `step` (publish, restart the gateway, ...) and waits for it. */
async function ask(step, args = {}) {
  process.stdout.write(JSON.stringify({ step, ...args }) + "\n");
  const { value, done } = await replies.next();
  if (done) throw new Error(`no reply to ${step}: stdin closed`);
  const reply = JSON.parse(value);
  if (reply.error) throw new Error(`${step} failed on the Rust side: ${reply.error}`);
  return reply;
}

// === a stand-in identity provider and two static origins ===

const b64url = (value) => Buffer.from(value).toString("base64url");

/** An HS256 JWT for `sub`, valid for `ttlS` seconds, as an identity provider would sign it. */
function mintJwt(sub, ttlS) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = { sub, iat: now, exp: now + ttlS, jti: crypto.randomUUID() };
  const body = `${header}.${b64url(JSON.stringify(claims))}`;
  const signature = crypto.createHmac("sha256", SECRET).update(body).digest("base64url");
  return `${body}.${signature}`;
}

const APP_HTML = `<!doctype html>
<meta charset="utf-8"><title>wsauth test app</title>
<p>state <b id="state">none</b> user <b id="user"></b></p>
<ol id="log"></ol>
<script type="module">
const params = new URLSearchParams(location.search);
const gw = params.get("gw"), sub = params.get("sub"), ttl = params.get("ttl") || "300";
const { WsAuthClient } = await import(gw + "/client.js");
window.events = [];
window.jwtCalls = 0;
const client = new WsAuthClient({
  url: gw,
  getJwt: async () => {
    window.jwtCalls++;
    const response = await fetch("/jwt?sub=" + encodeURIComponent(sub) + "&ttl=" + ttl);
    return response.text();
  },
  initialBackoffMs: 200,
  maxBackoffMs: 2000,
});
for (const type of ["state", "broadcast", "message", "echo", "gap", "autherror", "error", "refresh"]) {
  client.addEventListener(type, (event) => {
    window.events.push({ type, ...event.detail });
    if (type === "state") document.getElementById("state").textContent = event.detail.state;
    document.getElementById("user").textContent = client.userId || "";
    const line = document.createElement("li");
    line.textContent = type + " " + JSON.stringify(event.detail);
    document.getElementById("log").append(line);
  });
}
window.client = client;
client.connect();
</script>`;

const REACT_HTML = `<!doctype html>
<meta charset="utf-8"><title>wsauth react app</title>
<div id="root"></div>
<script src="/react-app.js"></script>`;

async function bundleReactApp() {
  const result = await esbuild.build({
    entryPoints: [path.join(HERE, "react-app.jsx")],
    bundle: true,
    write: false,
    format: "iife",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
    alias: { "wsauth-react": path.join(WEB_DIR, "react.js") },
    // react.js imports `react` by its bare name from outside this folder.
    nodePaths: [path.join(HERE, "node_modules")],
    logLevel: "silent",
  });
  return result.outputFiles[0].text;
}

/** Serves the test pages and `/jwt` on 127.0.0.1 (a real server: Chromium checks local network access). */
async function startOrigin(reactBundle, jwtCalls) {
  const server = http.createServer((request, response) => {
    const url = new URL(request.url, "http://local");
    const send = (type, body) => {
      response.writeHead(200, { "content-type": type, "cache-control": "no-store" });
      response.end(body);
    };
    if (url.pathname === "/app.html") return send("text/html", APP_HTML);
    if (url.pathname === "/react.html") return send("text/html", REACT_HTML);
    if (url.pathname === "/react-app.js") return send("text/javascript", reactBundle);
    if (url.pathname === "/jwt") {
      const sub = url.searchParams.get("sub");
      jwtCalls.set(sub, (jwtCalls.get(sub) || 0) + 1);
      return send("text/plain", mintJwt(sub, Number(url.searchParams.get("ttl") || 300)));
    }
    response.writeHead(404);
    response.end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

// === page helpers ===

const events = (page, type) => page.evaluate((t) => window.events.filter((e) => e.type === t), type);
const states = async (page) => (await events(page, "state")).map((e) => e.state);

async function waitState(page, state, ms = STEP_MS) {
  await page.waitForFunction((s) => document.getElementById("state")?.textContent === s, state, { timeout: ms });
}

/** Waits until the page has shown `n` events of `type`, and returns them. */
async function waitEvents(page, type, n, ms = STEP_MS) {
  await page.waitForFunction(
    ([t, count]) => window.events.filter((e) => e.type === t).length >= count,
    [type, n],
    { timeout: ms },
  );
  return events(page, type);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// === the scenario ===

async function main() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const jwtCalls = new Map();
  const reactBundle = await bundleReactApp();
  const allowed = await startOrigin(reactBundle, jwtCalls);
  const foreign = await startOrigin(reactBundle, jwtCalls);
  const { gateway } = await ask("start", { allowed: allowed.origin });
  note("gateway", gateway, "allowed page origin", allowed.origin, "foreign", foreign.origin);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  try {
    const context = await browser.newContext();
    const pageErrors = [];
    context.on("page", (page) => page.on("pageerror", (error) => pageErrors.push(error.message)));
    const open = async (origin, sub, ttl = 300) => {
      const page = await context.newPage();
      await page.goto(`${origin}/app.html?gw=${encodeURIComponent(gateway)}&sub=${sub}&ttl=${ttl}`);
      return page;
    };

    // 1. A page on another origin authenticates (CORS on /token/ws, /client.js imported cross-origin).
    const alice = await open(allowed.origin, "alice");
    await waitState(alice, "open");
    assert.equal(await alice.textContent("#user"), "alice");
    note("alice authenticated");

    // 2. A Publish over gRPC appears, to everyone and to alice alone.
    const first = await ask("publish", { events: [{ data: "hello-1" }, { data: "to-alice", user: "alice" }] });
    const [broadcast1] = await waitEvents(alice, "broadcast", 1);
    assert.deepEqual(broadcast1, { type: "broadcast", id: first.ids[0], data: "hello-1" });
    const [message1] = await waitEvents(alice, "message", 1);
    assert.deepEqual(message1, { type: "message", id: first.ids[1], data: "to-alice" });
    await alice.waitForFunction(() => document.getElementById("log").textContent.includes("to-alice"));
    note("publish shown");

    // 3. The gateway restarts on the same port; the page reconnects by itself and
    //    shows what was published meanwhile, once each, in order.
    await ask("stop-gateway");
    await waitState(alice, "reconnecting");
    const away = await ask("publish", { events: [{ data: "away-1" }, { data: "away-2" }, { data: "away-3", user: "alice" }] });
    await ask("start-gateway");
    await waitState(alice, "open", 30_000);
    const live = await ask("publish", { events: [{ data: "after-restart" }] });
    await waitEvents(alice, "broadcast", 4);
    await sleep(500); // any duplicate would arrive right behind
    const broadcasts = (await events(alice, "broadcast")).map((e) => [e.id, e.data]);
    assert.deepEqual(broadcasts, [
      [first.ids[0], "hello-1"],
      [away.ids[0], "away-1"],
      [away.ids[1], "away-2"],
      [live.ids[0], "after-restart"],
    ]);
    const messages = (await events(alice, "message")).map((e) => [e.id, e.data]);
    assert.deepEqual(messages, [
      [first.ids[1], "to-alice"],
      [away.ids[2], "away-3"],
    ]);
    const aliceStates = await states(alice);
    assert.deepEqual(aliceStates.slice(0, 3), ["connecting", "authenticating", "open"]);
    assert.equal(aliceStates.at(-1), "open");
    assert.ok(aliceStates.includes("reconnecting"), JSON.stringify(aliceStates));
    note("reconnected after the restart, states", aliceStates.join(" > "));

    // 4. A JWT that expires during the test is refreshed through getJwt(); the connection stays up.
    const bob = await open(allowed.origin, "bob", 6);
    await waitState(bob, "open");
    const bobOpenedAt = Date.now();

    // 5. (meanwhile) A React app bundled from react.js shows readyState and data changing.
    const react = await context.newPage();
    await react.goto(`${allowed.origin}/react.html?gw=${encodeURIComponent(gateway)}&sub=carol`);
    await react.waitForFunction(() => document.getElementById("ready")?.textContent === "true", null, { timeout: STEP_MS });
    assert.equal(await react.textContent("#user"), "carol");
    assert.equal(await react.textContent("#data"), "null");
    const toCarol = await ask("publish", { events: [{ data: "react-1", user: "carol" }] });
    await react.waitForFunction((id) => document.getElementById("data").textContent.includes(id), toCarol.ids[0], {
      timeout: STEP_MS,
    });
    assert.deepEqual(JSON.parse(await react.textContent("#data")), { id: toCarol.ids[0], data: "react-1" });
    await react.click("#send");
    await react.waitForFunction(() => document.getElementById("data").textContent.includes("from-react"), null, {
      timeout: STEP_MS,
    });
    assert.deepEqual(JSON.parse(await react.textContent("#data")), { data: "from-react" });
    await ask("revoke", { user: "carol" });
    await react.waitForFunction(() => document.getElementById("ready").textContent === "false", null, { timeout: STEP_MS });
    assert.equal(JSON.parse(await react.textContent("#error")).code, 4401);
    const rendered = await react.evaluate(() => window.rendered);
    for (const { readyState, state } of rendered) {
      assert.equal(readyState, state === "open", `readyState ${readyState} in state ${state}`);
    }
    const readyStates = rendered.map((r) => r.readyState).filter((r, i, all) => i === 0 || r !== all[i - 1]);
    assert.deepEqual(readyStates, [false, true, false], "readyState as rendered");
    note("react app: readyState", readyStates.join(" > "));

    // 4, continued: past bob's first JWT's expiry, still the same connection.
    await sleep(Math.max(0, bobOpenedAt + 9_000 - Date.now()));
    assert.deepEqual(await states(bob), ["connecting", "authenticating", "open"], "no reconnect");
    const refreshes = await events(bob, "refresh");
    assert.ok(refreshes.length >= 2, `refreshed: ${JSON.stringify(refreshes)}`);
    assert.ok(jwtCalls.get("bob") >= 3, `getJwt() calls for bob: ${jwtCalls.get("bob")}`);
    await bob.evaluate(() => window.client.send("still-here"));
    const [echo] = await waitEvents(bob, "echo", 1);
    assert.deepEqual(echo, { type: "echo", data: "still-here" });
    note(`bob refreshed ${refreshes.length} times on one connection`);

    // 6. RevokeUser: the page shows the auth error and stops reconnecting.
    await ask("revoke", { user: "alice" });
    const [autherror] = await waitEvents(alice, "autherror", 1);
    assert.equal(autherror.code, 4401);
    await waitState(alice, "closed");
    await alice.waitForFunction(() => document.getElementById("log").textContent.includes("4401"));
    const callsAtRevoke = jwtCalls.get("alice");
    const statesAtRevoke = (await states(alice)).length;
    await sleep(3_000); // past the largest backoff (2 s)
    assert.equal(jwtCalls.get("alice"), callsAtRevoke, "no new attempt after 4401");
    assert.equal((await states(alice)).length, statesAtRevoke, "no state change after closed");
    note("revoked: autherror 4401, closed, no reconnect");

    // 7. CORS: /token/ws serves an allowed origin's page and refuses another's.
    const probe = (page) =>
      page.evaluate(async ([gw, jwt]) => {
        try {
          const response = await fetch(gw + "/token/ws", { headers: { Authorization: "Bearer " + jwt } });
          return { status: response.status, token: typeof (await response.json()).token };
        } catch (error) {
          return { refused: error.name };
        }
      }, [gateway, mintJwt("erin", 300)]);
    assert.deepEqual(await probe(bob), { status: 200, token: "string" });
    const stranger = await open(foreign.origin, "erin");
    assert.deepEqual(await probe(stranger), { refused: "TypeError" });
    await waitEvents(stranger, "error", 1);
    assert.ok(!(await states(stranger)).includes("open"), "a page of a foreign origin never opens");
    note("CORS: allowed origin served, foreign origin refused");

    // 8. The demo page: paste a JWT, connect, see state, broadcasts, messages, echo.
    const demo = await context.newPage();
    await demo.setViewportSize({ width: 1100, height: 900 });
    await demo.goto(`${gateway}/`);
    await demo.fill("#jwt", mintJwt("dave", 300));
    await demo.click("#connect");
    await demo.waitForFunction(() => document.getElementById("state").textContent === "open", null, { timeout: STEP_MS });
    assert.equal(await demo.textContent("#user"), "dave");
    await demo.fill("#message", "hello from the demo");
    await demo.click("#send");
    const demoPublished = await ask("publish", { events: [{ data: "hi all" }, { data: "hi dave", user: "dave" }] });
    for (const text of ["echo: hello from the demo", `broadcast ${demoPublished.ids[0]}: hi all`, `message ${demoPublished.ids[1]}: hi dave`]) {
      await demo.waitForFunction((t) => document.getElementById("log").textContent.includes(t), text, { timeout: STEP_MS });
    }
    assert.equal(await demo.textContent("#last-event"), demoPublished.ids[1]);
    const screenshot = path.join(ARTIFACTS, "demo.png");
    await demo.screenshot({ path: screenshot, fullPage: true });
    note("demo page screenshot:", screenshot);

    assert.deepEqual(pageErrors, [], "no uncaught errors on any page");
  } finally {
    await browser.close();
    allowed.server.close();
    foreign.server.close();
  }
}

const deadline = setTimeout(() => {
  note(`FAILED: the run took longer than ${RUN_DEADLINE_MS} ms`);
  process.exit(1);
}, RUN_DEADLINE_MS);
deadline.unref();

main().then(
  async () => {
    await ask("done");
    note("all browser checks passed");
    process.exit(0);
  },
  (error) => {
    note("FAILED:", error.stack || error);
    process.exit(1);
  },
);
