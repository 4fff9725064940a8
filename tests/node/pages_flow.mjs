// Every page of the portal and the console, in headless Chromium at one
// screen width, signed in as an admin who has an application: none may
// scroll sideways, and the bar stays within two lines on a phone.
//
// Usage: node pages_flow.mjs PORTAL_URL SCREENSHOT_DIR WIDTH EMAIL PASSWORD APPLICATION_ID PRODUCT
// Prints {"visited": [NAME…], "overflow": [NAME…], "header_height": PX, "errors": [...]}.
import { chromium } from "playwright-core";

const [portal, shots, widthText, email, password, app, product] = process.argv.slice(2);
const width = Number(widthText);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const errors = [];
const overflow = [];
const visited = [];
const report = { visited, overflow, errors };
try {
  const page = await browser.newPage({ viewport: { width, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const visit = async (name, path) => {
    const response = await page.goto(`${portal}${path}`);
    if (response.status() >= 400) errors.push(`${name}: ${response.status()}`);
    await page.screenshot({ path: `${shots}/pages-${width}-${name}.png`, fullPage: true });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    if (wide) overflow.push(name);
    visited.push(name);
  };
  await visit("home", "/");
  await visit("sign-up", "/sign-up");
  await visit("sign-in", "/sign-in");
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", password);
  await page.click("button:has-text('Sign in')");
  await page.waitForURL(/\/applications$/);
  report.header_height = await page.evaluate(() => document.querySelector("header.bar").getBoundingClientRect().height);
  for (const [name, path] of [
    ["models", "/models"],
    ["product", `/models/${product}`],
    ["applications", "/applications"],
    ["application-new", `/applications/new?product=${product}`],
    ["application", `/applications/${app}`],
    ["application-delete", `/applications/${app}/delete`],
    ["statistics", `/applications/${app}/statistics?period=7d&metric=tokens`],
    ["statistics-cost-by-model", `/applications/${app}/statistics?period=30d&metric=cost&by=model`],
    ["account", "/account"],
    ["profile", "/profile"],
    ["admin", "/admin"],
    ["admin-applications", "/admin/applications"],
    ["admin-application", `/admin/applications/${app}`],
    ["admin-backends", "/admin/backends"],
    ["admin-accounts", "/admin/accounts"],
    ["admin-products", "/admin/products"],
    ["admin-product-edit", `/admin/products/${product}/edit`],
    ["admin-audit", "/admin/audit"],
  ]) {
    await visit(name, path);
  }
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
