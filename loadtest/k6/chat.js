// Non-streamed chat completions at a fixed arrival rate.
//   RATE (req/s, 5), DURATION (30s), P95_MS (latency threshold, 2000)
import { check } from "k6";
import { chat, env, keyModels, pickPair, usage } from "./lib.js";

export const options = {
  scenarios: {
    chat: {
      executor: "constant-arrival-rate",
      rate: env("RATE", 5),
      timeUnit: "1s",
      duration: __ENV.DURATION || "30s",
      preAllocatedVUs: env("VUS", 10),
      maxVUs: env("MAX_VUS", 50),
    },
  },
  thresholds: {
    http_req_failed: ["rate<0.01"],
    http_req_duration: [`p(95)<${env("P95_MS", 2000)}`],
    checks: ["rate>0.99"],
  },
};

export function setup() {
  return { pairs: keyModels() };
}

export default function (data) {
  const { key, model } = pickPair(data.pairs);
  const res = chat(key, model);
  const used = usage(res);
  check(res, {
    "status is 200": (r) => r.status === 200,
    "usage is metered": () => used !== null && used.total_tokens === used.prompt_tokens + used.completion_tokens,
  });
}
