#!/usr/bin/env python3
"""Soak: the proxy under steady load for a given time while its Redis fails
over and over (killed and restarted, or hung with SIGSTOP and woken), with
the proxy's RSS sampled every second.

    python3 loadtest/soak.py --duration 3600 --out /tmp/soak

It starts its own redis-server (append-only file in a temporary directory)
on a free port, `maas sim` and one `maas proxy` on it (strict limits, the
default `store.outage: serve_cached`), then loops: `--fault-every` seconds
of calm, then a fault of `--fault-seconds`, alternating kill/restart and
hang/wake. Load is `--concurrency` clients sending plain and streamed
chats with one key, which the proxy knows before the first fault, so every
request should succeed. At the end it waits for the usage to reach Redis
and compares the stored hits with the requests served.

Writes soak.json (every sample) and soak.md to `--out`; exits 1 when a
request failed, when hits are missing, or when the RSS grew by more than
`--max-rss-growth-mib` from the first sample after warm-up to the largest
of the last quarter. Needs a release build (or MAAS_BIN) and redis-server.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gateway  # noqa: E402

MODELS = os.path.join(gateway.ROOT, "loadtest", "bench.models.yaml")


class Redis:
    """A redis-server of our own, to kill, hang, wake and restart."""

    def __init__(self):
        if not shutil.which("redis-server"):
            sys.exit("soak needs redis-server: apt install redis-server")
        self.dir = tempfile.mkdtemp(prefix="maas-soak-redis-")
        self.port = gateway.free_port()
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", self.dir],
            stdout=subprocess.DEVNULL)
        gateway.wait_port(self.port, self.proc, "redis-server")

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Load:
    """`concurrency` clients on keep-alive connections until stopped."""

    def __init__(self, port, key, concurrency):
        self.port, self.key = port, key
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = []
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(concurrency)]
        for thread in self.threads:
            thread.start()

    def request(self, conn, streamed):
        body = {"model": "stream-test" if streamed else "load-test", "stream": streamed,
                "messages": [{"role": "user", "content": "Hello there, how are you?"}]}
        conn.request("POST", "/bench/v1/chat/completions", json.dumps(body),
                     {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            return f"{response.status} {data[:200]!r}"
        if streamed and not data.rstrip().endswith(b"data: [DONE]"):
            return f"stream cut: {data[-200:]!r}"
        return None

    def client(self, number):
        conn = None
        turn = number
        while not self.stop.is_set():
            turn += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                error = self.request(conn, streamed=turn % 4 == 0)
            except (OSError, http.client.HTTPException) as e:
                error = f"{type(e).__name__}: {e}"
                conn = None
            with self.lock:
                if error:
                    self.failed.append((round(time.time(), 3), error))
                else:
                    self.ok += 1

    def close(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def metric(port, name):
    text = gateway_scrape(port)
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def gateway_scrape(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    return conn.getresponse().read().decode()


def stored_hits(redis_url, prefix):
    """Every hits counter of the eternity period, summed (one application)."""
    keys = subprocess.run(["redis-cli", "-u", redis_url, "--scan", "--pattern", f"{prefix}:u:*:hits:eternity:0"],
                          capture_output=True, text=True).stdout.split()
    total = 0
    for key in keys:
        value = subprocess.run(["redis-cli", "-u", redis_url, "GET", key], capture_output=True, text=True)
        total += int(value.stdout.strip() or 0)
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    parser.add_argument("--fault-every", type=float, default=20, help="seconds of calm between faults")
    parser.add_argument("--fault-seconds", type=float, default=5, help="how long each fault lasts")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the RSS baseline "
                        "(default: a tenth of the duration, at least 5)")
    parser.add_argument("--max-rss-growth-mib", type=float, default=None,
                        help="fail when the RSS grows by more than this")
    parser.add_argument("--out", default="loadtest/results")
    args = parser.parse_args()
    warmup = args.warmup if args.warmup is not None else max(5.0, args.duration / 10)

    redis = Redis()
    gw = None
    load = None
    try:
        gw = gateway.Gateway(MODELS, mode="strict", redis=redis.url)
        load = Load(gw.proxy_port, gw.key, args.concurrency)
        started = time.time()
        samples, faults = [], []
        next_fault, fault_end, kind, faulty = started + args.fault_every, None, "kill", False
        while time.time() - started < args.duration:
            now = time.time()
            if not faulty and now >= next_fault:
                faulty, fault_end = True, now + args.fault_seconds
                if kind == "kill":
                    redis.kill()
                else:
                    redis.signal(signal.SIGSTOP)
                faults.append({"kind": kind, "at": round(now - started, 1)})
            elif faulty and now >= fault_end:
                if kind == "kill":
                    redis.start()
                else:
                    redis.signal(signal.SIGCONT)
                faulty, next_fault = False, now + args.fault_every
                kind = "hang" if kind == "kill" else "kill"
            with load.lock:
                ok, failed = load.ok, len(load.failed)
            samples.append({"t": round(now - started, 1), "rss_mib": round(gateway.rss_mib(gw.proxy.pid), 2),
                            "ok": ok, "failed": failed, "redis": kind if faulty else "up"})
            time.sleep(1)
        if faulty:
            if kind == "kill":
                redis.start()
            else:
                redis.signal(signal.SIGCONT)
        load.close()

        # Usage reaches Redis once the breaker closes.
        prefix = gw.env["MAAS_REDIS_PREFIX"]
        deadline = time.time() + 30
        hits = stored_hits(redis.url, prefix)
        while hits < load.ok + len(load.failed) and time.time() < deadline:
            time.sleep(0.5)
            hits = stored_hits(redis.url, prefix)

        baseline = next((s["rss_mib"] for s in samples if s["t"] >= warmup), samples[-1]["rss_mib"])
        last_quarter = [s["rss_mib"] for s in samples if s["t"] >= args.duration * 0.75] or [samples[-1]["rss_mib"]]
        growth = max(last_quarter) - baseline
        report = {
            "duration_s": args.duration, "fault_every_s": args.fault_every, "fault_seconds": args.fault_seconds,
            "concurrency": args.concurrency, "requests_ok": load.ok, "requests_failed": len(load.failed),
            "failures": load.failed[:20], "hits_stored": hits, "faults": faults,
            "rss_baseline_mib": baseline, "rss_max_mib": max(s["rss_mib"] for s in samples),
            "rss_growth_mib": round(growth, 2), "max_rss_growth_mib": args.max_rss_growth_mib,
            "spool_bytes_end": metric(gw.metrics_port, "maas_usage_spool_bytes"),
            "breaker_state_end": metric(gw.metrics_port, "maas_store_breaker_state"),
            "machine": gateway.machine(), "samples": samples,
        }
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "soak.json"), "w") as f:
            json.dump(report, f, indent=1)
        lines = [
            "# Soak: steady load while Redis fails", "",
            f"{args.duration:.0f} s, {args.concurrency} clients, a fault every {args.fault_every:.0f} s "
            f"for {args.fault_seconds:.0f} s (kill/restart and SIGSTOP/SIGCONT by turns); {report['machine']}.", "",
            "| figure | value |", "| --- | --- |",
            f"| requests served | {load.ok} |", f"| requests failed | {len(load.failed)} |",
            f"| hits stored in Redis | {hits} |", f"| faults | {len(faults)} |",
            f"| RSS after warm-up | {baseline:.1f} MiB |", f"| RSS max | {report['rss_max_mib']:.1f} MiB |",
            f"| RSS growth (last quarter's max − baseline) | {growth:.1f} MiB |", "",
            "| t (s) | RSS (MiB) | served | Redis |", "| --- | --- | --- | --- |",
        ]
        step = max(1, len(samples) // 30)
        lines += [f"| {s['t']:.0f} | {s['rss_mib']:.1f} | {s['ok']} | {s['redis']} |" for s in samples[::step]]
        with open(os.path.join(args.out, "soak.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
        print("\n".join(lines[:12]))

        problems = []
        if load.failed:
            problems.append(f"{len(load.failed)} requests failed, first: {load.failed[:3]}")
        if hits < load.ok:
            problems.append(f"{hits} hits stored for {load.ok} requests served")
        if args.max_rss_growth_mib is not None and growth > args.max_rss_growth_mib:
            problems.append(f"RSS grew {growth:.1f} MiB, more than {args.max_rss_growth_mib} MiB")
        if problems:
            sys.exit("soak failed: " + "; ".join(problems))
    finally:
        if load:
            load.close()
        if gw:
            gw.close()
        redis.close()


if __name__ == "__main__":
    main()
