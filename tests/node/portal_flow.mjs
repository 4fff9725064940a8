// A developer's first day, in headless Chromium: sign up on the portal,
// create an application on a published plan, create a key and copy it from
// the page, call the model through the gateway with the official openai
// SDK, and find the request and its tokens on the statistics page.
//
// Usage: node portal_flow.mjs PORTAL_URL SCREENSHOT_DIR EMAIL PRODUCT_PLAN_VALUE MODEL
// Prints {"usage": {...}, "statistics": {...}, "errors": [...]}.
import { chromium } from "playwright-core";
import OpenAI from "openai";

const [portal, shots, email, planValue, model] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const shot = (name) => page.screenshot({ path: `${shots}/portal-${name}.png`, fullPage: true });

  await page.goto(`${portal}/`);
  await shot("home");
  await page.click("a:has-text('Sign up')");
  await page.fill("input[name=organization]", "Acme Research");
  await page.fill("input[name=display_name]", "Ada Lovelace");
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", "correct horse battery staple");
  await page.click("button:has-text('Create the account')");
  // Sign-up says the same whether the email existed: then sign in.
  await page.waitForSelector(".notice");
  await page.fill("input[name=password]", "correct horse battery staple");
  await page.click("button:has-text('Sign in')");
  await page.waitForURL(`${portal}/models`);
  await shot("models");

  await page.goto(`${portal}/applications/new`);
  await page.fill("input[name=name]", "Research assistant");
  await page.check(`input[name=plan][value="${planValue}"]`);
  await shot("new-application");
  await page.click("button:has-text('Create')");
  await page.waitForURL(/\/applications\/app_/);
  await page.click("button:has-text('Create a key')");
  await page.waitForSelector(".issued");
  await shot("application-key");
  // What the copy button would put on the clipboard.
  const key = await page.getAttribute(".issued button[data-copy]", "data-copy");
  const endpoint = await page.getAttribute("dl.facts button[data-copy^='http']", "data-copy");

  const client = new OpenAI({ baseURL: endpoint, apiKey: key, maxRetries: 0 });
  const completion = await client.chat.completions.create({
    model,
    messages: [{ role: "user", content: "Say hello to the portal" }],
  });

  // The statistics page shows the request and its tokens once recorded.
  const appUrl = page.url().replace(/\/keys$/, "");
  let statistics = null;
  for (let attempt = 0; attempt < 50 && !statistics; attempt++) {
    await page.goto(`${appUrl}/statistics?period=24h&metric=tokens`);
    const total = (await page.locator("tr.total td.num").textContent()).trim();
    if (Number(total) === completion.usage.total_tokens) {
      await page.goto(`${appUrl}/statistics?period=24h&metric=hits`);
      const hits = (await page.locator("tr.total td.num").textContent()).trim();
      const bars = await page.locator("svg.chart rect").count();
      statistics = { total_tokens: Number(total), hits: Number(hits), bars };
    } else {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  await shot("statistics");
  await page.goto(`${appUrl}/statistics?period=24h&metric=tokens`);
  await shot("statistics-tokens");

  // The product's API reference renders in Swagger UI, served by the portal.
  const product = planValue.split("/")[0];
  await page.goto(`${portal}/models/${product}`);
  await shot("product");
  await page.goto(`${portal}/models/${product}/api`);
  await page.waitForSelector(".opblock", { timeout: 15000 });
  const operations = await page.locator(".opblock").count();
  await shot("api-reference");
  console.log(JSON.stringify({ usage: completion.usage, statistics, operations, errors }));
} finally {
  await browser.close();
}
