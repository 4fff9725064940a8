"""Drives maas-sim with the official `openai` Python SDK.

Usage: python3 openai_sdk.py BASE_URL
Exits non-zero (with the reason) when the SDK and the simulator disagree.
"""

import json
import sys

import openai

base_url = sys.argv[1]
client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused-by-the-sim", max_retries=0)
messages = [{"role": "user", "content": "Tell me about gateways"}]
report = {}

chat = client.chat.completions.create(model="tinyllama-1.1b-chat", messages=messages, max_tokens=6)
assert chat.usage.completion_tokens == 6, chat
assert len(chat.choices[0].message.content.split()) == 6, chat
assert chat.usage.prompt_tokens == 4 + 3 + 3, chat
report["chat"] = chat.usage.total_tokens

chunks = list(client.chat.completions.create(model="tinyllama-1.1b-chat", messages=messages, max_tokens=5, stream=True))
assert all(c.usage is None for c in chunks), "no usage unless asked for"
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert len(text.split()) == 5, text
report["stream_chunks"] = len(chunks)

chunks = list(
    client.chat.completions.create(
        model="tinyllama-1.1b-chat",
        messages=messages,
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
    )
)
assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5, chunks[-1]
report["stream_usage"] = chunks[-1].usage.total_tokens

completion = client.completions.create(model="granite-3.1-8b-instruct", prompt="one two three", max_tokens=4)
assert completion.usage.prompt_tokens == 3 and completion.usage.completion_tokens == 4, completion
report["completion"] = completion.usage.total_tokens

# The SDK asks for base64 by default and decodes it.
embedding = client.embeddings.create(model="granite-3.1-8b-instruct", input=["a b", "c"])
assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 384, embedding
assert embedding.usage.prompt_tokens == 3, embedding.usage
report["embedding_dims"] = len(embedding.data[0].embedding)

# The Responses API, whole and streamed: usage arrives with response.completed.
response = client.responses.create(
    model="tinyllama-1.1b-chat", input="Tell me about gateways", instructions="Be brief", max_output_tokens=6
)
assert response.usage.output_tokens == 6 and response.usage.input_tokens == (4 + 3) + (2 + 3) + 3, response.usage
assert len(response.output_text.split()) == 6 and response.status == "incomplete", response
report["response"] = response.usage.total_tokens
events = list(client.responses.create(model="tinyllama-1.1b-chat", input="Tell me", max_output_tokens=5, stream=True))
kinds = [event.type for event in events]
assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete", kinds
deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
assert deltas == events[-1].response.output_text, (deltas, events[-1])
report["response_stream_events"] = len(events)
report["response_stream_usage"] = events[-1].response.usage.total_tokens

try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    raise AssertionError("an unknown model must fail")
except openai.NotFoundError as error:
    report["not_found"] = error.status_code

print(json.dumps(report, sort_keys=True))
