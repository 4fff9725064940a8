// What every script shares: where the gateway is, which keys and models to
// use (from the environment), and the requests an OpenAI client sends.
//
//   BASE_URL   the gateway's OpenAI endpoint, e.g. http://localhost:8080/v1
//   API_KEY    one key; or API_KEYS, several, comma-separated
//   MODEL      one model; or MODELS, several, comma-separated
import http from "k6/http";

export const BASE_URL = (__ENV.BASE_URL || "http://localhost:8080/v1").replace(/\/$/, "");
export const KEYS = (__ENV.API_KEYS || __ENV.API_KEY || "").split(",").map((k) => k.trim()).filter(Boolean);
export const MODELS = (__ENV.MODELS || __ENV.MODEL || "tinyllama-1.1b-chat").split(",").map((m) => m.trim()).filter(Boolean);
export const MAX_TOKENS = Number(__ENV.MAX_TOKENS || 64);

if (KEYS.length === 0) {
  throw new Error("set API_KEY (or API_KEYS) to the key(s) to call the gateway with");
}

/** A number from the environment, or `fallback`. */
export function env(name, fallback) {
  return __ENV[name] === undefined ? fallback : Number(__ENV[name]);
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
