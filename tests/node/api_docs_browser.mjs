// Opens the admin API's Swagger UI page in headless Chromium and reports
// what a person would see: the operations listed, whether the document
// loaded, and every console error or blocked request (a CSP violation or
// an asset fetched from elsewhere shows up here).
//
// Usage: node api_docs_browser.mjs DOCS_URL SCREENSHOT_PATH
// Prints {"operations": N, "title": "...", "errors": [...], "foreign_requests": [...]}.
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const errors = [];
const foreign = [];
try {
  const page = await browser.newPage();
  const origin = new URL(url).origin;
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("response", (response) => {
    if (response.status() >= 400) errors.push(`${response.status()} ${response.url()}`);
  });
  page.on("request", (request) => {
    const target = request.url();
    if (!target.startsWith(origin) && !target.startsWith("data:")) foreign.push(target);
  });
  await page.goto(url, { waitUntil: "networkidle" });
  await page.waitForSelector(".opblock", { timeout: 15000 });
  const operations = await page.locator(".opblock").count();
  const title = (await page.locator(".info .title").first().textContent())?.trim() ?? "";
  await page.screenshot({ path: screenshot, fullPage: false });
  console.log(JSON.stringify({ operations, title, errors, foreign_requests: foreign }));
} finally {
  await browser.close();
}
