// A real OpenID provider issuing JWT access tokens by the client
// credentials grant, for the gateway's access-token tests: the npm
// `oidc-provider` with resource indicators, so a token's `aud` is the
// resource asked for (the gateway's audience by default).
//
// Usage: node oidc_tokens.mjs PORT AUDIENCE CLIENTS_FILE SIGNING_KEY_FILE
// CLIENTS_FILE is JSON, read again at every token request so a test can
// change a client's claims (remove a group) between two tokens:
//   {"ci-bot": {"secret": "...", "org_name": "Acme", "groups": ["ml-platform"], "ttl": 300}}
// SIGNING_KEY_FILE holds the RSA private JWK the provider signs with; it
// is made (with a new key id) when absent, so removing it and restarting
// the provider on the same port is a key rotation, and two providers
// started on one file share a key.
// Prints "ready" once it listens; stops on SIGTERM.
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import Provider from "oidc-provider";

const [port, audience, clientsFile, keyFile] = process.argv.slice(2);
const readClients = () => JSON.parse(readFileSync(clientsFile, "utf8"));

if (!existsSync(keyFile)) {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: "jwk" }), kid: randomUUID(), use: "sig", alg: "RS256" };
  writeFileSync(keyFile, JSON.stringify(jwk));
}
const signingKey = JSON.parse(readFileSync(keyFile, "utf8"));

const clients = Object.entries(readClients()).map(([clientId, client]) => ({
  client_id: clientId,
  client_secret: client.secret,
  grant_types: ["client_credentials"],
  redirect_uris: [],
  response_types: [],
}));

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients,
  jwks: { keys: [signingKey] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: "api",
        audience: resource,
        accessTokenFormat: "jwt",
        accessTokenTTL: readClients()[client.clientId]?.ttl ?? 300,
        jwt: { sign: { alg: "RS256" } },
      }),
    },
  },
  async extraTokenClaims(ctx, token) {
    const client = readClients()[token.clientId] ?? {};
    const claims = {};
    if (client.org_name !== undefined) claims.org_name = client.org_name;
    if (client.groups !== undefined) claims.groups = client.groups;
    return claims;
  },
});
provider.proxy = false;
const server = provider.listen(Number(port), "127.0.0.1", () => console.log("ready"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
