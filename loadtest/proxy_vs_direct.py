#!/usr/bin/env python3
"""Direct to `maas sim` versus through `maas proxy`, measured in one run.

Starts the simulator (model `load-test`: no think time, 64 tokens), applies
loadtest/bench.catalog.yaml, issues a key, starts the proxy with every
policy on (auth, limits, metering, metrics, access log), then alternates
wrk runs direct/proxy at each concurrency, ROUNDS times, and reports the
medians: req/s, p50/p99 latency, added latency over direct, and the proxy's
CPU time per 1k requests and RSS. Writes loadtest/results/<date>-proxy-vs-direct.md.

Usage: python3 loadtest/proxy_vs_direct.py [--duration 10] [--rounds 3]
       [--concurrency 1,64] [--mode local|strict] [--redis redis://127.0.0.1:6379]
Needs: wrk (apt install wrk) and a release build (cargo build --release).
"""

import argparse
import datetime
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "maas")
BODY = '{"model":"load-test","messages":[{"role":"user","content":"Say hello to the gateway"}],"max_tokens":16}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def to_us(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


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
    if not os.path.exists(BIN):
        sys.exit("no release build: cargo build --release")

    work = tempfile.mkdtemp(prefix="maas-bench-")
    env = dict(os.environ, MAAS_DATA_DIR=os.path.join(work, "data"), MAAS_LOG_LEVEL="warn", MAAS_LIMITS_MODE=args.mode)
    env.pop("MAAS_CONFIG", None)
    if args.redis:
        env.update(MAAS_REDIS_URL=args.redis, MAAS_REDIS_PREFIX=f"maasbench-{os.getpid()}")
    sim_port, proxy_port, metrics_port = free_port(), free_port(), free_port()
    procs = []
    try:
        sim = subprocess.Popen(
            [BIN, "sim", "--listen", f"127.0.0.1:{sim_port}", "--models", os.path.join(ROOT, "loadtest/sim/sim.example.yaml")],
            stdout=subprocess.DEVNULL, env=env,
        )
        procs.append(sim)
        wait_port(sim_port, sim, "maas sim")
        catalog = os.path.join(work, "catalog.yaml")
        with open(os.path.join(ROOT, "loadtest/bench.catalog.yaml")) as f:
            text = f.read().replace("{SIM}", f"http://127.0.0.1:{sim_port}")
        with open(catalog, "w") as f:
            f.write(text)
        subprocess.run([BIN, "apply", "-f", catalog], env=env, check=True, stdout=subprocess.DEVNULL)
        key = subprocess.run(
            [BIN, "create-key", "--app", "Bench/bench-app"], env=env, check=True, capture_output=True, text=True
        ).stdout.strip()
        access_log = open(os.path.join(work, "access.log"), "w")
        proxy = subprocess.Popen(
            [BIN, "proxy", "--listen", f"127.0.0.1:{proxy_port}", "--metrics-listen", f"127.0.0.1:{metrics_port}"],
            stdout=access_log, env=env,
        )
        procs.append(proxy)
        wait_port(proxy_port, proxy, "maas proxy")
        script = os.path.join(work, "post.lua")
        with open(script, "w") as f:
            f.write('wrk.method = "POST"\n')
            f.write(f"wrk.body = '{BODY}'\n")
            f.write('wrk.headers["Content-Type"] = "application/json"\n')
            f.write(f'wrk.headers["Authorization"] = "Bearer {key}"\n')
        targets = {
            "direct": f"http://127.0.0.1:{sim_port}/v1/chat/completions",
            "proxy": f"http://127.0.0.1:{proxy_port}/v1/chat/completions",
        }
        # Warm both paths (connection pools, caches).
        for url in targets.values():
            wrk(url, 8, 2, script)
        results = {}
        for round_ in range(args.rounds):
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                for name in (["direct", "proxy"] if round_ % 2 == 0 else ["proxy", "direct"]):
                    cpu_before = cpu_seconds(proxy.pid)
                    run = wrk(targets[name], concurrency, args.duration, script)
                    run["cpu_per_1k"] = (cpu_seconds(proxy.pid) - cpu_before) / run["requests"] * 1000
                    run["rss"] = rss_mib(proxy.pid)
                    results.setdefault((concurrency, name), []).append(run)
                    print(f"round {round_ + 1} c={concurrency} {name}: {run['rps']:.0f} req/s, "
                          f"p50 {run['p50']:.0f} µs, p99 {run['p99']:.0f} µs", flush=True)
        access_log.flush()
        with open(os.path.join(work, "access.log")) as f:
            logged = sum(1 for _ in f)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        if args.redis and shutil.which("redis-cli"):
            # Leave the operator's Redis as it was.
            keys = subprocess.run(
                ["redis-cli", "-u", args.redis, "--scan", "--pattern", f"{env['MAAS_REDIS_PREFIX']}:*"],
                capture_output=True, text=True,
            ).stdout.split()
            for start in range(0, len(keys), 500):
                subprocess.run(["redis-cli", "-u", args.redis, "DEL", *keys[start:start + 500]], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)

    med = lambda runs, field: statistics.median(r[field] for r in runs)  # noqa: E731
    lines = [
        f"# Direct vs through `maas proxy` — {datetime.date.today()}",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores ({cpu_model()}), Linux {platform.release()}. "
        f"Load: wrk -t1, {args.duration} s per run, {args.rounds} rounds alternating direct/proxy, medians shown. "
        f"Proxy: limits `{args.mode}` on {'a Redis' if args.redis else 'an embedded'} store, key auth, routing by model, "
        f"token metering, Prometheus metrics and JSON access log all on ({logged} access-log lines written). "
        "Simulator model `load-test`: no think time, 16 completion tokens. All processes share the same cores.",
        "",
        "| concurrency | path | req/s | p50 µs | p90 µs | p99 µs | added p50 µs | added p99 µs | proxy CPU s / 1k req | proxy RSS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        direct, proxied = results[(concurrency, "direct")], results[(concurrency, "proxy")]
        for name, runs in (("direct", direct), ("proxy", proxied)):
            added50 = med(runs, "p50") - med(direct, "p50") if name == "proxy" else 0
            added99 = med(runs, "p99") - med(direct, "p99") if name == "proxy" else 0
            cpu = f"{med(runs, 'cpu_per_1k'):.3f}" if name == "proxy" else "–"
            rss = f"{med(runs, 'rss'):.0f}" if name == "proxy" else "–"
            lines.append(
                f"| {concurrency} | {name} | {med(runs, 'rps'):.0f} | {med(runs, 'p50'):.0f} | {med(runs, 'p90'):.0f} | "
                f"{med(runs, 'p99'):.0f} | {added50:.0f} | {added99:.0f} | {cpu} | {rss} |"
            )
        ratio = med(proxied, "rps") / med(direct, "rps")
        lines.append(f"| {concurrency} | proxy/direct | {ratio:.2f}× | | | | | | | |")
    report = "\n".join(lines) + "\n"
    print(report)
    os.makedirs(os.path.join(ROOT, "loadtest/results"), exist_ok=True)
    path = os.path.join(ROOT, "loadtest/results", f"{datetime.date.today()}-proxy-vs-direct-{args.mode}.md")
    with open(path, "w") as f:
        f.write(report)
    print(f"written to {os.path.relpath(path, ROOT)}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
