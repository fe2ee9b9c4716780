// wsauth browser client: a WebSocket to a wsauth gateway that authenticates,
// reconnects without losing events, and refreshes its JWT. No dependencies.
//
// One attempt: getJwt() -> GET /token/ws (Bearer JWT) -> /ws?token= ->
// first frame {"type":"jwt","token":JWT,"since":lastEventId} -> auth_ok.
// Any close but 4401/4403 or close() starts another attempt after a capped
// exponential backoff with full jitter, with a fresh ws token.

/** Close codes after which reconnecting cannot help: the JWT or user is refused. */
const AUTH_CLOSE_CODES = new Set([4401, 4403]);

const DEFAULTS = {
  /** First backoff cap; doubles per failed attempt up to maxBackoffMs. */
  initialBackoffMs: 500,
  maxBackoffMs: 30_000,
  /** Refresh the JWT this long before it expires (at most half its remaining life). */
  refreshBeforeMs: 30_000,
  /** Deadline of each step of an attempt (getJwt, /token/ws, open, auth_ok). */
  stepTimeoutMs: 15_000,
};

/** The `exp` claim of a JWT, in milliseconds since the epoch, or null. */
export function jwtExpiryMs(jwt) {
  try {
    const payload = String(jwt).split(".")[1];
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const json = decodeURIComponent(
      Array.from(atob(padded), (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""),
    );
    const exp = JSON.parse(json).exp;
    return Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

/** Full jitter: a uniform delay in [0, min(max, initial * 2^attempt)). */
export function backoffDelayMs(attempt, initialMs, maxMs, random = Math.random) {
  const cap = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** The HTTP base (no trailing slash) and the WebSocket base of a gateway URL. */
function endpoints(url) {
  const base = new URL(url ?? globalThis.location?.origin);
  if (base.protocol === "ws:") base.protocol = "http:";
  if (base.protocol === "wss:") base.protocol = "https:";
  const http = base.origin + base.pathname.replace(/\/+$/, "");
  return { http, ws: http.replace(/^http/, "ws") };
}

/** Rejects with `what` timed out unless `promise` settles within `ms`. */
function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

class AuthRefused extends Error {
  constructor(code, reason) {
    super(reason);
    this.code = code;
  }
}

export class WsAuthClient extends EventTarget {
  #options;
  #endpoints;
  #WebSocket;
  #fetch;
  #state = "closed";
  #ws = null;
  /** Bumped by every attempt and by close(): stale callbacks compare and bail out. */
  #generation = 0;
  #attempt = 0;
  #retryTimer = null;
  #refreshTimer = null;
  #jwt = null;
  #lastEventId = null;
  #userId = null;

  /**
   * @param {object} options
   * @param {string} [options.url] the gateway, e.g. "https://gw.example" (default: this page's origin)
   * @param {() => Promise<string>|string} options.getJwt a current JWT for the user
   * @param {typeof WebSocket} [options.WebSocket] a WebSocket constructor (default: the global one)
   * @param {typeof fetch} [options.fetch] a fetch function (default: the global one)
   */
  constructor(options) {
    super();
    if (!options || typeof options.getJwt !== "function") {
      throw new TypeError("WsAuthClient needs { getJwt: async () => jwt }");
    }
    this.#options = { ...DEFAULTS, ...options };
    this.#endpoints = endpoints(options.url);
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("no WebSocket constructor: pass { WebSocket }");
    }
  }

  /** "connecting" | "authenticating" | "open" | "reconnecting" | "closed" */
  get state() {
    return this.#state;
  }

  /** The id of the last broadcast or message received; sent as `since` on reconnect. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** The user the gateway authenticated (from auth_ok), or null. */
  get userId() {
    return this.#userId;
  }

  /** Starts connecting (and reconnecting) until close() or an auth error. */
  connect() {
    if (this.#state !== "closed") return;
    this.#attempt = 0;
    this.#startAttempt("connecting");
  }

  /** Sends a text frame (echoed by the gateway). False unless the connection is open. */
  send(text) {
    if (this.#state !== "open" || !this.#ws) return false;
    this.#ws.send(String(text));
    return true;
  }

  /** Closes the connection for good: no more reconnects. */
  close() {
    this.#generation++;
    this.#clearTimers();
    this.#dropSocket(1000, "client closed");
    this.#setState("closed");
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit("state", { state });
  }

  #clearTimers() {
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#refreshTimer);
    this.#retryTimer = this.#refreshTimer = null;
  }

  /** Closes the current socket with its handlers detached, so its close is not seen. */
  #dropSocket(code, reason) {
    const ws = this.#ws;
    this.#ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing: nothing to do.
    }
  }

  async #startAttempt(state) {
    const generation = ++this.#generation;
    const current = () => generation === this.#generation;
    this.#clearTimers();
    // Never two sockets: the previous one goes before a new one is opened.
    this.#dropSocket(1000, "reconnecting");
    this.#setState(state);
    const { stepTimeoutMs } = this.#options;
    try {
      const jwt = await withTimeout(Promise.resolve(this.#options.getJwt()), stepTimeoutMs, "getJwt()");
      if (!current()) return;
      const token = await withTimeout(this.#issueToken(jwt), stepTimeoutMs, "GET /token/ws");
      if (!current()) return;
      this.#jwt = jwt;
      this.#open(token, jwt, generation);
    } catch (error) {
      if (!current()) return;
      if (error instanceof AuthRefused) {
        this.#authError(error.code, error.message);
      } else {
        this.#emit("error", { message: error.message });
        this.#retry();
      }
    }
  }

  async #issueToken(jwt) {
    const response = await this.#fetch(`${this.#endpoints.http}/token/ws`, {
      headers: { Authorization: `Bearer ${jwt}` },
      cache: "no-store",
    });
    const body = await response.json().catch(() => ({}));
    // 401: this JWT is refused (bad, expired, revoked); another try cannot help.
    if (response.status === 401) throw new AuthRefused(4401, body.error || "JWT refused");
    if (!response.ok || typeof body.token !== "string") {
      throw new Error(`GET /token/ws: ${response.status} ${body.error || ""}`.trim());
    }
    return body.token;
  }

  #open(token, jwt, generation) {
    const ws = new this.#WebSocket(`${this.#endpoints.ws}/ws?token=${encodeURIComponent(token)}`);
    this.#ws = ws;
    const current = () => generation === this.#generation && ws === this.#ws;
    // Neither the upgrade nor auth_ok may hang the client: past the deadline, retry.
    this.#retryTimer = setTimeout(() => {
      if (!current()) return;
      this.#emit("error", { message: "no auth_ok in time" });
      this.#retry();
    }, 2 * this.#options.stepTimeoutMs);
    ws.onopen = () => {
      if (!current()) return;
      const first = { type: "jwt", token: jwt };
      if (this.#lastEventId) first.since = this.#lastEventId;
      ws.send(JSON.stringify(first));
      this.#setState("authenticating");
    };
    ws.onmessage = (event) => {
      if (current()) this.#receive(event.data);
    };
    ws.onclose = (event) => {
      if (!current()) return;
      this.#ws = null;
      if (AUTH_CLOSE_CODES.has(event.code)) {
        this.#authError(event.code, event.reason || "");
      } else {
        this.#emit("error", { message: `closed ${event.code}${event.reason ? ": " + event.reason : ""}` });
        this.#retry();
      }
    };
  }

  #receive(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    switch (message.type) {
      case "auth_ok":
        clearTimeout(this.#retryTimer);
        this.#attempt = 0;
        this.#userId = message.user_id ?? null;
        this.#setState("open");
        this.#scheduleRefresh();
        if (message.gap === true) this.#emit("gap", {});
        break;
      case "broadcast":
      case "message":
        this.#lastEventId = message.id;
        this.#emit(message.type, { id: message.id, data: message.data });
        break;
      case "echo":
        this.#emit("echo", { data: message.data });
        break;
      case "gap":
        this.#emit("gap", {});
        break;
      default:
        break;
    }
  }

  #authError(code, reason) {
    this.#generation++;
    this.#clearTimers();
    this.#dropSocket(1000, "auth refused");
    this.#emit("autherror", { code, reason });
    this.#setState("closed");
  }

  #retry() {
    this.#dropSocket(1000, "retrying");
    this.#clearTimers();
    const generation = ++this.#generation;
    const { initialBackoffMs, maxBackoffMs } = this.#options;
    const delay = backoffDelayMs(this.#attempt++, initialBackoffMs, maxBackoffMs);
    this.#setState("reconnecting");
    this.#retryTimer = setTimeout(() => {
      if (generation === this.#generation) this.#startAttempt("reconnecting");
    }, delay);
  }

  /** Sends a fresh JWT from getJwt() as a refresh before the current one expires. */
  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    const expiry = jwtExpiryMs(this.#jwt);
    if (expiry === null) return;
    const remaining = expiry - Date.now();
    if (remaining <= 0) return;
    const delay = remaining - Math.min(this.#options.refreshBeforeMs, remaining / 2);
    const generation = this.#generation;
    this.#refreshTimer = setTimeout(() => this.#refresh(generation), delay);
  }

  async #refresh(generation) {
    const current = () => generation === this.#generation && this.#state === "open";
    const previousExpiry = jwtExpiryMs(this.#jwt);
    try {
      const jwt = await withTimeout(Promise.resolve(this.#options.getJwt()), this.#options.stepTimeoutMs, "getJwt()");
      if (!current()) return;
      const expiry = jwtExpiryMs(jwt);
      if (expiry !== null && previousExpiry !== null && expiry <= previousExpiry) {
        throw new Error("getJwt() returned no JWT that outlives the current one");
      }
      this.#ws.send(JSON.stringify({ type: "jwt", token: jwt }));
      this.#jwt = jwt;
      this.#emit("refresh", { expiresAt: expiry });
      this.#scheduleRefresh();
    } catch (error) {
      if (!current()) return;
      this.#emit("error", { message: `refresh: ${error.message}` });
      // Try again while the current JWT still has time left.
      const remaining = (previousExpiry ?? 0) - Date.now();
      if (remaining > 1000) {
        this.#refreshTimer = setTimeout(() => this.#refresh(generation), Math.min(5000, remaining / 2));
      }
    }
  }
}
