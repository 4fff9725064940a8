// The official `openai` npm package in headless Chromium, on a page of
// another origin than the gateway, as a web app would run it: CORS must
// let its `x-stainless-*` headers through and expose what it reads
// (`x-request-id`, `x-ratelimit-*`, `retry-after`, `x-should-retry`).
//
// Usage: node openai_browser.mjs GATEWAY_URL KEY DAILY_KEY MODEL
// DAILY_KEY's plan allows one request a day. Prints a JSON report.
import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [gateway, key, dailyKey, model] = process.argv.slice(2);
const sdkDir = path.join(path.dirname(fileURLToPath(import.meta.url)), "node_modules/openai");

// The page's own origin: the SDK's ES modules, served as a bundler would.
const server = http.createServer((request, response) => {
  const url = new URL(request.url, "http://page");
  if (url.pathname === "/favicon.ico") {
    response.writeHead(204);
    return response.end();
  }
  if (url.pathname === "/") {
    response.writeHead(200, { "content-type": "text/html" });
    return response.end("<!doctype html><title>openai in the browser</title>");
  }
  const file = path.normalize(path.join(sdkDir, url.pathname.replace(/^\/openai\//, "")));
  if (!url.pathname.startsWith("/openai/") || !file.startsWith(sdkDir) || !fs.existsSync(file)) {
    response.writeHead(404);
    return response.end();
  }
  response.writeHead(200, { "content-type": "text/javascript" });
  fs.createReadStream(file).pipe(response);
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const page_url = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const errors = [];
const sentToGateway = [];
try {
  const page = await browser.newPage();
  page.on("pageerror", (error) => errors.push(String(error)));
  // Chromium logs every 4xx as "Failed to load resource"; the 429 is
  // wanted. A CORS refusal or a script error is logged otherwise.
  page.on("console", (message) => {
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource")) {
      errors.push(message.text());
    }
  });
  page.on("request", (request) => {
    if (request.url().startsWith(gateway) && request.method() !== "OPTIONS") sentToGateway.push(request.url());
  });
  await page.goto(page_url);
  const report = await page.evaluate(
    async ({ gateway, key, dailyKey, model }) => {
      const { default: OpenAI, RateLimitError } = await import("/openai/index.mjs");
      const options = { baseURL: `${gateway}/v1`, dangerouslyAllowBrowser: true };
      const client = new OpenAI({ ...options, apiKey: key, maxRetries: 0 });
      const messages = [{ role: "user", content: "Hello from a browser" }];
      const { data, response, request_id } = await client.chat.completions
        .create({ model, messages, max_tokens: 5 })
        .withResponse();
      let streamed = "";
      const stream = await client.chat.completions.create({ model, messages, max_tokens: 4, stream: true });
      for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
      const models = (await client.models.list()).data.map((m) => m.id);
      const retrieved = (await client.models.retrieve(model)).id;

      // A plan of one request a day: the second is refused until tomorrow,
      // and the SDK, told so, does not retry.
      const daily = new OpenAI({ ...options, apiKey: dailyKey, maxRetries: 2 });
      await daily.chat.completions.create({ model, messages, max_tokens: 1 });
      let refused = null;
      try {
        await daily.chat.completions.create({ model, messages, max_tokens: 1 });
      } catch (error) {
        refused = {
          rate_limit_error: error instanceof RateLimitError,
          status: error.status,
          retry_after: Number(error.headers?.get("retry-after")),
          should_retry: error.headers?.get("x-should-retry"),
          remaining: error.headers?.get("x-ratelimit-remaining-requests"),
          request_id: error.requestID ?? null,
        };
      }
      return {
        content: data.choices[0].message.content,
        usage: data.usage.total_tokens,
        request_id,
        remaining_header: response.headers.get("x-ratelimit-remaining-requests"),
        streamed,
        models,
        retrieved,
        refused,
      };
    },
    { gateway, key, dailyKey, model },
  );
  console.log(JSON.stringify({ ...report, errors, requests: sentToGateway.length }));
} finally {
  await browser.close();
  server.close();
}
