#!/usr/bin/env python3
"""What the proxy adds to each streamed chunk, direct vs through `maas proxy`.

The simulator emits the first token after TTFT and one every ITL
milliseconds, each stamped with its emission time (`stamp_events`). The
client measures, direct and through the proxy (which meters the stream and
strips the usage it injected, the heaviest path), alternating streams:
the delay of every token chunk from the simulator emitting it to the client
reading it (one clock, one machine), the time to the first token, and the
gap between consecutive token chunks. The chunk delay is what the proxy
adds per chunk, free of the simulator's timer jitter.
Writes loadtest/results/<date>-stream-latency.md.

Usage: python3 loadtest/stream_latency.py [--streams 200] [--tokens 50] [--itl-ms 5]
"""

import argparse
import datetime
import http.client
import json
import os
import statistics
import tempfile
import time

from gateway import Gateway, machine, write_report


def stream_arrivals(port, key, tokens):
    """Seconds from sending the request to the arrival of each token chunk,
    and each token chunk's delay from emission to arrival in µs."""
    body = json.dumps({"model": "load-test", "stream": True, "max_tokens": tokens,
                       "messages": [{"role": "user", "content": "stream please"}]})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    connection = http.client.HTTPConnection("127.0.0.1", port)
    start = time.perf_counter()
    connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
    response = connection.getresponse()
    assert response.status == 200, response.read()
    arrivals, delays, buffer = [], [], b""
    while True:
        piece = response.read1(65536)
        if not piece:
            break
        received_ns = time.time_ns()
        now = time.perf_counter() - start
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if b'"sim_emitted_ns"' in event:
                arrivals.append(now)
                emitted_ns = json.loads(event.split(b"data: ", 1)[1])["sim_emitted_ns"]
                delays.append((received_ns - emitted_ns) / 1000)
    connection.close()
    return arrivals, delays


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--ttft-ms", type=int, default=20)
    parser.add_argument("--itl-ms", type=int, default=5)
    args = parser.parse_args()
    models = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    models.write(f"models:\n  - id: load-test\n    ttft_ms: {args.ttft_ms}\n    itl_ms: {args.itl_ms}\n"
                 "    output_tokens: {min: 100000, max: 100000}\n    max_model_len: 1000000\n    stamp_events: true\n")
    models.close()
    gateway = Gateway(models.name)
    gaps = {"direct": [], "proxy": []}
    first = {"direct": [], "proxy": []}
    delays = {"direct": [], "proxy": []}
    try:
        ports = {"direct": gateway.sim_port, "proxy": gateway.proxy_port}
        for name in ports:  # warm up
            stream_arrivals(ports[name], gateway.key, 5)
        for i in range(args.streams):
            for name in (("direct", "proxy") if i % 2 == 0 else ("proxy", "direct")):
                arrivals, chunk_delays = stream_arrivals(ports[name], gateway.key, args.tokens)
                assert len(arrivals) == args.tokens, (name, len(arrivals))
                delays[name].extend(chunk_delays)
                first[name].append(arrivals[0] * 1e6)
                gaps[name].extend((b - a) * 1e6 for a, b in zip(arrivals, arrivals[1:]))
    finally:
        gateway.close()
        os.unlink(models.name)

    rows = []
    for label, data in (("chunk delay (emitted → read)", delays), ("time to first token", first),
                        ("gap between chunks", gaps)):
        d, p = data["direct"], data["proxy"]
        rows.append(
            f"| {label} | {statistics.median(d):.0f} | {percentile(d, 99):.0f} | {statistics.median(p):.0f} | "
            f"{percentile(p, 99):.0f} | {statistics.median(p) - statistics.median(d):.0f} | "
            f"{percentile(p, 99) - percentile(d, 99):.0f} |"
        )
    report = "\n".join([
        f"# Per-chunk latency, direct vs through `maas proxy` — {datetime.date.today()}",
        "",
        f"Machine: {machine()}. {args.streams} streams per path, alternating, one at a time, {args.tokens} tokens "
        f"each (TTFT {args.ttft_ms} ms, ITL {args.itl_ms} ms in the simulator); the proxy injects usage options and "
        "strips them from what the client sees. Times in µs. The chunk delay runs from the simulator stamping a "
        "token chunk to the client reading it, so it holds no timer jitter; TTFT and gaps include the "
        "simulator's timer jitter in both columns.",
        "",
        "| what | direct p50 | direct p99 | proxy p50 | proxy p99 | added p50 | added p99 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
    ]) + "\n"
    write_report("stream-latency", report)


if __name__ == "__main__":
    main()
