// What every script shares: where the gateway is, which keys and models to
// use (from the environment), and the requests an OpenAI client sends.
//
//   BASE_URL   the gateway's OpenAI endpoint, e.g. http://localhost:8080/v1
//   API_KEY    one key; or API_KEYS, several, comma-separated
//   MODEL      one model; or MODELS, several, comma-separated: each key
//              calls those of them its product serves (by default all of
//              its models but EMBED_MODEL). Keys of several products mix.
import http from "k6/http";

export const BASE_URL = (__ENV.BASE_URL || "http://localhost:8080/v1").replace(/\/$/, "");
export const KEYS = (__ENV.API_KEYS || __ENV.API_KEY || "").split(",").map((k) => k.trim()).filter(Boolean);
export const MODELS = (__ENV.MODELS || __ENV.MODEL || "").split(",").map((m) => m.trim()).filter(Boolean);
export const MAX_TOKENS = Number(__ENV.MAX_TOKENS || 64);

if (KEYS.length === 0) {
  throw new Error("set API_KEY (or API_KEYS) to the key(s) to call the gateway with");
}

/** A number from the environment, or `fallback`. */
export function env(name, fallback) {
  return __ENV[name] === undefined ? fallback : Number(__ENV[name]);
}

/**
 * Each key with the models it may call, asked of the gateway
 * (`GET /v1/models`), for `setup()`: a key is never sent with another
 * product's model, which would only measure 404s.
 */
export function keyModels() {
  return KEYS.map((key) => {
    const res = http.get(`${BASE_URL}/models`, { headers: headers(key) });
    if (res.status !== 200) {
      throw new Error(`GET ${BASE_URL}/models with key …${key.slice(-4)}: ${res.status} ${res.body}`);
    }
    const own = res.json("data").map((m) => m.id);
    const models = MODELS.length > 0 ? own.filter((m) => MODELS.includes(m)) : own.filter((m) => m !== __ENV.EMBED_MODEL);
    if (models.length === 0) {
      throw new Error(`key …${key.slice(-4)} may call ${own.join(", ")}; none of MODELS (${MODELS.join(", ")})`);
    }
    return { key, models, embeds: own.includes(__ENV.EMBED_MODEL) };
  });
}

/** A key and one of its own models, from what `keyModels()` found. */
export function pickPair(pairs) {
  const pair = pick(pairs);
  return { ...pair, model: pick(pair.models) };
}

export function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

export function headers(key) {
  return { Authorization: `Bearer ${key}`, "Content-Type": "application/json" };
}

export function chat(key, model, extra = {}, params = {}) {
  const body = { model, max_tokens: MAX_TOKENS, messages: [{ role: "user", content: "Say hello to the load test" }], ...extra };
  return http.post(`${BASE_URL}/chat/completions`, JSON.stringify(body), { headers: headers(key), ...params });
}

/** The `usage` a JSON answer carries, or null. */
export function usage(res) {
  try {
    return res.json("usage") || null;
  } catch (_) {
    return null;
  }
}
