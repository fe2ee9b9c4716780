// Compiled (never run) by `make test-js` with tsc --strict against the
// package's index.d.ts and react.d.ts: a use as the README shows it must
// type-check, and a wrong one must not.
import { WsAuthClient, type WsAuthState } from "../../services/gateway/web/index.js";
import { useWsAuth } from "../../services/gateway/web/react.js";

const client = new WsAuthClient({ url: "https://gw.example", getJwt: async () => "jwt" });
client.addEventListener("state", (e) => {
  const state: WsAuthState = e.detail.state;
  console.log(state);
});
client.addEventListener("broadcast", (e) => console.log(e.detail.id, e.detail.data));
client.addEventListener("autherror", (e) => console.log(e.detail.code, e.detail.reason));
client.addEventListener("gap", () => console.log("reload"));
client.connect();
const sent: boolean = client.send("text");
const last: string | null = client.lastEventId;
client.close();

const hook = useWsAuth({ url: "https://gw.example", getJwt: () => "jwt" });
const ready: boolean = hook.readyState;
console.log(sent, last, ready, hook.state, hook.data, hook.userId, hook.error?.code);

// @ts-expect-error: a broadcast's detail has no close code
client.addEventListener("broadcast", (e) => console.log(e.detail.code));
// @ts-expect-error: getJwt is required
new WsAuthClient({ url: "https://gw.example" });
