// A real OpenID provider for the SSO tests: the npm `oidc-provider` with
// its development sign-in pages (any password), PKCE, RP-initiated logout,
// and two people: ada (a developer of "Acme Research") and root (in the
// `maas-admins` group, as the walkthrough's Keycloak admin group).
//
// Usage: node oidc_provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI POST_LOGOUT_URI
// More people (or other claims for these two) come as JSON in OIDC_PEOPLE,
// e.g. {"eve": {"email": "...", "email_verified": false, "org_name": "..."}}.
// OIDC_PEOPLE_FILE names a JSON file of the same shape, read again at every
// sign-in when it exists, so a test can change someone's claims (move them
// to another organization) between two sign-ins.
// A person's `id_token` and `userinfo` members are claims said only there
// (null removes one); `"userinfo": "fail"` makes the userinfo endpoint fail
// for them. OIDC_ID_TOKEN_CLAIMS=scope puts the scopes' claims in the ID
// token as well (as Keycloak and Entra do), not only in userinfo.
// OIDC_TOKEN_AUTH=client_secret_post makes it a provider that takes the
// client secret only in the token request's body (and says so in its
// discovery document).
// Prints "ready" once it listens; stops on SIGTERM.
import { existsSync, readFileSync } from "node:fs";
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri, postLogoutUri] = process.argv.slice(2);
const people = {
  ada: { email: ["ada", "example.com"].join("@"), name: "Ada Lovelace", org_name: "Acme Research", groups: ["developers"] },
  root: { email: ["root", "example.com"].join("@"), name: "Root Admin", org_name: "Platform Team", groups: ["/maas-admins"] },
  ...JSON.parse(process.env.OIDC_PEOPLE ?? "{}"),
};

const tokenAuth = process.env.OIDC_TOKEN_AUTH;
const provider = new Provider(`http://127.0.0.1:${port}`, {
  ...(process.env.OIDC_ID_TOKEN_CLAIMS === "scope" ? { conformIdTokenClaims: false } : {}),
  ...(tokenAuth ? { clientAuthMethods: [tokenAuth] } : {}),
  clients: [{
    ...(tokenAuth ? { token_endpoint_auth_method: tokenAuth } : {}),
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    post_logout_redirect_uris: [postLogoutUri],
    response_types: ["code"],
    grant_types: ["authorization_code"],
  }],
  claims: {
    openid: ["sub"],
    email: ["email", "email_verified"],
    profile: ["name", "org_name", "groups"],
  },
  async findAccount(ctx, id) {
    const file = process.env.OIDC_PEOPLE_FILE;
    const changed = file && existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
    const person = changed[id] ?? people[id];
    if (!person) return undefined;
    return {
      accountId: id,
      async claims(use) {
        const { id_token: inIdToken, userinfo, ...common } = person;
        if (use === "userinfo" && userinfo === "fail") throw new Error("userinfo is down for this test");
        const said = { sub: id, email_verified: true, ...common, ...(use === "userinfo" ? userinfo : inIdToken) };
        return Object.fromEntries(Object.entries(said).filter(([, value]) => value !== null));
      },
    };
  },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  cookies: { keys: ["only-for-tests"] },
});
provider.proxy = false;
// oidc-provider itself takes a Basic header from any client; a provider
// registered for client_secret_post alone refuses it, as this one then does.
if (tokenAuth === "client_secret_post") {
  provider.use(async (ctx, next) => {
    if (ctx.path === "/token" && ctx.headers.authorization) {
      ctx.status = 401;
      ctx.body = { error: "invalid_client", error_description: "send the client secret in the request body" };
      return;
    }
    await next();
  });
}
const server = provider.listen(Number(port), "127.0.0.1", () => console.log("ready"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
