#!/usr/bin/env python3
"""Fixed-count handshake driver for profiling: N handshakes at concurrency C against a gateway.
Each handshake: GET /token/ws (kept-alive connection per thread) -> GET /ws upgrade (new TCP)
-> jwt frame -> auth_ok -> close frame -> wait for the server's close."""
import base64, hashlib, hmac, json, os, socket, struct, sys, threading, time

def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def mint(secret, sub):
    now = int(time.time())
    h = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    p = b64(json.dumps({"sub": sub, "iat": now, "exp": now + 3600, "jti": os.urandom(8).hex()}).encode())
    s = b64(hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest())
    return f"{h}.{p}.{s}"

def read_http(f):
    status = f.readline()
    headers = {}
    while True:
        line = f.readline()
        if line in (b"\r\n", b""): break
        k, v = line.decode().split(":", 1)
        headers[k.strip().lower()] = v.strip()
    body = b""
    if "content-length" in headers: body = f.read(int(headers["content-length"]))
    return int(status.split()[1]), headers, body

def frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    hdr = bytes([0x80 | opcode])
    if n < 126: hdr += bytes([0x80 | n])
    elif n < 65536: hdr += bytes([0x80 | 126]) + struct.pack(">H", n)
    else: hdr += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

def read_frame(f):
    b0, b1 = f.read(2)
    n = b1 & 0x7F
    if n == 126: n = struct.unpack(">H", f.read(2))[0]
    elif n == 127: n = struct.unpack(">Q", f.read(8))[0]
    return b0 & 0x0F, f.read(n)

def handshake(addr, http, jwt, user):
    s, f = http
    s.sendall(f"GET /token/ws HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nAuthorization: Bearer {jwt}\r\n\r\n".encode())
    st, _, body = read_http(f)
    if st != 200: raise RuntimeError(f"/token/ws {st} {body!r}")
    token = json.loads(body)["token"]
    ws = socket.create_connection(addr)
    wf = ws.makefile("rb")
    key = base64.b64encode(os.urandom(16)).decode()
    ws.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    st, _, _ = read_http(wf)
    if st != 101: raise RuntimeError(f"/ws {st}")
    ws.sendall(frame(1, json.dumps({"type": "jwt", "token": jwt}).encode()))
    op, data = read_frame(wf)
    msg = json.loads(data)
    if msg.get("type") != "auth_ok" or msg.get("user_id") != user: raise RuntimeError(f"got {op} {data!r}")
    ws.sendall(frame(8, struct.pack(">H", 1000)))
    while True:
        op, _ = read_frame(wf)
        if op == 8: break
    ws.close()

def main():
    host, port, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    secret = os.environ["JWT_SECRET"]
    addr = (host, port)
    lock = threading.Lock()
    left = [n]; errors = []
    def worker(i):
        user = f"prof-{i}"
        jwt = mint(secret, user)
        s = socket.create_connection(addr); http = (s, s.makefile("rb"))
        while True:
            with lock:
                if left[0] == 0: return
                left[0] -= 1
            try: handshake(addr, http, jwt, user)
            except Exception as e:
                errors.append(repr(e))
                s = socket.create_connection(addr); http = (s, s.makefile("rb"))
    t0 = time.time()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(c)]
    for t in ts: t.start()
    for t in ts: t.join()
    print(json.dumps({"handshakes": n, "concurrency": c, "errors": len(errors), "first_errors": errors[:3], "seconds": round(time.time() - t0, 2)}))
    sys.exit(1 if errors else 0)

main()
