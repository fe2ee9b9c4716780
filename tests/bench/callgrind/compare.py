#!/usr/bin/env python3
"""Per-function Ir per handshake, two profiles side by side.
usage: compare.py PROC LABEL_A LABEL_B [--inclusive] [--top N] [--n 300] [--grep RE]"""
import os, re, subprocess, sys, argparse, collections
ap = argparse.ArgumentParser()
ap.add_argument("proc"); ap.add_argument("a"); ap.add_argument("b")
ap.add_argument("--inclusive", action="store_true"); ap.add_argument("--top", type=int, default=40)
ap.add_argument("--n", type=int, default=300); ap.add_argument("--grep")
ap.add_argument("--sort", default="diff")
o = ap.parse_args()
def load(label):
    res = collections.Counter()
    for part, sign in ((1, 1), (2, -1)):
        f = f"{os.environ.get('PROF_OUT', '/tmp/callgrind-out')}/{label}.{o.proc}.cg.{part}"
        out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if o.inclusive else 'no'}", "--threshold=100", "--auto=no", f],
                             capture_output=True, text=True).stdout
        started = False; total = -1
        for line in out.splitlines():
            m = re.match(r"\s*([\d,]+) \([\d. %]+\)\s+(.*)$", line)
            if not m: continue
            ir = int(m.group(1).replace(",", "")); rest = m.group(2)
            if "PROGRAM TOTALS" in rest: total = ir; continue
            if not o.inclusive and ir == total: continue  # frames on the stack at the dump
            # strip file: prefix and [object] suffix
            rest = re.sub(r"\s*\[[^\]]*\]$", "", rest)
            fn = rest.split(":", 1)[1] if re.match(r"^[^ :]*(\.rs|\.c|\.S|\?\?\?|\.h|\.cc):", rest) or rest.startswith("???:") else rest
            if o.inclusive:
                res[fn] = max(res[fn], ir) if sign > 0 else res[fn]
            else:
                res[fn] += sign * ir
        if o.inclusive: break  # inclusive: active window only (idle is tiny for auth/gateway)
    return {k: v / o.n for k, v in res.items()}
A, B = load(o.a), load(o.b)
keys = set(A) | set(B)
if o.grep: keys = {k for k in keys if re.search(o.grep, k)}
rows = sorted(keys, key=(lambda k: -abs(B.get(k, 0) - A.get(k, 0))) if o.sort == "diff" else (lambda k: -max(A.get(k,0), B.get(k,0))))
print(f"{'A':>10} {'B':>10} {'B-A':>10}  function   (Ir/handshake, A={o.a} B={o.b}, {o.proc}, {'inclusive' if o.inclusive else 'self'})")
print(f"{sum(A.values()) if not o.inclusive else 0:>10.0f} {sum(B.values()) if not o.inclusive else 0:>10.0f}  total")
for k in rows[:o.top]:
    a, b = A.get(k, 0), B.get(k, 0)
    print(f"{a:>10.0f} {b:>10.0f} {b-a:>+10.0f}  {k[:170]}")
