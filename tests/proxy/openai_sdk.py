"""Drives `maas proxy` with the official `openai` Python SDK.

Usage: python3 openai_sdk.py BASE_URL KEY LIMITED_KEY
LIMITED_KEY's plan allows 10 requests a minute. Prints a JSON report;
exits non-zero when the SDK and the gateway disagree.
"""

import json
import sys

import openai

base_url, key, limited_key = sys.argv[1:4]
report = {}

client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)
chat = client.chat.completions.create(
    model="chat-a", messages=[{"role": "user", "content": "Hello through the gateway"}], max_tokens=8
)
assert chat.usage.completion_tokens == 8, chat
assert chat.choices[0].message.content, chat
report["chat_tokens"] = chat.usage.total_tokens

# The Responses API through the gateway, whole and streamed.
response = client.responses.create(model="chat-a", input="Hello through the gateway", max_output_tokens=5)
assert response.usage.output_tokens == 5 and len(response.output_text.split()) == 5, response
events = list(client.responses.create(model="chat-a", input="Hello", max_output_tokens=4, stream=True))
assert events[0].type == "response.created" and events[-1].type == "response.incomplete", [e.type for e in events]
assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == events[-1].response.output_text
report["responses_tokens"] = response.usage.total_tokens + events[-1].response.usage.total_tokens

raw = client.chat.completions.with_raw_response.create(
    model="chat-a", messages=[{"role": "user", "content": "hi"}], max_tokens=1
)
assert raw.headers.get("x-ratelimit-remaining-requests") is None, "the open plan has no request limit"

embedding = client.embeddings.create(model="embed-a", input=["gateways meter tokens"])
report["embedding_dimensions"] = len(embedding.data[0].embedding)
assert embedding.usage.prompt_tokens > 0, embedding

models = client.models.list()
assert [m.id for m in models.data] == ["chat-a", "embed-a"], models
model = client.models.retrieve("chat-a")
assert (model.id, model.object) == ("chat-a", "model"), model
report["retrieved_model"] = model.id

# Another product's model, and one that does not exist, look the same:
# 404 model_not_found, which the SDK raises as NotFoundError.
for missing in ["chat-b", "no-such-model"]:
    try:
        client.models.retrieve(missing)
        raise SystemExit(f"models.retrieve({missing!r}) answered")
    except openai.NotFoundError as error:
        report.setdefault("retrieve_not_found", []).append(error.code)
    try:
        client.chat.completions.create(model=missing, messages=[{"role": "user", "content": "hi"}])
        raise SystemExit(f"a chat with {missing!r} answered")
    except openai.NotFoundError as error:
        report.setdefault("chat_not_found", []).append(error.code)

# A method the path does not take.
try:
    client.get("/chat/completions", cast_to=object)
    raise SystemExit("GET /v1/chat/completions answered")
except openai.APIStatusError as error:
    report["wrong_method"] = [error.status_code, error.code, error.response.headers.get("allow")]

limited = openai.OpenAI(base_url=f"{base_url}/v1", api_key=limited_key, max_retries=0)
sent = 0
try:
    for _ in range(20):
        limited.chat.completions.create(model="chat-a", messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        sent += 1
    raise SystemExit("20 requests passed a plan of 10 per minute")
except openai.RateLimitError as error:
    report["rate_limited_after"] = sent
    report["rate_limit_code"] = error.code
    assert error.response.headers["retry-after"], error.response.headers
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"

try:
    openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-maas-wrong", max_retries=0).models.list()
    raise SystemExit("a wrong key was accepted")
except openai.AuthenticationError as error:
    report["bad_key_status"] = error.status_code

print(json.dumps(report))
