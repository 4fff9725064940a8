#!/usr/bin/env python3
"""The side-by-side benchmark: the same load, in one run, direct to
`maas sim`, through nginx as a plain reverse proxy, through a bare Pingora
proxy with no policy (`proxy/examples/bare_pingora.rs`: the floor maas is
built on), through `maas proxy`
with every policy on (key auth, routing by model, limits on every request,
token metering, Prometheus metrics, JSON access log) and, with --litellm,
through LiteLLM's proxy with per-key limits. Load comes from `maas bench`.

On two or more cores the gateway under test runs alone on core 0 (one
worker), the simulator and the load generator share core 1. Paths are
measured in rotating order, --rounds times; the tables give medians.

Then connection scale: slow streams held open through `maas proxy` (its
RSS per stream), and a storm of made-up keys (how many reach the store).

Writes compare.md (tables, targets, machine), compare.json and compare.png
into --out (default loadtest/results/).

Usage: python3 loadtest/compare.py [--rounds 3] [--duration 10] [--litellm PATH]
       [--mode local|strict] [--redis redis://127.0.0.1:6379]
       python3 loadtest/compare.py --smoke --out /tmp/smoke     # seconds, for CI
Needs: a release build (cargo build --release, or MAAS_BIN) and its
bare_pingora example (cargo build --release -p maas-proxy --example
bare_pingora; looked for next to MAAS_BIN, or MAAS_BARE_PINGORA), nginx
(apt install nginx-light), matplotlib (pip install matplotlib).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from gateway import BIN, ROOT, Gateway, machine, pinned, revision, tree, tree_cpu_seconds, tree_rss_mib
from peers import BarePingora, LiteLLM, Nginx

SCENARIOS = {
    "c1": {"model": "load-test", "concurrency": 1, "stream": False, "max_tokens": 16},
    # The same, with the gateway moved onto the load generator's core: the
    # path's own work, without waking an idle core at every hop.
    "c1_one_core": {"model": "load-test", "concurrency": 1, "stream": False, "max_tokens": 16, "one_core": True},
    "c64": {"model": "load-test", "concurrency": 64, "stream": False, "max_tokens": 16},
    "stream": {"model": "stream-test", "concurrency": 16, "stream": True, "max_tokens": 32},
}
TARGETS = "targets: added p50 ≤ 50 µs and p99 ≤ 150 µs at c=1; ≥ 0.9× nginx; ≥ 50× LiteLLM; " \
          "added TTFT p99 ≤ 200 µs; added inter-chunk p99 ≤ 30 µs; 10k streams ≤ 250 MB"


def run_bench(url, key, scenario, duration, warmup, cpus, work):
    out = os.path.join(work, "bench.json")
    command = [BIN, "bench", "--url", url, "--model", scenario["model"], "--concurrency", str(scenario["concurrency"]),
               "--max-tokens", str(scenario["max_tokens"]), "--duration", str(duration), "--warmup", str(warmup),
               "--json", out]
    if scenario["stream"]:
        command.append("--stream")
    env = dict(os.environ, MAAS_BENCH_KEY=key) if key else dict(os.environ)
    done = subprocess.run(command, env=env, preexec_fn=pinned(cpus), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"maas bench {url} failed:\n{done.stdout}{done.stderr}")
    with open(out) as f:
        report = json.load(f)
    if report["errors"]:
        sys.exit(f"{url}: failed requests {report['errors']}\n{done.stdout}")
    return report


def figure(report, histogram, field):
    values = report.get(histogram)
    return values[field] if values else None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    """Medians over rounds of the figures the tables show."""
    out = {}
    for (path, scenario), reports in runs.items():
        row = out.setdefault(path, {})
        if scenario in ("c1", "c1_one_core"):
            prefix = "c1" if scenario == "c1" else "one"
            row[f"{prefix}_p50"] = median([figure(r, "latency_us", "p50") for r in reports])
            row[f"{prefix}_p99"] = median([figure(r, "latency_us", "p99") for r in reports])
            row[f"{prefix}_rps"] = median([r["requests_per_second"] for r in reports])
        elif scenario == "c64":
            row["c64_rps"] = median([r["requests_per_second"] for r in reports])
            row["c64_p50"] = median([figure(r, "latency_us", "p50") for r in reports])
            row["c64_p99"] = median([figure(r, "latency_us", "p99") for r in reports])
            row["cpu_ms_per_1k"] = median([r.get("cpu_ms_per_1k") for r in reports])
            row["rss_mib"] = median([r.get("rss_mib") for r in reports])
        else:
            row["ttft_p50"] = median([figure(r, "ttft_us", "p50") for r in reports])
            row["ttft_p99"] = median([figure(r, "ttft_us", "p99") for r in reports])
            row["ttft_path_p99"] = median([figure(r, "ttft_path_us", "p99") for r in reports])
            row["chunk_delay_p50"] = median([figure(r, "chunk_delay_us", "p50") for r in reports])
            row["chunk_delay_p99"] = median([figure(r, "chunk_delay_us", "p99") for r in reports])
            row["gap_p99"] = median([figure(r, "inter_chunk_us", "p99") for r in reports])
            row["tokens_per_s"] = median([r["tokens_per_second"] for r in reports])
    return out


def move(pid, cpus):
    """Moves every thread of `pid` and its children onto `cpus`."""
    for process in tree(pid):
        for thread in os.listdir(f"/proc/{process}/task"):
            try:
                os.sched_setaffinity(int(thread), cpus)
            except OSError:
                pass  # a thread that just ended


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def ramp_up(streams):
    """Seconds over which to open `streams`: about 1,000 a second."""
    return min(10, max(1, streams // 1000))


def open_streams(gateway, streams, seconds, cpus, work):
    """`streams` slow streams through the proxy at once; its RSS idle and at peak."""
    idle = tree_rss_mib(gateway.proxy.pid)
    command = [BIN, "bench", "--url", f"http://127.0.0.1:{gateway.proxy_port}/v1/chat/completions",
               "--model", "slow-stream", "--stream", "--max-tokens", str(max(1, seconds - 1)),
               "--concurrency", str(streams), "--requests", str(streams), "--warmup", "0",
               "--ramp-up", str(ramp_up(streams)), "--timeout", str(seconds + 60),
               "--json", os.path.join(work, "scale.json")]
    env = dict(os.environ, MAAS_BENCH_KEY=gateway.key)
    load = subprocess.Popen(command, env=env, preexec_fn=pinned(cpus), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    peak_rss, peak_open = idle, 0
    while load.poll() is None:
        peak_rss = max(peak_rss, tree_rss_mib(gateway.proxy.pid))
        try:
            peak_open = max(peak_open, scrape(gateway.metrics_port).get("maas_requests_in_flight", 0))
        except OSError:
            pass
        time.sleep(0.25)
    output = load.stdout.read()
    if load.returncode != 0:
        sys.exit(f"the open-streams run failed:\n{output}")
    with open(os.path.join(work, "scale.json")) as f:
        report = json.load(f)
    per_stream_kib = (peak_rss - idle) * 1024 / max(peak_open, 1)
    return {"streams": streams, "ok": report["ok"], "errors": report["errors"], "peak_open": int(peak_open),
            "idle_rss_mib": idle, "peak_rss_mib": peak_rss, "per_stream_kib": per_stream_kib,
            "rss_at_10k_mib": idle + per_stream_kib * 10_000 / 1024}


def miss_storm(gateway, seconds, cpus, work):
    """Made-up keys as fast as 16 connections can send them."""
    before = scrape(gateway.metrics_port)
    command = [BIN, "bench", "--url", f"http://127.0.0.1:{gateway.proxy_port}/v1/chat/completions",
               "--random-keys", "--expect-status", "401", "--concurrency", "16", "--duration", str(seconds),
               "--warmup", "0", "--json", os.path.join(work, "storm.json")]
    done = subprocess.run(command, preexec_fn=pinned(cpus), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the miss storm failed:\n{done.stdout}{done.stderr}")
    after = scrape(gateway.metrics_port)
    with open(os.path.join(work, "storm.json")) as f:
        report = json.load(f)

    def delta(outcome):
        name = f'maas_key_lookups_total{{outcome="{outcome}"}}'
        return after.get(name, 0) - before.get(name, 0)

    return {"seconds": report["seconds"], "refused": report["ok"], "refused_per_s": report["requests_per_second"],
            "errors": report["errors"], "store_lookups": delta("store"),
            "store_lookups_per_s": delta("store") / max(report["seconds"], 1e-9),
            "malformed": delta("malformed"), "p99_us": figure(report, "latency_us", "p99")}


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}".replace(",", " ")


def added(rows, path, field):
    if rows.get(path, {}).get(field) is None or rows.get("direct", {}).get(field) is None:
        return None
    return rows[path][field] - rows["direct"][field]


def ratio(rows, a, b, field):
    x, y = rows.get(a, {}).get(field), rows.get(b, {}).get(field)
    return x / y if x and y else None


def targets(rows, scale):
    def check(value, ok):
        return "–" if value is None else ("met" if ok(value) else "**missed**")

    lines = []
    for what, value, unit, ok in [
        ("added latency p50, c=1, one core (≤ 50 µs)", added(rows, "maas", "one_p50"), "µs", lambda v: v <= 50),
        ("added latency p99, c=1, one core (≤ 150 µs)", added(rows, "maas", "one_p99"), "µs", lambda v: v <= 150),
        ("added latency p50, c=1, gateway on its own core (≤ 50 µs)", added(rows, "maas", "c1_p50"), "µs",
         lambda v: v <= 50),
        ("added latency p99, c=1, gateway on its own core (≤ 150 µs)", added(rows, "maas", "c1_p99"), "µs",
         lambda v: v <= 150),
        ("throughput vs nginx, c=64 (≥ 0.9×)", ratio(rows, "maas", "nginx", "c64_rps"), "×", lambda v: v >= 0.9),
        ("CPU per request vs bare Pingora, c=64 (≤ 1.15×)", ratio(rows, "maas", "pingora", "cpu_ms_per_1k"), "×",
         lambda v: v <= 1.15),
        ("bare Pingora's throughput vs nginx, c=64 (the floor; no target)", ratio(rows, "pingora", "nginx", "c64_rps"),
         "×", lambda v: True),
        ("throughput vs LiteLLM, c=64, one core each (≥ 50×)", ratio(rows, "maas", "litellm", "c64_rps"), "×",
         lambda v: v >= 50),
        ("added TTFT p99, less the model's wait (≤ 200 µs)", added(rows, "maas", "ttft_path_p99"), "µs",
         lambda v: v <= 200),
        ("added inter-chunk gap p99 (≤ 30 µs)", added(rows, "maas", "gap_p99"), "µs", lambda v: v <= 30),
        ("added chunk delay p99 (stamped; no target)", added(rows, "maas", "chunk_delay_p99"), "µs", lambda v: True),
        ("RSS with 10k open streams (≤ 250 MB)", scale and scale["rss_at_10k_mib"] * 1.048576, "MB",
         lambda v: v <= 250),
    ]:
        digits = 2 if unit == "×" else 0
        lines.append(f"| {what} | {fmt(value, digits)} {unit if value is not None else ''} | {check(value, ok)} |")
    return lines


def report_markdown(rows, scale, storm, args, description):
    paths = [p for p in ("direct", "nginx", "pingora", "maas", "litellm") if p in rows]
    out = [f"# Side-by-side: direct, nginx, bare Pingora, maas proxy{', LiteLLM' if 'litellm' in rows else ''}", "",
           description, "",
           "## Non-streamed chat (`load-test`: 16 tokens, no model time)", "",
           "c=1 one core: the gateway moved onto the core of the simulator and the load generator, so the added "
           "latency is the path's own work; c=1 apart: the gateway on its own core, so every hop also wakes an "
           "idle core (the direct path has no such hop).", "",
           "| path | c=1 one core p50 / p99 µs | added p50 / p99 | c=1 apart p50 / p99 µs | added p50 / p99 "
           "| c=64 req/s | vs nginx | c=64 p99 µs | CPU ms per 1k req | CPU vs bare Pingora | RSS MiB |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in paths:
        r = rows[path]
        out.append(f"| {path} | {fmt(r.get('one_p50'))} / {fmt(r.get('one_p99'))} "
                   f"| {fmt(added(rows, path, 'one_p50'))} / {fmt(added(rows, path, 'one_p99'))} "
                   f"| {fmt(r.get('c1_p50'))} / {fmt(r.get('c1_p99'))} "
                   f"| {fmt(added(rows, path, 'c1_p50'))} / {fmt(added(rows, path, 'c1_p99'))} | {fmt(r.get('c64_rps'))} "
                   f"| {fmt(ratio(rows, path, 'nginx', 'c64_rps'), 2)} | {fmt(r.get('c64_p99'))} "
                   f"| {fmt(r.get('cpu_ms_per_1k'), 1)} | {fmt(ratio(rows, path, 'pingora', 'cpu_ms_per_1k'), 2)} "
                   f"| {fmt(r.get('rss_mib'), 1)} |")
    out += ["", "## Streamed chat (`stream-test`: TTFT 20 ms, 5 ms between 32 tokens, 16 streams)", "",
            "TTFT less model = time to first token minus the simulator's own wait between opening the stream and "
            "the first token (both stamped), so the simulator's 1 ms timer does not hide what the path adds. "
            "Chunk delay = simulator stamp to the client reading the chunk.", "",
            "| path | TTFT p50 ms | TTFT p99 ms | TTFT less model p99 µs | added | chunk delay p50 µs "
            "| chunk delay p99 µs | added | gap p99 µs | added | tokens/s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in paths:
        r = rows[path]
        ms = lambda v: None if v is None else v / 1000  # noqa: E731
        out.append(f"| {path} | {fmt(ms(r.get('ttft_p50')), 2)} | {fmt(ms(r.get('ttft_p99')), 2)} "
                   f"| {fmt(r.get('ttft_path_p99'))} | {fmt(added(rows, path, 'ttft_path_p99'))} "
                   f"| {fmt(r.get('chunk_delay_p50'))} | {fmt(r.get('chunk_delay_p99'))} "
                   f"| {fmt(added(rows, path, 'chunk_delay_p99'))} | {fmt(r.get('gap_p99'))} "
                   f"| {fmt(added(rows, path, 'gap_p99'))} | {fmt(r.get('tokens_per_s'))} |")
    out += ["", "## Targets", "", "| target | measured | |", "| --- | --- | --- |"] + targets(rows, scale)
    if scale:
        out += ["", "## Connection scale", "",
                f"{scale['streams']} streams of `slow-stream` (a token a second) opened through `maas proxy`, "
                f"{scale['peak_open']} open at once at the peak (`maas_requests_in_flight`); "
                f"{scale['ok']} completed{', errors ' + str(scale['errors']) if scale['errors'] else ''}.", "",
                "| proxy RSS idle | at peak | per open stream | extrapolated to 10 000 |",
                "| --- | --- | --- | --- |",
                f"| {fmt(scale['idle_rss_mib'], 1)} MiB | {fmt(scale['peak_rss_mib'], 1)} MiB "
                f"| {fmt(scale['per_stream_kib'], 1)} KiB | {fmt(scale['rss_at_10k_mib'], 1)} MiB |"]
        if scale["streams"] < 10_000:
            out += ["", f"Fewer than 10 000 streams: this machine's hard limit of {args.nofile} open files "
                    "per process holds a client and an upstream socket per stream."]
    if storm:
        out += ["", "## Miss storm", "",
                f"16 connections sending a new made-up key on every request for {storm['seconds']:.1f} s: "
                f"{fmt(storm['refused'])} refused with 401 ({fmt(storm['refused_per_s'])}/s, p99 "
                f"{fmt(storm['p99_us'])} µs); {fmt(storm['malformed'])} refused by the key checksum; "
                f"**{fmt(storm['store_lookups'])} store lookups** ({fmt(storm['store_lookups_per_s'], 1)}/s)."]
    return "\n".join(out) + "\n"


def chart(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = [p for p in ("direct", "nginx", "pingora", "maas", "litellm") if p in rows]
    colours = {"direct": "#888888", "nginx": "#2b8a3e", "pingora": "#f08c00", "maas": "#1c7ed6",
               "litellm": "#e8590c"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = [
        (axes[0][0], "req/s, non-streamed, c=64 (log)", [("c64_rps", "")], True),
        (axes[0][1], "latency, non-streamed, c=1, one core (µs, log)", [("one_p50", "p50"), ("one_p99", "p99")],
         True),
        (axes[1][0], "stream: TTFT less model, chunk delay p99 (µs)",
         [("ttft_path_p99", "TTFT less model"), ("chunk_delay_p99", "chunk delay")], False),
        (axes[1][1], "CPU ms per 1k requests, c=64 (log)", [("cpu_ms_per_1k", "")], True),
    ]
    for axis, title, fields, log in panels:
        width = 0.8 / len(fields)
        shown = [p for p in paths if any(rows[p].get(field) for field, _ in fields)]
        for index, (field, label) in enumerate(fields):
            values = [rows[p].get(field) or 0 for p in shown]
            positions = [x + index * width for x in range(len(shown))]
            bars = axis.bar(positions, values, width, color=[colours[p] for p in shown],
                            alpha=1.0 if index == 0 else 0.55, label=label or None)
            for bar, value in zip(bars, values):
                axis.annotate(f"{value:,.0f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                              ha="center", va="bottom", fontsize=8)
        axis.set_xticks([x + width * (len(fields) - 1) / 2 for x in range(len(shown))], shown)
        axis.set_title(title, fontsize=10)
        if log:
            axis.set_yscale("log")
        if len(fields) > 1:
            axis.legend(fontsize=8)
    fig.suptitle("maas proxy (every policy on) vs direct, nginx, bare Pingora and LiteLLM", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    parser.add_argument("--litellm", help="the `litellm` executable (pip install 'litellm[proxy]')")
    parser.add_argument("--streams", type=int, default=10_000, help="slow streams held open at once")
    parser.add_argument("--stream-seconds", type=int, default=31,
                        help="how long each slow stream lasts (longer than opening them all takes)")
    parser.add_argument("--storm-seconds", type=float, default=10)
    parser.add_argument("--mode", default="local", choices=["local", "strict"],
                        help="the proxy's limits mode (strict: one store round trip per request)")
    parser.add_argument("--redis", help="run the proxy's store on this Redis instead of the embedded one")
    parser.add_argument("--out", default=os.path.join(ROOT, "loadtest", "results"))
    parser.add_argument("--smoke", action="store_true", help="one short round of everything, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1, 0.2
        args.streams, args.stream_seconds, args.storm_seconds = min(args.streams, 200), 3, 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit("matplotlib is missing: pip install matplotlib")
    args.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, args.nofile))
    streams = min(args.streams, (args.nofile - 500) // 2)

    cores = sorted(os.sched_getaffinity(0))
    proxy_cpus, client_cpus = ({cores[0]}, set(cores[1:])) if len(cores) >= 2 else (None, None)
    pinning = (f"gateway under test on core {cores[0]} with one worker; simulator and `maas bench` on "
               f"core(s) {','.join(map(str, sorted(client_cpus)))}" if proxy_cpus else "no pinning (one core)")
    work = tempfile.mkdtemp(prefix="maas-compare-")
    gateway = Gateway(os.path.join(ROOT, "loadtest/bench.models.yaml"), args.mode, args.redis, sim_cpus=client_cpus,
                      proxy_cpus=proxy_cpus, proxy_threads=1 if proxy_cpus else 0)
    peers = []
    try:
        nginx = Nginx(gateway.sim_port, proxy_cpus)
        peers.append(nginx)
        pingora = BarePingora(gateway.sim_port, proxy_cpus)
        peers.append(pingora)
        url = "http://127.0.0.1:{}/v1/chat/completions"
        targets_ = {"direct": (url.format(gateway.sim_port), None, None),
                    "nginx": (url.format(nginx.port), None, nginx.proc.pid),
                    "pingora": (url.format(pingora.port), None, pingora.proc.pid),
                    "maas": (url.format(gateway.proxy_port), gateway.key, gateway.proxy.pid)}
        if args.litellm:
            litellm = LiteLLM(args.litellm, gateway.sim_port, ["load-test", "stream-test"], "sk-bench-litellm",
                              proxy_cpus)
            peers.append(litellm)
            targets_["litellm"] = (url.format(litellm.port), litellm.key, litellm.proc.pid)
        names = list(targets_)
        for name in names:  # warm connections, caches and pools
            run_bench(targets_[name][0], targets_[name][1], SCENARIOS["c64"], 1, 0, client_cpus, work)
        runs = {}
        for round_ in range(args.rounds):
            order = names[round_ % len(names):] + names[:round_ % len(names)]
            for scenario_name, scenario in SCENARIOS.items():
                for name in order:
                    url_, key, pid = targets_[name]
                    if pid and proxy_cpus and scenario.get("one_core"):
                        move(pid, client_cpus)
                    cpu_before = tree_cpu_seconds(pid) if pid else None
                    report = run_bench(url_, key, scenario, args.duration, args.warmup, client_cpus, work)
                    if pid and proxy_cpus and scenario.get("one_core"):
                        move(pid, proxy_cpus)
                    if pid:
                        # The warm-up's requests are in the CPU time too.
                        requests = report["ok"] + report["requests_per_second"] * args.warmup
                        report["cpu_ms_per_1k"] = (tree_cpu_seconds(pid) - cpu_before) * 1e6 / max(requests, 1)
                        report["rss_mib"] = tree_rss_mib(pid)
                    runs.setdefault((name, scenario_name), []).append(report)
                    print(f"round {round_ + 1} {scenario_name:6} {name:8} {report['requests_per_second']:9.0f} req/s"
                          f"  p50 {figure(report, 'latency_us', 'p50'):9.1f} µs"
                          f"  p99 {figure(report, 'latency_us', 'p99'):9.1f} µs", flush=True)
        for peer in peers:
            peer.close()
        peers = []
        rows = summarize(runs)
        print(f"holding {streams} slow streams open through maas proxy", flush=True)
        scale = open_streams(gateway, streams, args.stream_seconds, client_cpus, work)
        print("miss storm", flush=True)
        storm = miss_storm(gateway, args.storm_seconds, client_cpus, work)
    finally:
        for peer in peers:
            peer.close()
        gateway.close()

    commit = revision()
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    description = (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, maas {commit}; {machine()}; {pinning}. "
                   f"{args.rounds} round(s) of {args.duration:g} s per path and load after {args.warmup:g} s of "
                   f"warm-up, paths in rotating order; medians. {nginx_version}. Bare Pingora: "
                   "proxy/examples/bare_pingora.rs, forwarding only, one worker. The maas proxy: "
                   f"{'Redis' if args.redis else 'embedded'} store, {args.mode} limits mode, key auth, "
                   "routing by model, a per-minute request limit and a daily token limit checked on every "
                   "request, token metering, Prometheus metrics, JSON access log. "
                   "Load: `maas bench`, one connection per worker, kept alive.")
    markdown = report_markdown(rows, scale, storm, args, description)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(markdown)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump({"description": description, "rows": rows, "scale": scale, "storm": storm,
                   "runs": {f"{p}/{s}": r for (p, s), r in runs.items()}}, f, indent=1)
    chart(rows, os.path.join(args.out, "compare.png"))
    print(markdown)
    print(f"written to {args.out}/compare.{{md,json,png}}")


if __name__ == "__main__":
    main()
