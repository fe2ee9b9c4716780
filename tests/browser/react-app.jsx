// A small React app on the hook, bundled by e2e.mjs with esbuild: it shows
// readyState, state, user, the last data and the auth error, and records
// every (readyState, state) pair it rendered in window.rendered.
import { useEffect } from "react";
import { createRoot } from "react-dom/client";
import { useWsAuth } from "wsauth-react";

const params = new URLSearchParams(location.search);
const gateway = params.get("gw");
const sub = params.get("sub");

async function getJwt() {
  const response = await fetch(`/jwt?sub=${encodeURIComponent(sub)}&ttl=300`);
  return response.text();
}

window.rendered = [];

function App() {
  const { readyState, state, data, send, userId, error } = useWsAuth({ url: gateway, getJwt });
  useEffect(() => {
    window.rendered.push({ readyState, state });
  }, [readyState, state]);
  return (
    <main>
      <p>
        readyState <b id="ready">{String(readyState)}</b> state <b id="state">{state}</b> user{" "}
        <b id="user">{userId ?? ""}</b>
      </p>
      <pre id="data">{JSON.stringify(data)}</pre>
      <pre id="error">{JSON.stringify(error)}</pre>
      <button id="send" onClick={() => send("from-react")}>
        send
      </button>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<App />);
