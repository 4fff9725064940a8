// Company sign-in without a browser: follows the portal's OpenID Connect
// flow against the real oidc-provider (its development login and consent
// forms) with fetch and a cookie jar, as a browser would, and reports where
// it ended and the portal session it got.
//
// Usage: node sso_login.mjs PORTAL_URL LOGIN
// Prints a JSON report: {status, url, session, body}. `session` is the
// maas_session cookie (null when the portal refused the sign-in).

const [portal, login] = process.argv.slice(2);
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

/// Follows redirects (and the provider's forms) until a page that is not
/// one of the provider's login or consent forms.
async function run() {
  let url = `${portal}/sso/login?next=/applications`;
  let response = await request(url);
  for (let step = 0; step < 20; step++) {
    if (response.status >= 300 && response.status < 400) {
      url = new URL(response.headers.get("location"), url).href;
      response = await request(url);
      continue;
    }
    const body = await response.text();
    const form = body.match(/<form[^>]*action="([^"]+)"[^>]*method="post"/);
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
      url = new URL(form[1], url).href;
      response = await request(url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: fields.toString(),
      });
      continue;
    }
    const session = jar.get(new URL(portal).origin)?.get("maas_session") ?? null;
    return { status: response.status, url, session, body: body.slice(0, 4000) };
  }
  throw new Error(`no end after 20 steps at ${url}`);
}

console.log(JSON.stringify(await run()));
