#!/usr/bin/env python3
"""Inference-aware routing against round robin, and plan priority under
saturation: four `maas sim` replicas with the GPU-server model behind one
`maas proxy`, loaded by `maas bench` with multi-turn chats over shared
system prompts arriving as a Poisson process.

1. Capacity: each strategy's completed requests/s under a closed loop of
   twice the replicas' running places.
2. Routing: at 50 %, 90 % and 120 % of round robin's capacity,
   `round_robin` and `load_aware` + `prefix_affinity`, in rotating order,
   --rounds times (medians): TTFT p50/p99, completed tokens/s (tokens the
   proxy metered during the measured window, over its length), the
   simulators' prefix-cache hit rate (after the warm-up), 429s.
3. Priority: the same workload split in equal thirds over plans of
   priority high, normal and low, on a `load_aware` + `prefix_affinity`
   backend with `saturation:` (the gateway queue), at 50 %, 90 % and
   150 % of that strategy's own capacity: each priority's TTFT p99,
   completed tokens/s, 429s and timeouts.

Every run starts the simulators afresh (cold caches) and a proxy on the
embedded store. Writes routing.md, routing.json and routing.png to --out
(default loadtest/results/).

Usage: python3 loadtest/routing.py [--rounds 2] [--duration 30] [--warmup 8]
       python3 loadtest/routing.py --smoke --out /tmp/routing   # seconds, for CI
Needs: a build of maas (MAAS_BIN, default target/release/maas), matplotlib.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from gateway import BIN, ROOT, free_port, machine, revision, wait_port

REPLICAS = 4
# A GPU smaller than the H100 defaults (loadtest/README.md): 32 running
# places, 2,048 tokens a step (vLLM's default below 70 GiB of GPU memory),
# the knee of its latency curve near 16 sequences, a KV cache of
# 30,000 tokens: running sequences share their system prompt's blocks (as
# on vLLM), so a replica whose requests share a few prompts keeps room to
# cache more, while one that gets all 24 prompts (36,000 tokens of them)
# evicts and prefills again. Scaled so that four replicas, the proxy and
# the load fit a 2-core machine.
GPU = {
    "max_num_seqs": 32,
    "kv_cache_tokens": 30000,
    "block_size": 16,
    "prefill_tokens_per_second": 12000,
    "max_num_batched_tokens": 2048,
    "decode_step_ms": 15.0,
    "decode_step_ms_per_sequence": 0.5,
}
OUTPUT_TOKENS = 48
SYSTEM_PROMPTS = 24
STRATEGIES = {
    "round_robin": "balance: round_robin",
    "load_aware+prefix": "balance: load_aware\n    prefix_affinity: true",
}
PRIORITIES = ["high", "normal", "low"]
# The product's queue in the priority runs: requests wait at most this long.
MAX_QUEUE_MS = 5000
# The priority runs' saturation: a replica with a request waiting in its
# own queue takes no more, so requests wait in the gateway, where priority
# orders them, not in the replicas' first-come queues. (The KV cache is left
# to the replica: the simulator, like vLLM, admits by free blocks.)
SATURATION = {"waiting": 1, "kv_cache_percent": 100}
GOALS = ("at 90 % load, load_aware+prefix TTFT p99 ≤ 0.5× round robin's; at 120 %, completed tokens/s "
         "≥ 1.15× round robin's; at 150 %, high's TTFT p99 ≤ 2× its value at 50 %, low refused with 429 "
         "rather than timing out; at 90 %, low's TTFT p99 ≤ 3× high's")


def words(rng, count, vocabulary):
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def workload(seed, requests, path):
    """`requests` chat bodies, in sending order, written to `path` as JSON
    lines: conversations of 2–6 turns, each over one of the shared system
    prompts (1,000–2,000 words; the simulator counts words as tokens),
    64 of them going on at once, their turns interleaved at random."""
    rng = random.Random(seed)
    vocabulary = [f"w{n}" for n in range(5000)]
    prompts_rng = random.Random(0)  # the same system prompts in every workload
    systems = [words(prompts_rng, prompts_rng.randint(1000, 2000), vocabulary) for _ in range(SYSTEM_PROMPTS)]

    def conversation():
        return {"system": rng.randrange(SYSTEM_PROMPTS), "turns": rng.randint(2, 6), "messages": []}

    active = [conversation() for _ in range(64)]
    with open(path, "w") as out:
        for _ in range(requests):
            index = rng.randrange(len(active))
            chat = active[index]
            if chat["messages"]:
                # The previous answer, as the client would send it back.
                chat["messages"].append({"role": "assistant", "content": words(rng, OUTPUT_TOKENS, vocabulary)})
            chat["messages"].append({"role": "user", "content": words(rng, rng.randint(20, 60), vocabulary)})
            body = {"model": "gpu", "max_tokens": OUTPUT_TOKENS, "stream": True,
                    "stream_options": {"include_usage": True},
                    "messages": [{"role": "system", "content": systems[chat["system"]]}, *chat["messages"]]}
            out.write(json.dumps(body) + "\n")
            chat["turns"] -= 1
            if chat["turns"] == 0:
                active[index] = conversation()


class Stack:
    """Four simulators and a proxy in front of them, on a fresh embedded
    store; `backend` is the backend's extra YAML, `plans` the plans each
    with its priority; `keys` by plan."""

    def __init__(self, work, backend, plans, queue=None, priority_scheduling=False):
        self.work = tempfile.mkdtemp(dir=work)
        self.env = dict(os.environ, MAAS_DATA_DIR=os.path.join(self.work, "data"), MAAS_LOG_LEVEL="warn",
                        MAAS_LIMITS_MODE="local")
        for name in ("MAAS_CONFIG", "MAAS_REDIS_URL"):
            self.env.pop(name, None)
        self.procs = []
        models = os.path.join(self.work, "models.yaml")
        # vLLM's --scheduling-policy priority, and the backend that sends it plan priorities.
        server = dict(GPU, scheduling_policy="priority") if priority_scheduling else GPU
        if priority_scheduling:
            backend += "\n    priority_scheduling: true"
        with open(models, "w") as f:
            f.write("seed: 1\nmodels:\n  - id: gpu\n    output_tokens: {min: %d, max: %d}\n    server: %s\n"
                    % (OUTPUT_TOKENS, OUTPUT_TOKENS, json.dumps(server)))
        self.sim_ports = []
        for _ in range(REPLICAS):
            port = free_port()
            sim = subprocess.Popen([BIN, "sim", "--listen", f"127.0.0.1:{port}", "--models", models],
                                   stdout=subprocess.DEVNULL, env=self.env)
            self.procs.append(sim)
            wait_port(port, sim, "maas sim")
            self.sim_ports.append(port)
        urls = ", ".join(f'"http://127.0.0.1:{p}"' for p in self.sim_ports)
        queue_yaml = f", queue: {json.dumps(queue)}" if queue else ""
        catalog = [
            "backends:", "  - system_name: gpus", f"    urls: [{urls}]", f"    {backend}",
            "products:", f"  - {{system_name: gpus, models: [gpu], backend: gpus{queue_yaml}}}",
            "plans:",
            *[f"  - {{product: gpus, system_name: {plan}, priority: {priority}}}" for plan, priority in plans],
            "accounts:", "  - name: Bench", "applications:",
            *[f"  - {{account: Bench, name: {plan}-app, product: gpus, plan: {plan}}}" for plan, _ in plans],
        ]
        path = os.path.join(self.work, "catalog.yaml")
        with open(path, "w") as f:
            f.write("\n".join(catalog) + "\n")
        subprocess.run([BIN, "apply", "-f", path], env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.keys = {}
        for plan, _ in plans:
            self.keys[plan] = subprocess.run([BIN, "create-key", "--app", f"Bench/{plan}-app"], env=self.env,
                                             check=True, capture_output=True, text=True).stdout.strip()
        self.port, self.metrics_port = free_port(), free_port()
        proxy = subprocess.Popen([BIN, "proxy", "--listen", f"127.0.0.1:{self.port}", "--metrics-listen",
                                  f"127.0.0.1:{self.metrics_port}"], stdout=subprocess.DEVNULL, env=self.env)
        self.procs.append(proxy)
        wait_port(self.port, proxy, "maas proxy")

    def completion_tokens(self):
        """Completion tokens the proxy metered so far, by application name."""
        by_application = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("llm_completion_tokens_count{"):
                    name = line.split('application_system_name="', 1)[1].split('"', 1)[0]
                    by_application[name] = by_application.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return by_application

    def where_time_goes(self):
        """Sums and counts of the gateway queue's wait of released requests,
        by priority, and of the replicas' own time to first token (from
        arrival at the replica, summed over them): where a request's TTFT
        went."""
        sums = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            for line in response.read().decode().splitlines():
                for part in ("sum", "count"):
                    if line.startswith(f"maas_queue_wait_seconds_{part}{{") and 'outcome="released"' in line:
                        priority = line.split('priority="', 1)[1].split('"', 1)[0]
                        key = (f"queue_{priority}", part)
                        sums[key] = sums.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        for port in self.sim_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                for line in response.read().decode().splitlines():
                    for part in ("sum", "count"):
                        if line.startswith(f"vllm:time_to_first_token_seconds_{part}{{"):
                            sums[("replica", part)] = sums.get(("replica", part), 0.0) + float(line.rsplit(" ", 1)[1])
        return sums

    def prefix_cache(self):
        """Prefix-cache (hits, queries) in prompt tokens, summed over the replicas."""
        hits = queries = 0.0
        for port in self.sim_ports:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith("vllm:prefix_cache_hits_total"):
                        hits += float(line.rsplit(" ", 1)[1])
                    elif line.startswith("vllm:prefix_cache_queries_total"):
                        queries += float(line.rsplit(" ", 1)[1])
        return hits, queries

    def close(self):
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(timeout=30)
        shutil.rmtree(self.work, ignore_errors=True)


def bench(stack, key, bodies, args, rate=None, concurrency=256, seed=1):
    """One `maas bench` run (in the background); returns its process and report path."""
    out = os.path.join(stack.work, f"bench-{seed}-{time.monotonic_ns()}.json")
    command = [BIN, "bench", "--url", f"http://127.0.0.1:{stack.port}/v1/chat/completions", "--bodies", bodies,
               "--concurrency", str(concurrency), "--duration", str(args.duration), "--warmup", str(args.warmup),
               "--timeout", "60", "--expect-status", "200", "--json", out]
    if rate:
        command += ["--rate", f"{rate:.3f}", "--poisson", "--seed", str(seed)]
    process = subprocess.Popen(command, env=dict(os.environ, MAAS_BENCH_KEY=key), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    return process, out


def finish(process, out):
    output, _ = process.communicate()
    if process.returncode != 0:
        sys.exit(f"maas bench failed:\n{output}")
    with open(out) as f:
        return json.load(f)


def measured(stack, runs, args):
    """Waits out the warm-up, reads the prefix cache, the metered tokens and
    where time went, reads them again at the end of the measured window,
    waits for every run; (reports, prefix-cache hit rate, completed
    tokens/s by application name, mean ms by where spent), the last three
    over the measured window."""
    time.sleep(args.warmup)
    before, tokens_before, spent_before = stack.prefix_cache(), stack.completion_tokens(), stack.where_time_goes()
    time.sleep(args.duration)
    after, tokens_after, spent_after = stack.prefix_cache(), stack.completion_tokens(), stack.where_time_goes()
    reports = [finish(process, out) for process, out in runs]
    queries = after[1] - before[1]
    rates = {name: (value - tokens_before.get(name, 0.0)) / args.duration for name, value in tokens_after.items()}
    # Mean milliseconds over the measured window: in the gateway queue by priority, and at the replicas.
    spent = {}
    for name in {name for name, _ in spent_after}:
        count = spent_after.get((name, "count"), 0.0) - spent_before.get((name, "count"), 0.0)
        total = spent_after.get((name, "sum"), 0.0) - spent_before.get((name, "sum"), 0.0)
        spent[name] = total / count * 1000 if count else None
    return reports, ((after[0] - before[0]) / queries if queries else None), rates, spent


def summary(report, tokens_per_s):
    errors = report.get("errors") or {}
    refused = sum(n for kind, n in errors.items() if "429" in kind)
    ttft = report.get("ttft_us") or {}
    return {
        "ttft_p50_ms": ttft.get("p50", 0) / 1000 if ttft else None,
        "ttft_p99_ms": ttft.get("p99", 0) / 1000 if ttft else None,
        "tokens_per_s": tokens_per_s,
        "ok": report["ok"],
        "refused_429": refused,
        "timeouts": sum(n for kind, n in errors.items() if "timeout" in kind),
        "other_errors": sum(n for kind, n in errors.items() if "429" not in kind and "timeout" not in kind),
    }


def capacity(work, bodies, strategy, args):
    """Requests/s `strategy` completes under a closed loop."""
    stack = Stack(work, STRATEGIES[strategy], [("open", "normal")])
    try:
        runs = [bench(stack, stack.keys["open"], bodies, args, concurrency=2 * REPLICAS * GPU["max_num_seqs"])]
        _, _, tokens, _ = measured(stack, runs, args)
    finally:
        stack.close()
    # Requests completed within the window (each generates OUTPUT_TOKENS).
    return tokens.get("open-app", 0.0) / OUTPUT_TOKENS


def median_of(rows, field):
    values = [r[field] for r in rows if r.get(field) is not None]
    return statistics.median(values) if values else None


def routing_runs(work, bodies, rate_of, args):
    results = {}
    names = list(STRATEGIES)
    for round_index in range(args.rounds):
        for load in args.loads:
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for strategy in order:
                stack = Stack(work, STRATEGIES[strategy], [("open", "normal")])
                try:
                    runs = [bench(stack, stack.keys["open"], bodies, args, rate=rate_of(load), seed=round_index + 1)]
                    (report,), hit_rate, tokens, _ = measured(stack, runs, args)
                finally:
                    stack.close()
                row = dict(summary(report, tokens.get("open-app", 0.0)), prefix_hit_rate=hit_rate)
                print(f"  {strategy:18} load {load:.0%}: {json.dumps(row)}", flush=True)
                results.setdefault(f"{load}", {}).setdefault(strategy, []).append(row)
    return {load: {s: {f: median_of(rows, f) for f in rows[0]} for s, rows in by.items()}
            for load, by in results.items()}


def priority_runs(work, workloads, rate_of, args, saturation, priority_scheduling):
    results = {}
    backend = STRATEGIES["load_aware+prefix"] + f"\n    saturation: {json.dumps(saturation)}"
    plans = [(p, p) for p in PRIORITIES]
    for load in args.priority_loads:
        stack = Stack(work, backend, plans, queue={"max_queue_ms": MAX_QUEUE_MS, "max_waiting": 1000},
                      priority_scheduling=priority_scheduling)
        try:
            runs = [bench(stack, stack.keys[p], workloads[p], args, rate=rate_of(load) / 3, seed=10 + i,
                          concurrency=512)
                    for i, p in enumerate(PRIORITIES)]
            reports, hit_rate, tokens, spent = measured(stack, runs, args)
        finally:
            stack.close()
        results[f"{load}"] = {p: dict(summary(r, tokens.get(f"{p}-app", 0.0)), prefix_hit_rate=hit_rate,
                                      gateway_wait_mean_ms=spent.get(f"queue_{p}"),
                                      replica_ttft_mean_ms=spent.get("replica"))
                              for p, r in zip(PRIORITIES, reports)}
        print(f"  priority load {load:.0%} ({json.dumps(saturation)}, priority_scheduling: "
              f"{str(priority_scheduling).lower()}): {json.dumps(results[f'{load}'])}", flush=True)
    return results


def fmt(value, digits=0):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def goals(routing, priority):
    checks = []

    def check(name, value, ok):
        checks.append((name, value, ok))

    at = lambda load: routing.get(f"{load}", {})
    r90, r120 = at(0.9), at(1.2)
    if r90:
        value = ratio(r90["load_aware+prefix"]["ttft_p99_ms"], r90["round_robin"]["ttft_p99_ms"])
        check("90 %: TTFT p99, load_aware+prefix / round robin ≤ 0.5", value, value is not None and value <= 0.5)
    if r120:
        value = ratio(r120["load_aware+prefix"]["tokens_per_s"], r120["round_robin"]["tokens_per_s"])
        check("120 %: tokens/s, load_aware+prefix / round robin ≥ 1.15", value, value is not None and value >= 1.15)
    p50, p90, p150 = priority.get("0.5"), priority.get("0.9"), priority.get("1.5")
    if p50 and p150:
        value = ratio(p150["high"]["ttft_p99_ms"], p50["high"]["ttft_p99_ms"])
        check("150 %: high's TTFT p99 / its value at 50 % ≤ 2", value, value is not None and value <= 2)
        low = p150["low"]
        check("150 %: low refused with 429, no timeouts (429s)", low["refused_429"],
              low["refused_429"] > 0 and low["timeouts"] == 0)
    if p90:
        value = ratio(p90["low"]["ttft_p99_ms"], p90["high"]["ttft_p99_ms"])
        check("90 %: low's TTFT p99 / high's ≤ 3", value, value is not None and value <= 3)
    return checks


def report_markdown(data, checks, args):
    lines = [
        "# Inference-aware routing and plan priority",
        "",
        f"`loadtest/routing.py` on {machine()}, commit {revision()}, {data['binary']} build; "
        f"{data['seconds']:.0f} s in all. {REPLICAS} simulated replicas, each `{json.dumps(GPU)}`, "
        f"{OUTPUT_TOKENS} output tokens a request; multi-turn chats (2–6 turns) over {SYSTEM_PROMPTS} shared "
        f"system prompts of 1,000–2,000 tokens, Poisson arrivals; each run {args.duration:g} s measured after "
        f"{args.warmup:g} s of warm-up on freshly started replicas; routing medians of {args.rounds} rounds in "
        "rotating order.",
        "",
        f"Capacity (closed loop, {2 * REPLICAS * GPU['max_num_seqs']} clients): round robin "
        f"**{data['capacity_rps']:.1f} requests/s**, load_aware+prefix "
        f"**{data['capacities_rps']['load_aware+prefix']:.1f} requests/s**. Routing loads are fractions of round "
        "robin's, priority loads of load_aware+prefix's. Completed tokens/s are the tokens the proxy metered "
        "during the measured window, over its length.",
        "",
        "## Routing",
        "",
        "| load | strategy | TTFT p50 ms | TTFT p99 ms | completed tokens/s | prefix-cache hits | 429s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for load, by in data["routing"].items():
        for strategy, row in by.items():
            hit = row["prefix_hit_rate"]
            lines.append(f"| {float(load):.0%} | {strategy} | {fmt(row['ttft_p50_ms'])} | {fmt(row['ttft_p99_ms'])} | "
                         f"{fmt(row['tokens_per_s'])} | {'–' if hit is None else f'{hit:.0%}'} | "
                         f"{fmt(row['refused_429'])} |")
    lines += [
        "",
        "## Priority under saturation",
        "",
        f"`load_aware` + `prefix_affinity` + `saturation: {json.dumps(args.saturation)}`, "
        f"`queue: {{max_queue_ms: {MAX_QUEUE_MS}}}`, "
        f"`priority_scheduling: {str(args.priority_scheduling).lower()}`"
        + (" (the replicas schedule by vLLM's `priority`, which the gateway sets from the plan)"
           if args.priority_scheduling else " (the replicas' own queues are first come, first served)")
        + "; each plan a third of the load; loads are fractions of load_aware+prefix's capacity. "
        "The goals are judged on this table.",
        "",
    ]
    lines += priority_table(data["priority"])
    for alternative in data.get("priority_alternatives", []):
        scheduling = str(alternative.get("priority_scheduling", args.priority_scheduling)).lower()
        lines += ["", f"The same with `saturation: {json.dumps(alternative['saturation'])}`, "
                      f"`priority_scheduling: {scheduling}`:", ""]
        lines += priority_table(alternative["priority"])
    lines += ["", "## Goals", "", f"Goals: {GOALS}.", ""]
    for name, value, ok in checks:
        shown = fmt(value, 2) if isinstance(value, float) else fmt(value)
        lines.append(f"- {'met' if ok else 'MISSED'}: {name}: {shown}")
    lines += ["", "![TTFT p99 and completed tokens/s by load](routing.png)", ""]
    return "\n".join(lines)


def priority_table(priority):
    lines = ["| load | priority | TTFT p50 ms | TTFT p99 ms | completed tokens/s | 429s | timeouts | "
             "gateway wait, mean ms | replicas' TTFT, mean ms (all) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for load, by in priority.items():
        for name, row in by.items():
            lines.append(f"| {float(load):.0%} | {name} | {fmt(row['ttft_p50_ms'])} | {fmt(row['ttft_p99_ms'])} | "
                         f"{fmt(row['tokens_per_s'])} | {fmt(row['refused_429'])} | {fmt(row['timeouts'])} | "
                         f"{fmt(row.get('gateway_wait_mean_ms'))} | {fmt(row.get('replica_ttft_mean_ms'))} |")
    return lines


def chart(data, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, (ttft, tokens) = plt.subplots(1, 2, figsize=(10, 4))
    loads = sorted(data["routing"], key=float)
    for strategy in STRATEGIES:
        xs = [float(load) * 100 for load in loads]
        ttft.plot(xs, [data["routing"][l][strategy]["ttft_p99_ms"] for l in loads], marker="o", label=strategy)
        tokens.plot(xs, [data["routing"][l][strategy]["tokens_per_s"] for l in loads], marker="o", label=strategy)
    ttft.set(title="TTFT p99", xlabel="load, % of round robin's capacity", ylabel="ms")
    tokens.set(title="Completed tokens/s", xlabel="load, % of round robin's capacity", ylabel="tokens/s")
    ttft.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--out", default=os.path.join(ROOT, "loadtest", "results"))
    parser.add_argument("--smoke", action="store_true", help="one short round of everything, for CI")
    parser.add_argument("--saturation", type=json.loads, default=SATURATION,
                        help="the priority runs' backend `saturation:`, as JSON (the goals are judged on it)")
    parser.add_argument("--priority-scheduling", choices=["on", "off"], default="on",
                        help="whether the judged priority runs' replicas schedule by priority (vLLM's "
                             "--scheduling-policy priority) and the backend sends them plan priorities")
    parser.add_argument("--also-saturation", type=json.loads, action="append", default=None,
                        help="another `saturation:` to run the priority loads with, for comparison (repeatable; "
                             "the full run adds waiting 2, and the judged saturation with the other "
                             "--priority-scheduling)")
    parser.add_argument("--only", choices=["routing", "priority"], help="one part (the capacities are measured)")
    args = parser.parse_args()
    args.loads = [0.5, 0.9, 1.2]
    args.priority_loads = [0.5, 0.9, 1.5]
    args.priority_scheduling = args.priority_scheduling == "on"
    judged = args.priority_scheduling
    alternatives = [(other, judged) for other in args.also_saturation or []]
    if args.also_saturation is None and not args.smoke:
        alternatives = [(args.saturation, not judged), (dict(args.saturation, waiting=2), judged)]
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 3, 1
        args.loads, args.priority_loads = [0.5, 1.2], [1.5]
    if not os.path.exists(BIN):
        sys.exit(f"no build at {BIN}: cargo build --release (or set MAAS_BIN)")
    started = time.monotonic()
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="maas-routing-")
    try:
        # Enough bodies for the longest run, at twice 150 % of a generous capacity.
        count = int((args.duration + args.warmup) * 400) + 1000
        bodies = os.path.join(work, "bodies.jsonl")
        workload(1, count, bodies)
        workloads = {}
        for index, priority in enumerate(PRIORITIES):
            workloads[priority] = os.path.join(work, f"bodies-{priority}.jsonl")
            workload(100 + index, count // 2, workloads[priority])
        capacities = {}
        for strategy in STRATEGIES:
            capacities[strategy] = capacity(work, bodies, strategy, args)
            print(f"capacity of {strategy} (closed loop): {capacities[strategy]:.1f} requests/s", flush=True)
        rps = capacities["round_robin"]
        # A smoke run's closed loop is too short to fill cold replicas (its
        # capacities read near 0): its loads start from a floor instead, so
        # every run has requests to measure.
        floor = 10.0 if args.smoke else 0.5
        print("routing", flush=True)
        routing = {} if args.only == "priority" else routing_runs(work, bodies, lambda load: max(rps * load, floor), args)
        print("priority", flush=True)
        aware = capacities["load_aware+prefix"]
        priority_rate = lambda load: max(aware * load, floor)
        priority = {} if args.only == "routing" else priority_runs(work, workloads, priority_rate, args,
                                                                   args.saturation, judged)
        alternatives = [] if args.only == "routing" else [
            {"saturation": other, "priority_scheduling": scheduling,
             "priority": priority_runs(work, workloads, priority_rate, args, other, scheduling)}
            for other, scheduling in alternatives]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    data = {
        "binary": "release" if "/release/" in BIN else "debug",
        "seconds": time.monotonic() - started,
        "capacity_rps": rps,
        "capacities_rps": capacities,
        "gpu": GPU,
        "routing": routing,
        "priority": priority,
        "priority_scheduling": judged,
        "priority_alternatives": alternatives,
    }
    checks = goals(routing, priority)
    data["goals"] = [{"goal": n, "value": v, "met": ok} for n, v, ok in checks]
    with open(os.path.join(args.out, "routing.json"), "w") as f:
        json.dump(data, f, indent=2)
    with open(os.path.join(args.out, "routing.md"), "w") as f:
        f.write(report_markdown(data, checks, args))
    chart(data, os.path.join(args.out, "routing.png"))
    for name, value, ok in checks:
        print(f"{'met' if ok else 'MISSED'}: {name}: {value}")
    print(f"wrote {args.out}/routing.md ({data['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
