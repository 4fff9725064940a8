// Streamed chat completions: every stream must end with [DONE] and carry
// the usage the client asked for.
//   VUS (5), DURATION (30s), P95_MS (whole stream, 10000)
import { check } from "k6";
import { chat, env, keyModels, pickPair } from "./lib.js";

export const options = {
  vus: env("VUS", 5),
  duration: __ENV.DURATION || "30s",
  thresholds: {
    http_req_failed: ["rate<0.01"],
    http_req_duration: [`p(95)<${env("P95_MS", 10000)}`],
    checks: ["rate>0.99"],
  },
};

export function setup() {
  return { pairs: keyModels() };
}

export default function (data) {
  const { key, model } = pickPair(data.pairs);
  const res = chat(key, model, { stream: true, stream_options: { include_usage: true } });
  const events = (res.body || "").split("\n").filter((l) => l.startsWith("data: "));
  const last = events[events.length - 1];
  const usageEvent = events.find((e) => e.includes('"usage":{'));
  check(res, {
    "status is 200": (r) => r.status === 200,
    "event stream": (r) => (r.headers["Content-Type"] || "").startsWith("text/event-stream"),
    "ends with [DONE]": () => last === "data: [DONE]",
    "usage in the stream": () => usageEvent !== undefined && JSON.parse(usageEvent.slice(6)).usage.total_tokens > 0,
  });
}
