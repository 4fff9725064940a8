#!/usr/bin/env python3
"""Direct to `maas sim` versus through `maas proxy`, measured in one run.

Starts the simulator (model `load-test`: no think time), applies
loadtest/bench.catalog.yaml, issues a key, starts the proxy with every
policy on (auth, limits, metering, metrics, access log), then alternates
wrk runs direct/proxy at each concurrency, ROUNDS times, and reports the
medians: req/s, p50/p99 latency, added latency over direct, and the proxy's
CPU time per 1k requests and RSS. Writes loadtest/results/<date>-proxy-vs-direct-<mode>.md.

Usage: python3 loadtest/proxy_vs_direct.py [--duration 10] [--rounds 3]
       [--concurrency 1,64] [--mode local|strict] [--redis redis://127.0.0.1:6379]
Needs: wrk (apt install wrk) and a release build (cargo build --release).
"""

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys

from gateway import ROOT, Gateway, cpu_seconds, machine, rss_mib, to_us, write_report

BODY = '{"model":"load-test","messages":[{"role":"user","content":"Say hello to the gateway"}],"max_tokens":16}'


def wrk(url, concurrency, duration, script):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    pct = {p: to_us(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        sys.exit(f"{url}: {non2xx.group(1)} failed responses\n{out}")
    return {"rps": rps, "requests": total, "p50": pct["50"], "p90": pct["90"], "p99": pct["99"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--mode", default="local", choices=["local", "strict"])
    parser.add_argument("--redis", default=None, help="use this Redis as the store (default: embedded)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt install wrk")
    concurrencies = [int(c) for c in args.concurrency.split(",")]

    gateway = Gateway(os.path.join(ROOT, "loadtest/sim/sim.example.yaml"), args.mode, args.redis)
    try:
        script = os.path.join(gateway.work, "post.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\n')
            f.write(f"wrk.body = '{BODY}'\n")
            f.write('wrk.headers["Content-Type"] = "application/json"\n')
            f.write(f'wrk.headers["Authorization"] = "Bearer {gateway.key}"\n')
        targets = {
            "direct": f"http://127.0.0.1:{gateway.sim_port}/v1/chat/completions",
            "proxy": f"http://127.0.0.1:{gateway.proxy_port}/v1/chat/completions",
        }
        for url in targets.values():  # warm pools and caches
            wrk(url, 8, 2, script)
        results = {}
        for round_ in range(args.rounds):
            for concurrency in concurrencies:
                for name in (["direct", "proxy"] if round_ % 2 == 0 else ["proxy", "direct"]):
                    cpu_before = cpu_seconds(gateway.proxy.pid)
                    run = wrk(targets[name], concurrency, args.duration, script)
                    run["cpu_per_1k"] = (cpu_seconds(gateway.proxy.pid) - cpu_before) / run["requests"] * 1000
                    run["rss"] = rss_mib(gateway.proxy.pid)
                    results.setdefault((concurrency, name), []).append(run)
                    print(f"round {round_ + 1} c={concurrency} {name}: {run['rps']:.0f} req/s, "
                          f"p50 {run['p50']:.0f} µs, p99 {run['p99']:.0f} µs", flush=True)
        logged = gateway.logged_lines()
    finally:
        gateway.close()

    def med(runs, field):
        return statistics.median(r[field] for r in runs)

    lines = [
        f"# Direct vs through `maas proxy` — {datetime.date.today()}",
        "",
        f"Machine: {machine()}. "
        f"Load: wrk -t1, {args.duration} s per run, {args.rounds} rounds alternating direct/proxy, medians shown. "
        f"Proxy: limits `{args.mode}` on {'a Redis' if args.redis else 'an embedded'} store, key auth, routing by "
        f"model, token metering, Prometheus metrics and JSON access log all on ({logged} access-log lines written). "
        "Simulator model `load-test`: no think time, 16 completion tokens. All processes share the same cores.",
        "",
        "| concurrency | path | req/s | p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs | proxy CPU s / 1k req | proxy RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency in concurrencies:
        direct, proxied = results[(concurrency, "direct")], results[(concurrency, "proxy")]
        for name, runs in (("direct", direct), ("proxy", proxied)):
            is_proxy = name == "proxy"
            added50 = med(runs, "p50") - med(direct, "p50") if is_proxy else 0
            added99 = med(runs, "p99") - med(direct, "p99") if is_proxy else 0
            cpu = f"{med(runs, 'cpu_per_1k'):.3f}" if is_proxy else "–"
            rss = f"{med(runs, 'rss'):.0f}" if is_proxy else "–"
            lines.append(
                f"| {concurrency} | {name} | {med(runs, 'rps'):.0f} | {med(runs, 'p50'):.0f} | {med(runs, 'p90'):.0f} | "
                f"{med(runs, 'p99'):.0f} | {added50:.0f} | {added99:.0f} | {cpu} | {rss} |"
            )
        ratio = med(proxied, "rps") / med(direct, "rps")
        lines.append(f"| {concurrency} | proxy/direct | {ratio:.2f}× | | | | | | | |")
    report = "\n".join(lines) + "\n"
    write_report(f"proxy-vs-direct-{args.mode}", report)


if __name__ == "__main__":
    main()
