// Mixed traffic across keys and models: chat (plain and streamed),
// completions and embeddings, as a shared gateway sees it.
//   RATE (req/s, 10), DURATION (30s), EMBED_MODEL (embedding model, optional)
import http from "k6/http";
import { check } from "k6";
import { BASE_URL, MAX_TOKENS, chat, env, headers, keyModels, pickPair } from "./lib.js";

export const options = {
  scenarios: {
    mixed: {
      executor: "constant-arrival-rate",
      rate: env("RATE", 10),
      timeUnit: "1s",
      duration: __ENV.DURATION || "30s",
      preAllocatedVUs: env("VUS", 20),
      maxVUs: env("MAX_VUS", 100),
    },
  },
  thresholds: { http_req_failed: ["rate<0.01"], checks: ["rate>0.99"] },
};

export function setup() {
  return { pairs: keyModels() };
}

export default function (data) {
  const { key, model, embeds } = pickPair(data.pairs);
  const roll = Math.random();
  let res;
  if (roll < 0.4) {
    res = chat(key, model);
  } else if (roll < 0.7) {
    res = chat(key, model, { stream: true });
  } else if (roll < 0.9 || !embeds) {
    res = http.post(`${BASE_URL}/completions`, JSON.stringify({ model, prompt: "Once upon a time", max_tokens: MAX_TOKENS }), {
      headers: headers(key),
    });
  } else {
    res = http.post(`${BASE_URL}/embeddings`, JSON.stringify({ model: __ENV.EMBED_MODEL, input: ["a b c", "d e"] }), {
      headers: headers(key),
    });
  }
  check(res, { "status is 200": (r) => r.status === 200 });
}
