// A team's day after day one, in headless Chromium, at one screen width:
// Ada signs up, creates an application and a key, calls the model through
// the gateway with the official openai SDK and sees the key's last use;
// she invites Bob by a one-time link, Bob joins and sees the team's
// application; Ada makes Bob an owner, then removes him after a
// confirmation; she changes her password on her profile; revoking the
// key and deleting the application ask first.
// On every page: whether the page scrolls sideways (it must not).
//
// Usage: node team_flow.mjs PORTAL_URL SCREENSHOT_DIR WIDTH TAG PRODUCT_PLAN_VALUE MODEL
// Prints {"ada": EMAIL, "bob": EMAIL, "last_used": TEXT, "overflow": [PAGE…], …, "errors": [...]}.
import { chromium } from "playwright-core";
import OpenAI from "openai";

const [portal, shots, widthText, tag, planValue, model] = process.argv.slice(2);
const width = Number(widthText);
const password = "correct horse battery staple";
const ada = `ada-${tag}@example.com`;
const bob = `bob-${tag}@example.com`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const errors = [];
const overflow = [];
const report = { ada, bob, errors, overflow };

/// A page in a browser context of its own (its own cookies), watched for
/// errors; `visit(name)` takes a screenshot and checks for sideways scroll.
async function person() {
  const context = await browser.newContext({ viewport: { width, height: 900 } });
  const page = await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", (e) => errors.push(String(e)));
  const visit = async (name) => {
    await page.screenshot({ path: `${shots}/team-${width}-${name}.png`, fullPage: true });
    const wide = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
    if (wide) overflow.push(name);
  };
  return { page, visit };
}

async function signIn(page, email) {
  await page.fill("input[name=email]", email);
  await page.fill("input[name=password]", password);
  await page.click("button:has-text('Sign in')");
}

try {
  const { page, visit } = await person();
  await page.goto(`${portal}/sign-up`);
  await page.fill("input[name=organization]", `Acme ${tag}`);
  await page.fill("input[name=display_name]", "Ada Lovelace");
  await page.fill("input[name=email]", ada);
  await page.fill("input[name=password]", password);
  await page.click("button:has-text('Create the account')");
  await page.waitForSelector(".notice");
  await page.fill("input[name=password]", password);
  await page.click("button:has-text('Sign in')");
  await page.waitForURL(`${portal}/models`);
  await visit("models");

  // A product page: its code blocks stay inside the page and copy whole.
  const product = planValue.split("/")[0];
  await page.context().grantPermissions(["clipboard-read", "clipboard-write"], { origin: portal });
  await page.goto(`${portal}/models/${product}`);
  await page.click("button[data-copy-from='example-python']");
  report.copied = await page.evaluate(() => navigator.clipboard.readText());
  report.python_block = await page.locator("#example-python").textContent();
  await visit("product");

  await page.goto(`${portal}/applications/new`);
  await page.fill("input[name=name]", "Team assistant");
  await page.check(`input[name=plan][value="${planValue}"]`);
  await page.click("button:has-text('Create')");
  await page.waitForURL(/\/applications\/app_/);
  const appUrl = page.url();
  await page.click("button:has-text('Create a key')");
  await page.waitForSelector(".issued");
  await visit("application-key");
  const key = await page.getAttribute(".issued button[data-copy]", "data-copy");
  const endpoint = await page.getAttribute("dl.facts button[data-copy^='http']", "data-copy");
  const client = new OpenAI({ baseURL: endpoint, apiKey: key, maxRetries: 0 });
  await client.chat.completions.create({ model, messages: [{ role: "user", content: "Hello, team" }] });
  // The gateway writes a key's last use with its next usage flush.
  const lastUsedCell = page.locator("table.keys tbody tr").first().locator("td").nth(3);
  for (let attempt = 0; attempt < 100; attempt++) {
    await page.goto(appUrl);
    report.last_used = (await lastUsedCell.textContent()).trim();
    if (report.last_used !== "never") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await visit("application-last-used");
  // The call shows under its key in the statistics broken down by key.
  await page.goto(`${appUrl}/statistics?period=24h&metric=hits&by=key`);
  report.hits_by_key = await page.locator("table.list tbody tr:not(.total)").evaluateAll(
    (rows) => rows.map((r) => [...r.querySelectorAll("td")].slice(1).map((td) => td.textContent.trim())));
  await visit("statistics-by-key");
  await page.goto(appUrl);

  // Revoking asks first; keeping the key changes nothing.
  await page.click("table.keys a:has-text('Revoke')");
  await page.waitForURL(/\/keys\/.*\/revoke$/);
  report.revoke_question = (await page.locator("h1").textContent()).trim();
  await visit("key-revoke");
  await page.click("a:has-text('Keep it')");
  await page.waitForURL(appUrl);

  // Ada invites Bob; the link is shown once, to copy.
  await page.goto(`${portal}/account`);
  await page.selectOption("form[action='/account/invitations'] select[name=role]", "member");
  await page.click("button:has-text('Create an invitation link')");
  await page.waitForSelector(".issued");
  await visit("account-invitation");
  const link = await page.getAttribute(".issued button[data-copy]", "data-copy");
  const joinPath = new URL(link).pathname;

  // Bob, in a browser of his own, joins by the link.
  const bobs = await person();
  await bobs.page.goto(`${portal}${joinPath}`);
  report.join_heading = (await bobs.page.locator("h1").textContent()).trim();
  await bobs.visit("join");
  await bobs.page.fill("input[name=display_name]", "Bob Builder");
  await bobs.page.fill("input[name=email]", bob);
  await bobs.page.fill("input[name=password]", password);
  await bobs.page.click("button:has-text('Create the account and join')");
  await bobs.page.waitForSelector(".notice");
  await bobs.page.fill("input[name=password]", password);
  await bobs.page.click("button:has-text('Sign in')");
  await bobs.page.waitForURL(`${portal}/applications`);
  report.bob_sees = await bobs.page.locator("main").textContent();
  await bobs.visit("member-applications");
  await bobs.page.goto(`${portal}/account`);
  report.bob_can_invite = await bobs.page.locator("form[action='/account/invitations']").count();
  await bobs.visit("member-account");
  // The link worked once: a 404 page (the one console error expected).
  const logged = errors.length;
  const again = await bobs.page.goto(`${portal}${joinPath}`);
  report.link_again_status = again.status();
  report.link_again = (await bobs.page.locator("main").textContent()).includes("used, cancelled or has expired");
  errors.splice(logged, errors.length - logged, ...errors.slice(logged).filter((e) => !e.includes("404")));

  // Ada makes Bob an owner, then removes him after a confirmation.
  await page.goto(`${portal}/account`);
  const bobRow = page.locator("table.members tr", { hasText: bob });
  await bobRow.locator("select[name=role]").selectOption("owner");
  await bobRow.locator("button:has-text('Change')").click();
  await page.waitForURL(`${portal}/account`);
  report.bob_role = (await page.locator("table.members tr", { hasText: bob }).locator("select[name=role]").inputValue());
  await visit("account-members");
  await page.locator("table.members tr", { hasText: bob }).locator("a:has-text('Remove')").click();
  await page.waitForURL(/\/remove$/);
  await visit("member-remove");
  await page.click("button:has-text('Remove')");
  await page.waitForURL(`${portal}/account`);
  report.members_after = await page.locator("table.members tbody tr").count();
  await bobs.page.goto(`${portal}/applications`);
  report.bob_signed_out = bobs.page.url().includes("/sign-in");

  // Ada's own account: her sessions, and a password change.
  await page.click("header a[href='/profile']");
  await page.waitForURL(`${portal}/profile`);
  report.sessions_listed = await page.locator("table.sessions tbody tr").count();
  await page.fill("input[name=current]", password);
  await page.fill("input[name=new]", "violet otter lantern seventeen");
  await page.click("button:has-text('Change the password')");
  await page.waitForSelector(".notice");
  report.password_notice = (await page.locator(".notice").textContent()).trim();
  await visit("profile");

  // Deleting the application asks first.
  await page.goto(appUrl);
  await page.click("a:has-text('Delete the application')");
  await page.waitForURL(/\/delete$/);
  report.delete_question = (await page.locator("main").textContent()).replace(/\s+/g, " ").trim();
  await visit("application-delete");
  await page.click("button:has-text('Delete the application')");
  await page.waitForURL(`${portal}/applications`);
  report.apps_after = (await page.locator("main").textContent()).includes("Team assistant");
  await visit("applications-after-delete");
  console.log(JSON.stringify(report));
} finally {
  await browser.close();
}
