// Checks the plan's request limit: sends faster than LIMIT requests per
// minute allows and expects the gateway to admit about LIMIT and answer
// the rest 429 with Retry-After and x-ratelimit-* headers.
//   LIMIT (the plan's requests per minute, required), RATE (req/s, 5), DURATION (20s)
import { check } from "k6";
import { Counter } from "k6/metrics";
import { KEYS, MODELS, chat, env, keyModels } from "./lib.js";

const admitted = new Counter("admitted");
const limited = new Counter("limited");
const LIMIT = env("LIMIT", NaN);
if (Number.isNaN(LIMIT)) {
  throw new Error("set LIMIT to the plan's requests per minute");
}

export const options = {
  scenarios: {
    over_the_limit: {
      executor: "constant-arrival-rate",
      rate: env("RATE", 5),
      timeUnit: "1s",
      duration: __ENV.DURATION || "20s",
      preAllocatedVUs: env("VUS", 10),
    },
  },
  thresholds: {
    // Within one minute: never more admitted than the limit (plus the
    // window turning over once), and some refused.
    admitted: [`count<=${2 * LIMIT}`],
    limited: ["count>0"],
    checks: ["rate>0.99"],
  },
};

// With MODEL given, no `GET /v1/models` first: it would count against the
// very limit this script measures.
export function setup() {
  return { pair: MODELS.length > 0 ? { key: KEYS[0], models: MODELS } : keyModels()[0] };
}

export default function (data) {
  const res = chat(data.pair.key, data.pair.models[0], { max_tokens: 8 });
  if (res.status === 200) admitted.add(1);
  if (res.status === 429) limited.add(1);
  check(res, {
    "200 or 429": (r) => r.status === 200 || r.status === 429,
    "429 says when to retry": (r) => r.status !== 429 || Number(r.headers["Retry-After"]) >= 0,
    "429 is OpenAI-shaped": (r) => r.status !== 429 || r.json("error.code") !== undefined,
    "limit headers": (r) => r.headers["X-Ratelimit-Limit-Requests"] === String(LIMIT),
  });
}
