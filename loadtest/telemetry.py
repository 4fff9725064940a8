#!/usr/bin/env python3
"""What OpenTelemetry costs the gateway: the same load through `maas proxy`
with tracing off (the default: the GenAI histograms on /metrics, nothing
else per request), with the histograms exported over OTLP and every request
traced (`trace_sample_ratio: 1`), and with one request in ten traced, each
against a local OTLP sink (this script, answering 200 to every export and
counting what it received). Each variant is its own gateway (simulator and
embedded store) so their caches never mix; they are measured in rotating
order, --rounds times, medians reported, ratios against tracing off
measured in the same run.

Writes telemetry.md and telemetry.json into --out (default loadtest/results/).

Usage: python3 loadtest/telemetry.py [--rounds 3] [--duration 10]
       python3 loadtest/telemetry.py --smoke --out /tmp/smoke   # seconds, for CI
Needs a release build (cargo build --release, or MAAS_BIN).
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from compare import SCENARIOS, figure, median, run_bench
from gateway import ROOT, Gateway, machine, revision, tree_cpu_seconds

VARIANTS = {
    "off": {},
    "traced": {"MAAS_TRACE_SAMPLE_RATIO": "1"},
    "tenth": {"MAAS_TRACE_SAMPLE_RATIO": "0.1"},
}
LOADS = {"c1": SCENARIOS["c1"], "c64": SCENARIOS["c64"]}


class Sink:
    """An OTLP/HTTP endpoint that takes everything: what it received, by path."""

    def __init__(self):
        self.received = {}
        lock = threading.Lock()
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    count, size = received.get(self.path, (0, 0))
                    received[self.path] = (count + 1, size + len(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--out", default=os.path.join(ROOT, "loadtest", "results"))
    parser.add_argument("--smoke", action="store_true", help="one short round, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1, 0.2

    cores = sorted(os.sched_getaffinity(0))
    proxy_cpus, client_cpus = ({cores[0]}, set(cores[1:])) if len(cores) >= 2 else (None, None)
    sink = Sink()
    work = tempfile.mkdtemp(prefix="maas-telemetry-")
    gateways = {}
    try:
        for name, extra in VARIANTS.items():
            env = {"MAAS_OTLP_ENDPOINT": sink.url, "MAAS_OTLP_METRICS_INTERVAL_MS": "1000", **extra} if extra else {}
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                gateways[name] = Gateway(os.path.join(ROOT, "loadtest/bench.models.yaml"), "local", None,
                                         sim_cpus=client_cpus, proxy_cpus=proxy_cpus,
                                         proxy_threads=1 if proxy_cpus else 0)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        url = "http://127.0.0.1:{}/v1/chat/completions"
        names = list(VARIANTS)
        for name in names:  # warm connections, caches and pools
            run_bench(url.format(gateways[name].proxy_port), gateways[name].key, LOADS["c64"], 1, 0, client_cpus, work)
        runs = {}
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for load_name, load in LOADS.items():
                for name in order:
                    gateway = gateways[name]
                    pid = gateway.proxy.pid
                    before = tree_cpu_seconds(pid)
                    report = run_bench(url.format(gateway.proxy_port), gateway.key, load, args.duration, args.warmup,
                                       client_cpus, work)
                    requests = report["ok"] + report["requests_per_second"] * args.warmup
                    report["cpu_ms_per_1k"] = (tree_cpu_seconds(pid) - before) * 1e6 / max(requests, 1)
                    runs.setdefault((name, load_name), []).append(report)
                    print(f"round {round_ + 1} {load_name:4} {name:7} {report['requests_per_second']:9.0f} req/s"
                          f"  p50 {figure(report, 'latency_us', 'p50'):8.1f} µs"
                          f"  cpu {report['cpu_ms_per_1k']:6.1f} ms/1k", flush=True)
        time.sleep(1.5)  # the last spans and metrics leave
    finally:
        for gateway in gateways.values():
            gateway.close()
        sink.server.shutdown()

    rows = {}
    for (name, load), reports in runs.items():
        row = rows.setdefault(name, {})
        row[f"{load}_rps"] = median([r["requests_per_second"] for r in reports])
        row[f"{load}_p50"] = median([figure(r, "latency_us", "p50") for r in reports])
        row[f"{load}_p99"] = median([figure(r, "latency_us", "p99") for r in reports])
        row[f"{load}_cpu"] = median([r["cpu_ms_per_1k"] for r in reports])
    received = {path: {"exports": count, "bytes": size} for path, (count, size) in sink.received.items()}
    if "/v1/traces" not in received or "/v1/metrics" not in received:
        sys.exit(f"the sink received no traces or no metrics: {received}")

    def ratio(name, field):
        return rows[name][field] / rows["off"][field] if rows["off"].get(field) else None

    description = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, maas {revision()}; {machine()}; "
                   f"gateway on core {cores[0]} with one worker, simulator, load and sink on the other(s); "
                   f"{args.rounds} round(s) of {args.duration:g} s per variant and load, rotating order, medians; "
                   "local limits, embedded store, key auth, metering, Prometheus metrics, access log in every "
                   "variant. `maas bench`, one connection per worker, kept alive; 16-token answers, no model time.")
    lines = [
        "# What OpenTelemetry costs the gateway", "", description, "",
        "| variant | c=1 p50 / p99 µs | c=64 req/s | vs off | c=64 p99 µs | CPU ms per 1k req (c=64) | vs off |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    labels = {"off": "tracing off (GenAI histograms on /metrics only)",
              "traced": "OTLP export, every request traced", "tenth": "OTLP export, 1 in 10 traced"}
    for name in names:
        row = rows[name]
        lines.append(
            f"| {labels[name]} | {row['c1_p50']:.0f} / {row['c1_p99']:.0f} | {row['c64_rps']:.0f} | "
            f"{ratio(name, 'c64_rps'):.2f} | {row['c64_p99']:.0f} | {row['c64_cpu']:.1f} | "
            f"{ratio(name, 'c64_cpu'):.2f} |")
    lines += ["", f"The sink received: {json.dumps(received)}.", ""]
    markdown = "\n".join(lines)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "telemetry.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(args.out, "telemetry.json"), "w") as f:
        json.dump({"description": description, "rows": rows, "received": received,
                   "runs": {f"{p}/{s}": r for (p, s), r in runs.items()}}, f, indent=1)
    print(markdown)


if __name__ == "__main__":
    main()
