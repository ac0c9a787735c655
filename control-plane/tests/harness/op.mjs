// A real, certified OpenID Provider (npm `oidc-provider`) for the control
// plane's login tests. Test-only: dev interactions (any login, any password),
// in-memory storage, a freshly generated RS256 signing key.
//
// Environment:
//   OP_CLIENTS  JSON array of {client_id, client_secret, redirect_uris,
//               code_ttl?}; code_ttl (seconds, default 60) lets a test make
//               authorization codes expire quickly.
// Prints one JSON line {"issuer": "...", "port": N} when listening; exits
// when stdin closes (so it dies with the test that spawned it).
//
// Accounts: the login typed into the form is the subject; the email is the
// login when it contains "@", else <login>@example.test; email_verified is
// false only for logins starting with "unverified".
import http from 'node:http';
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const clients = JSON.parse(process.env.OP_CLIENTS || '[]');
const codeTtl = Object.fromEntries(clients.map((c) => [c.client_id, c.code_ttl ?? 60]));

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const jwk = { ...(await exportJWK(privateKey)), kid: 'op-test-key', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: clients.map(({ client_id, client_secret, redirect_uris }) => ({
    client_id,
    client_secret,
    redirect_uris,
    response_types: ['code'],
    grant_types: ['authorization_code'],
    token_endpoint_auth_method: 'client_secret_basic',
  })),
  jwks: { keys: [jwk] },
  cookies: { keys: ['meshgate-test-only-cookie-key'] },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
  // The relying party under test must send PKCE on its own; the OP does not
  // force it, so a test can also mint a code *without* PKCE (an injected
  // code) and check that the relying party's exchange fails.
  pkce: { required: () => false },
  ttl: { AuthorizationCode: (ctx, code, client) => codeTtl[client.clientId] ?? 60 },
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const email = id.includes('@') ? id : `${id}@example.test`;
    return {
      accountId: id,
      async claims() {
        return { sub: id, email, email_verified: !id.startsWith('unverified'), name: id, preferred_username: id };
      },
    };
  },
});
provider.on('server_error', (ctx, err) => console.error('op server_error', err));
server.on('request', provider.callback());

console.log(JSON.stringify({ issuer, port }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
