#!/usr/bin/env python3
"""Self Ir per handshake of one profile, grouped by what the code does.
usage: categories.py LABEL [--n 300] [--procs auth,gateway,redis] [--top 8]

The groups are regexes over callgrind's function names (first match wins), so
"where the instructions go" reads as HTTP/2, allocation, logging, ... rather
than as thousands of functions. Active window minus the equal idle window, as
summary.sh; kernel time is not counted by callgrind at all."""
import argparse
import collections
import os
import re
import subprocess

GROUPS = [
    ("allocator (malloc/free/realloc)", r"malloc|free|realloc|calloc|_int_|tcache|mi_|je_|sdallocx|__rust_(alloc|dealloc|realloc)|alloc::alloc|RawVec|raw_vec"),
    ("memcpy/memmove/memset/memcmp", r"mem(cpy|move|set|cmp)|__memc|bcmp|strlen"),
    ("tracing and log formatting", r"tracing|fmt::|core::fmt|Formatter|json::ser|serde_json::ser|write_fmt|log::|sharded_slab|thread_local"),
    ("HTTP/2 + gRPC framing (h2, hpack, tonic, prost, hyper's h2 glue)", r"\bh2::|hpack|tonic|prost|::codec::|http_body|grpc|hyper::proto::h2|hyper::client|hyper_util::client"),
    # hyper/http/tower also carry gRPC's HTTP/2 (headers, service stack): in
    # auth, which serves no HTTP/1 in a handshake, all of this group is gRPC.
    ("hyper, http, axum, tower (HTTP/1 server; also gRPC's headers and layers)", r"hyper|axum|tower|matchit|httparse|http::|headers"),
    ("WebSocket frames, sha1 accept key, base64 (also JWT segments)", r"tungstenite|sha1|base64"),
    ("JWT and token crypto (hmac, sha2, json)", r"jsonwebtoken|hmac|sha2|Sha256|sha256|compress|serde_json::de|serde::de|subtle|getrandom|rand"),
    ("Redis client (redis-rs, RESP)", r"redis::|combine|RedisError|resp"),
    ("tokio runtime, wakers, timers, I/O driver", r"tokio|mio|epoll|waker|Waker|futures|parking_lot|Condvar|std::sync|std::thread|sched_|pthread|clock_gettime|__vdso|syscall"),
    ("Lua (redis scripts)", r"^lua|luaV|luaH|luaD|luaS|luaC|luaF|luaG|luaK|luaL|luaO|luaT|luaZ|luaX|luaY|luaI|luaE|luaM|luaU|luaB|luaP|str_|lua_"),
    ("wsauth code", r"wsauth"),
]
# redis-server is C: its own groups, tried after the shared ones above.
REDIS_GROUPS = [
    ("redis-server: commands, keyspace, replies", r"Command|process|connSock|aeProc|ae[A-Z]|dict|sds|listAdd|zmalloc|stream|lp[A-Z]|rax|[cC]lient|[rR]eply|^call$|propagate|notify|quicklist|[oO]bject|getExpire|lookupKey|siphash|read|write|Query|ACL|slot|expire|Expire|eval|script|Script"),
]


def load(out_dir, label, proc):
    total = collections.Counter()
    for part, sign in ((1, 1), (2, -1)):
        path = f"{out_dir}/{label}.{proc}.cg.{part}"
        text = subprocess.run(
            ["callgrind_annotate", "--inclusive=no", "--threshold=100", "--auto=no", path],
            capture_output=True, text=True, check=True,
        ).stdout
        program_total = -1
        for line in text.splitlines():
            m = re.match(r"\s*([\d,]+) \([\d. %]+\)\s+(.*)$", line)
            if not m:
                continue
            ir = int(m.group(1).replace(",", ""))
            name = re.sub(r"\s*\[[^\]]*\]$", "", m.group(2))
            if "PROGRAM TOTALS" in name:
                program_total = ir
                continue
            # Frames on a stack at the dump show the whole thread's cost as
            # their own: not a function's self cost.
            if program_total > 0 and ir >= program_total // 4:
                continue
            total[name] += sign * ir
    return total


def group_of(name, proc):
    for group, pattern in GROUPS + (REDIS_GROUPS if proc == "redis" else []):
        if re.search(pattern, name):
            return group
    return "other"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("label")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--procs", default="gateway,auth,redis")
    ap.add_argument("--top", type=int, default=3, help="largest functions shown per group")
    o = ap.parse_args()
    out_dir = os.environ.get("PROF_OUT", "/tmp/callgrind-out")
    for proc in o.procs.split(","):
        per_fn = {k: v / o.n for k, v in load(out_dir, o.label, proc).items()}
        groups = collections.defaultdict(list)
        for name, ir in per_fn.items():
            groups[group_of(name, proc)].append((ir, name))
        whole = sum(per_fn.values())
        print(f"\n{proc}: {whole / 1000:.1f}k Ir per handshake (self cost, by group)")
        print("| group | Ir/handshake | share | largest functions |")
        print("|---|---:|---:|---|")
        for group, rows in sorted(groups.items(), key=lambda g: -sum(r[0] for r in g[1])):
            ir = sum(r[0] for r in rows)
            if ir < whole * 0.01:
                continue
            top = sorted(rows, reverse=True)[: o.top]
            names = "; ".join(f"`{short(n)}` {i / 1000:.1f}k" for i, n in top)
            print(f"| {group} | {ir / 1000:.1f}k | {100 * ir / whole:.0f} % | {names} |")


def short(name):
    name = name.split(":", 1)[1] if re.match(r"^[^ :]*(\.rs|\.c|\.S|\?\?\?|\.h):", name) else name
    name = re.sub(r"<[^<>]*>", "<…>", name)
    name = re.sub(r"<[^<>]*>", "<…>", name)
    return name[:70].replace("|", "/")


if __name__ == "__main__":
    main()
