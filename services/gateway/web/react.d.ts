// Types of react.js (useWsAuth).
import type { WsAuthEventDetails, WsAuthState } from "./index.js";

export interface UseWsAuthOptions {
  url?: string;
  getJwt: () => string | Promise<string>;
  WebSocket?: typeof WebSocket;
}

export interface UseWsAuth {
  /** True while the connection is open (authenticated). */
  readyState: boolean;
  state: WsAuthState;
  /** The detail of the last broadcast, message or echo received. */
  data: WsAuthEventDetails["broadcast"] | WsAuthEventDetails["echo"] | null;
  send: (text: string) => boolean;
  userId: string | null;
  /** The auth error that stopped the client. */
  error: WsAuthEventDetails["autherror"] | null;
}

export declare function useWsAuth(options: UseWsAuthOptions): UseWsAuth;
