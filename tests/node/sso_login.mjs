// Company sign-in without a browser: follows the portal's OpenID Connect
// flow against the real oidc-provider (its development login and consent
// forms) with fetch and a cookie jar, as a browser would, and reports where
// it ended and the portal session it got.
//
// Usage: node sso_login.mjs PORTAL_URL LOGIN [sign-out]
// Prints a JSON report: {status, url, session, body}. `session` is the
// maas_session cookie (null when the portal refused the sign-in). With
// `sign-out`, it then signs out through the portal's form and the
// provider's confirmation, and reports where that ended as `signed_out`
// ({status, url, body}).

const [portal, login, then] = process.argv.slice(2);
const jar = new Map(); // origin → Map(name → value)

function remember(url, response) {
  const origin = new URL(url).origin;
  const cookies = jar.get(origin) ?? new Map();
  for (const line of response.headers.getSetCookie()) {
    const [pair, ...attributes] = line.split(";");
    const at = pair.indexOf("=");
    const name = pair.slice(0, at).trim();
    const value = pair.slice(at + 1).trim();
    const expired = attributes.some((a) => /max-age=0\b/i.test(a.trim())) || value === "";
    if (expired) cookies.delete(name);
    else cookies.set(name, value);
  }
  jar.set(origin, cookies);
}

function cookieHeader(url) {
  const cookies = jar.get(new URL(url).origin);
  return cookies ? [...cookies].map(([k, v]) => `${k}=${v}`).join("; ") : "";
}

async function request(url, options = {}) {
  const response = await fetch(url, {
    ...options,
    redirect: "manual",
    headers: { ...(options.headers ?? {}), cookie: cookieHeader(url) },
  });
  remember(url, response);
  return response;
}

/// The first POST form of a page: its action, or null.
function postForm(body) {
  for (const tag of body.matchAll(/<form[^>]*>/g)) {
    const method = tag[0].match(/method="([^"]+)"/);
    const action = tag[0].match(/action="([^"]+)"/);
    if (method && method[1].toLowerCase() === "post" && action) return action[1];
  }
  return null;
}

/// Follows redirects (and the provider's forms) from `url` until a page of
/// the portal that is not a redirect.
async function follow(url, response) {
  for (let step = 0; step < 20; step++) {
    if (response.status >= 300 && response.status < 400) {
      url = new URL(response.headers.get("location"), url).href;
      response = await request(url);
      continue;
    }
    const body = await response.text();
    const form = postForm(body);
    if (!url.startsWith(portal) && form) {
      const fields = new URLSearchParams();
      for (const input of body.matchAll(/<input[^>]*name="([^"]+)"[^>]*>/g)) {
        const value = input[0].match(/value="([^"]*)"/);
        if (value) fields.set(input[1], value[1]);
      }
      if (body.includes('name="login"')) {
        fields.set("login", login);
        fields.set("password", "any password");
      }
      // The provider's sign-out confirmation: "Yes, sign me out".
      if (body.includes('name="logout"')) fields.set("logout", "yes");
      url = new URL(form, url).href;
      response = await request(url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: fields.toString(),
      });
      continue;
    }
    return { status: response.status, url, body: body.slice(0, 4000) };
  }
  throw new Error(`no end after 20 steps at ${url}`);
}

async function run() {
  const start = `${portal}/sso/login?next=/applications`;
  const report = await follow(start, await request(start));
  report.session = jar.get(new URL(portal).origin)?.get("maas_session") ?? null;
  if (then === "sign-out" && report.session) {
    const page = await (await request(`${portal}/applications`)).text();
    const csrf = page.match(/action="\/sign-out"[\s\S]*?name="csrf" value="([^"]+)"/)?.[1];
    if (!csrf) throw new Error("no sign-out form on /applications");
    const url = `${portal}/sign-out`;
    const response = await request(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ csrf }).toString(),
    });
    report.signed_out = await follow(url, response);
  }
  return report;
}

console.log(JSON.stringify(await run()));
