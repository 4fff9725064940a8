"""Streams with the official `openai` Python SDK through the proxy and
directly from the simulator, and compares what the SDK hands the caller.

Usage: python3 openai_stream.py PROXY_BASE SIM_BASE KEY
Prints {"compared": N}; exits non-zero on the first difference.
"""

import json
import sys

import openai

proxy_base, sim_base, key = sys.argv[1:4]
proxy = openai.OpenAI(base_url=f"{proxy_base}/v1", api_key=key, max_retries=0)
direct = openai.OpenAI(base_url=f"{sim_base}/v1", api_key="unused", max_retries=0)


def shape(chunk):
    """A chunk without its ids, timestamps and generated text."""
    data = chunk.model_dump(exclude_none=True)
    data.pop("id", None)
    data.pop("created", None)
    for choice in data.get("choices", []):
        choice.pop("text", None)
        delta = choice.get("delta") or {}
        if "content" in delta:
            delta["content"] = "<text>" if delta["content"] else ""
    return json.dumps(data, sort_keys=True)


compared = 0
for options in (None, {"include_usage": True}, {"include_usage": True, "continuous_usage_stats": True}):
    for kind in ("chat", "completion"):
        runs = []
        for client in (proxy, direct):
            extra = {} if options is None else {"stream_options": options}
            if kind == "chat":
                stream = client.chat.completions.create(
                    model="chat-a", messages=[{"role": "user", "content": "hello there"}],
                    max_tokens=4, stream=True, **extra,
                )
            else:
                stream = client.completions.create(model="chat-a", prompt="hello there", max_tokens=4, stream=True, **extra)
            runs.append([shape(chunk) for chunk in stream])
        through, straight = runs
        if through != straight:
            sys.exit(f"{kind} stream with {options} differs:\nproxy:  {through}\ndirect: {straight}")
        compared += 1

print(json.dumps({"compared": compared}))
