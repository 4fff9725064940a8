#!/usr/bin/env python3
"""What one request costs Redis: runs `maas proxy` (strict limits by
default) on a Redis, sends a fixed number of requests with `maas bench`,
and reads Redis's `INFO cpu` and `INFO commandstats` before and after: Redis CPU
microseconds per request, and calls and microseconds by command (a
script's own commands are listed too, and counted in its time). Redis is the ceiling a fleet of
strict proxies shares, so this is the number that says how far it scales.

Usage: python3 loadtest/redis_cost.py [--redis redis://127.0.0.1:6379]
       [--mode strict|local] [--requests 5000] [--concurrency 16] [--stream]
       [--json out.json]
Uses MAAS_BIN (default target/release/maas); the Redis should be idle
(commandstats count every client).
"""

import argparse
import json
import os
import subprocess
import sys
import time

from gateway import BIN, Gateway, ROOT


def commandstats(url):
    """{command: (calls, usec)} from INFO commandstats."""
    out = subprocess.run(["redis-cli", "-u", url, "INFO", "commandstats"], capture_output=True, text=True, check=True)
    stats = {}
    for line in out.stdout.splitlines():
        if not line.startswith("cmdstat_"):
            continue
        name, fields = line[len("cmdstat_"):].split(":", 1)
        values = dict(field.split("=", 1) for field in fields.split(","))
        stats[name] = (int(values["calls"]), int(values["usec"]))
    return stats


def redis_cpu_seconds(url):
    """The Redis server's CPU time so far (user + system, every thread)."""
    out = subprocess.run(["redis-cli", "-u", url, "INFO", "cpu"], capture_output=True, text=True, check=True)
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines() if ":" in line)
    return float(fields["used_cpu_user"]) + float(fields["used_cpu_sys"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--mode", default="strict", choices=["strict", "local"])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    gateway = Gateway(os.path.join(ROOT, "loadtest/bench.models.yaml"), args.mode, args.redis)
    try:
        url = f"http://127.0.0.1:{gateway.proxy_port}/bench/v1/chat/completions"
        bench = [BIN, "bench", "--url", url, "--model", "stream-test" if args.stream else "load-test",
                 "--concurrency", str(args.concurrency), "--warmup", "0", "--duration", "600",
                 "--requests", str(args.requests), "--json", "-"]
        if args.stream:
            bench.append("--stream")
        env = dict(os.environ, MAAS_BENCH_KEY=gateway.key)
        # No warm-up (its requests would cost Redis uncounted); wait for
        # the usage batches of the last requests to land.
        before = commandstats(args.redis)
        cpu_before = redis_cpu_seconds(args.redis)
        done = subprocess.run(bench, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"maas bench failed: {done.stderr}")
        report = json.loads(done.stdout)
        time.sleep(1.5)
        after = commandstats(args.redis)
        cpu_after = redis_cpu_seconds(args.redis)
    finally:
        gateway.close()
    total = report["ok"] + sum(report["errors"].values())
    if total == 0:
        sys.exit(f"no request served: {report}")
    rows = []
    for name, (calls, usec) in sorted(after.items()):
        calls0, usec0 = before.get(name, (0, 0))
        if name == "info" or calls == calls0:
            continue
        rows.append({"command": name, "calls_per_request": (calls - calls0) / total,
                     "usec_per_request": (usec - usec0) / total})
    # Commands a script runs are counted in their own rows and in the
    # script's time, so the process's CPU time is the total, not a sum.
    figures = {
        "mode": args.mode,
        "stream": args.stream,
        "requests": total,
        "redis_cpu_usec_per_request": (cpu_after - cpu_before) * 1e6 / total,
        "redis_calls_per_request": sum(r["calls_per_request"] for r in rows),
        "commands": rows,
    }
    print(f"{total} requests ({args.mode}, {'streamed' if args.stream else 'plain'}): "
          f"{figures['redis_calls_per_request']:.2f} Redis calls (scripts' included) and "
          f"{figures['redis_cpu_usec_per_request']:.1f} µs of Redis CPU per request")
    for row in rows:
        print(f"  {row['command']:<24} {row['calls_per_request']:8.3f} calls {row['usec_per_request']:8.2f} µs")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
