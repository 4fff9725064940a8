// Streams with the official `openai` npm SDK through the proxy and directly
// from the simulator, and compares what the SDK hands the caller.
//
// Usage: node openai_stream.mjs PROXY_BASE SIM_BASE KEY
// Prints {"compared": N}; exits non-zero on the first difference.
import OpenAI from "openai";

const [proxyBase, simBase, key] = process.argv.slice(2);
const proxy = new OpenAI({ baseURL: `${proxyBase}/v1`, apiKey: key, maxRetries: 0 });
const direct = new OpenAI({ baseURL: `${simBase}/v1`, apiKey: "unused", maxRetries: 0 });

// A chunk without its ids, timestamps and generated text, keys sorted.
function shape(chunk) {
  const copy = structuredClone(chunk);
  delete copy.id;
  delete copy.created;
  for (const choice of copy.choices ?? []) {
    delete choice.text;
    if (choice.delta && "content" in choice.delta) {
      choice.delta.content = choice.delta.content ? "<text>" : "";
    }
  }
  const sorted = (value) =>
    Array.isArray(value)
      ? value.map(sorted)
      : value && typeof value === "object"
        ? Object.fromEntries(Object.keys(value).sort().map((k) => [k, sorted(value[k])]))
        : value;
  return JSON.stringify(sorted(copy));
}

let compared = 0;
for (const options of [undefined, { include_usage: true }, { include_usage: true, continuous_usage_stats: true }]) {
  for (const kind of ["chat", "completion"]) {
    const runs = [];
    for (const client of [proxy, direct]) {
      const extra = options ? { stream_options: options } : {};
      const stream =
        kind === "chat"
          ? await client.chat.completions.create({
              model: "chat-a",
              messages: [{ role: "user", content: "hello there" }],
              max_tokens: 4,
              stream: true,
              ...extra,
            })
          : await client.completions.create({ model: "chat-a", prompt: "hello there", max_tokens: 4, stream: true, ...extra });
      const shapes = [];
      for await (const chunk of stream) shapes.push(shape(chunk));
      runs.push(shapes);
    }
    const [through, straight] = runs;
    if (JSON.stringify(through) !== JSON.stringify(straight)) {
      console.error(`${kind} stream with ${JSON.stringify(options)} differs:\nproxy:  ${through}\ndirect: ${straight}`);
      process.exit(1);
    }
    compared += 1;
  }
}

// A 429 surfaces as the SDK's RateLimitError, a wrong key as AuthenticationError.
try {
  await new OpenAI({ baseURL: `${proxyBase}/v1`, apiKey: "sk-maas-wrong", maxRetries: 0 }).models.list();
  console.error("a wrong key was accepted");
  process.exit(1);
} catch (error) {
  if (!(error instanceof OpenAI.AuthenticationError)) throw error;
}
console.log(JSON.stringify({ compared }));
