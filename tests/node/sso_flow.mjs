// The SSO path in headless Chromium against a real OpenID provider: ada
// signs in through the provider, creates an application on a published
// plan, copies its key and calls the model through the gateway with the
// official openai SDK, then finds the call on the statistics page; her
// application on a plan that needs approval stays pending (its key is
// refused) until root, an admin by the provider's groups claim, approves
// it in the admin console. Requests to anything but loopback are blocked.
//
// Usage: node sso_flow.mjs PORTAL_URL SCREENSHOT_DIR OPEN_PLAN GATED_PLAN MODEL
// Prints a JSON report.
import { chromium } from "playwright-core";
import OpenAI from "openai";

const [portal, shots, openPlan, gatedPlan, model] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const report = { errors: [], blocked: [] };
// Set while visiting a page that is meant to answer with an error status.
let expectingError = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.route("**/*", (route) => {
    const host = new URL(route.request().url()).hostname;
    if (host === "127.0.0.1" || host === "localhost") return route.continue();
    report.blocked.push(route.request().url());
    return route.abort();
  });
  page.on("console", (m) => {
    if (m.type() === "error" && page.url().startsWith(portal) && !expectingError) {
      report.errors.push(`${page.url()}: ${m.text()}`);
    }
  });
  const shot = (name) => page.screenshot({ path: `${shots}/portal-${name}.png`, fullPage: true });

  async function ssoSignIn(login, next) {
    await page.goto(`${portal}/sign-in?next=${encodeURIComponent(next)}`);
    await page.click("a:has-text('Sign in with')");
    await page.waitForSelector("input[name=login]");
    await page.fill("input[name=login]", login);
    await page.fill("input[name=password]", "any password");
    await page.click("button[type=submit]");
    // The provider asks to authorize the portal the first time.
    const consent = page.locator("button:has-text('Continue')");
    try {
      await page.waitForURL((url) => url.href.startsWith(portal), { timeout: 3000 });
    } catch {
      await consent.click();
      await page.waitForURL((url) => url.href.startsWith(portal));
    }
  }

  async function signOut() {
    await Promise.all([
      page.waitForURL((url) => !url.href.startsWith(portal)),
      page.click("button:has-text('Sign out')"),
    ]);
    // The provider confirms the logout, then sends us back.
    report.logout_page = (await page.locator("h1").first().textContent()).trim();
    await Promise.all([
      page.waitForURL((url) => url.href.startsWith(portal)),
      page.click("button:has-text('Yes, sign me out')"),
    ]);
  }

  async function createApplication(name, plan) {
    await page.goto(`${portal}/applications/new`);
    await page.fill("input[name=name]", name);
    await page.check(`input[name=plan][value="${plan}"]`);
    await page.click("button:has-text('Create')");
    await page.waitForURL(/\/applications\/app_/);
    const appUrl = page.url();
    await page.click("button:has-text('Create a key')");
    await page.waitForSelector(".issued");
    const key = await page.getAttribute(".issued button[data-copy]", "data-copy");
    const endpoint = await page.getAttribute("dl.facts button[data-copy^='http']", "data-copy");
    return { appUrl, key, endpoint };
  }

  const call = (app) =>
    new OpenAI({ baseURL: app.endpoint, apiKey: app.key, maxRetries: 0 }).chat.completions.create({
      model,
      messages: [{ role: "user", content: "Hello through SSO" }],
    });

  // Ada, a developer.
  await ssoSignIn("ada", "/models");
  report.ada_landed = new URL(page.url()).pathname;
  report.ada_header = (await page.locator("header .user").textContent()).trim();
  await shot("sso-models");
  const open = await createApplication("SSO assistant", openPlan);
  await shot("sso-application-key");
  const completion = await call(open);
  report.usage = completion.usage;
  for (let attempt = 0; attempt < 50; attempt++) {
    await page.goto(`${open.appUrl}/statistics?period=24h&metric=tokens`);
    const total = Number((await page.locator("tr.total td.num").textContent()).trim());
    if (total === completion.usage.total_tokens) {
      report.statistics_total_tokens = total;
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await shot("sso-statistics");

  const gated = await createApplication("Premium pipeline", gatedPlan);
  await page.goto(gated.appUrl);
  report.gated_state = (await page.locator("dl.facts .state").textContent()).trim();
  await shot("sso-pending");
  try {
    await call(gated);
    report.pending_call = "accepted";
  } catch (error) {
    report.pending_call = { status: error.status, message: error.message };
  }
  expectingError = true;
  const forbidden = await page.goto(`${portal}/admin`);
  report.ada_admin_status = `${forbidden.status()} ${await page.evaluate(() => document.title)}`;
  expectingError = false;
  await page.goto(`${portal}/applications`);
  await signOut();
  report.after_sign_out = new URL(page.url()).pathname;

  // Root, an admin through the provider's groups claim.
  await ssoSignIn("root", "/admin");
  report.root_landed = new URL(page.url()).pathname;
  await shot("admin-overview");
  await page.goto(`${portal}/admin/applications?state=pending`);
  await shot("admin-applications-pending");
  await page.click("tr:has-text('Premium pipeline') button:has-text('Approve')");
  await page.waitForURL(`${portal}/admin/applications`);
  await shot("admin-applications");
  for (const section of ["accounts", "products", "audit"]) {
    await page.goto(`${portal}/admin/${section}`);
    await shot(`admin-${section}`);
  }
  const approved = await call(gated);
  report.approved_call_tokens = approved.usage.total_tokens;
  await signOut();
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
