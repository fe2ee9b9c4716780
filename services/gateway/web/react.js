// useWsAuth: a React hook over WsAuthClient. Imports `react` by its bare
// name, for bundlers and import maps.
import { useCallback, useEffect, useRef, useState } from "react";
import { WsAuthClient } from "./client.js";

/**
 * One authenticated, self-reconnecting WebSocket for the life of the component.
 * `getJwt` may change between renders; the latest one is used. A new `url`
 * reconnects.
 *
 * @returns {{readyState: boolean, state: string, data: object|null,
 *   send: (text: string) => boolean, userId: string|null, error: object|null}}
 *   `readyState` is true while the connection is open (authenticated); `data`
 *   is the detail of the last broadcast, message or echo; `error` the detail
 *   of the autherror that stopped the client.
 */
export function useWsAuth({ url, getJwt, WebSocket } = {}) {
  const getJwtRef = useRef(getJwt);
  getJwtRef.current = getJwt;
  const clientRef = useRef(null);
  const [state, setState] = useState("closed");
  const [data, setData] = useState(null);
  const [userId, setUserId] = useState(null);
  const [error, setError] = useState(null);

  useEffect(() => {
    const client = new WsAuthClient({ url, getJwt: () => getJwtRef.current(), WebSocket });
    clientRef.current = client;
    const onData = (event) => setData(event.detail);
    client.addEventListener("state", (event) => {
      setState(event.detail.state);
      setUserId(client.userId);
    });
    client.addEventListener("broadcast", onData);
    client.addEventListener("message", onData);
    client.addEventListener("echo", onData);
    client.addEventListener("autherror", (event) => setError(event.detail));
    setError(null);
    client.connect();
    return () => {
      clientRef.current = null;
      client.close();
    };
  }, [url, WebSocket]);

  const send = useCallback((text) => clientRef.current?.send(text) ?? false, []);
  return { readyState: state === "open", state, data, send, userId, error };
}
