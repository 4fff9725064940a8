// An admin's workflows in the console, in headless Chromium at one screen
// width: move an application to another plan and read its traffic chart;
// edit a product's draft as YAML (a mistake first, shown by line) and
// promote it to staging; see each proxy's replicas live; find their own
// change in the audit log by email and day; send a developer a password
// reset link, which the developer uses.
//
// Usage: node console_flow.mjs PORTAL_URL SCREENSHOT_DIR WIDTH ADMIN_EMAIL PASSWORD APPLICATION_ID PRODUCT PLAN DEVELOPER_EMAIL NEW_PASSWORD TAG
// Prints a JSON report of what the pages showed.
import { chromium } from "playwright-core";

const [portal, shots, widthText, admin, password, app, product, plan, developer, newPassword, tag] =
  process.argv.slice(2);
const width = Number(widthText);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const errors = [];
const overflow = [];
const report = { errors, overflow };

async function person() {
  const context = await browser.newContext({ viewport: { width, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const visit = async (name) => {
    await page.screenshot({ path: `${shots}/console-${width}-${name}.png`, fullPage: true });
    if (await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1)) overflow.push(name);
  };
  return { page, visit };
}

async function signIn(page, email, secret) {
  await page.goto(`${portal}/sign-in`);
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", secret);
  await page.click("button:has-text('Sign in')");
  await page.waitForURL(/\/applications$/);
}

try {
  const { page, visit } = await person();
  await signIn(page, admin, password);

  // An application: its traffic, and a move to another plan.
  await page.goto(`${portal}/admin/applications/${app}?period=24h&metric=hits`);
  report.hits_total = (await page.locator(".traffic-total").textContent()).trim();
  await page.selectOption("form[action$='/plan'] select[name=plan]", plan);
  await page.click("button:has-text('Change the plan')");
  await page.waitForURL(`${portal}/admin/applications/${app}`);
  report.plan_shown = (await page.locator("dl.facts").textContent()).replace(/\s+/g, " ").trim();
  await visit("application");

  // The product's draft: a mistake first, then an edit, then staging.
  await page.goto(`${portal}/admin/products/${product}/edit`);
  const yaml = await page.locator("textarea[name=yaml]").inputValue();
  await page.fill("textarea[name=yaml]", yaml.replace("backend: sim", "backend: nowhere"));
  const logged = errors.length;
  await page.click("button:has-text('Save the draft')");
  await page.waitForSelector(".editor-errors");
  // The refusal is a 422 page: the one console error expected.
  errors.splice(logged, errors.length - logged, ...errors.slice(logged).filter((e) => !e.includes("422")));
  report.editor_error = (await page.locator(".editor-errors").textContent()).trim();
  await visit("product-edit-error");
  const described = /\n  description: .*/.test(yaml)
    ? yaml.replace(/\n  description: .*/, `\n  description: Edited at ${tag}`)
    : yaml.replace(/system_name: (\S+)\n/, `system_name: $1\n  description: Edited at ${tag}\n`);
  await page.fill("textarea[name=yaml]", described);
  await page.click("button:has-text('Save the draft')");
  await page.waitForURL(`${portal}/admin/products`);
  const card = page.locator("article.card", { has: page.locator(`a[href='/admin/products/${product}/edit']`) });
  report.draft_diff = (await card.locator("table.diff").first().textContent()).replace(/\s+/g, " ").trim();
  await card.locator("button:has-text('Promote the draft to staging')").click();
  await page.waitForURL(`${portal}/admin/products`);
  await visit("products");

  // The replicas as the proxies report them.
  await page.goto(`${portal}/admin/backends`);
  report.backends = (await page.locator("main").textContent()).replace(/\s+/g, " ").trim();
  await visit("backends");

  // The audit log by who and when finds the plan change.
  const today = new Date().toISOString().slice(0, 10);
  await page.goto(`${portal}/admin/audit`);
  await page.fill("input[name=actor]", admin);
  await page.fill("input[name=from]", today);
  await page.click("form.filters button:has-text('Filter')");
  await page.waitForURL(/actor=/);
  report.audit = (await page.locator("table.audit tbody").textContent()).replace(/\s+/g, " ").trim();
  await visit("audit");

  // A password reset link for a developer, used by them.
  await page.goto(`${portal}/admin/accounts`);
  const row = page.locator("tr", { hasText: developer });
  await row.locator("button:has-text('Password reset link')").click();
  await page.waitForSelector(".issued");
  const link = await page.getAttribute(".issued button[data-copy]", "data-copy");
  await visit("reset-link");
  const dev = await person();
  await dev.page.goto(`${portal}${new URL(link).pathname}`);
  await dev.page.fill("input[name=password]", newPassword);
  await dev.page.click("button:has-text('Set the password')");
  await dev.page.waitForSelector(".notice");
  await dev.visit("reset-done");
  await dev.page.fill("input[name=password]", newPassword);
  await dev.page.click("button:has-text('Sign in')");
  await dev.page.waitForURL(/\/applications$/);
  report.developer_signed_in = true;
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
