// A long, steady load to find leaks and drift: a mix of plain and
// streamed chat at a modest rate.
//   RATE (req/s, 2), DURATION (30m), P99_MS (10000)
import { check } from "k6";
import { chat, env, keyModels, pickPair } from "./lib.js";

export const options = {
  scenarios: {
    soak: {
      executor: "constant-arrival-rate",
      rate: env("RATE", 2),
      timeUnit: "1s",
      duration: __ENV.DURATION || "30m",
      preAllocatedVUs: env("VUS", 10),
      maxVUs: env("MAX_VUS", 50),
    },
  },
  thresholds: {
    http_req_failed: ["rate<0.001"],
    http_req_duration: [`p(99)<${env("P99_MS", 10000)}`],
    checks: ["rate>0.999"],
  },
};

export function setup() {
  return { pairs: keyModels() };
}

export default function (data) {
  const { key, model } = pickPair(data.pairs);
  const stream = Math.random() < 0.5;
  const res = chat(key, model, stream ? { stream: true } : {});
  check(res, {
    "status is 200": (r) => r.status === 200,
    "complete": (r) => !stream || (r.body || "").trimEnd().endsWith("data: [DONE]"),
  });
}
