// A real third-party OAuth 2 / OIDC authorization server for tests: npm's
// oauth2-mock-server (RS256 JWTs, JWKS, OIDC discovery, authorization code with PKCE,
// refresh tokens), with the policy a test needs on top, through its own hooks:
//
//   node oauth_server.mjs --port P [--ttl SECONDS] [--client ID:SECRET] [--log FILE]
//
// --ttl: access tokens expire after SECONDS (exp claim and expires_in);
// --client: the one confidential client; its client_credentials and refresh_token
//   requests must authenticate (client_secret_basic or client_secret_post), else 401;
// refresh tokens: only those it issued and has not revoked are redeemed (else 400
//   invalid_grant), each once (a refresh answers with a new one and revokes the old, as
//   servers that rotate them do); POST /test/revoke revokes every one issued so far;
// --log: one JSON line per token response {grant, status, access_token,
//   refresh_token}, so a test knows every token issued (and can grep outputs for them).
// Prints "ready http://127.0.0.1:P" once it listens.
import { appendFileSync } from "node:fs";
import { OAuth2Server } from "oauth2-mock-server";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
};
const port = Number(option("--port", "0"));
const ttl = Number(option("--ttl", "3600"));
const [clientId, clientSecret] = (option("--client", ":") || ":").split(":");
const logFile = option("--log", "");

const server = new OAuth2Server();
await server.issuer.keys.generate("RS256");
const issued = new Set();
const revoked = new Set();

function clientOf(req) {
  const basic = /^Basic (.+)$/.exec(req.headers.authorization || "");
  if (basic) {
    const [id, secret] = Buffer.from(basic[1], "base64").toString().split(":").map(decodeURIComponent);
    return { id, secret };
  }
  return { id: req.body.client_id, secret: req.body.client_secret };
}

server.service.on("beforeWellKnownOpenIdConfiguration", (response) => {
  response.body.token_endpoint_auth_methods_supported = ["client_secret_basic", "client_secret_post", "none"];
  response.body.grant_types_supported.push("refresh_token");
});
server.service.on("beforeTokenSigning", (token) => {
  token.payload.exp = token.payload.iat + ttl;
});
server.service.on("beforeResponse", (response, req) => {
  const grant = req.body.grant_type;
  const fail = (statusCode, error) => {
    response.statusCode = statusCode;
    response.body = { error, error_description: `refused by the test authorization server (${grant})` };
  };
  if (clientId && (grant === "client_credentials" || grant === "refresh_token")) {
    const client = clientOf(req);
    if (client.id !== clientId || client.secret !== clientSecret) fail(401, "invalid_client");
  }
  if (response.statusCode === 200 && grant === "refresh_token") {
    const token = req.body.refresh_token;
    if (!issued.has(token) || revoked.has(token)) fail(400, "invalid_grant");
  }
  if (response.statusCode === 200) {
    if (grant === "refresh_token") revoked.add(req.body.refresh_token); // rotated: the old one is spent
    response.body.expires_in = ttl;
    if (response.body.refresh_token) issued.add(response.body.refresh_token);
  }
  if (logFile) {
    appendFileSync(logFile, JSON.stringify({
      grant, status: response.statusCode, access_token: response.body.access_token,
      refresh_token: response.body.refresh_token,
    }) + "\n");
  }
});
server.service.addRoute("POST", "/test/revoke", (req, res) => {
  for (const token of issued) revoked.add(token);
  res.statusCode = 204;
  res.end();
});

await server.start(port, "127.0.0.1");
console.log(`ready ${server.issuer.url}`);
