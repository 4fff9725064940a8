#!/usr/bin/env python3
"""Instructions per request, counted by callgrind: bare Pingora and the maas
proxy side by side in one run.

Wall-clock CPU per request (compare.py) moves ±10 % between runs on a
shared VM, more than most single optimisations gain; callgrind counts the
user-space instructions the gateway executes, the same for the same binary
and load whatever else the machine does. Each gateway runs under
`valgrind --tool=callgrind`; after --warmup requests its counters are
zeroed, --requests non-streamed chat requests (16 tokens, --concurrency
connections) go through it, and the dump is read. The kernel's share (the
sockets) is not counted: it is the same for both paths (compare.py shows
the same syscalls per request).

Writes results/instructions.md and, per gateway, the functions that cost
the most (results/instructions-<path>.txt, from callgrind_annotate).

Needs: valgrind (apt install valgrind), the release build and the
bare_pingora example (see compare.py); --redis adds the maas proxy in strict
mode on that Redis.
"""

import argparse
import collections
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

from gateway import BIN, ROOT, Gateway, machine, revision
from peers import BarePingora

MODELS = os.path.join(ROOT, "loadtest", "bench.models.yaml")
READY_SECONDS = 120  # a gateway starting under valgrind


def callgrind(out_dir):
    # Every dump names its functions in full: callgrind_annotate reads one dump alone.
    return ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no",
            f"--callgrind-out-file={out_dir}/callgrind.%p"]


def load(url, key, requests, concurrency):
    env = dict(os.environ, MAAS_BENCH_KEY=key) if key else dict(os.environ)
    done = subprocess.run([BIN, "bench", "--url", url, "--model", "load-test", "--concurrency", str(concurrency),
                           "--max-tokens", "16", "--requests", str(requests), "--warmup", "0", "--timeout", "300"],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"maas bench {url} failed:\n{done.stdout}{done.stderr}")


def function_costs(dump):
    """(total, self cost per function, inclusive cost per function) of a
    callgrind dump written with --compress-strings=no. Read here rather
    than by callgrind_annotate, which (3.19) puts a dump taken with
    callgrind_control's whole cost on `clone`."""
    total, own, inclusive = None, collections.Counter(), collections.Counter()
    function, after_calls = None, False
    with open(dump, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                function = line[3:].strip()
            elif line.startswith("calls="):
                after_calls = True  # the next cost line is the call's inclusive cost
            elif line[:1] in "0123456789+-*" and line[:1]:
                fields = line.split()
                cost = int(fields[1]) if len(fields) > 1 else 0
                inclusive[function] += cost
                if not after_calls:
                    own[function] += cost
                after_calls = False
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    if total is None:
        sys.exit(f"{dump} has no summary line")
    return total, own, inclusive


def measure(name, url, key, pid, out_dir, args):
    """Instructions per request of the gateway `pid` (running under callgrind)."""
    load(url, key, args.warmup, args.concurrency)
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    load(url, key, args.requests, args.concurrency)
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    dumps = sorted(glob.glob(f"{out_dir}/callgrind.{pid}.*"), key=os.path.getmtime)
    if not dumps:
        sys.exit(f"{name}: callgrind wrote no dump in {out_dir}")
    total, own, inclusive = function_costs(dumps[-1])
    per_request = total / args.requests
    with open(os.path.join(args.out, f"instructions-{name}.txt"), "w") as f:
        f.write(f"# {name}: {per_request:,.0f} instructions per request ({args.requests} requests)\n\n"
                "## Self cost per request (the function's own instructions)\n\n")
        for function, cost in own.most_common(args.top):
            f.write(f"{cost / args.requests:10,.0f}  {function}\n")
        ours = [(function, cost) for function, cost in inclusive.most_common()
                if "maas_" in function or "MaasProxy" in function][: args.top]
        if ours:
            f.write("\n## Inclusive cost per request of the gateway's own functions (callees included)\n\n")
            for function, cost in ours:
                f.write(f"{cost / args.requests:10,.0f}  {function}\n")
    print(f"{name}: {per_request:,.0f} instructions per request", flush=True)
    return per_request


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--redis", help="also measure the maas proxy in strict mode on this Redis")
    parser.add_argument("--top", type=int, default=40, help="functions listed per gateway")
    parser.add_argument("--out", default=os.path.join(ROOT, "loadtest", "results"))
    args = parser.parse_args()
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt install valgrind")
    os.makedirs(args.out, exist_ok=True)
    out_dir = tempfile.mkdtemp(prefix="maas-callgrind-")
    url = "http://127.0.0.1:{}/v1/chat/completions"
    rows = {}
    try:
        gateway = Gateway(MODELS, mode="local", proxy_threads=1, proxy_prefix=callgrind(out_dir),
                          ready_seconds=READY_SECONDS)
        try:
            bare = BarePingora(gateway.sim_port, prefix=callgrind(out_dir), ready_seconds=READY_SECONDS)
            try:
                rows["pingora"] = measure("pingora", url.format(bare.port), None, bare.proc.pid, out_dir, args)
            finally:
                bare.close()
            rows["maas-local"] = measure("maas-local", url.format(gateway.proxy_port), gateway.key,
                                         gateway.proxy.pid, out_dir, args)
        finally:
            gateway.close()
        if args.redis:
            gateway = Gateway(MODELS, mode="strict", redis=args.redis, proxy_threads=1,
                              proxy_prefix=callgrind(out_dir), ready_seconds=READY_SECONDS)
            try:
                rows["maas-strict-redis"] = measure("maas-strict-redis", url.format(gateway.proxy_port), gateway.key,
                                                    gateway.proxy.pid, out_dir, args)
            finally:
                gateway.close()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Instructions per request (callgrind)", "",
        f"{when}, maas {revision()}; {machine()}. Non-streamed chat (16 tokens), {args.requests} requests at "
        f"concurrency {args.concurrency} after {args.warmup} of warm-up; user-space instructions of the gateway "
        "process (every thread), from `loadtest/instructions.py`. Per-function costs: "
        "`instructions-<path>.txt`.", "",
        "| path | instructions per request | vs bare Pingora |", "| --- | --- | --- |",
    ]
    for name, value in rows.items():
        lines.append(f"| {name} | {value:,.0f} | {value / rows['pingora']:.2f} |")
    with open(os.path.join(args.out, "instructions.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(args.out, "instructions.json"), "w") as f:
        json.dump({"when": when, "requests": args.requests, "per_request": rows}, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
