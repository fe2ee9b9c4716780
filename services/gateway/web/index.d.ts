// Types of client.js (WsAuthClient). The hook's are in react.d.ts.

export type WsAuthState = "connecting" | "authenticating" | "open" | "reconnecting" | "closed";

export interface WsAuthClientOptions {
  /** The gateway, e.g. "https://gw.example"; default: the page's origin. */
  url?: string;
  /** A current JWT for the user; called before every attempt and before expiry. */
  getJwt: () => string | Promise<string>;
  /** A WebSocket constructor, for use outside browsers; default: the global one. */
  WebSocket?: typeof WebSocket;
  /** A fetch function; default: the global one. */
  fetch?: typeof fetch;
  /** First backoff cap in ms (default 500); doubles per failed attempt. */
  initialBackoffMs?: number;
  /** Largest backoff cap in ms (default 30000). */
  maxBackoffMs?: number;
  /** Refresh the JWT this long before it expires, at most half its remaining life (default 30000). */
  refreshBeforeMs?: number;
  /** Deadline of each step of an attempt in ms (default 15000). */
  stepTimeoutMs?: number;
}

export interface WsAuthEventDetails {
  state: { state: WsAuthState };
  broadcast: { id: string; data: string };
  message: { id: string; data: string };
  echo: { data: string };
  gap: Record<string, never>;
  autherror: { code: 4401 | 4403; reason: string };
  /** A failed attempt or refresh (the client retries by itself). */
  error: { message: string };
  /** A refreshed JWT was sent; its expiry in ms since the epoch. */
  refresh: { expiresAt: number | null };
}

export type WsAuthEvent<K extends keyof WsAuthEventDetails> = CustomEvent<WsAuthEventDetails[K]>;

export declare class WsAuthClient extends EventTarget {
  constructor(options: WsAuthClientOptions);
  readonly state: WsAuthState;
  readonly lastEventId: string | null;
  readonly userId: string | null;
  connect(): void;
  /** Sends a text frame; false unless the connection is open. */
  send(text: string): boolean;
  close(): void;
  addEventListener<K extends keyof WsAuthEventDetails>(
    type: K,
    listener: (event: WsAuthEvent<K>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof WsAuthEventDetails>(
    type: K,
    listener: (event: WsAuthEvent<K>) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

/** The `exp` of a JWT in ms since the epoch, or null. */
export declare function jwtExpiryMs(jwt: string): number | null;

/** Full-jitter backoff: uniform in [0, min(maxMs, initialMs * 2^attempt)). */
export declare function backoffDelayMs(
  attempt: number,
  initialMs: number,
  maxMs: number,
  random?: () => number,
): number;
